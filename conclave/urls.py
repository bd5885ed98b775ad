from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerSplitView

from core.api.schema import SchemaApi
from dashboards.views import home_view

handler404 = "core.views.handler404"
handler500 = "core.views.handler500"

api_v1 = [
    path("", include("registry.api.urls")),
    path("", include("signing.api.urls")),
    path("", include("nodes.api.urls")),
    path("", include("governance.api.urls")),
    path("", include("audit.api.urls")),
    path("", include("inference.api.urls")),
    path("", include("dashboards.api.urls")),
]

urlpatterns = [
    path("", home_view, name="home"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SchemaApi.as_view(), name="schema"),
    # The split view serves its start-up script as a file, not inline (CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("accounts/", include("accounts.urls")),
    path("audit/", include("audit.urls")),
    path("governance/", include("governance.urls")),
    path("dashboards/", include("dashboards.urls")),
    # Inference speaks the roadmap's contract at the site root (/embed,
    # /generate, /health, /metrics, /v1/...).
    path("", include("inference.urls")),
    path("", include("registry.urls")),
]
