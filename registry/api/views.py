from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.permissions import IsOperator, ReadOnlyOrOperator
from core.api.conditional import etag_matches
from core.errors import PayloadTooLarge
from registry.api.serializers import (
    ApprovedSetOutputSerializer,
    ManifestFilterSerializer,
    ManifestOutputSerializer,
    ManifestUploadInputSerializer,
)
from registry.models import Manifest
from registry.selectors import approved_set_body, approved_set_current_head, manifest_list
from registry.services import file_role_for, manifest_pin_request, manifest_register
from registry.staging import FileSource


class ManifestListCreateApi(generics.ListAPIView):
    """List manifests (anyone) or register a candidate from an upload (operators)."""

    permission_classes = [ReadOnlyOrOperator]
    parser_classes = [MultiPartParser]
    serializer_class = ManifestOutputSerializer

    def get_queryset(self):
        filters = ManifestFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        return manifest_list(
            status=data.get("status"), kind=data.get("kind"), fmt=data.get("format"), model_name=data.get("model_name")
        )

    @extend_schema(parameters=[ManifestFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        # Refuse an oversized upload before reading a byte of its body.
        if request.method == "POST":
            length = int(request.META.get("CONTENT_LENGTH") or 0)
            if length > settings.REGISTRY_UPLOAD_MAX_BYTES:
                raise PayloadTooLarge(
                    f"The upload is {length:,} bytes; the limit is {settings.REGISTRY_UPLOAD_MAX_BYTES:,} "
                    "(REGISTRY_UPLOAD_MAX_BYTES). Register large models with `manage.py register_model`."
                )
        super().initial(request, *args, **kwargs)

    @extend_schema(
        request={"multipart/form-data": ManifestUploadInputSerializer},
        responses={201: ManifestOutputSerializer, 200: ManifestOutputSerializer},
    )
    def post(self, request):
        payload = ManifestUploadInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        uploads = data["files"]
        sources = [
            FileSource.single(upload.name, file_role_for(upload.name, data["format"]), upload.temporary_file_path())
            for upload in uploads
        ]
        manifest, created = manifest_register(
            model_name=data["model_name"],
            version=data["version"],
            kind=data["kind"],
            fmt=data["format"],
            license=data["license"],
            quantization=data["quantization"],
            files=sources,
            source={"type": "upload", "uploaded_by": request.user.get_username()},
            actor=request.user,
        )
        return Response(
            ManifestOutputSerializer(manifest).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class ManifestDetailApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses=ManifestOutputSerializer)
    def get(self, request, manifest_id: int):
        manifest = get_object_or_404(Manifest.objects.prefetch_related("files"), pk=manifest_id)
        return Response(ManifestOutputSerializer(manifest).data)


class ManifestPinApi(APIView):
    """Re-enqueue the pin of a manifest (operators): after a failed pin, or a lost node."""

    permission_classes = [IsOperator]

    @extend_schema(request=None, responses={202: ManifestOutputSerializer})
    def post(self, request, manifest_id: int):
        manifest = get_object_or_404(Manifest.objects.prefetch_related("files"), pk=manifest_id)
        manifest_pin_request(manifest_ids=[manifest.pk])
        return Response(ManifestOutputSerializer(manifest).data, status=status.HTTP_202_ACCEPTED)


class ApprovedSetApi(APIView):
    """The approved set nodes poll: strong ETag (its CID) and 304 on If-None-Match."""

    permission_classes = [AllowAny]

    @extend_schema(
        parameters=[OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER, required=False)],
        responses={200: ApprovedSetOutputSerializer, 304: OpenApiResponse(description="Not modified")},
    )
    def get(self, request):
        current = approved_set_current_head()
        if current is None:
            return Response({"version": 0, "generated_at": None, "cid": None, "manifests": []})
        version, cid = current
        etag = f'"{cid}"'
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            response = HttpResponse(status=status.HTTP_304_NOT_MODIFIED)
        else:
            # Serve the pinned bytes themselves (plus their CID), not a re-rendering.
            response = HttpResponse(approved_set_body(version, cid), content_type="application/json")
        response["ETag"] = etag
        response["Cache-Control"] = "no-cache"
        return response
