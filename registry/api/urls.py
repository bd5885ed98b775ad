from django.urls import path

from registry.api import views

urlpatterns = [
    path("manifests/", views.ManifestListCreateApi.as_view(), name="api-manifests"),
    path("manifests/<int:manifest_id>/", views.ManifestDetailApi.as_view(), name="api-manifest-detail"),
    path("manifests/<int:manifest_id>/pin/", views.ManifestPinApi.as_view(), name="api-manifest-pin"),
    path("approved/", views.ApprovedSetApi.as_view(), name="api-approved-set"),
]
