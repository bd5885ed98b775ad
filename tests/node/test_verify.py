"""`conclave-verify` re-checks every decision from the audit history, against a live server, a gateway and a CAR.

The history is made through the real services (proposals, votes with
replacements, executions, rule changes, signing); the server is a real HTTP
server (live_server) with its IPFS gateway. Forgeries are what a dishonest
operator would do to the database: an edit left un-hashed (the chain
catches it), or re-hashed consistently (only re-checking what the events
say catches it), or the whole chain rewritten with new checkpoints (only an
old checkpoint CID catches it).
"""

import datetime as dt
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from audit.checkpoints import audit_checkpoint_create
from audit.models import AuditCheckpoint, AuditEvent
from audit.selectors import audit_chain_verify
from conclave_node import verify
from core.ipfs import pinning_backend
from governance.models import ProposalType
from governance.services import proposal_create, proposals_advance, vote_cast
from registry.services import manifest_pin
from signing.services import root_ensure, signed_metadata_pin, signed_set_refresh
from tests.audit.rewrite import chain_rewrite, history_rewrite
from tests.governance.factories import T0, person, set_rules
from tests.node.conftest import approve
from tests.registry.factories import register_test_manifest

pytestmark = pytest.mark.django_db(transaction=True)


def run_to_the_end(proposal) -> None:
    proposals_advance(now=proposal.voting_ends_at)
    proposals_advance(now=proposal.execution_eta)


def sign_and_pin() -> None:
    """Sign the current set and pin it and every root, as the pin tasks queued by signing do."""
    from signing.models import RootMetadata

    signed = signed_set_refresh()
    signed_metadata_pin(kind="set", pk=signed.pk)
    for pk in RootMetadata.objects.values_list("pk", flat=True):
        signed_metadata_pin(kind="root", pk=pk)


@pytest.fixture
def history(db, settings, platform_keys):
    """Three proposals decided through the services, a vote replaced, executions, a rule change, a rotation
    of the online keys (root v2, 2-of-3 keys), checkpoints."""
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    approve("incumbent", size=2000)
    sign_and_pin()
    replacement = platform_keys.new_key("online-4")
    settings.SIGNING_ONLINE_KEYS = [str(k.path) for k in platform_keys.online[1:]] + [str(replacement.path)]
    assert root_ensure().version == 2
    raise_queue = proposal_create(
        author=alice,
        proposal_type=ProposalType.PARAMETER_CHANGE,
        title="Set queue_size to 8",
        payload={"parameter": "queue_size", "value": 8, "reason": "load test"},
        now=T0,
    )
    vote_cast(proposal=raise_queue, voter=alice, choice="for", now=T0)
    vote_cast(proposal=raise_queue, voter=bob, choice="against", now=T0)
    vote_cast(proposal=raise_queue, voter=bob, choice="for", reason="convinced", now=T0)  # a replacement
    vote_cast(proposal=raise_queue, voter=carol, choice="abstain", now=T0)
    set_rules(ProposalType.PARAMETER_CHANGE, quorum="0.9")  # after creation: the proposal keeps its frozen rules
    run_to_the_end(raise_queue)

    candidate = register_test_manifest(name="elected", version="1", size=3000)
    adopt = proposal_create(
        author=alice,
        proposal_type=ProposalType.MODEL_ADOPTION,
        title="Adopt elected@1",
        payload={"candidate": candidate.pk, "replaces": None, "reason": "better"},
        now=T0,
    )
    vote_cast(proposal=adopt, voter=alice, choice="for", now=T0)
    vote_cast(proposal=adopt, voter=carol, choice="for", now=T0)
    run_to_the_end(adopt)
    manifest_pin(manifest=candidate)  # what the pin task the approval queued does: its new document pinned
    sign_and_pin()

    defeated = proposal_create(
        author=bob,
        proposal_type=ProposalType.PARAMETER_CHANGE,
        title="Set request_timeout_seconds to 5",
        payload={"parameter": "request_timeout_seconds", "value": 5, "reason": "faster failures"},
        now=T0,
    )
    vote_cast(proposal=defeated, voter=alice, choice="against", now=T0)
    vote_cast(proposal=defeated, voter=bob, choice="for", now=T0)
    run_to_the_end(defeated)
    audit_checkpoint_create()
    for proposal in (raise_queue, adopt, defeated):
        proposal.refresh_from_db()
    assert raise_queue.executed_at and adopt.executed_at and defeated.outcome == "defeated"
    return {"raise_queue": raise_queue, "adopt": adopt, "defeated": defeated}


