from django.urls import path

from dashboards import views

app_name = "dashboards"

urlpatterns = [
    path("", views.overview_view, name="overview"),
    path("overview/panel/", views.overview_panel_view, name="overview-panel"),
    path("status/panel/", views.status_card_view, name="status-card"),
    path("home/proposals/panel/", views.home_proposals_panel_view, name="home-proposals"),
    path("adoptions/", views.adoptions_view, name="adoptions"),
    path("adoptions/panel/", views.adoptions_panel_view, name="adoptions-panel"),
    path("governance/", views.governance_view, name="governance"),
    path("governance/panel/", views.governance_panel_view, name="governance-panel"),
    path("fleet/", views.fleet_view, name="fleet"),
    path("fleet/panel/", views.fleet_panel_view, name="fleet-panel"),
    path("fleet/node-latency/panel/", views.node_latency_panel_view, name="node-latency-panel"),
    path("models/<int:pk>/", views.model_view, name="model"),
    path("models/<int:pk>/panel/", views.model_panel_view, name="model-panel"),
]
