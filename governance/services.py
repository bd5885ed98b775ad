"""Writes: rules, proposals, votes, the beat's transitions and binding execution.

Every change is one transaction that also appends its audit event. The
proposal row is the lock that orders everything done to one proposal: a
vote, a cancel, a transition and the execution each lock it first and
re-read the clock afterwards, so two beats, two workers or a late vote
racing the close all see one order.
"""

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import Role
from accounts.selectors import user_has_role
from core.errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from core.locks import transaction_lock
from governance import events
from governance.checks import failed_checks
from governance.models import (
    PARAMETERS_BY_NAME,
    RULE_FIELDS,
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
from governance.payloads import payload_parse, payload_resolve
from governance.selectors import (
    eligible_voters_count,
    proposal_state,
    proposal_tally,
    proposals_needing_advance,
    proposals_open_on_subject,
    quorum_votes_required,
    rules_for,
)
from governance.signals import candidate_benchmark_requested, runtime_parameters_changed

logger = logging.getLogger(__name__)

REASON_MAX_LENGTH = 2000
DESCRIPTION_MAX_LENGTH = 10_000


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or timezone.now()


def _require_role(user, *roles: str, action: str) -> None:
    if not user_has_role(user, *roles):
        raise Forbidden(f"{action} needs the {' or '.join(roles)} role.")


def _full_clean(instance, *, exclude: list[str] | None = None) -> None:
    try:
        instance.full_clean(exclude=exclude)
    except ValidationError as exc:
        fields = {name: [str(m) for m in messages] for name, messages in exc.message_dict.items()}
        summary = "; ".join(f"{name}: {messages[0]}" for name, messages in fields.items())
        raise ValidationFailed(f"Invalid input. {summary}", fields=fields) from exc


def _clean_reason(reason: str, *, required: bool, field: str = "reason") -> str:
    reason = (reason or "").strip()
    if required and not reason:
        raise ValidationFailed(f"A {field} is required.", fields={field: ["This field is required."]})
    if len(reason) > REASON_MAX_LENGTH:
        raise ValidationFailed(
            f"The {field} is too long.", fields={field: [f"At most {REASON_MAX_LENGTH} characters."]}
        )
    return reason


def _locked_proposal(proposal_id: int) -> Proposal:
    proposal = Proposal.objects.select_for_update().filter(pk=proposal_id).first()
    if proposal is None:
        raise NotFound(f"Proposal {proposal_id} does not exist.")
    return proposal


# --- Rules ------------------------------------------------------------------------


def rules_ensure(proposal_type: str) -> ProposalRules:
    """The type's rules row, created from the settings' defaults if missing."""
    rules = rules_for(proposal_type)
    if rules.pk is None:
        defaults = {name: getattr(rules, name) for name in RULE_FIELDS}
        rules, _ = ProposalRules.objects.get_or_create(proposal_type=proposal_type, defaults=defaults)
    return rules


@transaction.atomic
def rules_update(*, proposal_type: str, actor, changes: dict) -> ProposalRules:
    """Change some of a type's rules (operators only). Open proposals keep their frozen copy."""
    _require_role(actor, Role.OPERATOR, action="Changing the rules")
    unknown = sorted(set(changes) - set(RULE_FIELDS))
    if unknown:
        raise ValidationFailed(
            f"Unknown rule(s): {', '.join(unknown)}.",
            fields={name: [f"Not a rule; the rules are {', '.join(RULE_FIELDS)}."] for name in unknown},
        )
    rules_ensure(proposal_type)
    rules = ProposalRules.objects.select_for_update().get(proposal_type=proposal_type)
    before = rules.as_document()
    for name, value in changes.items():
        setattr(rules, name, value)
    _full_clean(rules)
    after = rules.as_document()
    if after == before:
        return rules
    rules.save()
    events.rules_changed_event(rules=rules, actor=actor, before=before, after=after)
    return rules


# --- Parameters ---------------------------------------------------------------------


def parameter_ensure(name: str) -> GovernedParameter:
    definition = PARAMETERS_BY_NAME.get(name)
    if definition is None:
        raise NotFound(f"No governed parameter {name!r}; known: {', '.join(PARAMETERS_BY_NAME)}.")
    parameter, _ = GovernedParameter.objects.get_or_create(
        name=name,
        defaults={
            "value": definition.default,
            "minimum": definition.minimum,
            "maximum": definition.maximum,
            "unit": definition.unit,
            "description": definition.description,
        },
    )
    return parameter


def _parameter_apply(*, proposal: Proposal, now: dt.datetime) -> dict:
    name = proposal.payload["parameter"]
    parameter_ensure(name)
    parameter = GovernedParameter.objects.select_for_update().get(name=name)
    old_value = parameter.value
    parameter.value = proposal.payload["value"]
    if not parameter.minimum <= parameter.value <= parameter.maximum:
        raise Conflict(
            f"{name}={parameter.value} is outside its bounds [{parameter.minimum}, {parameter.maximum}] now.",
            code="parameter_out_of_bounds",
        )
    parameter.save(update_fields=["value", "updated_at"])
    ParameterChange.objects.create(
        parameter=parameter, old_value=old_value, new_value=parameter.value, proposal=proposal, changed_at=now
    )
    events.parameter_changed_event(parameter=parameter, old_value=old_value, proposal=proposal)
    # Nodes read the limits from the signed set: sign it anew with the new value.
    transaction.on_commit(_signed_set_refresh_enqueue)
    return {"parameter": name, "old_value": old_value, "new_value": parameter.value}


def _signed_set_refresh_enqueue() -> None:
    runtime_parameters_changed.send(sender=GovernedParameter)


# --- Proposals ------------------------------------------------------------------------


def proposal_create(
    *,
    author,
    proposal_type: str,
    title: str,
    payload: dict,
    description: str = "",
    now: dt.datetime | None = None,
) -> Proposal:
    """Create a proposal under its type's current rules, after its content checks pass.

    A proposal whose blocking checks fail is refused (400, one field error
    per failed check), so no proposal exists that could never open. Slow
    checks (re-reading pinned bytes) run before the transaction.
    """
    _require_role(author, Role.CONTRIBUTOR, Role.OPERATOR, action="Creating a proposal")
    data = payload_parse(proposal_type, payload)
    title = (title or "").strip()
    if not title:
        raise ValidationFailed("A title is required.", fields={"title": ["This field is required."]})
    description = (description or "").strip()
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise ValidationFailed(
            "The description is too long.", fields={"description": [f"At most {DESCRIPTION_MAX_LENGTH} characters."]}
        )
    resolved = None
    if proposal_type != ProposalType.PARAMETER_CHANGE:
        resolved = payload_resolve(proposal_type, data, parameters={})
        _refuse_failed_checks(resolved.checks)

    with transaction.atomic():
        if resolved is None:
            parameter = parameter_ensure(data["parameter"])
            resolved = payload_resolve(proposal_type, data, parameters={parameter.name: parameter})
        else:
            _recheck_manifest_status(proposal_type, resolved.payload)
        transaction_lock(f"governance-subject:{resolved.subject}")
        now = _now(now)
        busy = proposals_open_on_subject(subject=resolved.subject, now=now).first()
        if busy is not None:
            raise Conflict(
                f"Proposal #{busy.pk} on {resolved.subject} is still {busy.state}; "
                "two open proposals may not act on the same thing.",
                code="subject_has_open_proposal",
            )
        rules = rules_ensure(proposal_type)
        eligible = eligible_voters_count()
        starts = now + dt.timedelta(seconds=rules.voting_delay_seconds)
        ends = starts + dt.timedelta(seconds=rules.voting_period_seconds)
        eta = ends + dt.timedelta(seconds=rules.timelock_seconds)
        proposal = Proposal(
            proposal_type=proposal_type,
            author=author,
            title=title,
            description=description,
            payload=resolved.payload,
            subject=resolved.subject,
            rules=rules.as_document(),
            checks=[check.as_dict() for check in resolved.checks],
            eligible_voters=eligible,
            quorum_votes_required=quorum_votes_required(quorum=rules.quorum, eligible_voters=eligible),
            approval_threshold_bp=int(rules.approval_threshold * 10000),
            created_at=now,
            voting_starts_at=starts,
            voting_ends_at=ends,
            execution_eta=eta,
            expires_at=eta + dt.timedelta(seconds=rules.grace_period_seconds),
        )
        _full_clean(proposal, exclude=["author"])
        proposal.save()
        benchmarked = proposal_type == ProposalType.MODEL_ADOPTION and settings.GOVERNANCE_BENCHMARK_CANDIDATES
        events.proposal_created_event(
            proposal=proposal,
            actor=author,
            evidence_required=benchmarked if proposal_type == ProposalType.MODEL_ADOPTION else None,
        )
        if starts <= now:
            _record_opened(proposal, now)
        if benchmarked:
            _candidate_benchmark_queue(resolved.payload["candidate"], actor=author)
    return proposal


def _candidate_benchmark_queue(manifest_id: int, *, actor) -> None:
    """Voters should see both sides measured: inference queues the benchmarks with the proposal (run after commit)."""
    candidate_benchmark_requested.send(sender=Proposal, manifest_id=manifest_id, actor=actor)


def _refuse_failed_checks(results) -> None:
    failures = failed_checks(results)
    if failures:
        raise ValidationFailed(
            "The content checks failed, so this proposal cannot open: "
            + "; ".join(f"{check.name}: {check.detail}" for check in failures),
            code="checks_failed",
            fields={f"checks.{check.name}": [check.detail] for check in failures},
        )


def _recheck_manifest_status(proposal_type: str, payload: dict) -> None:
    """The cheap part of the checks again, inside the transaction that creates the proposal."""
    from registry.models import Manifest, ManifestStatus

    if proposal_type == ProposalType.MODEL_ADOPTION:
        manifest_id, expected = payload["candidate"], ManifestStatus.CANDIDATE
    else:
        manifest_id, expected = payload["manifest"], ManifestStatus.APPROVED
    if not Manifest.objects.filter(pk=manifest_id, status=expected).exists():
        raise Conflict(f"Manifest {manifest_id} is no longer {expected}.", code="manifest_changed")


def proposal_cancel(*, proposal: Proposal, actor, reason: str, now: dt.datetime | None = None) -> Proposal:
    """Cancel a proposal that is not over yet (operators only, with a recorded reason)."""
    _require_role(actor, Role.OPERATOR, action="Canceling a proposal")
    reason = _clean_reason(reason, required=True)
    with transaction.atomic():
        locked = _locked_proposal(proposal.pk)
        now = _now(now)
        state = proposal_state(locked, now=now)
        if state in TERMINAL_STATES:
            raise Conflict(
                f"Proposal #{locked.pk} is {state}; only a pending, active, succeeded or queued proposal can be "
                "canceled.",
                code="not_cancelable",
            )
        locked.canceled_at = now
        locked.canceled_by = actor
        locked.cancel_reason = reason
        locked.save(update_fields=["canceled_at", "canceled_by", "cancel_reason"])
        events.proposal_canceled_event(proposal=locked, actor=actor, reason=reason, state_before=state)
    return locked


# --- Votes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoteReceipt:
    vote: Vote
    created: bool
    changed: bool


def _require_voting_open(proposal: Proposal, now: dt.datetime) -> None:
    window = f"voting runs from {proposal.voting_starts_at.isoformat()} to {proposal.voting_ends_at.isoformat()}"
    if proposal.canceled_at is not None:
        raise Conflict(f"Proposal #{proposal.pk} was canceled; it takes no votes ({window}).", code="voting_closed")
    if now < proposal.voting_starts_at:
        raise Conflict(f"Proposal #{proposal.pk} is not open for voting yet: {window}.", code="voting_not_open")
    if now >= proposal.voting_ends_at:
        raise Conflict(f"Voting on proposal #{proposal.pk} is closed: {window}.", code="voting_closed")


def vote_cast(
    *, proposal: Proposal, voter, choice: str, reason: str = "", now: dt.datetime | None = None
) -> VoteReceipt:
    """Cast or replace the voter's one counted vote while the proposal is active.

    Every cast is kept in the history; repeating the exact same vote changes
    nothing. The proposal row lock orders concurrent votes (even by the same
    voter) and the close, so exactly one vote per voter is counted.
    """
    _require_role(voter, Role.CONTRIBUTOR, Role.OPERATOR, action="Voting")
    if choice not in VoteChoice.values:
        raise ValidationFailed(
            f"Unknown choice {choice!r}; vote {', '.join(VoteChoice.values)}.",
            fields={"choice": [f"Choose one of {', '.join(VoteChoice.values)}."]},
        )
    reason = _clean_reason(reason, required=False)
    with transaction.atomic():
        locked = _locked_proposal(proposal.pk)
        now = _now(now)
        _require_voting_open(locked, now)
        vote = Vote.objects.filter(proposal=locked, voter=voter).first()
        if vote is None:
            vote = Vote.objects.create(proposal=locked, voter=voter, choice=choice, reason=reason, cast_at=now)
            VoteHistory.objects.create(proposal=locked, voter=voter, choice=choice, reason=reason, cast_at=now)
            events.vote_cast_event(vote=vote)
            return VoteReceipt(vote=vote, created=True, changed=False)
        if vote.choice == choice and vote.reason == reason:
            return VoteReceipt(vote=vote, created=False, changed=False)
        previous = vote.choice
        vote.choice, vote.reason, vote.cast_at = choice, reason, now
        vote.changes += 1
        vote.save(update_fields=["choice", "reason", "cast_at", "changes"])
        VoteHistory.objects.create(
            proposal=locked, voter=voter, choice=choice, previous_choice=previous, reason=reason, cast_at=now
        )
        events.vote_changed_event(vote=vote, previous_choice=previous)
        return VoteReceipt(vote=vote, created=False, changed=True)


# --- Transitions (the beat) -----------------------------------------------------------------


def _record_opened(proposal: Proposal, now: dt.datetime) -> None:
    proposal.opened_at = now
    proposal.save(update_fields=["opened_at"])
    events.proposal_opened_event(proposal=proposal)


def _record_closed(proposal: Proposal, now: dt.datetime) -> None:
    tally = proposal_tally(proposal)
    proposal.closed_at = now
    proposal.outcome = Outcome.PASSED if tally.passed else Outcome.DEFEATED
    proposal.final_tally = tally.as_dict()
    proposal.save(update_fields=["closed_at", "outcome", "final_tally"])
    events.proposal_closed_event(proposal=proposal, tally=proposal.final_tally, outcome=proposal.outcome)


def _record_queued(proposal: Proposal, now: dt.datetime) -> None:
    proposal.queued_at = now
    proposal.save(update_fields=["queued_at"])
    events.proposal_queued_event(proposal=proposal)


def _record_expired(proposal: Proposal, now: dt.datetime) -> None:
    proposal.expired_at = now
    proposal.save(update_fields=["expired_at"])
    events.proposal_expired_event(proposal=proposal)


def proposal_advance(*, proposal_id: int, now: dt.datetime | None = None) -> list[str]:
    """Record every transition now due for one proposal, then execute it if due.

    Idempotent: each transition is recorded once, under the row lock, so
    repeated or concurrent beats add nothing. Returns what was done.
    """
    done: list[str] = []
    with transaction.atomic():
        proposal = _locked_proposal(proposal_id)
        now = _now(now)
        if proposal.canceled_at or proposal.executed_at or proposal.expired_at:
            return done
        if proposal.opened_at is None and now >= proposal.voting_starts_at:
            _record_opened(proposal, now)
            done.append("opened")
        if proposal.closed_at is None and now >= proposal.voting_ends_at:
            _record_closed(proposal, now)
            done.append("closed")
        state = proposal_state(proposal, now=now)
        if state == ProposalState.SUCCEEDED:
            _record_queued(proposal, now)
            done.append("queued")
            state = ProposalState.QUEUED
        if state == ProposalState.EXPIRED:
            _record_expired(proposal, now)
            done.append("expired")
    if state == ProposalState.QUEUED and now >= proposal.execution_eta:
        try:
            proposal_execute(proposal=proposal, now=now)
            done.append("executed")
        except Conflict as exc:
            if exc.code != "already_executed":
                done.append("execution_failed")
        except Exception:  # recorded on the proposal by proposal_execute; the beat goes on
            logger.exception("executing proposal %s failed", proposal_id)
            done.append("execution_failed")
    return done


def proposals_advance(*, now: dt.datetime | None = None) -> dict[int, list[str]]:
    """The beat: move on every proposal with a transition due."""
    now = _now(now)
    report: dict[int, list[str]] = {}
    for proposal_id in proposals_needing_advance(now=now):
        try:
            done = proposal_advance(proposal_id=proposal_id, now=now)
        except Exception:
            logger.exception("advancing proposal %s failed", proposal_id)
            done = ["failed"]
        if done:
            report[proposal_id] = done
    return report


# --- Execution ---------------------------------------------------------------------------------


def proposal_execute(*, proposal: Proposal, now: dt.datetime | None = None, actor=None) -> Proposal:
    """Carry out a queued proposal whose timelock has run: exactly once, whole or not at all.

    The proposal row is locked and `executed_at` re-checked inside the same
    transaction that applies the change, so racing executors apply it once;
    any failure rolls the whole change back and is recorded on the proposal
    (the beat retries until the grace period ends).
    """
    try:
        with transaction.atomic():
            locked = _locked_proposal(proposal.pk)
            now = _now(now)
            if locked.executed_at is not None:
                raise Conflict(f"Proposal #{locked.pk} was already executed.", code="already_executed")
            state = proposal_state(locked, now=now)
            if state != ProposalState.QUEUED:
                raise Conflict(
                    f"Proposal #{locked.pk} is {state}; only a queued proposal can be executed.",
                    code="not_executable",
                )
            if now < locked.execution_eta:
                raise Conflict(
                    f"Proposal #{locked.pk} is in its timelock until {locked.execution_eta.isoformat()}.",
                    code="timelock_running",
                )
            result = _apply(locked, now=now)
            locked.executed_at = now
            locked.execution_result = result
            locked.execution_error = ""
            locked.execution_attempted_at = now
            locked.save(update_fields=["executed_at", "execution_result", "execution_error", "execution_attempted_at"])
            events.proposal_executed_event(proposal=locked, actor=actor, result=result)
    except Conflict as exc:
        if exc.code not in ("already_executed", "not_executable", "timelock_running"):
            _record_execution_failure(proposal.pk, exc.message, now)
        raise
    except DomainError as exc:
        _record_execution_failure(proposal.pk, exc.message, now)
        raise
    except Exception as exc:
        _record_execution_failure(proposal.pk, f"{type(exc).__name__}: {exc}", now)
        raise
    return locked


def _record_execution_failure(proposal_id: int, message: str, now: dt.datetime | None) -> None:
    Proposal.objects.filter(pk=proposal_id, executed_at__isnull=True).update(
        execution_error=message[:2000], execution_attempted_at=_now(now)
    )


def _apply(proposal: Proposal, *, now: dt.datetime) -> dict:
    if proposal.proposal_type == ProposalType.PARAMETER_CHANGE:
        return _parameter_apply(proposal=proposal, now=now)
    from registry.models import Manifest, ManifestStatus
    from registry.selectors import approved_set_current
    from registry.services import manifest_approve, manifest_replace, manifest_retire

    def manifest(manifest_id: int) -> Manifest:
        found = Manifest.objects.filter(pk=manifest_id).first()
        if found is None:
            raise Conflict(f"Manifest {manifest_id} no longer exists.", code="manifest_missing")
        return found

    reason = f"Proposal #{proposal.pk} ({proposal.title}): {proposal.payload.get('reason', '')}".strip()
    payload = proposal.payload
    if proposal.proposal_type == ProposalType.MODEL_ADOPTION:
        candidate = manifest(payload["candidate"])
        retired = None
        replaced = manifest(payload["replaces"]) if payload.get("replaces") else None
        if replaced is not None and replaced.status == ManifestStatus.APPROVED:
            manifest_replace(candidate=candidate, replaced=replaced, actor=None, reason=reason, proposal_id=proposal.pk)
            retired = replaced.pk
        else:
            manifest_approve(manifest=candidate, actor=None, reason=reason, proposal_id=proposal.pk)
        # The evidence of the candidate's finished benchmark runs (inference records their CIDs in its
        # metrics): what informed the vote, named in the execution event for anyone to re-check.
        result = {
            "approved": candidate.pk,
            "retired": retired,
            "evidence": list(candidate.metrics.get("evidence_cids") or []),
        }
    else:
        retired = manifest(payload["manifest"])
        manifest_retire(manifest=retired, actor=None, reason=reason, proposal_id=proposal.pk)
        result = {"retired": retired.pk, "replacement": payload.get("replacement")}
    current = approved_set_current()
    result["approved_set_version"] = current.version if current else None
    return result
