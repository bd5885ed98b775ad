"""Input and output shapes of the metrics API (/api/v1/metrics/...).

The selectors return plain dicts; these serializers only describe and
render them, so every panel's JSON is in the OpenAPI schema.
"""

from rest_framework import serializers

from dashboards.selectors.latency import WINDOWS


class MetricsWindowInputSerializer(serializers.Serializer):
    window = serializers.ChoiceField(choices=list(WINDOWS), default="1h", help_text="15m, 1h, 24h or 7d.")
    model = serializers.CharField(required=False, max_length=200, help_text="Only this model (name@version).")
    endpoint = serializers.CharField(
        required=False, max_length=32, help_text="Only this endpoint (embed, generate, ...)."
    )
    end = serializers.DateTimeField(
        required=False, help_text="End of the window (ISO 8601, default now); the same end gives the same numbers."
    )


class MetricsLatencyStatsSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)
    mean = serializers.FloatField(allow_null=True)
    max = serializers.FloatField(allow_null=True)


class MetricsLatencySetSerializer(serializers.Serializer):
    e2e = MetricsLatencyStatsSerializer(help_text="End to end, milliseconds.")
    queue = MetricsLatencyStatsSerializer(help_text="Queue time before a worker started, milliseconds.")
    ttft = MetricsLatencyStatsSerializer(help_text="Time to first token (generation), milliseconds.")
    cpu = MetricsLatencyStatsSerializer(
        help_text="Cost per query: CPU milliseconds the worker's model thread spent on the request "
        "(its share of a batch)."
    )


class MetricsPercentilesSerializer(serializers.Serializer):
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class MetricsSeriesPointSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    rejections = serializers.IntegerField()
    request_rate = serializers.FloatField(allow_null=True, help_text="Requests per second in this step.")
    e2e = MetricsPercentilesSerializer()
    queue = MetricsPercentilesSerializer()
    ttft = MetricsPercentilesSerializer()
    cpu = MetricsPercentilesSerializer()


class MetricsModelTrafficSerializer(serializers.Serializer):
    model = serializers.CharField()
    endpoints = serializers.ListField(child=serializers.CharField())
    requests = serializers.IntegerField()
    ok = serializers.IntegerField()
    errors = serializers.IntegerField(help_text="5xx other than 503: timeouts and failures.")
    rejections = serializers.IntegerField(help_text="Refused before running: 4xx other than 499, and 503.")
    cancelled = serializers.IntegerField(help_text="499: the client went away.")
    request_rate = serializers.FloatField(allow_null=True, help_text="Requests per second over the window.")
    error_rate = serializers.FloatField(allow_null=True)
    rejection_rate = serializers.FloatField(allow_null=True)
    rejection_reasons = serializers.DictField(child=serializers.IntegerField())
    outcomes = serializers.DictField(child=serializers.IntegerField())
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    prompt_tokens_per_second = serializers.FloatField(allow_null=True)
    completion_tokens_per_second = serializers.FloatField(allow_null=True)
    latency_ms = MetricsLatencySetSerializer()
    series = MetricsSeriesPointSerializer(many=True)


class MetricsAnswerCacheSerializer(serializers.Serializer):
    lookups = serializers.IntegerField(help_text="/ask queries looked up in the semantic answer cache.")
    hits = serializers.IntegerField()
    hit_rate = serializers.FloatField(allow_null=True, help_text="hits / lookups; null without lookups.")


class MetricsOverviewSerializer(serializers.Serializer):
    window = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    step_seconds = serializers.IntegerField()
    relative_accuracy = serializers.FloatField(
        help_text="Every percentile is within this relative error of the exact one (see the docs)."
    )
    answer_cache = MetricsAnswerCacheSerializer()
    models = MetricsModelTrafficSerializer(many=True)


# --- Adoption history ------------------------------------------------------------------------


class MetricsFileSerializer(serializers.Serializer):
    path = serializers.CharField()
    role = serializers.CharField()
    sha256 = serializers.CharField()
    cid = serializers.CharField()


class MetricsManifestBriefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.CharField()
    model_name = serializers.CharField()
    version = serializers.CharField()
    kind = serializers.CharField()
    status = serializers.CharField()
    license = serializers.CharField()
    sha256 = serializers.CharField()
    ipfs_cid = serializers.CharField()
    manifest_cid = serializers.CharField()
    files = MetricsFileSerializer(many=True)
    url = serializers.CharField()
    audit_url = serializers.CharField()


class MetricsProposalBriefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    proposal_type = serializers.CharField()
    outcome = serializers.CharField(allow_null=True)
    tally = serializers.DictField(help_text="The tally recorded when voting closed (or the live one).")
    executed_at = serializers.DateTimeField(allow_null=True)
    url = serializers.CharField()
    audit_url = serializers.CharField()


class MetricsServedLatencySerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    requests = serializers.IntegerField()
    error_rate = serializers.FloatField(allow_null=True)
    rejection_rate = serializers.FloatField(allow_null=True)
    latency_ms = MetricsLatencySetSerializer()


class MetricsComparisonSideSerializer(serializers.Serializer):
    manifest = serializers.IntegerField()
    label = serializers.CharField()
    benchmark = serializers.DictField(help_text="The manifest's benchmark metrics.")
    served = MetricsServedLatencySerializer(
        allow_null=True, help_text="Served latency from rollups (None: no traffic)."
    )


class MetricsComparisonSerializer(serializers.Serializer):
    new = MetricsComparisonSideSerializer(help_text="The adopted model, over the 7 days after adoption.")
    replaced = MetricsComparisonSideSerializer(allow_null=True, help_text="The replaced model, over the 7 days before.")


class MetricsEventRefSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    type = serializers.CharField()
    hash = serializers.CharField()


class MetricsParameterChangeSerializer(serializers.Serializer):
    name = serializers.CharField()
    old_value = serializers.IntegerField(allow_null=True)
    new_value = serializers.IntegerField(allow_null=True)


class MetricsAdoptionEntrySerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="genesis, adoption, retirement or parameter-change.")
    at = serializers.DateTimeField()
    actor = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)
    event = MetricsEventRefSerializer()
    audit_url = serializers.CharField()
    proposal = MetricsProposalBriefSerializer(allow_null=True)
    manifest = MetricsManifestBriefSerializer(allow_null=True)
    replaced = MetricsManifestBriefSerializer(allow_null=True)
    manifests = MetricsManifestBriefSerializer(many=True)
    parameter = MetricsParameterChangeSerializer(allow_null=True)
    comparison = MetricsComparisonSerializer(allow_null=True)


class MetricsAdoptionHistorySerializer(serializers.Serializer):
    entries = MetricsAdoptionEntrySerializer(many=True)


class MetricsLimitInputSerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=500, default=50)


# --- Governance ------------------------------------------------------------------------------


class MetricsOpenProposalSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    proposal_type = serializers.CharField()
    state = serializers.CharField()
    voting_starts_at = serializers.DateTimeField()
    voting_ends_at = serializers.DateTimeField()
    time_left_seconds = serializers.IntegerField(allow_null=True)
    tally = serializers.DictField()
    quorum_progress = serializers.FloatField()
    url = serializers.CharField()


class MetricsParticipationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    ended_at = serializers.DateTimeField()
    votes = serializers.IntegerField()
    eligible_voters = serializers.IntegerField()
    turnout = serializers.FloatField()
    state = serializers.CharField()


class MetricsVotesPerDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    votes = serializers.IntegerField()


class MetricsGovernanceSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    open_proposals = MetricsOpenProposalSerializer(many=True)
    participation = MetricsParticipationSerializer(many=True)
    votes_per_day = MetricsVotesPerDaySerializer(many=True)


# --- Fleet -----------------------------------------------------------------------------------


class MetricsWorkerSerializer(serializers.Serializer):
    name = serializers.CharField()
    host = serializers.CharField()
    queues = serializers.ListField(child=serializers.CharField())
    pool = serializers.CharField(allow_null=True)
    concurrency = serializers.IntegerField(allow_null=True)
    pid = serializers.IntegerField(allow_null=True)
    loaded_models = serializers.ListField(child=serializers.CharField())
    loading = serializers.BooleanField()
    approved_set_version = serializers.IntegerField(allow_null=True)
    memory_mb = serializers.FloatField(allow_null=True)
    last_heartbeat = serializers.DateTimeField(allow_null=True)
    heartbeat_age_seconds = serializers.FloatField(allow_null=True)
    answered_inspection = serializers.BooleanField()
    healthy = serializers.BooleanField()
    problems = serializers.ListField(child=serializers.CharField())


class MetricsBenchmarkProgressSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    manifest = serializers.IntegerField()
    label = serializers.CharField()
    status = serializers.CharField()
    stage = serializers.CharField(allow_blank=True)
    progress = serializers.FloatField()
    worker = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    url = serializers.CharField()


class MetricsNodeModelSerializer(serializers.Serializer):
    model = serializers.CharField()
    requests = serializers.IntegerField()


class MetricsNodeSerializer(serializers.Serializer):
    node = serializers.CharField()
    last_report = serializers.DateTimeField()
    signed_set_version = serializers.IntegerField(allow_null=True)
    approved_set_version = serializers.IntegerField(allow_null=True)
    circuit_breaker = serializers.CharField(
        allow_null=True, help_text="closed | open | half_open; null when the node sent none."
    )
    client_success_rate = serializers.FloatField(allow_null=True)
    models = MetricsNodeModelSerializer(many=True)


