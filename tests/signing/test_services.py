"""Signing services: keys, root metadata and its rotation, signed sets, adoption data, tasks."""

import datetime as dt
import json
import os
import stat

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from conclave_node.metadata import SET_ROLE, parse_root, verify_new_root, verify_signed_set, verify_trust_root
from core.ipfs import pinning_backend
from governance.models import ProposalType
from governance.services import proposal_create, proposals_advance, vote_cast
from registry.models import PinStatus
from registry.selectors import approved_set_current
from signing.keys import key_config
from signing.models import RootMetadata, SignedApprovedSet
from signing.selectors import root_current
from signing.services import SigningUnavailable, root_ensure, signed_set_publish_for, signed_set_refresh
from signing.tasks import signed_set_publish_task, signing_refresh_task
from tests.governance.factories import T0, person
from tests.node.conftest import approve, drain
from tests.registry.factories import register_test_manifest

pytestmark = pytest.mark.django_db


def envelope_of(row) -> dict:
    return json.loads(bytes(row.document))


def root_of(row):
    return parse_root(envelope_of(row))


# --- Keys ---------------------------------------------------------------------------------


def test_embedded_keys_are_created_once_and_only_the_owner_can_read_them(settings):
    first = key_config()
    second = key_config()
    assert first.embedded is True
    assert [k.keyid for k in first.online_keys] == [k.keyid for k in second.online_keys]
    paths = sorted(os.listdir(settings.SIGNING_KEYS_DIR))
    assert paths == ["online-1.pem", "root-1.pem"]
    for name in paths:
        mode = stat.S_IMODE(os.stat(os.path.join(settings.SIGNING_KEYS_DIR, name)).st_mode)
        assert mode == 0o600


def test_embedded_thresholds_create_enough_keys(settings):
    settings.SIGNING_ONLINE_THRESHOLD = 2
    assert len(key_config().online_keys) == 2


def test_production_refuses_to_invent_keys(settings):
    settings.PRODUCTION = True
    with pytest.raises(ImproperlyConfigured, match="SIGNING_ONLINE_KEYS"):
        key_config()


def test_a_threshold_the_keys_cannot_meet_is_refused(settings, platform_keys):
    settings.SIGNING_ONLINE_THRESHOLD = 4
    with pytest.raises(ImproperlyConfigured, match="only 3 key file"):
        key_config()


