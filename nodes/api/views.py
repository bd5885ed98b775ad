"""What nodes send with their node token: latency reports (read your own back), and join and heartbeat."""

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
from nodes.services import node_report_record, serving_node_heartbeat, serving_node_join

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
    signed_set_version = _StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=2**31 - 1)
    approved_set_version = _StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=2**31 - 1)
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


def _body_size_check(request, *, limit: int, setting: str, advice: str) -> None:
    """Refuse an oversized body before parsing it (a Content-Length that is no number counts as none)."""
    if request.method != "POST":
        return
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise PayloadTooLarge(f"The body is {length:,} bytes; the limit is {limit:,} ({setting}). {advice}")


class TelemetryApi(APIView):
    """Nodes only. POST stores a report under the token's node; GET lists that node's own reports."""

    permission_classes = [IsNode]

    def initial(self, request, *args, **kwargs):
        _body_size_check(
            request,
            limit=settings.TELEMETRY_MAX_BYTES,
            setting="TELEMETRY_MAX_BYTES",
            advice="Send fewer models per report.",
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


# --- Serving nodes: join and heartbeat --------------------------------------------------------


class _StrictCharField(serializers.CharField):
    """A JSON string: no numbers or booleans turned into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class _StrictRegexField(serializers.RegexField):
    """A JSON string matching the pattern (the pattern is in the schema)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class _StrictBooleanField(serializers.BooleanField):
    """A JSON true or false: no "yes", 1 or "true"."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class _ManifestCidField(_StrictCharField):
    def __init__(self, **kwargs):
        super().__init__(min_length=1, max_length=128, help_text="A manifest CID (registry manifest_cid).", **kwargs)


def _models_field(**kwargs):
    return serializers.ListField(
        child=_ManifestCidField(),
        max_length=settings.NODES_MAX_MODELS,
        help_text="The manifest CIDs of the models the node serves (its signed set's manifests).",
        **kwargs,
    )


class HardwareInputSerializer(serializers.Serializer):
    cores = _StrictIntegerField(min_value=1, max_value=65_536, help_text="CPU cores (os.cpu_count).")
    memory_mb = _StrictIntegerField(min_value=0, max_value=2**40, help_text="Physical memory in MiB.")
    gpu = _StrictBooleanField(help_text="Whether models run on a GPU.")


class ServingNodeJoinInputSerializer(serializers.Serializer):
    url = _StrictCharField(max_length=512, help_text="Where the platform reaches the node (http or https).")
    # It travels in an Authorization header: visible ASCII only.
    secret = _StrictRegexField(
        r"^[!-~]{32,128}$",
        min_length=32,
        max_length=128,
        error_messages={"invalid": "32 to 128 visible ASCII characters (it is sent as a bearer token)."},
        help_text="The bearer the platform presents to the node, generated by the node (32 to 128 visible ASCII "
        "characters).",
    )
    models = _models_field()
    hardware = HardwareInputSerializer()
    signed_set_version = _StrictIntegerField(min_value=0, max_value=2**31 - 1, required=False, allow_null=True)
    queue_capacity = _StrictIntegerField(
        min_value=0,
        max_value=2**31 - 1,
        required=False,
        allow_null=True,
        help_text="Requests the node admits at once (its governed max_concurrent_requests + queue_size).",
    )


class ServingNodeHeartbeatInputSerializer(serializers.Serializer):
    running = _StrictIntegerField(min_value=0, max_value=2**31 - 1, help_text="Requests running now.")
    waiting = _StrictIntegerField(min_value=0, max_value=2**31 - 1, help_text="Requests waiting now.")
    queue_capacity = _StrictIntegerField(
        min_value=0, max_value=2**31 - 1, help_text="Requests the node admits at once (running + waiting)."
    )
    models = _models_field(required=False)
    signed_set_version = _StrictIntegerField(min_value=0, max_value=2**31 - 1, required=False, allow_null=True)


class ServingNodeOutputSerializer(serializers.Serializer):
    node = serializers.CharField(source="account.username", help_text="The node account.")
    url = serializers.CharField(help_text="The node's URL as the platform stored it (normalised).")
    heartbeat_seconds = serializers.SerializerMethodField(help_text="Beat this often.")
    heartbeat_timeout_seconds = serializers.SerializerMethodField(
        help_text="Without a heartbeat for this long, the node leaves the rotation."
    )

    def get_heartbeat_seconds(self, serving) -> int:
        return settings.NODES_HEARTBEAT_SECONDS

    def get_heartbeat_timeout_seconds(self, serving) -> int:
        return settings.NODES_HEARTBEAT_TIMEOUT_SECONDS


class _ServingNodeApi(APIView):
    permission_classes = [IsNode]

    def initial(self, request, *args, **kwargs):
        _body_size_check(
            request,
            limit=settings.NODES_JOIN_MAX_BYTES,
            setting="NODES_JOIN_MAX_BYTES",
            advice="Announce fewer models.",
        )
        super().initial(request, *args, **kwargs)


class ServingNodeJoinApi(_ServingNodeApi):
    """Nodes only. Join (or join again) the platform's rotation: where the node listens, what it serves."""

    @extend_schema(
        request=ServingNodeJoinInputSerializer,
        responses={200: ServingNodeOutputSerializer},
        description="The node is in the rotation at once, and stays while it heartbeats every heartbeat_seconds. "
        "A loopback or private URL is refused unless NODES_ALLOW_PRIVATE_URLS is on. Joining again replaces "
        "what the node announced before.",
    )
    def post(self, request):
        payload = ServingNodeJoinInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        serving = serving_node_join(
            node=request.user,
            url=data["url"],
            secret=data["secret"],
            models=data["models"],
            hardware=dict(data["hardware"]),
            signed_set_version=data.get("signed_set_version"),
            queue_capacity=data.get("queue_capacity"),
        )
        return Response(ServingNodeOutputSerializer(serving).data)


class ServingNodeHeartbeatApi(_ServingNodeApi):
    """Nodes only. The node's load now; keeps it in the rotation."""

    @extend_schema(
        request=ServingNodeHeartbeatInputSerializer,
        responses={200: ServingNodeOutputSerializer},
        description="409 with code not_joined when the node has not joined: it joins again.",
    )
    def post(self, request):
        payload = ServingNodeHeartbeatInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        serving = serving_node_heartbeat(
            node=request.user,
            running=data["running"],
            waiting=data["waiting"],
            queue_capacity=data["queue_capacity"],
            models=data.get("models"),
            signed_set_version=data.get("signed_set_version"),
        )
        return Response(ServingNodeOutputSerializer(serving).data)
