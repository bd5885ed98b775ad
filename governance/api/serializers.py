"""Input and output shapes of the governance API."""

from django.urls import reverse
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from governance.models import (
    GovernedParameter,
    Outcome,
    ParameterChange,
    Proposal,
    ProposalRules,
    ProposalState,
    ProposalType,
    Vote,
    VoteChoice,
    VoteHistory,
)
from governance.payloads import ModelAdoptionPayload, ModelRetirementPayload, ParameterChangePayload
from governance.selectors import proposal_tally, time_left

# --- Proposals ----------------------------------------------------------------------


class ProposalFilterSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=ProposalType.choices, required=False)
    state = serializers.ChoiceField(choices=ProposalState.choices, required=False)
    author = serializers.CharField(required=False, max_length=150)


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="ProposalPayload",
        serializers=[ModelAdoptionPayload, ModelRetirementPayload, ParameterChangePayload],
        resource_type_field_name=None,
    )
)
class PayloadField(serializers.JSONField):
    """The typed payload of the proposal's type (validated by the service)."""


class ProposalCreateInputSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=ProposalType.choices)
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="")
    payload = PayloadField()


# "for" is a keyword, so the tally's fields are declared by name.
TallyOutputSerializer = type(
    "TallyOutputSerializer",
    (serializers.Serializer,),
    {
        "for": serializers.IntegerField(),
        "against": serializers.IntegerField(),
        "abstain": serializers.IntegerField(),
        "total": serializers.IntegerField(),
        "eligible_voters": serializers.IntegerField(),
        "turnout": serializers.FloatField(),
        "quorum_votes": serializers.IntegerField(help_text="For + abstain votes cast."),
        "quorum_votes_required": serializers.IntegerField(),
        "quorum_reached": serializers.BooleanField(),
        "approval": serializers.FloatField(allow_null=True, help_text="For / (for + against); null before any."),
        "approval_threshold": serializers.FloatField(help_text="Approval must exceed this."),
        "approval_reached": serializers.BooleanField(),
        "passed": serializers.BooleanField(),
        "__module__": __name__,
    },
)


class CheckOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    passed = serializers.BooleanField()
    blocking = serializers.BooleanField()
    detail = serializers.CharField()


class _OutcomeField(serializers.ChoiceField):
    """The recorded outcome, null until voting has closed (never the blank the column stores)."""

    def to_representation(self, value):
        return value or None


class ProposalOutputSerializer(serializers.ModelSerializer):
    """A proposal read through `proposals_with_tally` (state and counts annotated)."""

    type = serializers.ChoiceField(source="proposal_type", choices=ProposalType.choices)
    author = serializers.CharField(source="author.username")
    state = serializers.ChoiceField(choices=ProposalState.choices)
    tally = serializers.SerializerMethodField()
    checks = CheckOutputSerializer(many=True)
    canceled_by = serializers.CharField(source="canceled_by.username", allow_null=True, default=None)
    outcome = _OutcomeField(
        choices=Outcome.choices,
        allow_null=True,
        help_text="passed or defeated once voting has closed; null while it is pending or open, and for a "
        "proposal canceled before it closed.",
    )
    seconds_left = serializers.SerializerMethodField(
        help_text="Seconds until the next step (opening, closing, the end of the timelock or of the grace period)."
    )
    url = serializers.SerializerMethodField(help_text="The proposal's page in the browser.")

    class Meta:
        model = Proposal
        fields = [
            "id",
            "type",
            "title",
            "description",
            "author",
            "state",
            "payload",
            "subject",
            "checks",
            "tally",
            "rules",
            "created_at",
            "voting_starts_at",
            "voting_ends_at",
            "execution_eta",
            "expires_at",
            "seconds_left",
            "opened_at",
            "closed_at",
            "outcome",
            "queued_at",
            "executed_at",
            "execution_result",
            "execution_error",
            "expired_at",
            "canceled_at",
            "canceled_by",
            "cancel_reason",
            "url",
        ]
        read_only_fields = fields

    @extend_schema_field(TallyOutputSerializer)
    def get_tally(self, proposal: Proposal) -> dict:
        return proposal_tally(proposal).as_dict()

    def get_seconds_left(self, proposal: Proposal) -> int | None:
        left = time_left(proposal, state=proposal.state, now=self.context.get("now"))
        return None if left is None else int(left.total_seconds())

    def get_url(self, proposal: Proposal) -> str:
        return reverse("governance:proposal-detail", args=[proposal.pk])


class CancelInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Recorded in the audit trail.")


# --- Votes ----------------------------------------------------------------------------


class VoteInputSerializer(serializers.Serializer):
    choice = serializers.ChoiceField(choices=VoteChoice.choices)
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class VoteOutputSerializer(serializers.ModelSerializer):
    voter = serializers.CharField(source="voter.username")

    class Meta:
        model = Vote
        fields = ["voter", "choice", "reason", "cast_at", "changes"]
        read_only_fields = fields


class VoteHistoryOutputSerializer(serializers.ModelSerializer):
    voter = serializers.CharField(source="voter.username")
    previous_choice = serializers.CharField(
        allow_blank=True, help_text="The vote this one replaced; blank for a first vote."
    )

    class Meta:
        model = VoteHistory
        fields = ["voter", "choice", "previous_choice", "reason", "cast_at"]
        read_only_fields = fields


class VoteReceiptOutputSerializer(serializers.Serializer):
    vote = VoteOutputSerializer()
    created = serializers.BooleanField(help_text="True for a first vote.")
    changed = serializers.BooleanField(help_text="True when it replaced an earlier, different vote.")
    tally = TallyOutputSerializer()


# --- Parameters and rules -----------------------------------------------------------------


class ParameterChangeOutputSerializer(serializers.ModelSerializer):
    proposal = serializers.IntegerField(source="proposal_id", allow_null=True)

    class Meta:
        model = ParameterChange
        fields = ["old_value", "new_value", "proposal", "changed_at"]
        read_only_fields = fields


class ParameterOutputSerializer(serializers.ModelSerializer):
    history = serializers.SerializerMethodField(help_text="Changes, newest first.")

    class Meta:
        model = GovernedParameter
        fields = ["name", "value", "minimum", "maximum", "unit", "description", "updated_at", "history"]
        read_only_fields = fields

    @extend_schema_field(ParameterChangeOutputSerializer(many=True))
    def get_history(self, parameter: GovernedParameter) -> list:
        changes = self.context.get("history", {}).get(parameter.name, [])
        return ParameterChangeOutputSerializer(changes, many=True).data


class RulesOutputSerializer(serializers.ModelSerializer):
    type = serializers.ChoiceField(source="proposal_type", choices=ProposalType.choices)

    class Meta:
        model = ProposalRules
        fields = [
            "type",
            "voting_delay_seconds",
            "voting_period_seconds",
            "quorum",
            "approval_threshold",
            "timelock_seconds",
            "grace_period_seconds",
            "updated_at",
        ]
        read_only_fields = fields


class RulesUpdateInputSerializer(serializers.Serializer):
    voting_delay_seconds = serializers.IntegerField(min_value=0, required=False)
    voting_period_seconds = serializers.IntegerField(min_value=0, required=False)
    quorum = serializers.DecimalField(max_digits=5, decimal_places=4, required=False)
    approval_threshold = serializers.DecimalField(max_digits=5, decimal_places=4, required=False)
    timelock_seconds = serializers.IntegerField(min_value=0, required=False)
    grace_period_seconds = serializers.IntegerField(min_value=0, required=False)

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Not a rule."] for name in unknown})
        if not attrs:
            raise serializers.ValidationError("Give at least one rule to change.")
        return attrs
