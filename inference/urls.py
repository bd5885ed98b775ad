"""The serving contract at the site root (included by conclave.urls)."""

from django.urls import path

from inference import views

app_name = "inference"

urlpatterns = [
    path("embed", views.EmbedApi.as_view(), name="embed"),
    path("generate", views.GenerateApi.as_view(), name="generate"),
    path("health", views.HealthApi.as_view(), name="health"),
    path("health/live", views.health_live, name="health-live"),
    path("metrics", views.MetricsApi.as_view(), name="metrics"),
    path("metrics/prometheus", views.metrics_prometheus, name="metrics-prometheus"),
    path("v1/models", views.ModelsApi.as_view(), name="openai-models"),
    path("v1/embeddings", views.EmbeddingsApi.as_view(), name="openai-embeddings"),
    path("v1/chat/completions", views.ChatCompletionsApi.as_view(), name="openai-chat-completions"),
    path("v1/completions", views.CompletionsApi.as_view(), name="openai-completions"),
    path("inference/benchmarks/compare/<int:manifest_id>/", views.benchmark_compare, name="benchmark-compare"),
    path("inference/benchmarks/<int:run_id>/progress/", views.benchmark_progress, name="benchmark-progress"),
]
