"""Model adoption and retirement: content checks on real pinned manifests, binding execution."""

import pytest
from django.test import override_settings

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from core.errors import ValidationFailed
from core.ipfs import pinning_backend
from governance.models import Proposal, ProposalState, ProposalType
from governance.selectors import proposal_state
from governance.services import proposal_create, proposal_execute, proposals_advance, vote_cast
from registry.models import ApprovedSet, Manifest, ManifestStatus
from registry.selectors import approved_set_current
from registry.services import manifest_approve
from tests.governance.factories import T0, person
from tests.registry.factories import register_test_manifest

pytestmark = pytest.mark.django_db


def adopt(candidate: Manifest, *, author, replaces: Manifest | None = None) -> Proposal:
    return proposal_create(
        author=author,
        proposal_type=ProposalType.MODEL_ADOPTION,
        title=f"Adopt {candidate}",
        payload={
            "candidate": candidate.pk,
            "replaces": replaces.pk if replaces else None,
            "reason": "smaller, as good",
        },
        now=T0,
    )


def approved(name: str, version: str = "1", kind: str = "embedding", fmt: str = "onnx") -> Manifest:
    manifest = register_test_manifest(name=name, version=version, kind=kind, fmt=fmt)
    return manifest_approve(manifest=manifest, actor=None, reason="test fixture")


def passed_and_due(proposal: Proposal, voter) -> None:
    vote_cast(proposal=proposal, voter=voter, choice="for", now=T0)
    proposals_advance(now=proposal.voting_ends_at)


def test_adoption_checks_pass_on_a_pinned_permissive_candidate():
    candidate = register_test_manifest(name="mini", version="2")
    proposal = adopt(candidate, author=person("alice"))
    checks = {check["name"]: check for check in proposal.checks}
    assert set(checks) == {"candidate", "license", "size", "files", "benchmark"}
    assert all(check["passed"] for name, check in checks.items() if name != "benchmark")
    assert "sha256 and CID re-verified" in checks["files"]["detail"]
    assert checks["benchmark"] == {
        "name": "benchmark",
        "passed": False,
        "blocking": False,
        "detail": "not yet benchmarked",
    }
    assert proposal.payload["candidate_manifest"]["sha256"] == candidate.sha256
    assert proposal.subject == f"manifest:{candidate.pk}"


def test_adoption_of_a_non_permissive_license_is_refused_and_says_why():
    candidate = register_test_manifest(name="gemma-like", license="Gemma-Terms")
    with pytest.raises(ValidationFailed) as excinfo:
        adopt(candidate, author=person("alice"))
    assert excinfo.value.code == "checks_failed"
    assert "Gemma-Terms" in excinfo.value.fields["checks.license"][0]
    assert Proposal.objects.count() == 0


@override_settings(GOVERNANCE_MAX_EMBEDDING_BYTES=1000)
def test_adoption_over_the_size_limit_is_refused():
    candidate = register_test_manifest(name="big", size=4000)
    with pytest.raises(ValidationFailed) as excinfo:
        adopt(candidate, author=person("alice"))
    assert "over the embedding limit" in excinfo.value.fields["checks.size"][0]


def test_adoption_of_unpinned_or_tampered_bytes_is_refused():
    unpinned = register_test_manifest(name="unpinned", pin="none")
    with pytest.raises(ValidationFailed) as excinfo:
        adopt(unpinned, author=person("alice"))
    assert "pin status is pending" in excinfo.value.fields["checks.files"][0]

    tampered = register_test_manifest(name="tampered")
    weights = tampered.files.get(role="weights")
    blob = pinning_backend().blob_path(weights.cid)
    blob.write_bytes(b"x" * weights.size_bytes)
    with pytest.raises(ValidationFailed) as excinfo:
        adopt(tampered, author=person("alice"))
    assert "sha256 does not match" in excinfo.value.fields["checks.files"][0]


def test_adoption_of_an_approved_manifest_or_a_bad_replacement_is_refused():
    current = approved("current")
    other_kind = approved("chat", kind="generative", fmt="gguf")
    with pytest.raises(ValidationFailed) as excinfo:
        adopt(current, author=person("alice"))
    assert "checks.candidate" in excinfo.value.fields
    candidate = register_test_manifest(name="next")
    with pytest.raises(ValidationFailed) as excinfo:
        adopt(candidate, author=person("alice"), replaces=other_kind)
    assert "approved embedding" in excinfo.value.fields["checks.replaces"][0]
    with pytest.raises(ValidationFailed) as excinfo:
        proposal_create(
            author=person("alice"),
            proposal_type=ProposalType.MODEL_ADOPTION,
            title="t",
            payload={"candidate": 99999, "reason": "r"},
            now=T0,
        )
    assert "payload.candidate" in excinfo.value.fields


