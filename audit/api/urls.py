from django.urls import path

from audit.api import views

urlpatterns = [
    path("audit/", views.AuditEventListApi.as_view(), name="api-audit-events"),
    path("audit/verify/", views.AuditVerifyApi.as_view(), name="api-audit-verify"),
    path("audit/checkpoints/", views.AuditCheckpointListApi.as_view(), name="api-audit-checkpoints"),
]
