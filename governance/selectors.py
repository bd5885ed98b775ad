"""Reads: rules, parameters, tallies and the state of proposals.

A proposal's state is derived here from the clock, its tally and the facts
the beat recorded, so a read between two beats is still right. The same
rules exist twice: `proposal_state` in Python for one proposal, and
`proposals_with_tally` as one SQL expression so lists filter and page by
state without a query per row; tests hold the two to each other.
"""

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    Count,
    ExpressionWrapper,
    F,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.utils import timezone

from accounts.models import Role
from core.errors import NotFound
from governance.models import (
    PARAMETER_DEFINITIONS,
    PARAMETERS_BY_NAME,
    TERMINAL_STATES,
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

# --- Rules --------------------------------------------------------------------


def rules_defaults(proposal_type: str) -> ProposalRules:
    """The rules a type starts with, from settings (unsaved)."""
    return ProposalRules(
        proposal_type=proposal_type,
        voting_delay_seconds=settings.GOVERNANCE_VOTING_DELAY_SECONDS,
        voting_period_seconds=settings.GOVERNANCE_VOTING_PERIOD_SECONDS,
        quorum=Decimal(str(settings.GOVERNANCE_QUORUM)),
        approval_threshold=Decimal(str(settings.GOVERNANCE_APPROVAL_THRESHOLD)),
        timelock_seconds=settings.GOVERNANCE_TIMELOCK_SECONDS,
        grace_period_seconds=settings.GOVERNANCE_GRACE_PERIOD_SECONDS,
    )


def rules_for(proposal_type: str) -> ProposalRules:
    """The live rules of a type: its row, or the defaults if none was saved yet."""
    if proposal_type not in ProposalType.values:
        raise NotFound(f"No proposal type {proposal_type!r}; choose one of {', '.join(ProposalType.values)}.")
    return ProposalRules.objects.filter(proposal_type=proposal_type).first() or rules_defaults(proposal_type)


def rules_all() -> list[ProposalRules]:
    saved = {rules.proposal_type: rules for rules in ProposalRules.objects.all()}
    return [saved.get(kind) or rules_defaults(kind) for kind in ProposalType.values]


# --- Governed parameters ------------------------------------------------------


def runtime_parameters() -> dict[str, int]:
    """Every governed limit's current value, in one query.

    Inference workers call this per request (or per batch), so a value an
    executed proposal changed applies without a restart.
    """
    values = {definition.name: definition.default for definition in PARAMETER_DEFINITIONS}
    values.update(GovernedParameter.objects.values_list("name", "value"))
    return values


def runtime_parameter(name: str) -> int:
    if name not in PARAMETERS_BY_NAME:
        raise KeyError(f"{name!r} is not a governed parameter")
    value = GovernedParameter.objects.filter(name=name).values_list("value", flat=True).first()
    return PARAMETERS_BY_NAME[name].default if value is None else value


def parameters_current() -> list[GovernedParameter]:
    """Every governed parameter; rows not saved yet appear with their defaults."""
    saved = {parameter.name: parameter for parameter in GovernedParameter.objects.all()}
    return [saved.get(d.name) or GovernedParameter.from_definition(d) for d in PARAMETER_DEFINITIONS]


def parameter_get(name: str) -> GovernedParameter:
    definition = PARAMETERS_BY_NAME.get(name)
    if definition is None:
        raise NotFound(f"No governed parameter {name!r}; known: {', '.join(PARAMETERS_BY_NAME)}.")
    return GovernedParameter.objects.filter(name=name).first() or GovernedParameter.from_definition(definition)


def parameter_history(*, names: list[str] | None = None) -> QuerySet[ParameterChange]:
    changes = ParameterChange.objects.select_related("parameter").order_by("-changed_at", "-id")
    if names is not None:
        changes = changes.filter(parameter__name__in=names)
    return changes


# --- Voters ---------------------------------------------------------------------


def eligible_voters_count() -> int:
    """Active users who may vote: contributors and operators (superusers count as operators)."""
    user_model = get_user_model()
    return (
        user_model.objects.filter(is_active=True)
        .filter(Q(groups__name__in=[Role.CONTRIBUTOR, Role.OPERATOR]) | Q(is_superuser=True))
        .distinct()
        .count()
    )


# --- Tally and state ---------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    votes_for: int
    votes_against: int
    votes_abstain: int
    eligible_voters: int
    quorum_votes_required: int
    approval_threshold_bp: int

    @property
    def total(self) -> int:
        return self.votes_for + self.votes_against + self.votes_abstain

    @property
    def quorum_votes(self) -> int:
        return self.votes_for + self.votes_abstain

    @property
    def quorum_reached(self) -> bool:
        return self.quorum_votes >= self.quorum_votes_required

    @property
    def approval_reached(self) -> bool:
        return self.votes_for * 10000 > self.approval_threshold_bp * (self.votes_for + self.votes_against)

    @property
    def passed(self) -> bool:
        return self.quorum_reached and self.approval_reached

    @property
    def approval(self) -> float | None:
        decided = self.votes_for + self.votes_against
        return self.votes_for / decided if decided else None

    @property
    def turnout(self) -> float:
        return self.total / self.eligible_voters if self.eligible_voters else 0.0

    @property
    def quorum_progress(self) -> float:
        if self.quorum_votes_required == 0:
            return 1.0
        return min(1.0, self.quorum_votes / self.quorum_votes_required)

    def as_dict(self) -> dict:
        return {
            "for": self.votes_for,
            "against": self.votes_against,
            "abstain": self.votes_abstain,
            "total": self.total,
            "eligible_voters": self.eligible_voters,
            "turnout": round(self.turnout, 4),
            "quorum_votes": self.quorum_votes,
            "quorum_votes_required": self.quorum_votes_required,
            "quorum_reached": self.quorum_reached,
            "approval": None if self.approval is None else round(self.approval, 4),
            "approval_threshold": self.approval_threshold_bp / 10000,
            "approval_reached": self.approval_reached,
            "passed": self.passed,
        }


def quorum_votes_required(*, quorum: Decimal, eligible_voters: int) -> int:
    return math.ceil(Decimal(quorum) * eligible_voters)


def _count_of(choice: str) -> Subquery:
    """COUNT of one choice's votes for the outer proposal, answered from the (proposal, choice) index.

    A correlated subquery rather than JOIN + GROUP BY: a page of a long list
    then counts votes only for the rows it shows, and one proposal never drags
    its other columns through a 100,000-row aggregate.
    """
    votes = (
        Vote.objects.filter(proposal=OuterRef("pk"), choice=choice)
        .order_by()
        .annotate(n=Func(F("id"), function="COUNT"))
        .values("n")
    )
    return Subquery(votes, output_field=BigIntegerField())


def _tally_counts() -> dict:
    return {
        "votes_for": _count_of(VoteChoice.FOR),
        "votes_against": _count_of(VoteChoice.AGAINST),
        "votes_abstain": _count_of(VoteChoice.ABSTAIN),
    }


def proposal_tally(proposal: Proposal) -> Tally:
    """The proposal's tally: from its annotations when listed, else one aggregate query."""
    if hasattr(proposal, "votes_for"):
        counts = {
            "votes_for": proposal.votes_for,
            "votes_against": proposal.votes_against,
            "votes_abstain": proposal.votes_abstain,
        }
    else:
        counts = Vote.objects.filter(proposal_id=proposal.pk).aggregate(
            votes_for=Count("id", filter=Q(choice=VoteChoice.FOR)),
            votes_against=Count("id", filter=Q(choice=VoteChoice.AGAINST)),
            votes_abstain=Count("id", filter=Q(choice=VoteChoice.ABSTAIN)),
        )
    return Tally(
        **counts,
        eligible_voters=proposal.eligible_voters,
        quorum_votes_required=proposal.quorum_votes_required,
        approval_threshold_bp=proposal.approval_threshold_bp,
    )


def proposal_state(proposal: Proposal, *, now: dt.datetime | None = None, tally: Tally | None = None) -> ProposalState:
    """Pending → Active → Defeated | Succeeded → Queued → Executed; or Canceled, Expired.

    Succeeded and Queued differ by a recorded fact (the beat queued it); the
    timelock itself runs from the end of voting, so it never depends on when
    a beat happened to run. Once the beat has recorded the outcome, that is
    used instead of recounting (it was counted from the same, frozen votes).
    """
    now = now or timezone.now()
    if proposal.canceled_at is not None:
        return ProposalState.CANCELED
    if proposal.executed_at is not None:
        return ProposalState.EXECUTED
    if now < proposal.voting_starts_at:
        return ProposalState.PENDING
    if now < proposal.voting_ends_at:
        return ProposalState.ACTIVE
    if proposal.outcome:
        # Recorded at the close from this same tally; votes cannot change after it.
        passed = proposal.outcome == Outcome.PASSED
    else:
        passed = (tally or proposal_tally(proposal)).passed
    if not passed:
        return ProposalState.DEFEATED
    if now >= proposal.expires_at:
        return ProposalState.EXPIRED
    if proposal.queued_at is None:
        return ProposalState.SUCCEEDED
    return ProposalState.QUEUED


def proposals_with_tally(*, now: dt.datetime | None = None) -> QuerySet[Proposal]:
    """Proposals annotated with votes_for/against/abstain and `state`, in one query.

    Counting happens in the database, per proposal, through the
    (proposal, choice) index; filtering by state is a WHERE on the same
    expression, so a page costs the same two queries (count, rows) at any size.

    The state expression mirrors `proposal_state` line for line.
    """
    now = now or timezone.now()
    passed = Q(quorum_margin__gte=0) & Q(approval_margin__gt=0)
    return (
        Proposal.objects.select_related("author", "canceled_by")
        .annotate(**_tally_counts())
        .annotate(
            quorum_margin=ExpressionWrapper(
                F("votes_for") + F("votes_abstain") - F("quorum_votes_required"), output_field=BigIntegerField()
            ),
            approval_margin=ExpressionWrapper(
                F("votes_for") * 10000 - F("approval_threshold_bp") * (F("votes_for") + F("votes_against")),
                output_field=BigIntegerField(),
            ),
        )
        .annotate(
            state=Case(
                When(canceled_at__isnull=False, then=Value(ProposalState.CANCELED.value)),
                When(executed_at__isnull=False, then=Value(ProposalState.EXECUTED.value)),
                When(voting_starts_at__gt=now, then=Value(ProposalState.PENDING.value)),
                When(voting_ends_at__gt=now, then=Value(ProposalState.ACTIVE.value)),
                When(outcome=Outcome.DEFEATED, then=Value(ProposalState.DEFEATED.value)),
                When(Q(outcome="") & ~passed, then=Value(ProposalState.DEFEATED.value)),
                When(expires_at__lte=now, then=Value(ProposalState.EXPIRED.value)),
                When(queued_at__isnull=True, then=Value(ProposalState.SUCCEEDED.value)),
                default=Value(ProposalState.QUEUED.value),
                output_field=CharField(),
            )
        )
    )


def proposal_list(
    *,
    proposal_type: str | None = None,
    state: str | None = None,
    author: str | None = None,
    now: dt.datetime | None = None,
) -> QuerySet[Proposal]:
    proposals = proposals_with_tally(now=now)
    if proposal_type:
        proposals = proposals.filter(proposal_type=proposal_type)
    if author:
        proposals = proposals.filter(author__username=author)
    if state:
        proposals = proposals.filter(_implied_by_state(state, now or timezone.now()), state=state)
    return proposals.order_by("-created_at", "-id")


def _implied_by_state(state: str, now: dt.datetime) -> Q:
    """Cheap column conditions every proposal in `state` meets.

    They add nothing to the state filter's meaning; they let the database
    discard most rows on plain columns before it evaluates the tally
    subqueries the state expression may need.
    """
    live = Q(canceled_at__isnull=True, executed_at__isnull=True)
    ended = live & Q(voting_ends_at__lte=now)
    return {
        ProposalState.CANCELED: Q(canceled_at__isnull=False),
        ProposalState.EXECUTED: Q(canceled_at__isnull=True, executed_at__isnull=False),
        ProposalState.PENDING: live & Q(voting_starts_at__gt=now),
        ProposalState.ACTIVE: live & Q(voting_starts_at__lte=now, voting_ends_at__gt=now),
        ProposalState.DEFEATED: ended & ~Q(outcome=Outcome.PASSED),
        ProposalState.EXPIRED: ended & ~Q(outcome=Outcome.DEFEATED) & Q(expires_at__lte=now),
        ProposalState.SUCCEEDED: ended & ~Q(outcome=Outcome.DEFEATED) & Q(expires_at__gt=now, queued_at__isnull=True),
        ProposalState.QUEUED: ended & ~Q(outcome=Outcome.DEFEATED) & Q(expires_at__gt=now, queued_at__isnull=False),
    }.get(state, Q())


def proposal_find(proposal_id: int) -> Proposal:
    """One proposal, plain (no annotations), or NotFound."""
    proposal = Proposal.objects.select_related("author").filter(pk=proposal_id).first()
    if proposal is None:
        raise NotFound(f"Proposal {proposal_id} does not exist.")
    return proposal


def proposal_get(proposal_id: int, *, now: dt.datetime | None = None) -> Proposal:
    """One proposal with its tally and state annotated, or NotFound."""
    proposal = proposals_with_tally(now=now).filter(pk=proposal_id).first()
    if proposal is None:
        raise NotFound(f"Proposal {proposal_id} does not exist.")
    return proposal


def proposals_open_on_subject(*, subject: str, now: dt.datetime | None = None) -> QuerySet[Proposal]:
    """Proposals on `subject` that can still change something (not in a terminal state)."""
    return proposals_with_tally(now=now).filter(subject=subject).exclude(state__in=[s.value for s in TERMINAL_STATES])


def proposals_needing_advance(*, now: dt.datetime | None = None) -> list[int]:
    """Ids of proposals with a transition due that the beat has not recorded yet."""
    now = now or timezone.now()
    live = Q(canceled_at__isnull=True, executed_at__isnull=True, expired_at__isnull=True)
    due = (
        Q(opened_at__isnull=True, voting_starts_at__lte=now)
        | Q(closed_at__isnull=True, voting_ends_at__lte=now)
        | Q(outcome="passed", queued_at__isnull=True)
        | Q(queued_at__isnull=False, execution_eta__lte=now)
        | Q(outcome="passed", expires_at__lte=now)
    )
    return list(Proposal.objects.filter(live & due).order_by("id").values_list("id", flat=True))


def time_left(proposal: Proposal, *, state: str, now: dt.datetime | None = None) -> dt.timedelta | None:
    """Time until the next thing happens to the proposal (opening, closing, execution window)."""
    now = now or timezone.now()
    target = {
        ProposalState.PENDING: proposal.voting_starts_at,
        ProposalState.ACTIVE: proposal.voting_ends_at,
        ProposalState.SUCCEEDED: proposal.execution_eta,
        ProposalState.QUEUED: proposal.execution_eta if now < proposal.execution_eta else proposal.expires_at,
    }.get(state)
    return None if target is None else max(target - now, dt.timedelta(0))


# --- Content checks ---------------------------------------------------------------


def proposal_checks(proposal: Proposal) -> list[dict]:
    """The proposal's content checks as its page shows them.

    Most were settled when the proposal was created and are shown as
    recorded. One that can change since (the candidate's benchmark) is run
    again and shown as it is now, with `first_run_at` (the proposal's
    creation) and, when it said something else then, `first_detail`.
    """
    from governance.checks import CHANGING_CHECKS
    from registry.models import Manifest

    subject_id = (proposal.payload or {}).get("candidate")
    subject = Manifest.objects.filter(pk=subject_id).first() if subject_id else None
    shown = []
    for recorded in proposal.checks or []:
        check = {**recorded, "changing": False, "first_run_at": proposal.created_at, "first_detail": None}
        rerun = CHANGING_CHECKS.get(recorded.get("name"))
        if rerun is not None and subject is not None:
            now = rerun(subject).as_dict()
            check.update(now, changing=True)
            if now["detail"] != recorded.get("detail"):
                check["first_detail"] = recorded.get("detail")
        shown.append(check)
    return shown


# --- Votes ----------------------------------------------------------------------


def proposal_votes(proposal: Proposal) -> QuerySet[Vote]:
    return Vote.objects.filter(proposal=proposal).select_related("voter").order_by("cast_at", "id")


def proposal_vote_history(proposal: Proposal) -> QuerySet[VoteHistory]:
    return VoteHistory.objects.filter(proposal=proposal).select_related("voter").order_by("-cast_at", "-id")


def vote_of(*, proposal: Proposal, user) -> Vote | None:
    if not user or not user.is_authenticated:
        return None
    return Vote.objects.filter(proposal=proposal, voter=user).first()
