from django.urls import path

from signing.api import views

urlpatterns = [
    path("approved/signed/", views.SignedApprovedSetApi.as_view(), name="api-approved-set-signed"),
    path(
        "approved/signed/history/", views.SignedApprovedSetHistoryApi.as_view(), name="api-approved-set-signed-history"
    ),
    path("keys/", views.SigningRootApi.as_view(), name="api-keys"),
    path("keys/<int:version>.root.json", views.SigningRootVersionApi.as_view(), name="api-keys-root-version"),
]
