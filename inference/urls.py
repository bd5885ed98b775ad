"""The serving contract at the site root (included by conclave.urls)."""

from django.urls import path

from inference.api import serving_views
from inference.views import benchmarks as benchmark_views

app_name = "inference"

urlpatterns = [
    path("embed", serving_views.EmbedApi.as_view(), name="embed"),
    path("generate", serving_views.GenerateApi.as_view(), name="generate"),
    path("health", serving_views.HealthApi.as_view(), name="health"),
    path("health/live", serving_views.health_live, name="health-live"),
    path("metrics", serving_views.MetricsApi.as_view(), name="metrics"),
    path("metrics/prometheus", serving_views.metrics_prometheus, name="metrics-prometheus"),
    path("v1/models", serving_views.ModelsApi.as_view(), name="openai-models"),
    path("v1/embeddings", serving_views.EmbeddingsApi.as_view(), name="openai-embeddings"),
    path("v1/chat/completions", serving_views.ChatCompletionsApi.as_view(), name="openai-chat-completions"),
    path("v1/completions", serving_views.CompletionsApi.as_view(), name="openai-completions"),
    path(
        "inference/benchmarks/compare/<int:manifest_id>/", benchmark_views.benchmark_compare, name="benchmark-compare"
    ),
    path("inference/benchmarks/<int:run_id>/progress/", benchmark_views.benchmark_progress, name="benchmark-progress"),
]
