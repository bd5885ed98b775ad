from django.urls import path

from nodes.api import views

urlpatterns = [
    path("telemetry/", views.TelemetryApi.as_view(), name="api-telemetry"),
    path("nodes/join/", views.ServingNodeJoinApi.as_view(), name="api-nodes-join"),
    path("nodes/heartbeat/", views.ServingNodeHeartbeatApi.as_view(), name="api-nodes-heartbeat"),
]
