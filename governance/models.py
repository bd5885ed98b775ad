"""Proposals, votes, the rules each proposal type runs under, and governed parameters.

A proposal's state is not stored: `governance.selectors.proposal_state`
derives it from the clock, the tally and the facts recorded here (opened,
closed, queued, executed, expired, canceled). The beat records those facts
as they happen; reads between beats are still right.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone


class ProposalType(models.TextChoices):
    MODEL_ADOPTION = "model-adoption", "Model adoption"
    MODEL_RETIREMENT = "model-retirement", "Model retirement"
    PARAMETER_CHANGE = "parameter-change", "Parameter change"


class ProposalState(models.TextChoices):
    PENDING = "pending", "Pending"
    ACTIVE = "active", "Active"
    CANCELED = "canceled", "Canceled"
    DEFEATED = "defeated", "Defeated"
    SUCCEEDED = "succeeded", "Succeeded"
    QUEUED = "queued", "Queued"
    EXPIRED = "expired", "Expired"
    EXECUTED = "executed", "Executed"


# States after which nothing about a proposal can change any more.
TERMINAL_STATES = frozenset(
    {ProposalState.CANCELED, ProposalState.DEFEATED, ProposalState.EXPIRED, ProposalState.EXECUTED}
)


class VoteChoice(models.TextChoices):
    FOR = "for", "For"
    AGAINST = "against", "Against"
    ABSTAIN = "abstain", "Abstain"


class Outcome(models.TextChoices):
    PASSED = "passed", "Passed"
    DEFEATED = "defeated", "Defeated"


_FRACTION = {"max_digits": 5, "decimal_places": 4}
_MAX_SECONDS = 365 * 24 * 3600


class ProposalRules(models.Model):
    """The rules a proposal type runs under; each proposal freezes a copy.

    `quorum`: the fraction of eligible voters whose for + abstain votes must
    be cast. `approval_threshold`: the fraction for / (for + against) must
    exceed (0.5 means more for than against).
    """

    proposal_type = models.CharField(max_length=32, choices=ProposalType.choices, unique=True)
    voting_delay_seconds = models.PositiveIntegerField(validators=[MaxValueValidator(_MAX_SECONDS)])
    voting_period_seconds = models.PositiveIntegerField(
        validators=[MinValueValidator(60), MaxValueValidator(_MAX_SECONDS)]
    )
    quorum = models.DecimalField(
        **_FRACTION, validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))]
    )
    approval_threshold = models.DecimalField(
        **_FRACTION, validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("0.9999"))]
    )
    timelock_seconds = models.PositiveIntegerField(validators=[MaxValueValidator(_MAX_SECONDS)])
    grace_period_seconds = models.PositiveIntegerField(
        validators=[MinValueValidator(60), MaxValueValidator(_MAX_SECONDS)]
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "proposal rules"
        verbose_name_plural = "proposal rules"
        ordering = ["proposal_type"]

    def __str__(self) -> str:
        return f"rules for {self.proposal_type}"

    def as_document(self) -> dict:
        """The frozen copy a proposal keeps (decimals as strings, exactly)."""
        return {name: _jsonable(getattr(self, name)) for name in RULE_FIELDS}


RULE_FIELDS = (
    "voting_delay_seconds",
    "voting_period_seconds",
    "quorum",
    "approval_threshold",
    "timelock_seconds",
    "grace_period_seconds",
)


def _jsonable(value):
    # Quantised, so a value typed as "0.6" and one read back as "0.6000" freeze alike.
    return str(Decimal(value).quantize(Decimal("0.0001"))) if isinstance(value, Decimal) else value


class Proposal(models.Model):
    """A typed change put to a vote, with the rules and checks it was created under.

    `subject` names what the proposal acts on ("parameter:queue_size",
    "manifest:12") so two open proposals cannot act on the same thing.
    `eligible_voters` is the number of contributors and operators when the
    proposal was created: the quorum is a fraction of that snapshot, so
    granting roles during a vote cannot move the goalposts.
    """

    proposal_type = models.CharField(max_length=32, choices=ProposalType.choices, db_index=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="proposals")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=10_000)
    payload = models.JSONField(default=dict)
    subject = models.CharField(max_length=160, db_index=True)
    rules = models.JSONField(default=dict)
    checks = models.JSONField(default=list)

    eligible_voters = models.PositiveIntegerField()
    quorum_votes_required = models.PositiveIntegerField()
    # for * 10000 must exceed this * (for + against): integer maths, same in SQL and Python.
    approval_threshold_bp = models.PositiveSmallIntegerField(validators=[MaxValueValidator(9999)])

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    voting_starts_at = models.DateTimeField()
    voting_ends_at = models.DateTimeField(db_index=True)
    execution_eta = models.DateTimeField()
    expires_at = models.DateTimeField()

    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True)
    final_tally = models.JSONField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    execution_result = models.JSONField(default=dict, blank=True)
    execution_error = models.TextField(blank=True)
    execution_attempted_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    canceled_at = models.DateTimeField(null=True, blank=True)
    canceled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    cancel_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(voting_starts_at__gte=models.F("created_at")),
                name="proposal_starts_after_creation",
            ),
            models.CheckConstraint(
                condition=models.Q(voting_ends_at__gt=models.F("voting_starts_at")),
                name="proposal_ends_after_start",
            ),
            models.CheckConstraint(
                condition=models.Q(execution_eta__gte=models.F("voting_ends_at")),
                name="proposal_eta_after_end",
            ),
            models.CheckConstraint(
                condition=models.Q(expires_at__gt=models.F("execution_eta")),
                name="proposal_expiry_after_eta",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"


class Vote(models.Model):
    """The one counted vote of a voter on a proposal; a later vote replaces it."""

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="votes")
    voter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="votes")
    choice = models.CharField(max_length=8, choices=VoteChoice.choices)
    reason = models.TextField(blank=True, max_length=2000)
    cast_at = models.DateTimeField()
    changes = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["proposal_id", "cast_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["proposal", "voter"], name="vote_one_per_voter"),
        ]
        indexes = [models.Index(fields=["proposal", "choice"])]

    def __str__(self) -> str:
        return f"{self.voter_id} {self.choice} on #{self.proposal_id}"


class VoteHistory(models.Model):
    """Every vote ever cast, including the ones later replaced."""

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="vote_history")
    voter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    choice = models.CharField(max_length=8, choices=VoteChoice.choices)
    previous_choice = models.CharField(max_length=8, choices=VoteChoice.choices, blank=True)
    reason = models.TextField(blank=True, max_length=2000)
    cast_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "vote history"
        ordering = ["proposal_id", "cast_at", "id"]

    def __str__(self) -> str:
        return f"{self.voter_id} {self.choice} on #{self.proposal_id} at {self.cast_at:%Y-%m-%d %H:%M:%S}"


@dataclass(frozen=True)
class ParameterDefinition:
    name: str
    default: int
    minimum: int
    maximum: int
    unit: str
    description: str


# The runtime limits nodes and inference workers enforce (the roadmap's values).
PARAMETER_DEFINITIONS: tuple[ParameterDefinition, ...] = (
    ParameterDefinition("max_tokens_per_request", 512, 1, 8192, "tokens", "Most tokens one request may generate."),
    ParameterDefinition("max_concurrent_requests", 2, 1, 64, "requests", "Requests a worker serves at once."),
    ParameterDefinition("request_timeout_seconds", 30, 1, 600, "seconds", "Server-side deadline of one request."),
    ParameterDefinition("memory_limit_mb", 2048, 256, 65536, "MB", "Memory a node gives its loaded models."),
    ParameterDefinition("queue_size", 5, 0, 1000, "requests", "Requests that may wait for a worker before 503."),
)
PARAMETERS_BY_NAME = {definition.name: definition for definition in PARAMETER_DEFINITIONS}


class GovernedParameter(models.Model):
    """A runtime limit that only an executed parameter-change proposal changes."""

    name = models.SlugField(max_length=64, unique=True)
    value = models.BigIntegerField()
    minimum = models.BigIntegerField()
    maximum = models.BigIntegerField()
    unit = models.CharField(max_length=32, blank=True)
    description = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(minimum__lte=models.F("value")) & models.Q(value__lte=models.F("maximum")),
                name="parameter_value_within_bounds",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"

    @classmethod
    def from_definition(cls, definition: ParameterDefinition) -> "GovernedParameter":
        return cls(
            name=definition.name,
            value=definition.default,
            minimum=definition.minimum,
            maximum=definition.maximum,
            unit=definition.unit,
            description=definition.description,
        )


class ParameterChange(models.Model):
    """One change of a governed parameter and the proposal that made it."""

    parameter = models.ForeignKey(GovernedParameter, on_delete=models.CASCADE, related_name="changes")
    old_value = models.BigIntegerField()
    new_value = models.BigIntegerField()
    proposal = models.ForeignKey(Proposal, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    changed_at = models.DateTimeField()

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.parameter.name}: {self.old_value} -> {self.new_value}"
