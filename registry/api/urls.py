from django.urls import path

from registry.api import signed_views, telemetry_views, views

urlpatterns = [
    path("manifests/", views.ManifestListCreateApi.as_view(), name="api-manifests"),
    path("manifests/<int:manifest_id>/", views.ManifestDetailApi.as_view(), name="api-manifest-detail"),
    path("manifests/<int:manifest_id>/pin/", views.ManifestPinApi.as_view(), name="api-manifest-pin"),
    path("approved/", views.ApprovedSetApi.as_view(), name="api-approved-set"),
    path("approved/signed/", signed_views.SignedApprovedSetApi.as_view(), name="api-approved-set-signed"),
    path("approved/signed/history/", signed_views.SignedApprovedSetHistoryApi.as_view(), name="api-approved-set-signed-history"),
    path("keys/", signed_views.SigningRootApi.as_view(), name="api-keys"),
    path("keys/<int:version>.root.json", signed_views.SigningRootVersionApi.as_view(), name="api-keys-root-version"),
    path("telemetry/", telemetry_views.TelemetryApi.as_view(), name="api-telemetry"),
]
