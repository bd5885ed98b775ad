from django.urls import path, re_path

from inference.api import views

urlpatterns = [
    re_path(r"^ask/?$", views.AskApi.as_view(), name="api-ask"),
    path("knowledge/", views.KnowledgeListCreateApi.as_view(), name="api-knowledge"),
    path("knowledge/<int:document_id>/", views.KnowledgeDetailApi.as_view(), name="api-knowledge-detail"),
    path("benchmarks/", views.BenchmarkListCreateApi.as_view(), name="api-benchmarks"),
    path("benchmarks/<int:run_id>/", views.BenchmarkDetailApi.as_view(), name="api-benchmark-detail"),
]
