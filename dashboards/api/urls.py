from django.urls import path

from dashboards.api import views

urlpatterns = [
    path("metrics/overview/", views.MetricsOverviewApi.as_view(), name="api-metrics-overview"),
    path("metrics/adoptions/", views.MetricsAdoptionsApi.as_view(), name="api-metrics-adoptions"),
    path("metrics/governance/", views.MetricsGovernanceApi.as_view(), name="api-metrics-governance"),
    path("metrics/fleet/", views.MetricsFleetApi.as_view(), name="api-metrics-fleet"),
    path("metrics/models/<int:manifest_id>/", views.MetricsModelApi.as_view(), name="api-metrics-model"),
    path("metrics/nodes/latency/", views.MetricsNodeLatencyApi.as_view(), name="api-metrics-node-latency"),
]
