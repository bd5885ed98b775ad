from rest_framework import serializers

from registry.models import Manifest, ManifestFile, ManifestStatus, ModelFormat, ModelKind


class ManifestFileOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = ManifestFile
        fields = ["path", "role", "size_bytes", "sha256", "cid"]


class LatencySerializer(serializers.Serializer):
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class MetricsSerializer(serializers.Serializer):
    avg_tokens_per_sec = serializers.FloatField(allow_null=True)
    memory_usage_mb = serializers.FloatField(allow_null=True)
    quality_score = serializers.FloatField(allow_null=True)
    latency_ms = LatencySerializer()


class ManifestOutputSerializer(serializers.ModelSerializer):
    files = ManifestFileOutputSerializer(many=True, read_only=True)
    metrics = MetricsSerializer(read_only=True)

    class Meta:
        model = Manifest
        fields = [
            "id",
            "model_name",
            "version",
            "kind",
            "format",
            "quantization",
            "size_bytes",
            "sha256",
            "ipfs_cid",
            "license",
            "approved_by_governance",
            "adoption_date",
            "metrics",
            "files",
            "status",
            "source",
            "pin_status",
            "pin_error",
            "pinned_at",
            "manifest_cid",
            "retired_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ManifestFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=ManifestStatus.choices, required=False)
    kind = serializers.ChoiceField(choices=ModelKind.choices, required=False)
    format = serializers.ChoiceField(choices=ModelFormat.choices, required=False)
    model_name = serializers.CharField(required=False, max_length=128)


class ManifestUploadInputSerializer(serializers.Serializer):
    model_name = serializers.CharField(max_length=128)
    version = serializers.CharField(max_length=64)
    kind = serializers.ChoiceField(choices=ModelKind.choices)
    format = serializers.ChoiceField(choices=ModelFormat.choices)
    license = serializers.CharField(max_length=64)
    quantization = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    files = serializers.ListField(child=serializers.FileField(), allow_empty=False)


class ApprovedSetOutputSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    generated_at = serializers.CharField(allow_null=True)
    cid = serializers.CharField(allow_null=True)
    manifests = serializers.ListField(child=serializers.DictField())
