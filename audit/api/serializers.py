"""Shapes of the audit API."""

from rest_framework import serializers

from audit.models import AuditCheckpoint, AuditEvent, EventType


class AuditEventFilterSerializer(serializers.Serializer):
    object_type = serializers.CharField(required=False, max_length=64)
    object_id = serializers.CharField(required=False, max_length=64)
    actor = serializers.CharField(required=False, max_length=150, help_text="Username, or `system`.")
    event_type = serializers.ChoiceField(choices=EventType.choices, required=False)
    after_seq = serializers.IntegerField(required=False, min_value=0, help_text="Only events after this one.")
    after = serializers.IntegerField(
        required=False, min_value=0, help_text="Only events after this seq (with `upto`: the events between two heads)."
    )
    upto = serializers.IntegerField(required=False, min_value=0, help_text="Only events up to and including this seq.")


class AuditEventOutputSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_label")

    class Meta:
        model = AuditEvent
        fields = [
            "seq",
            "event_type",
            "actor",
            "object_type",
            "object_id",
            "payload",
            "created_at",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields


class CheckpointVerificationSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    checked = serializers.IntegerField()
    problems = serializers.ListField(child=serializers.CharField())


class ChainVerificationOutputSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="True when the chain and every checkpoint verify.")
    events_checked = serializers.IntegerField()
    head_seq = serializers.IntegerField()
    head_hash = serializers.CharField()
    first_broken_seq = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    checkpoints = CheckpointVerificationSerializer()


class AuditCheckpointOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditCheckpoint
        fields = ["seq", "hash", "cid", "created_at"]
        read_only_fields = fields
