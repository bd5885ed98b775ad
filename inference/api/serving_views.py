"""The serving contract at the site root: /embed, /generate, /health, /metrics and the OpenAI-compatible /v1/.

Each view validates its input, hands the request to `inference.serving.web`
(which enforces the governed limits and talks to a worker) and shapes the
answer. Errors come out in the one JSON error shape, which is also
OpenAI's: `{"error": {"message", "type", "code"}}`.
"""

import time

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework.response import Response
from rest_framework.views import APIView

from conclave_node.runtimes.memory import process_rss_mb
from inference.api import openai
from inference.api.access import InferenceApiView
from inference.api.serializers import (
    ChatCompletionInput,
    CompletionInput,
    EmbedInput,
    GenerateInput,
    OpenAIEmbeddingsInput,
    embed_input,
    openai_embeddings_input,
)
from inference.metrics import PROCESS_STARTED, REGISTRY, SUMMARY, load_gauges_update
from inference.selectors import served_manifests, serving_health
from inference.serving import web as dispatch
from inference.serving.shared_state import coordination

# Routing only (INFERENCE_ROUTING=federated|hybrid): how many serving nodes the request asks (inference/README.md).
REDUNDANCY = OpenApiParameter(
    "X-Conclave-Redundancy",
    int,
    OpenApiParameter.HEADER,
    required=False,
    description="Nodes to ask (1 to INFERENCE_ROUTING_MAX_REDUNDANCY): embeddings return the fitness-weighted "
    "majority's answer, generations the first. Ignored when requests run on the local workers.",
)


def _sse(chunks, generation) -> StreamingHttpResponse:
    response = StreamingHttpResponse(openai.ClosingStream(chunks, generation), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _generation_request(
    data: dict, *, mode: str, endpoint: str, default_max_tokens: int | None, **extra
) -> dispatch.GenerationRequest:
    return dispatch.GenerationRequest(
        mode=mode,
        endpoint=endpoint,
        model=data.get("model") or None,
        max_tokens=data.get("max_tokens"),
        default_max_tokens=default_max_tokens,
        temperature=data["temperature"] if data.get("temperature") is not None else 0.8,
        top_p=data["top_p"] if data.get("top_p") is not None else 0.95,
        stop=data.get("stop") or [],
        seed=data.get("seed"),
        logit_bias=data.get("logit_bias") or {},
        presence_penalty=data.get("presence_penalty") or 0.0,
        frequency_penalty=data.get("frequency_penalty") or 0.0,
        stream=data.get("stream", False),
        **extra,
    )


# --- Native contract ------------------------------------------------------------------------------


class EmbedApi(InferenceApiView):
    """POST /embed {text | texts[], model?} -> {embedding | embeddings, model, tokens, latency_ms}."""

    @extend_schema(request=EmbedInput, responses={200: OpenApiTypes.OBJECT}, parameters=[REDUNDANCY])
    def post(self, request):
        return Response(self.post_json(request.data))

    def post_json(self, data) -> dict:
        data = embed_input(data)
        single = "text" in data
        result = dispatch.embeddings_create(
            texts=[data["text"]] if single else data["texts"], model=data.get("model") or None, endpoint="embed"
        )
        body = {"model": result.model, "tokens": result.tokens, "latency_ms": round(result.latency_ms, 3)}
        if single:
            body["embedding"] = result.vectors[0]
        else:
            body["embeddings"] = result.vectors
        return body


class GenerateApi(InferenceApiView):
    """POST /generate {prompt, model?, max_tokens, temperature, top_p, stop[], stream?}."""

    @extend_schema(request=GenerateInput, responses={200: OpenApiTypes.OBJECT}, parameters=[REDUNDANCY])
    def post(self, request):
        serializer = GenerateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        generation_request = _generation_request(
            data, mode="completion", endpoint="generate", default_max_tokens=None, prompt=data["prompt"]
        )
        if data.get("stream"):
            generation = dispatch.generation_start(generation_request)
            return _sse(openai.native_stream(generation), generation)
        result = dispatch.generation_run(generation_request)
        return Response(
            {
                "text": result.text,
                "model": result.model,
                "tokens_generated": result.completion_tokens,
                "prompt_tokens": result.prompt_tokens,
                "latency_ms": round(result.latency_ms, 3),
                "stop_reason": result.finish_reason,
                "usage": openai.usage(result.prompt_tokens, result.completion_tokens),
            }
        )


class HealthApi(APIView):
    """GET /health: ready (200) once every approved model is loaded by a worker, else 503."""

    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 503: OpenApiTypes.OBJECT})
    def get(self, request):
        health = serving_health(process_started=PROCESS_STARTED)
        response = Response(health.body, status=200 if health.ready else 503)
        if health.retry_after:
            response["Retry-After"] = str(health.retry_after)
        return response