class MetricsServingNodeModelSerializer(serializers.Serializer):
    manifest_cid = serializers.CharField()
    model = serializers.CharField()
    fitness = serializers.FloatField(allow_null=True, help_text="0..1, learnt by the router; null: never routed to.")
    p50_ms = serializers.FloatField(allow_null=True, help_text="Observed by the platform over its recent window.")
    p95_ms = serializers.FloatField(allow_null=True)
    requests_in_window = serializers.IntegerField()
    traffic_share = serializers.FloatField(
        allow_null=True, help_text="This node's share of the model's routed requests in the window."
    )
    spot_checks = serializers.IntegerField()
    spot_agreement = serializers.FloatField(allow_null=True, help_text="Share of spot checks and votes it agreed in.")


class MetricsServingNodeSerializer(serializers.Serializer):
    node = serializers.CharField()
    url = serializers.CharField()
    last_heartbeat = serializers.DateTimeField()
    heartbeat_age_seconds = serializers.FloatField()
    heartbeat_fresh = serializers.BooleanField()
    breaker = serializers.CharField(allow_null=True, help_text="closed | open | half_open; null when unknown.")
    in_rotation = serializers.BooleanField(help_text="Heartbeat fresh and breaker not open.")
    running = serializers.IntegerField()
    waiting = serializers.IntegerField()
    queue_capacity = serializers.IntegerField()
    hardware = serializers.DictField()
    models = MetricsServingNodeModelSerializer(many=True)


class MetricsFleetSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    workers = MetricsWorkerSerializer(many=True)
    healthy_workers = serializers.IntegerField()
    benchmarks = MetricsBenchmarkProgressSerializer(many=True)
    nodes = MetricsNodeSerializer(many=True)
    routing = serializers.CharField(help_text="INFERENCE_ROUTING: local | federated | hybrid.")
    serving_nodes = MetricsServingNodeSerializer(many=True)


# --- Model page ------------------------------------------------------------------------------


class MetricsModelFileSerializer(MetricsFileSerializer):
    size_bytes = serializers.IntegerField()
    gateway_url = serializers.CharField()


class MetricsModelManifestSerializer(MetricsManifestBriefSerializer):
    format = serializers.CharField()
    quantization = serializers.CharField(allow_blank=True)
    size_bytes = serializers.IntegerField()
    approved_by_governance = serializers.BooleanField()
    adoption_date = serializers.DateTimeField(allow_null=True)
    retired_at = serializers.DateTimeField(allow_null=True)
    pin_status = serializers.CharField()
    source = serializers.DictField()
    metrics = serializers.DictField()
    files = MetricsModelFileSerializer(many=True)


class MetricsBenchmarkRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    progress = serializers.FloatField()
    stage = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    worker = serializers.CharField(allow_blank=True)
    hardware = serializers.DictField()
    library_versions = serializers.DictField()
    latency_ms = serializers.DictField()
    avg_tokens_per_sec = serializers.FloatField(allow_null=True)
    quality_score = serializers.FloatField(allow_null=True)
    memory_usage_mb = serializers.FloatField(allow_null=True)
    error = serializers.CharField(allow_blank=True)


class MetricsAdoptionRecordSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    type = serializers.CharField()
    at = serializers.DateTimeField()
    actor = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)
    proposal_id = serializers.IntegerField(allow_null=True)
    hash = serializers.CharField()


class MetricsModelPageSerializer(serializers.Serializer):
    manifest = MetricsModelManifestSerializer()
    benchmarks = MetricsBenchmarkRunSerializer(many=True)
    adoption_record = MetricsAdoptionRecordSerializer(many=True)
    proposals = MetricsProposalBriefSerializer(many=True)
    served_24h = MetricsServedLatencySerializer(allow_null=True)
    audit_url = serializers.CharField()


# --- Node latency ----------------------------------------------------------------------------


class MetricsNodeLatencyInputSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=200, help_text="name@version")
    node = serializers.CharField(required=False, max_length=150, help_text="One node (username); default all nodes.")
    window = serializers.ChoiceField(choices=list(WINDOWS), default="24h")
    end = serializers.DateTimeField(
        required=False, help_text="End of the window (ISO 8601, default now); the same end gives the same numbers."
    )


class MetricsNodeLatencySerializer(serializers.Serializer):
    model = serializers.CharField()
    node = serializers.CharField(allow_null=True, help_text="The node asked for; null for the whole network.")
    window = serializers.CharField()
    start = serializers.DateTimeField(help_text="Reports received from here ...")
    end = serializers.DateTimeField(help_text="... up to here (excluded).")
    reports = serializers.IntegerField(help_text="Reports whose latency sketches were merged.")
    unmergeable = serializers.IntegerField(
        help_text="Reports stored in an older summary form (fixed-bucket histograms), "
        "left out rather than approximated."
    )
    e2e = MetricsLatencyStatsSerializer()