def run(capsys, *argv) -> tuple[int, dict]:
    code = verify.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def event_of(proposal, event_type: str) -> AuditEvent:
    return AuditEvent.objects.get(object_type="proposal", object_id=str(proposal.pk), event_type=event_type)


def assert_everything_verifies(code: int, report: dict, history: dict, *, anchored_by: str = "checkpoint") -> None:
    assert report["problems"] == [] and code == 0
    proposals = {line["proposal_id"]: line for line in report["decisions"] if line["kind"] == "proposal"}
    assert {pid: line["state"] for pid, line in proposals.items()} == {
        str(history["raise_queue"].pk): "executed",
        str(history["adopt"].pk): "executed",
        str(history["defeated"].pk): "defeated",
    }
    assert "3 vote(s) cast, 1 replaced" in proposals[str(history["raise_queue"].pk)]["text"]
    assert "for 2 against 0 abstain 1 -> passed" in proposals[str(history["raise_queue"].pk)]["text"]
    kinds = [line["kind"] for line in report["decisions"]]
    assert kinds.count("adoption") == 1 and "chain" in kinds
    parameters = [line["text"] for line in report["decisions"] if line["kind"] == "parameter"]
    # The executed change once, then each signed set signed after it tells nodes the executed value.
    assert sum(text.startswith("queue_size: 5 -> 8") for text in parameters) == 1
    told = [text for text in parameters if text.startswith("signed set v")]
    assert told and all("queue_size=8, the executed value" in text for text in told)
    adoption = next(line for line in report["decisions"] if line["kind"] == "adoption")
    assert "3 valid signature(s) under root v2" in adoption["text"]  # signed after the rotation (2 of 3 needed)
    assert anchored_by in kinds


# --- Passing ----------------------------------------------------------------------------------


def test_verify_passes_against_a_live_server(live_server, history, capsys):
    code, report = run(capsys, "--server", live_server.url)
    assert_everything_verifies(code, report, history)


