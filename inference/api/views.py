"""/api/v1/ask (the degradation tree), the knowledge store, and benchmark runs."""

from dataclasses import asdict

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response

from accounts.api.permissions import IsContributor, IsOperator
from inference import ask, knowledge, services
from inference.api.access import InferenceApiView
from inference.api.serializers import (
    AskInput,
    AskOutput,
    BenchmarkRequestInput,
    BenchmarkRunOutput,
    KnowledgeDocumentInput,
    KnowledgeDocumentOutput,
)
from inference.models import KnowledgeDocument
from inference.selectors import benchmark_runs, manifest_find


class AskApi(InferenceApiView):
    """POST /api/v1/ask {query}: cache, then knowledge, then generation, else "LLM unavailable"."""

    @extend_schema(request=AskInput, responses={200: AskOutput})
    def post(self, request):
        payload = AskInput(data=request.data)
        payload.is_valid(raise_exception=True)
        answer = ask.ask_answer(query=payload.validated_data["query"])
        return Response(AskOutput(asdict(answer)).data)


class ReadOrContributor(BasePermission):
    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or IsContributor().has_permission(request, view)


class KnowledgeListCreateApi(generics.ListAPIView):
    """Documents /ask answers from: anyone reads, contributors add (audited)."""

    permission_classes = [ReadOrContributor]
    serializer_class = KnowledgeDocumentOutput
    queryset = KnowledgeDocument.objects.order_by("-updated_at", "-id")

    @extend_schema(request=KnowledgeDocumentInput, responses={201: KnowledgeDocumentOutput})
    def post(self, request):
        payload = KnowledgeDocumentInput(data=request.data)
        payload.is_valid(raise_exception=True)
        document = knowledge.knowledge_document_create(**payload.validated_data, actor=request.user)
        return Response(KnowledgeDocumentOutput(document).data, status=status.HTTP_201_CREATED)


class KnowledgeDetailApi(generics.RetrieveAPIView):
    """A document: anyone reads; its author or an operator changes or deletes it (audited)."""

    permission_classes = [ReadOrContributor]
    serializer_class = KnowledgeDocumentOutput
    queryset = KnowledgeDocument.objects.all()
    lookup_url_kwarg = "document_id"

    @extend_schema(request=KnowledgeDocumentInput, responses={200: KnowledgeDocumentOutput})
    def put(self, request, document_id: int):
        document = get_object_or_404(KnowledgeDocument, pk=document_id)
        payload = KnowledgeDocumentInput(data=request.data)
        payload.is_valid(raise_exception=True)
        document = knowledge.knowledge_document_update(document=document, actor=request.user, **payload.validated_data)
        return Response(KnowledgeDocumentOutput(document).data)

    def delete(self, request, document_id: int):
        knowledge.knowledge_document_delete(
            document=get_object_or_404(KnowledgeDocument, pk=document_id), actor=request.user
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class BenchmarkListCreateApi(generics.ListAPIView):
    """Benchmark runs (anyone reads); operators queue one for a manifest, candidates included."""

    serializer_class = BenchmarkRunOutput

    def get_permissions(self):
        if self.request.method in SAFE_METHODS:
            return []
        return [IsOperator()]

    def get_queryset(self):
        manifest_id = self.request.query_params.get("manifest")
        return benchmark_runs(manifest_id=int(manifest_id) if manifest_id and manifest_id.isdigit() else None)

    @extend_schema(request=BenchmarkRequestInput, responses={202: BenchmarkRunOutput})
    def post(self, request):
        payload = BenchmarkRequestInput(data=request.data)
        payload.is_valid(raise_exception=True)
        manifest = manifest_find(payload.validated_data["manifest"])
        run = services.benchmark_request(manifest=manifest, actor=request.user)
        return Response(BenchmarkRunOutput(run).data, status=status.HTTP_202_ACCEPTED)


class BenchmarkDetailApi(generics.RetrieveAPIView):
    permission_classes: list = []
    serializer_class = BenchmarkRunOutput
    lookup_url_kwarg = "run_id"

    def get_queryset(self):
        return benchmark_runs()