def health_live(request):
    """GET /health/live: the web process answers (liveness, no dependencies)."""
    return JsonResponse({"status": "alive", "uptime_seconds": round(time.time() - PROCESS_STARTED, 1)})


class MetricsApi(APIView):
    """GET /metrics: this process's request counts and latency, and memory."""

    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        workers = coordination().statuses()
        worker_memory = sum(status.get("memory_mb") or 0.0 for status in workers.values())
        running, waiting = coordination().load()
        body = {
            **SUMMARY.snapshot(),
            "memory_usage_mb": round(max(worker_memory, process_rss_mb()), 1),
            "requests_running": running,
            "requests_waiting": waiting,
        }
        return Response(body)


def metrics_prometheus(request):
    """GET /metrics/prometheus: Prometheus exposition of this process's series."""
    load_gauges_update(*coordination().load())
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


# --- OpenAI-compatible ------------------------------------------------------------------------------


class ModelsApi(InferenceApiView):
    """GET /v1/models: the approved models (the only ones served)."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response(openai.models_list(served_manifests()))


class EmbeddingsApi(InferenceApiView):
    """POST /v1/embeddings."""

    @extend_schema(request=OpenAIEmbeddingsInput, responses={200: OpenApiTypes.OBJECT}, parameters=[REDUNDANCY])
    def post(self, request):
        return Response(self.post_json(request.data))

    def post_json(self, data) -> dict:
        data = openai_embeddings_input(data)
        result = dispatch.embeddings_create(texts=data["input"], model=data.get("model") or None, endpoint="embeddings")
        return openai.embeddings_body(result, encoding_format=data["encoding_format"])


class ChatCompletionsApi(InferenceApiView):
    """POST /v1/chat/completions (stream: true answers with server-sent events)."""

    @extend_schema(request=ChatCompletionInput, responses={200: OpenApiTypes.OBJECT}, parameters=[REDUNDANCY])
    def post(self, request):
        serializer = ChatCompletionInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        generation_request = _generation_request(
            data, mode="chat", endpoint="chat_completions", default_max_tokens=None, messages=data["messages"]
        )
        if data.get("stream"):
            generation = dispatch.generation_start(generation_request)
            return _sse(openai.chat_stream(generation), generation)
        return Response(openai.chat_body(dispatch.generation_run(generation_request)))


class CompletionsApi(InferenceApiView):
    """POST /v1/completions (OpenAI's default of 16 tokens when max_tokens is absent)."""

    @extend_schema(request=CompletionInput, responses={200: OpenApiTypes.OBJECT}, parameters=[REDUNDANCY])
    def post(self, request):
        serializer = CompletionInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        generation_request = _generation_request(
            data, mode="completion", endpoint="completions", default_max_tokens=16, prompt=data["prompt"]
        )
        if data.get("stream"):
            generation = dispatch.generation_start(generation_request)
            return _sse(openai.completion_stream(generation), generation)
        return Response(openai.completion_body(dispatch.generation_run(generation_request)))
