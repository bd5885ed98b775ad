from django.urls import path

from nodes.api import views

urlpatterns = [
    path("telemetry/", views.TelemetryApi.as_view(), name="api-telemetry"),
]
