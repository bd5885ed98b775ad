"""Telemetry from nodes: POST a latency report with a node token; read your own back."""

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.permissions import IsNode
from conclave.errors import PayloadTooLarge
from registry.models_nodes import NodeReport
from registry.telemetry import node_report_record, node_reports_for

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"


class HistogramInputSerializer(serializers.Serializer):
    unit = serializers.ChoiceField(choices=["ms"], required=False, default="ms")
    bounds = serializers.ListField(child=serializers.FloatField(min_value=0), min_length=1, max_length=63)
    counts = serializers.ListField(child=serializers.IntegerField(min_value=0), min_length=2, max_length=64)
    count = serializers.IntegerField(min_value=0, required=False)
    sum = serializers.FloatField(min_value=0)


class ModelLatencyInputSerializer(serializers.Serializer):
    model_name = serializers.RegexField(_NAME)
    version = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
    latency_ms = HistogramInputSerializer()


class PeriodInputSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class TelemetryInputSerializer(serializers.Serializer):
    node = serializers.CharField(required=False, max_length=150)
    signed_set_version = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    approved_set_version = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    period = PeriodInputSerializer(required=False)
    models = serializers.ListField(child=ModelLatencyInputSerializer(), allow_empty=True, max_length=1000)


class NodeReportOutputSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.username")

    class Meta:
        model = NodeReport
        fields = [
            "id",
            "node",
            "signed_set_version",
            "approved_set_version",
            "models",
            "summary",
            "period_start",
            "period_end",
            "received_at",
        ]
        read_only_fields = fields


class TelemetryApi(APIView):
    """Nodes only. POST stores a report under the token's node; GET lists that node's own reports."""

    permission_classes = [IsNode]

    def initial(self, request, *args, **kwargs):
        # Refuse an oversized body before parsing it.
        if request.method == "POST":
            length = int(request.META.get("CONTENT_LENGTH") or 0)
            if length > settings.TELEMETRY_MAX_BYTES:
                raise PayloadTooLarge(
                    f"The report is {length:,} bytes; the limit is {settings.TELEMETRY_MAX_BYTES:,} "
                    "(TELEMETRY_MAX_BYTES). Send fewer models per report."
                )
        super().initial(request, *args, **kwargs)

    @extend_schema(request=TelemetryInputSerializer, responses={201: NodeReportOutputSerializer})
    def post(self, request):
        payload = TelemetryInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        period = data.get("period") or {}
        report = node_report_record(
            node=request.user,
            claimed_node=data.get("node"),
            signed_set_version=data.get("signed_set_version"),
            approved_set_version=data.get("approved_set_version"),
            period_start=period.get("start"),
            period_end=period.get("end"),
            models=data["models"],
        )
        return Response(NodeReportOutputSerializer(report).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: NodeReportOutputSerializer(many=True)})
    def get(self, request):
        reports = node_reports_for(node=request.user)[:100]
        return Response(NodeReportOutputSerializer(reports, many=True).data)
