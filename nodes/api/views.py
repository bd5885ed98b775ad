"""Telemetry from nodes: POST a latency report with a node token; read your own back."""

import math

from django.conf import settings
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.permissions import IsNode
from conclave_node.sketch import KIND, MAX_COUNT, MAX_KEY, MAX_KEYS, RELATIVE_ACCURACY, ZERO_THRESHOLD_MS
from core.errors import PayloadTooLarge
from nodes.models import NodeReport
from nodes.selectors import node_reports_for
from nodes.services import node_report_record

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"


class _StrictIntegerField(serializers.IntegerField):
    """A JSON integer: no strings, booleans or fractions (nodes send numbers, not text)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class _FiniteFloatField(serializers.FloatField):
    """A finite JSON number: no strings, booleans, NaN, infinities or integers too large for a float."""

    default_error_messages = {"not_finite": "A finite number is required."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        try:
            value = float(data)
        except OverflowError:
            self.fail("not_finite")
        if not math.isfinite(value):
            self.fail("not_finite")
        return super().to_internal_value(value)


@extend_schema_field({"type": "string", "pattern": f"^{KIND}$"})
class _SketchKindField(serializers.ChoiceField):
    """The sketch's kind. A pattern, not an enum, in the schema: an enum would collide with other fields named
    `kind`."""

    def __init__(self, **kwargs):
        super().__init__(choices=[KIND], **kwargs)


class LatencySketchInputSerializer(serializers.Serializer):
    """A latency sketch in the JSON form of `conclave_node.sketch` (DDSketch, α = 1 %), as `LatencySketch.as_dict`
    writes.

    The shape is checked here; the service checks the rest with `LatencySketch.from_dict`
    (strictly increasing keys, one count per key, count = zero + sum of counts, min <= max).
    """

    kind = _SketchKindField(help_text="Always 'ddsketch'.")
    alpha = _FiniteFloatField(
        help_text=f"Relative accuracy: {RELATIVE_ACCURACY} (only sketches of one accuracy merge)."
    )
    unit = serializers.ChoiceField(choices=["ms"], required=False, default="ms")
    keys = serializers.ListField(
        child=_StrictIntegerField(min_value=-MAX_KEY, max_value=MAX_KEY),
        max_length=MAX_KEYS,
        help_text="Bucket keys ceil(log_γ(value_ms)), γ = (1 + α) / (1 - α), strictly increasing.",
    )
    counts = serializers.ListField(
        child=_StrictIntegerField(min_value=1, max_value=MAX_COUNT - 1),
        max_length=MAX_KEYS,
        help_text="How many values fell in each bucket: one positive count per key.",
    )
    zero = _StrictIntegerField(
        min_value=0,
        max_value=MAX_COUNT - 1,
        required=False,
        default=0,
        help_text=f"Values at or below {ZERO_THRESHOLD_MS} ms.",
    )
    count = _StrictIntegerField(min_value=0, required=False, help_text="zero + the sum of counts.")
    sum = _FiniteFloatField(min_value=0, help_text="The sum of every value (ms).")
    min = _FiniteFloatField(min_value=0, required=False, allow_null=True, help_text="The smallest value (ms).")
    max = _FiniteFloatField(min_value=0, required=False, allow_null=True, help_text="The largest value (ms).")


class ModelLatencyInputSerializer(serializers.Serializer):
    model_name = serializers.RegexField(_NAME)
    version = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
    latency_ms = LatencySketchInputSerializer()


class PeriodInputSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class CircuitBreakerInputSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=["closed", "open", "half_open"])
    consecutive_failures = _StrictIntegerField(min_value=0, required=False)
    failure_threshold = _StrictIntegerField(min_value=1, required=False)
    reset_timeout_seconds = _FiniteFloatField(min_value=0, required=False)


class ClientLatencyInputSerializer(serializers.Serializer):
    count = _StrictIntegerField(min_value=0)
    mean = _FiniteFloatField(min_value=0, allow_null=True, required=False)
    p50 = _FiniteFloatField(min_value=0, allow_null=True, required=False)
    p95 = _FiniteFloatField(min_value=0, allow_null=True, required=False)
    p99 = _FiniteFloatField(min_value=0, allow_null=True, required=False)
    max = _FiniteFloatField(min_value=0, allow_null=True, required=False)


class ClientMetricsInputSerializer(serializers.Serializer):
    """The node's client library metrics (`ConclaveClient.metrics()`): counts, success rate, latency, breaker."""

    calls = _StrictIntegerField(min_value=0)
    attempts = _StrictIntegerField(min_value=0, required=False)
    retries = _StrictIntegerField(min_value=0, required=False)
    successes = _StrictIntegerField(min_value=0, required=False)
    failures = _StrictIntegerField(min_value=0, required=False)
    client_errors = _StrictIntegerField(min_value=0, required=False)
    short_circuited = _StrictIntegerField(min_value=0, required=False)
    fallbacks = _StrictIntegerField(min_value=0, required=False)
    success_rate = _FiniteFloatField(min_value=0, max_value=1, allow_null=True, required=False)
    latency_ms = ClientLatencyInputSerializer(required=False)
    circuit_breaker = CircuitBreakerInputSerializer()


class TelemetryInputSerializer(serializers.Serializer):
    node = serializers.CharField(required=False, max_length=150)
    signed_set_version = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    approved_set_version = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    period = PeriodInputSerializer(required=False)
    models = serializers.ListField(child=ModelLatencyInputSerializer(), allow_empty=True, max_length=1000)
    client = ClientMetricsInputSerializer(required=False)


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
            "circuit_breaker",
            "client",
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

    @extend_schema(
        request=TelemetryInputSerializer,
        responses={201: NodeReportOutputSerializer, 200: NodeReportOutputSerializer},
        description="201 with the stored report; 200 with the report already stored when the same report for "
        "the same period is sent again; 409 if other figures for that period are stored.",
    )
    def post(self, request):
        payload = TelemetryInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        period = data.get("period") or {}
        report, created = node_report_record(
            node=request.user,
            claimed_node=data.get("node"),
            signed_set_version=data.get("signed_set_version"),
            approved_set_version=data.get("approved_set_version"),
            period_start=period.get("start"),
            period_end=period.get("end"),
            models=data["models"],
            client=data.get("client"),
        )
        return Response(
            NodeReportOutputSerializer(report).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(responses={200: NodeReportOutputSerializer(many=True)})
    def get(self, request):
        reports = node_reports_for(node=request.user)[:100]
        return Response(NodeReportOutputSerializer(reports, many=True).data)