def test_the_text_report_has_one_line_per_decision(live_server, history, capsys):
    assert verify.main(["--server", live_server.url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("ok   proposal: ") for line in out) == 3
    assert any(line.startswith("ok   adoption: proposal #") for line in out)
    assert out[-1] == "conclave-verify: everything verifies (exit 0)"


def test_verify_passes_with_only_the_checkpoint_cid_through_a_gateway(live_server, history, capsys):
    checkpoint = AuditCheckpoint.objects.order_by("-seq").first()
    code, report = run(capsys, "--checkpoint", checkpoint.cid, "--gateway", live_server.url)
    # Signed sets and roots too: the history names their CIDs, and the gateway serves them.
    assert_everything_verifies(code, report, history, anchored_by="anchor")
    assert any(line["kind"] == "anchor" and line["cid"] == checkpoint.cid for line in report["decisions"])


def test_verify_passes_offline_from_a_car(history, tmp_path, capsys):
    car = tmp_path / "history.car"
    call_command("audit_export", "--car", str(car))
    capsys.readouterr()
    code, report = run(capsys, "--car", str(car))
    # The CAR's checkpoint is the newest, whose own event comes after it: it anchors the history instead.
    assert_everything_verifies(code, report, history, anchored_by="anchor")


# --- Forgeries ----------------------------------------------------------------------------------


def test_an_edited_vote_breaks_the_chain_at_that_event(live_server, history, capsys):
    vote = AuditEvent.objects.filter(event_type="vote.cast").order_by("seq")[1]
    payload = {**vote.payload, "choice": "for"}
    AuditEvent.objects.filter(pk=vote.pk).update(payload=payload)  # the hash is left as it was
    code, report = run(capsys, "--server", live_server.url)
    assert code == verify.EXIT_CODES["chain"] == 10
    assert report["problems"][0]["seq"] == vote.seq


def test_a_vote_edited_and_rehashed_is_caught_by_the_recomputed_tally(live_server, history, capsys):
    defeated = history["defeated"]
    vote = AuditEvent.objects.filter(object_id=str(defeated.pk), event_type="vote.cast").order_by("seq").first()
    closed = event_of(defeated, "proposal.closed")
    chain_rewrite(lambda e: e.seq == vote.seq and _set(e.payload, choice="for"))
    assert audit_chain_verify().ok
    code, report = run(capsys, "--server", live_server.url)
    assert code == verify.EXIT_CODES["tally"]
    tally = next(p for p in report["problems"] if p["kind"] == "tally")
    assert tally["seq"] == closed.seq and f"proposal #{defeated.pk}" in tally["message"]


def test_an_inserted_vote_is_caught(live_server, history, capsys):
    defeated = history["defeated"]
    closed = event_of(defeated, "proposal.closed")
    template = AuditEvent.objects.filter(object_id=str(defeated.pk), event_type="vote.cast").order_by("seq").last()

    def insert(events):
        forged = AuditEvent(
            event_type="vote.cast",
            actor_label="mallory",
            object_type="proposal",
            object_id=str(defeated.pk),
            payload={**template.payload, "voter": "mallory", "choice": "for"},
            created_at=template.created_at,
        )
        at = next(i for i, e in enumerate(events) if e.seq == closed.seq)
        return events[:at] + [forged] + events[at:]

    history_rewrite(insert)
    assert audit_chain_verify().ok
    code, report = run(capsys, "--server", live_server.url)
    assert code == verify.EXIT_CODES["tally"]
    problem = next(p for p in report["problems"] if p["kind"] == "tally")
    assert problem["seq"] == closed.seq + 1  # the close, one further down after the insertion
    assert "for 1 (votes say 2)" in problem["message"]


def test_an_outcome_flipped_with_the_tally_left_alone_is_caught(live_server, history, capsys):
    closed = event_of(history["defeated"], "proposal.closed")
    chain_rewrite(lambda e: e.seq == closed.seq and _set(e.payload, outcome="passed"))
    code, report = run(capsys, "--server", live_server.url)
    assert code == verify.EXIT_CODES["outcome"]
    assert [(p["kind"], p["seq"]) for p in report["problems"]] == [("outcome", closed.seq)]


def test_a_rule_changed_after_creation_is_caught(live_server, history, capsys):
    # The close is re-recorded under the type's later rules (quorum 0.9) instead of the frozen ones.
    closed = event_of(history["raise_queue"], "proposal.closed")
    chain_rewrite(lambda e: e.seq == closed.seq and _set(e.payload["tally"], quorum_votes_required=3))
    code, report = run(capsys, "--server", live_server.url)
    assert code == verify.EXIT_CODES["rules"]
    problem = report["problems"][0]
    assert problem["seq"] == closed.seq and "quorum_votes_required 3" in problem["message"]


def test_frozen_rules_edited_in_the_creation_event_are_caught(live_server, history, capsys):
    created = event_of(history["raise_queue"], "proposal.created")
    chain_rewrite(lambda e: e.seq == created.seq and _set(e.payload["rules"], voting_period_seconds=60))
    code, report = run(capsys, "--server", live_server.url)
    assert code == verify.EXIT_CODES["rules"]
    assert report["problems"][0]["seq"] == created.seq


def test_a_whole_chain_rewritten_consistently_is_caught_given_an_old_checkpoint(live_server, history, capsys):
    old = AuditCheckpoint.objects.order_by("-seq").first().cid
    created = event_of(history["adopt"], "proposal.created")
    chain_rewrite(lambda e: e.seq == created.seq and _set(e.payload, title="Adopt elected@1, as everyone wanted"))
    assert audit_chain_verify().ok
    assert AuditCheckpoint.objects.order_by("-seq").first().cid != old
    code, _ = run(capsys, "--server", live_server.url)
    assert code == 0  # the rewrite is consistent: nothing in the server's own history disagrees...
    code, report = run(capsys, "--server", live_server.url, "--checkpoint", old)
    assert code == verify.EXIT_CODES["fork"]  # ...but it is not the history that checkpoint pinned
    assert report["problems"][0]["seq"] == created.seq
    assert "rewritten" in report["problems"][0]["message"]


def test_a_vote_outside_its_voting_window_is_caught(live_server, history, capsys):
    """A late vote slipped in before the close: its time lies after the window frozen at creation."""
    proposal = history["defeated"]
    vote = AuditEvent.objects.filter(object_id=str(proposal.pk), event_type="vote.cast").order_by("seq").first()
    late = (proposal.voting_ends_at + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    chain_rewrite(lambda e: e.seq == vote.seq and _set(e.payload, cast_at=late))
    code, report = run(capsys, "--server", live_server.url)
    assert code == verify.EXIT_CODES["vote"]
    assert [(p["kind"], p["seq"]) for p in report["problems"]] == [("vote", vote.seq)]
    assert "outside the voting window" in report["problems"][0]["message"]


def test_votes_record_the_time_their_window_was_checked_against(history):
    vote = AuditEvent.objects.filter(event_type="vote.cast").order_by("seq").first()
    assert vote.payload["cast_at"] == T0.isoformat().replace("+00:00", "Z")


def adopted_document(history) -> tuple[AuditEvent, dict]:
    candidate = history["adopt"].payload["candidate"]
    approved = AuditEvent.objects.get(event_type="manifest.approved", object_id=str(candidate))
    return approved, json.loads(b"".join(pinning_backend().read(approved.payload["manifest_cid"])))


def test_a_manifest_file_whose_bytes_do_not_match_is_caught(live_server, history, settings, capsys):
    _, document = adopted_document(history)
    weights = next(f for f in document["files"] if f["role"] == "weights")
    blob = Path(settings.IPFS_STORE_DIR) / "blobs" / weights["cid"]
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF
    blob.unlink()  # a hard link to the staged bytes: replace it rather than write through it
    blob.write_bytes(bytes(data))
    code, report = run(capsys, "--server", live_server.url)
    assert code == verify.EXIT_CODES["files"] == 22
    executed = event_of(history["adopt"], "proposal.executed")
    assert [(p["kind"], p["seq"]) for p in report["problems"]] == [("files", executed.seq)]
    assert weights["path"] in report["problems"][0]["message"] and "do not hash" in report["problems"][0]["message"]


def test_a_manifest_publishing_another_sha256_than_its_file_has_is_caught(live_server, history, capsys):
    from aleph_cid import compute_cid
    from rfc8785 import dumps

    approved, document = adopted_document(history)
    other = next(f for f in document["files"] if f["role"] != "weights")  # the tokenizer
    other["sha256"] = "0" * 64
    forged = dumps(document)
    pinning_backend().pin_bytes(forged, cid=compute_cid(forged))
    chain_rewrite(lambda e: e.seq == approved.seq and _set(e.payload, manifest_cid=compute_cid(forged)))
    code, report = run(capsys, "--server", live_server.url, "--skip-files")
    assert code == 0  # without the files, nothing contradicts the document...
    code, report = run(capsys, "--server", live_server.url)
    assert code == verify.EXIT_CODES["files"]  # ...but the file's bytes do
    problem = report["problems"][0]
    assert problem["seq"] == event_of(history["adopt"], "proposal.executed").seq
    assert f"the manifest publishes {'0' * 64}" in problem["message"]


def test_a_car_with_a_forged_block_is_refused(history, tmp_path, capsys):
    car = tmp_path / "history.car"
    call_command("audit_export", "--car", str(car))
    data = bytearray(car.read_bytes())
    at = data.find(b'"vote.cast"')
    data[at + 1 : at + 5] = b"VOTE"
    car.write_bytes(bytes(data))
    capsys.readouterr()
    code, report = run(capsys, "--car", str(car))
    assert code == verify.EXIT_CODES["unreachable"]
    assert "does not hash to its CID" in report["problems"][0]["message"]


def test_a_trust_root_other_than_the_servers_fails_the_signature_checks(live_server, history, tmp_path, capsys):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from conclave_node.metadata import canonical
    from tests.node.test_metadata import make_root

    other = tmp_path / "other-root.json"
    other.write_bytes(canonical(make_root([Ed25519PrivateKey.generate()], [Ed25519PrivateKey.generate()])))
    code, report = run(capsys, "--server", live_server.url, "--trust-root", str(other))
    assert code == verify.EXIT_CODES["signature"]
    assert "root v1 differs" in report["problems"][0]["message"]


def test_a_signed_set_telling_nodes_another_value_than_the_executed_one_is_caught():
    report = verify.Report()
    verifier = verify.Verifier(report)
    verifier.parameters["queue_size"] = [(16, 8)]
    signed = {"version": 4, "audit_head": {"seq": 20}, "parameters": {"queue_size": 16}}
    verifier._check_signed_parameters([{"signed": signed, "keyids": frozenset()}])
    assert report.exit_code == verify.EXIT_CODES["parameter"]
    assert "tells nodes queue_size=16, but the last executed change set 8" in report.problems[0].message
    report.problems.clear()
    verifier._check_signed_parameters(
        [{"signed": {**signed, "parameters": [{"name": "queue_size", "value": 8}]}, "keyids": frozenset()}]
    )
    assert report.problems == []


def test_the_console_script_runs_without_django(history, tmp_path):
    import subprocess
    import sys

    car = tmp_path / "history.car"
    call_command("audit_export", "--car", str(car))
    # A fresh interpreter, so only what the node package itself imports is loaded.
    script = (
        "import sys; from conclave_node import verify; "
        "code = verify.main(['--car', sys.argv[1]]); "
        "assert not [m for m in sys.modules if m == 'django' or m.startswith('django.')], 'imported Django'; "
        "sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(car)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "conclave-verify: everything verifies (exit 0)" in done.stdout


def test_a_command_line_without_a_source_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as excinfo:
        verify.main(["--checkpoint", "QmX"])
    assert excinfo.value.code == 2


def _set(mapping: dict, **values) -> bool:
    mapping.update(values)
    return True
