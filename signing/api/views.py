"""Signed metadata for nodes: root (the platform's public keys) and the signed approved set.

Bodies are the stored canonical bytes, exactly as signed and pinned; the
ETag is their CID, so `If-None-Match` gives a 304 while nothing changed.
"""

import logging

from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from core.api.conditional import etag_matches
from core.errors import NotFound
from signing.selectors import (
    root_current_head,
    root_get,
    signed_document_bytes,
    signed_set_current_head,
    signed_set_list,
    signed_set_needs_signing,
)
from signing.services import SigningUnavailable, root_ensure, signed_set_refresh

logger = logging.getLogger(__name__)

_IF_NONE_MATCH = OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER, required=False)


def _signed_response(request, *, label: str, version: int, cid: str) -> HttpResponse:
    etag = f'"{cid}"'
    if etag_matches(request.headers.get("If-None-Match", ""), etag):
        response = HttpResponse(status=status.HTTP_304_NOT_MODIFIED)
    else:
        response = HttpResponse(signed_document_bytes(label, version, cid), content_type="application/json")
    response["ETag"] = etag
    response["X-Ipfs-Cid"] = cid
    response["Cache-Control"] = "no-cache"
    return response


class SigningRootApi(APIView):
    """The current root metadata: every public key nodes trust, per role, with thresholds."""

    permission_classes = [AllowAny]

    @extend_schema(
        parameters=[_IF_NONE_MATCH],
        responses={200: OpenApiResponse(description="Root metadata (signed JSON)"), 304: OpenApiResponse()},
    )
    def get(self, request):
        head = root_current_head()
        if head is None:
            root_ensure()
            head = root_current_head()
        version, cid = head
        return _signed_response(request, label="root", version=version, cid=cid)


class SigningRootVersionApi(APIView):
    """Root version N, so a node can walk the rotation chain from the root it trusts."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: OpenApiResponse(description="Root metadata (signed JSON)"), 404: OpenApiResponse()})
    def get(self, request, version: int):
        if root_current_head() is None:
            root_ensure()
        row = root_get(version)
        return _signed_response(request, label="root", version=row.version, cid=row.cid)


class SignedApprovedSetApi(APIView):
    """The signed approved set nodes pull. Signed (or re-signed) on demand when stale."""

    permission_classes = [AllowAny]

    @extend_schema(
        parameters=[_IF_NONE_MATCH],
        responses={
            200: OpenApiResponse(description="Signed approved set (canonical JSON, TUF-style envelope)"),
            304: OpenApiResponse(description="Not modified"),
            404: OpenApiResponse(description="No approved set published yet"),
        },
    )
    def get(self, request):
        now = timezone.now()
        if signed_set_needs_signing(now=now):
            try:
                signed_set_refresh(now=now)
            except SigningUnavailable:
                # Keep serving the last signing while it is valid: nodes stay on
                # it until it expires, which is what they would do offline.
                head = signed_set_current_head()
                if head is None or head[2] <= now:
                    raise
                logger.exception("cannot sign the current approved set; serving signed set v%s", head[0])
        head = signed_set_current_head()
        if head is None:
            raise NotFound("No approved set has been published yet.", code="no_approved_set")
        version, cid, _, _ = head
        return _signed_response(request, label="set", version=version, cid=cid)


class SignedSetOutputSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    approved_set_version = serializers.IntegerField(source="approved_set.version")
    root_version = serializers.IntegerField()
    cid = serializers.CharField()
    signed_at = serializers.DateTimeField()
    expires = serializers.DateTimeField()
    pin_status = serializers.CharField()


class SignedApprovedSetHistoryApi(generics.ListAPIView):
    """Every signing ever published, newest first, with the CID it is pinned under."""

    permission_classes = [AllowAny]
    serializer_class = SignedSetOutputSerializer

    def get_queryset(self):
        return signed_set_list()