def test_a_key_file_that_is_not_ed25519_is_refused(settings, platform_keys, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    other = tmp_path / "ecdsa.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    settings.SIGNING_ONLINE_KEYS = [str(other)]
    with pytest.raises(ImproperlyConfigured, match="must be Ed25519"):
        key_config()


# --- Root -----------------------------------------------------------------------------------


def test_root_v1_is_self_signed_and_lists_the_configured_keys(platform_keys):
    row = root_ensure()
    root = verify_trust_root(envelope_of(row))
    assert root.version == 1
    assert root.role("root").keyids == {k.keyid for k in platform_keys.root}
    assert root.role(SET_ROLE).keyids == {k.keyid for k in platform_keys.online}
    assert root.role("root").threshold == root.role(SET_ROLE).threshold == 2
    assert root_ensure().pk == row.pk
    event = AuditEvent.objects.get(event_type="signing.root_published")
    assert event.payload["version"] == 1
    assert audit_chain_verify().ok


def test_changing_the_online_keys_publishes_root_v2_signed_by_root_v1(settings, platform_keys):
    v1 = root_ensure()
    replacement = platform_keys.new_key("online-4")
    settings.SIGNING_ONLINE_KEYS = [str(k.path) for k in platform_keys.online[1:]] + [str(replacement.path)]
    v2 = root_ensure()
    assert v2.version == 2
    rotated = verify_new_root(root_of(v1), envelope_of(v2))
    assert platform_keys.online[0].keyid not in rotated.role(SET_ROLE).keyids
    assert replacement.keyid in rotated.role(SET_ROLE).keyids


def test_new_root_keys_need_the_previous_root_keys_to_sign(settings, platform_keys):
    v1 = root_ensure()
    new_root = [platform_keys.new_key(f"root-new-{i}") for i in range(3)]
    settings.SIGNING_ROOT_KEYS = [str(k.path) for k in new_root]
    with pytest.raises(SigningUnavailable, match="previous root keys"):
        root_ensure(strict=True)
    with pytest.raises(CommandError, match="previous root keys"):
        call_command("signing_keys", "rotate")
    assert RootMetadata.objects.count() == 1

    call_command(
        "signing_keys",
        "rotate",
        "--previous-root-key",
        str(platform_keys.root[0].path),
        "--previous-root-key",
        str(platform_keys.root[2].path),
    )
    v2 = root_current()
    rotated = verify_new_root(root_of(v1), envelope_of(v2))
    assert rotated.role("root").keyids == {k.keyid for k in new_root}


def test_root_keys_can_stay_offline_once_root_is_published(settings, platform_keys):
    root_ensure()
    approve("offline-ok", size=2000)
    settings.SIGNING_ROOT_KEYS = []
    signed = signed_set_refresh(force=True)
    assert signed.root_version == 1
    # Rotating the online keys then needs the offline root keys handed in.
    settings.SIGNING_ONLINE_KEYS = [str(k.path) for k in platform_keys.online[:2]]
    with pytest.raises(SigningUnavailable):
        signed_set_refresh(force=True)
    call_command("signing_keys", "rotate", *sum((["--root-key", str(k.path)] for k in platform_keys.root[:2]), []))
    assert signed_set_current_root_version() == 2


def signed_set_current_root_version() -> int:
    return SignedApprovedSet.objects.order_by("-version").first().root_version


# --- Signed sets ----------------------------------------------------------------------------


def test_the_signed_set_lists_every_file_and_verifies_under_root(platform_keys, two_models, settings):
    signed = signed_set_refresh()
    now = timezone.now()
    verified = verify_signed_set(envelope_of(signed), root=root_of(root_current()), now=now)
    assert verified.approved_set_version == approved_set_current().version
    assert len(verified.keyids) == 3
    assert (signed.expires - signed.signed_at).total_seconds() == pytest.approx(
        settings.SIGNING_SET_LIFETIME_SECONDS, abs=1
    )
    listed = {(m.key, f.path): (f.size, f.sha256, f.cid) for m in verified.manifests for f in m.files}
    expected = {(str(m), f.path): (f.size_bytes, f.sha256, f.cid) for m in two_models for f in m.files.all()}
    assert listed == expected
    assert envelope_of(signed)["signed"]["approved_set"]["cid"] == approved_set_current().cid


def test_the_signed_set_carries_the_audit_head_at_signing_time(two_models):
    from audit.checkpoints import audit_checkpoint_create

    checkpoint = audit_checkpoint_create()
    signed = signed_set_refresh()
    head = AuditEvent.objects.exclude(event_type="signing.set_signed").order_by("-seq").first()
    verified = verify_signed_set(envelope_of(signed), root=root_of(root_current()), now=timezone.now())
    assert verified.audit_head.as_dict() == {"seq": head.seq, "hash": head.hash, "checkpoint_cid": checkpoint.cid}
    # The signing is recorded right after that head, naming the signed document's CID.
    recorded = AuditEvent.objects.get(seq=head.seq + 1)
    assert recorded.event_type == "signing.set_signed" and recorded.payload["cid"] == signed.cid
    assert recorded.payload["audit_head"] == verified.audit_head.as_dict()
    assert audit_chain_verify().head_hash == recorded.hash


def test_before_any_checkpoint_the_audit_head_has_no_checkpoint_cid(two_models):
    signed = envelope_of(signed_set_refresh())["signed"]
    head = AuditEvent.objects.exclude(event_type="signing.set_signed").order_by("-seq").first()
    assert signed["audit_head"] == {"seq": head.seq, "hash": head.hash, "checkpoint_cid": None}


def test_an_operator_adoption_is_signed_as_such(two_models):
    signed = envelope_of(signed_set_refresh())["signed"]
    for manifest in signed["manifests"]:
        assert manifest["adoption"] == {"proposal_id": None, "operator_action": True, "reason": "test fixture"}


def test_each_signed_manifest_carries_the_registrys_manifest_cid(two_models):
    from registry.models import Manifest

    signed_row = signed_set_refresh()
    signed = envelope_of(signed_row)["signed"]
    expected = dict(Manifest.objects.filter(status="approved").values_list("model_name", "manifest_cid"))
    assert len(expected) == 2 and all(expected.values())
    assert {m["model_name"]: m["manifest_cid"] for m in signed["manifests"]} == expected
    verified = verify_signed_set(envelope_of(signed_row), root=root_of(root_current()), now=timezone.now())
    assert {m.model_name: m.manifest_cid for m in verified.manifests} == expected
    # A set signed before manifest_cid was carried: the node derives the same CIDs.
    from conclave_node.metadata import manifest_cid_derive

    assert {m["model_name"]: manifest_cid_derive(m) for m in signed["manifests"]} == expected


def test_a_benchmark_recorded_on_an_approved_model_has_the_set_signed_anew_with_its_new_manifest_cid(two_models):
    from conclave_node.metadata import manifest_cid_derive
    from registry.services import manifest_metrics_record
    from signing.selectors import signed_set_needs_signing

    embedding, _ = two_models
    first = signed_set_refresh()
    assert not signed_set_needs_signing()
    updated = manifest_metrics_record(manifest=embedding, metrics={"avg_latency_ms": 3.5})
    assert updated.manifest_cid != embedding.manifest_cid
    assert signed_set_needs_signing()

    second = signed_set_refresh()
    assert second.version == first.version + 1 and second.approved_set_id == first.approved_set_id
    entry = next(m for m in envelope_of(second)["signed"]["manifests"] if m["model_name"] == embedding.model_name)
    assert entry["manifest_cid"] == updated.manifest_cid
    # The entry is the document as published in the approved set; the CID is the registry's live one.
    assert manifest_cid_derive(entry) == embedding.manifest_cid
    assert not signed_set_needs_signing() and signed_set_refresh().pk == second.pk


def test_an_adoption_by_vote_is_signed_with_its_proposal_and_tally():
    approve("incumbent", size=2000)
    candidate = register_test_manifest(name="elected", version="1", size=3000)
    alice = person("alice")
    proposal = proposal_create(
        author=alice,
        proposal_type=ProposalType.MODEL_ADOPTION,
        title="Adopt elected@1",
        payload={"candidate": candidate.pk, "replaces": None, "reason": "better"},
        now=T0,
    )
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    proposals_advance(now=proposal.voting_ends_at)
    proposals_advance(now=proposal.execution_eta)
    proposal.refresh_from_db()
    assert proposal.executed_at is not None

    signed = envelope_of(signed_set_refresh())["signed"]
    adoption = next(m["adoption"] for m in signed["manifests"] if m["model_name"] == "elected")
    assert adoption["proposal_id"] == proposal.pk
    assert adoption["operator_action"] is False
    assert adoption["title"] == "Adopt elected@1"
    assert adoption["tally"] == proposal.final_tally
    assert adoption["tally"]["for"] == 1


def test_a_fresh_signing_is_reused_and_a_stale_one_re_signed_with_a_higher_version(settings, two_models):
    first = signed_set_refresh()
    assert signed_set_refresh().pk == first.pk
    later = first.signed_at + dt.timedelta(
        seconds=settings.SIGNING_SET_LIFETIME_SECONDS - settings.SIGNING_SET_RESIGN_MARGIN_SECONDS + 1
    )
    second = signed_set_refresh(now=later)
    assert second.version == first.version + 1
    assert second.approved_set_id == first.approved_set_id
    assert second.expires > first.expires
    assert SignedApprovedSet.objects.count() == 2


def test_a_late_signing_request_never_signs_an_older_set(two_models):
    older = approved_set_current()
    approve("newest", size=1000)
    latest = signed_set_refresh()
    assert signed_set_publish_for(older).pk == latest.pk
    assert latest.approved_set.version > older.version


# --- Tasks and pins (a real worker) ----------------------------------------------------------------


@pytest.fixture
def approved_before_the_worker(transactional_db):
    return approve("pinned-model", size=2000)


def test_the_publish_task_signs_and_the_signed_documents_get_pinned(
    approved_before_the_worker, serial_worker, celery_session_app
):
    version = signed_set_publish_task.delay(approved_set_current().pk).get(timeout=30)
    drain(celery_session_app)
    signed = SignedApprovedSet.objects.get(version=version)
    root = root_current()
    assert signed.pin_status == PinStatus.PINNED
    assert root.pin_status == PinStatus.PINNED
    backend = pinning_backend()
    assert backend.is_pinned(signed.cid) and backend.is_pinned(root.cid)
    assert b"".join(backend.read(signed.cid)) == bytes(signed.document)


def test_the_refresh_task_signs_the_current_set_and_repins_what_failed(
    approved_before_the_worker, serial_worker, celery_session_app
):
    assert signing_refresh_task.delay().get(timeout=30) == 1
    drain(celery_session_app)
    signed = SignedApprovedSet.objects.get()
    assert signed.approved_set == approved_set_current()
    assert signed.pin_status == PinStatus.PINNED

    SignedApprovedSet.objects.filter(pk=signed.pk).update(pin_status=PinStatus.FAILED)
    assert signing_refresh_task.delay().get(timeout=30) == 1
    drain(celery_session_app)
    signed.refresh_from_db()
    assert signed.pin_status == PinStatus.PINNED


def test_the_beat_runs_the_refresh(settings):
    from conclave.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["signing-refresh"]
    assert entry["task"] in app.tasks
    assert entry["schedule"] == settings.SIGNING_REFRESH_INTERVAL_SECONDS


# --- The command ------------------------------------------------------------------------


def test_signing_keys_command_exports_the_trust_root_a_node_needs(tmp_path, two_models, capsys):
    call_command("signing_keys", "init")
    out = tmp_path / "root.json"
    call_command("signing_keys", "export-root", "-o", str(out))
    assert verify_trust_root(json.loads(out.read_bytes())).version == 1
    call_command("signing_keys", "show")
    shown = capsys.readouterr().out
    assert "root v1" in shown and "signed set v1" in shown
    call_command("signing_keys", "generate", str(tmp_path / "spare.pem"))
    assert stat.S_IMODE(os.stat(tmp_path / "spare.pem").st_mode) == 0o600
    with pytest.raises(CommandError, match="refusing to overwrite"):
        call_command("signing_keys", "generate", str(tmp_path / "spare.pem"))


def test_signing_tasks_and_tables_keep_the_names_they_had_in_the_registry():
    """Queued messages, the beat schedule and existing databases name them so."""
    from signing.tasks import signed_metadata_pin_task

    assert signed_set_publish_task.name == "registry.signing_tasks.signed_set_publish_task"
    assert signing_refresh_task.name == "registry.signing_tasks.signing_refresh_task"
    assert signed_metadata_pin_task.name == "registry.signing_tasks.signed_metadata_pin_task"
    assert RootMetadata._meta.db_table == "registry_rootmetadata"
    assert SignedApprovedSet._meta.db_table == "registry_signedapprovedset"


# --- Governed parameters in the signed set -------------------------------------------------


def test_a_signed_set_carries_the_governed_parameters_live_values(two_models):
    from governance.selectors import runtime_parameters

    signed = envelope_of(signed_set_refresh())["signed"]
    assert signed["parameters"] == runtime_parameters()
    assert (
        verify_signed_set(
            envelope_of(signed_set_refresh()), root=root_of(root_current()), now=timezone.now()
        ).parameters
        == runtime_parameters()
    )


def test_a_changed_parameter_is_signed_anew_for_the_same_approved_set(two_models):
    from signing.selectors import signed_set_needs_signing
    from tests.inference.conftest import parameter_set

    first = signed_set_refresh()
    assert signed_set_needs_signing() is False
    parameter_set("queue_size", 9)
    assert signed_set_needs_signing() is True
    second = signed_set_refresh()
    assert second.version == first.version + 1
    assert second.approved_set_id == first.approved_set_id
    assert envelope_of(second)["signed"]["parameters"]["queue_size"] == 9
    assert signed_set_refresh().version == second.version


def test_an_executed_parameter_change_enqueues_a_new_signing(two_models, django_capture_on_commit_callbacks):
    from governance.services import _signed_set_refresh_enqueue

    alice = person("alice")
    proposal = proposal_create(
        author=alice,
        proposal_type=ProposalType.PARAMETER_CHANGE,
        title="Fewer tokens",
        payload={"parameter": "max_tokens_per_request", "value": 64, "reason": "nodes are small"},
        now=T0,
    )
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    with django_capture_on_commit_callbacks() as callbacks:
        proposals_advance(now=proposal.execution_eta)
    assert _signed_set_refresh_enqueue in callbacks


def test_the_signed_api_serves_the_new_parameters_without_a_worker(two_models, api_client):
    from tests.inference.conftest import parameter_set

    before = api_client.get("/api/v1/approved/signed/").json()["signed"]
    parameter_set("request_timeout_seconds", 7)
    after = api_client.get("/api/v1/approved/signed/").json()["signed"]
    assert after["version"] == before["version"] + 1
    assert after["parameters"]["request_timeout_seconds"] == 7
