"""The audit API: anyone may read and verify the log (transparency)."""

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.api.serializers import (
    AuditCheckpointOutputSerializer,
    AuditEventFilterSerializer,
    AuditEventOutputSerializer,
    ChainVerificationOutputSerializer,
)
from audit.browse import audit_checkpoint_list, audit_event_list
from audit.checkpoints import audit_checkpoints_verify
from audit.selectors import audit_chain_verify


class AuditEventPagination(PageNumberPagination):
    # Verifiers copying the whole log want big pages.
    page_size_query_param = "page_size"
    max_page_size = 1000


class AuditEventListApi(generics.ListAPIView):
    """Audit events in chain order, filterable by object, actor and type."""

    permission_classes = [AllowAny]
    pagination_class = AuditEventPagination
    serializer_class = AuditEventOutputSerializer

    def get_queryset(self):
        filters = AuditEventFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return audit_event_list(**filters.validated_data)

    @extend_schema(parameters=[AuditEventFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class AuditVerifyApi(APIView):
    """Recompute the whole chain and compare it with the pinned checkpoints."""

    permission_classes = [AllowAny]

    @extend_schema(responses=ChainVerificationOutputSerializer)
    def get(self, request):
        chain = audit_chain_verify()
        checkpoints = audit_checkpoints_verify()
        body = {**chain.as_dict(), "ok": chain.ok and checkpoints.ok, "checkpoints": checkpoints.as_dict()}
        return Response(ChainVerificationOutputSerializer(body).data)


class AuditCheckpointListApi(generics.ListAPIView):
    """Chain heads pinned to IPFS, newest first: fetch a CID anywhere and compare."""

    permission_classes = [AllowAny]
    serializer_class = AuditCheckpointOutputSerializer

    def get_queryset(self):
        return audit_checkpoint_list()