def test_executed_adoption_approves_retires_replaced_and_bumps_the_approved_set():
    current = approved("current")
    version_before = approved_set_current().version
    candidate = register_test_manifest(name="next", version="1")
    alice = person("alice")
    proposal = adopt(candidate, author=alice, replaces=current)
    passed_and_due(proposal, alice)
    assert proposals_advance(now=proposal.execution_eta) == {proposal.pk: ["executed"]}

    candidate.refresh_from_db()
    current.refresh_from_db()
    assert candidate.status == ManifestStatus.APPROVED
    assert candidate.approved_by_governance is True
    assert candidate.adoption_date is not None
    assert current.status == ManifestStatus.RETIRED
    latest = approved_set_current()
    assert latest.version > version_before
    proposal.refresh_from_db()
    assert proposal.execution_result == {
        "approved": candidate.pk,
        "retired": current.pk,
        "approved_set_version": latest.version,
        "evidence": [],  # never benchmarked: no evidence to name
    }
    approved_event = AuditEvent.objects.filter(event_type="manifest.approved", object_id=str(candidate.pk)).get()
    assert approved_event.payload.get("proposal_id") == proposal.pk
    assert audit_chain_verify().ok


def test_failed_adoption_applies_nothing_and_records_why():
    current = approved("current")
    candidate = register_test_manifest(name="next")
    alice = person("alice")
    proposal = adopt(candidate, author=alice, replaces=current)
    passed_and_due(proposal, alice)
    # The candidate is retired behind governance's back before execution.
    from registry.services import manifest_retire

    manifest_retire(manifest=candidate, actor=None, reason="withdrawn by its publisher")
    sets_before = ApprovedSet.objects.count()
    events_before = AuditEvent.objects.count()
    with pytest.raises(Exception):  # noqa: B017 - the registry's Conflict, re-raised after recording
        proposal_execute(proposal=proposal, now=proposal.execution_eta)
    current.refresh_from_db()
    assert current.status == ManifestStatus.APPROVED
    assert ApprovedSet.objects.count() == sets_before
    assert AuditEvent.objects.count() == events_before
    proposal.refresh_from_db()
    assert proposal.executed_at is None
    assert "retired" in proposal.execution_error
    assert proposal_state(proposal, now=proposal.execution_eta) == ProposalState.QUEUED


def test_executed_retirement_retires_the_manifest():
    old = approved("old")
    approved("newer")
    alice = person("alice")
    proposal = proposal_create(
        author=alice,
        proposal_type=ProposalType.MODEL_RETIREMENT,
        title="Retire old",
        payload={"manifest": old.pk, "reason": "superseded"},
        now=T0,
    )
    coverage = next(c for c in proposal.checks if c["name"] == "coverage")
    assert coverage["passed"] and not coverage["blocking"]
    passed_and_due(proposal, alice)
    proposals_advance(now=proposal.execution_eta)
    old.refresh_from_db()
    assert old.status == ManifestStatus.RETIRED
    assert AuditEvent.objects.filter(event_type="manifest.retired", object_id=str(old.pk)).exists()


def test_retirement_of_a_candidate_is_refused():
    candidate = register_test_manifest(name="cand")
    with pytest.raises(ValidationFailed) as excinfo:
        proposal_create(
            author=person("alice"),
            proposal_type=ProposalType.MODEL_RETIREMENT,
            title="Retire cand",
            payload={"manifest": candidate.pk, "replacement": candidate.pk, "reason": "r"},
            now=T0,
        )
    assert "payload.replacement" in excinfo.value.fields
    with pytest.raises(ValidationFailed) as excinfo:
        proposal_create(
            author=person("alice"),
            proposal_type=ProposalType.MODEL_RETIREMENT,
            title="Retire cand",
            payload={"manifest": candidate.pk, "reason": "r"},
            now=T0,
        )
    assert "checks.approved" in excinfo.value.fields
