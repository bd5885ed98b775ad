import hashlib

import pytest
from aleph_cid import compute_cid, hash_folder

from audit.models import AuditEvent, EventType
from audit.selectors import audit_chain_verify
from core.errors import Conflict, ValidationFailed
from core.ipfs import PinError, pinning_backend
from registry.models import ApprovedSet, Manifest, ManifestFile, ManifestStatus, PinStatus
from registry.services import (
    genesis_adopt,
    manifest_approve,
    manifest_metrics_record,
    manifest_pin,
    manifest_register,
    manifest_retire,
    manifest_verify_files,
)
from registry.staging import FileSource
from tests.registry.factories import model_files, register_test_manifest

pytestmark = pytest.mark.django_db


def _register(tmp_path, content=b"weights" * 1000, name="m", version="1", **kwargs):
    # Model files live apart from the per-test IPFS store and staging dirs.
    # Placeholder bytes, not a model: the format check is tested in test_formats.py.
    kwargs.setdefault("formats_check", False)
    tmp_path = tmp_path / "model"
    tmp_path.mkdir(parents=True, exist_ok=True)
    return manifest_register(
        model_name=name,
        version=version,
        kind="embedding",
        fmt="onnx",
        license="Apache-2.0",
        files=model_files(fmt="onnx", content=content, folder=tmp_path),
        source={"type": "test"},
        **kwargs,
    )


def test_register_computes_sha256_and_kubo_cids_in_one_pass(tmp_path, settings):
    content = b"\x01\x02" * 300_000  # spans several 256 KiB UnixFS chunks
    manifest, created = _register(tmp_path, content=content, pin="none")
    assert created
    weights = manifest.files.get(path="model.onnx")
    assert weights.sha256 == hashlib.sha256(content).hexdigest() == manifest.sha256
    assert weights.cid == compute_cid(content)
    folder = tmp_path / "model"
    tokenizer = manifest.files.get(path="tokenizer.json")
    assert tokenizer.cid == compute_cid((folder / "tokenizer.json").read_bytes())
    # A two-file model's CID is the UnixFS directory Kubo makes of the files.
    assert manifest.ipfs_cid == hash_folder(folder, cid_version=0)
    assert manifest.size_bytes == len(content) + (folder / "tokenizer.json").stat().st_size
    assert manifest.pin_status == PinStatus.PENDING
    assert AuditEvent.objects.filter(event_type=EventType.MANIFEST_REGISTERED, object_id=str(manifest.pk)).exists()


def test_single_file_model_cid_is_the_file_cid(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"hello world\n")
    manifest, _ = manifest_register(
        model_name="g",
        version="1",
        kind="generative",
        fmt="gguf",
        license="MIT",
        files=[FileSource.single("m.gguf", "weights", path)],
        source={},
        pin="sync",
        formats_check=False,
    )
    assert manifest.ipfs_cid == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    assert manifest.pin_status == PinStatus.PINNED
    assert b"".join(pinning_backend().read(manifest.ipfs_cid)) == b"hello world\n"


def test_failure_mid_stream_leaves_nothing_behind(tmp_path, settings):
    seen = {"bytes": 0}

    def fail_halfway(count: int) -> None:
        seen["bytes"] += count
        if seen["bytes"] > 1024 * 1024:
            raise OSError("disk unplugged")

    with pytest.raises(OSError, match="disk unplugged"):
        _register(tmp_path, content=b"x" * (3 * 1024 * 1024), progress=fail_halfway)
    assert seen["bytes"] > 0
    assert Manifest.objects.count() == 0
    assert ManifestFile.objects.count() == 0
    assert AuditEvent.objects.count() == 0
    assert list(settings.REGISTRY_STAGING_DIR.iterdir()) == []


def test_database_failure_after_hashing_leaves_no_rows_or_staged_bytes(tmp_path, settings, monkeypatch):
    from registry import events

    def broken_event(**kwargs):
        raise RuntimeError("audit store down")

    monkeypatch.setattr(events, "manifest_registered_event", broken_event)
    with pytest.raises(RuntimeError):
        _register(tmp_path)
    assert Manifest.objects.count() == 0
    assert ManifestFile.objects.count() == 0
    assert list(settings.REGISTRY_STAGING_DIR.iterdir()) == []


def test_registering_identical_bytes_again_is_idempotent(tmp_path, settings):
    first, created_first = _register(tmp_path, pin="sync")
    second, created_second = _register(tmp_path, pin="sync")
    assert created_first and not created_second
    assert first.pk == second.pk
    assert Manifest.objects.count() == 1
    assert AuditEvent.objects.filter(event_type=EventType.MANIFEST_REGISTERED).count() == 1
    assert list(settings.REGISTRY_STAGING_DIR.iterdir()) == []


def test_changed_bytes_under_the_same_version_are_refused(tmp_path):
    _register(tmp_path / "a", content=b"one" * 100)
    with pytest.raises(Conflict) as caught:
        _register(tmp_path / "b", content=b"two" * 100)
    assert "new version" in caught.value.message
    assert set(caught.value.fields) >= {"sha256", "ipfs_cid"}
    # The new bytes under a new version are fine.
    manifest, created = _register(tmp_path / "b", content=b"two" * 100, version="2")
    assert created and manifest.version == "2"


def test_identity_fields_do_not_change_through_services(tmp_path):
    manifest = register_test_manifest(name="immutable")
    before = {f: getattr(manifest, f) for f in ("sha256", "ipfs_cid", "size_bytes", "license", "kind", "format")}
    approved = manifest_approve(manifest=manifest, actor=None, reason="test")
    retired = manifest_retire(manifest=approved, actor=None, reason="test")
    assert {f: getattr(retired, f) for f in before} == before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model_name": "bad name!"}, "model_name"),
        ({"version": ""}, "version"),
        ({"kind": "vision"}, "kind"),
        ({"fmt": "pt"}, "format"),
        ({"license": ""}, "license"),
    ],
)
def test_bad_registration_input_names_the_field(tmp_path, kwargs, field):
    arguments = {
        "model_name": "ok",
        "version": "1",
        "kind": "embedding",
        "fmt": "onnx",
        "license": "MIT",
        "files": model_files(fmt="onnx", content=b"w", folder=tmp_path),
        "source": {},
    }
    arguments.update(kwargs)
    with pytest.raises(ValidationFailed) as caught:
        manifest_register(**arguments)
    assert field in caught.value.fields
    assert Manifest.objects.count() == 0


def test_onnx_model_without_tokenizer_is_refused(tmp_path):
    files = model_files(fmt="onnx", content=b"w", folder=tmp_path)[:1]
    with pytest.raises(ValidationFailed, match="tokenizer.json"):
        manifest_register(
            model_name="x", version="1", kind="embedding", fmt="onnx", license="MIT", files=files, source={}
        )


def test_expected_sha256_mismatch_is_refused_and_discarded(tmp_path, settings):
    with pytest.raises(ValidationFailed, match="sha256"):
        _register(tmp_path, expected_sha256="0" * 64)
    assert Manifest.objects.count() == 0
    assert list(settings.REGISTRY_STAGING_DIR.iterdir()) == []


def test_pin_failure_marks_failed_keeps_staged_bytes_and_a_retry_succeeds(tmp_path, settings):
    manifest, _ = _register(tmp_path, pin="none")
    staged = settings.REGISTRY_STAGING_DIR / manifest.ipfs_cid
    assert staged.is_dir()
    # A real backend failure: the staged tokenizer vanishes before the pin.
    (staged / "tokenizer.json").rename(tmp_path / "moved.json")
    with pytest.raises(PinError):
        manifest_pin(manifest=manifest)
    manifest.refresh_from_db()
    assert manifest.pin_status == PinStatus.FAILED
    assert "tokenizer.json" in manifest.pin_error
    assert AuditEvent.objects.filter(event_type=EventType.MANIFEST_PIN_FAILED).count() == 1
    assert staged.is_dir()

    (tmp_path / "moved.json").rename(staged / "tokenizer.json")
    manifest_pin(manifest=manifest)
    manifest.refresh_from_db()
    assert manifest.pin_status == PinStatus.PINNED
    assert manifest.pin_error == ""
    assert manifest_verify_files(manifest=manifest) == []
    assert not staged.exists()


def test_verify_files_finds_corrupted_pinned_bytes(settings):
    manifest = register_test_manifest(name="verify")
    assert manifest_verify_files(manifest=manifest) == []
    weights = manifest.files.get(role="weights")
    blob = settings.IPFS_STORE_DIR / "blobs" / weights.cid
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF
    blob.write_bytes(bytes(data))
    problems = manifest_verify_files(manifest=manifest)
    assert any("sha256" in p for p in problems)


def test_approval_requires_pinned_bytes(tmp_path):
    manifest, _ = _register(tmp_path, pin="none")
    with pytest.raises(Conflict, match="not pinned"):
        manifest_approve(manifest=manifest, actor=None, reason="too early")
    manifest.refresh_from_db()
    assert manifest.status == ManifestStatus.CANDIDATE
    assert not ApprovedSet.objects.exists()


def test_approve_and_retire_bump_the_approved_set_and_refresh_manifest_cid():
    manifest = register_test_manifest(name="a")
    registered_cid = manifest.manifest_cid
    approved = manifest_approve(manifest=manifest, actor=None, reason="adopt", proposal_id=7)
    assert approved.status == ManifestStatus.APPROVED
    assert approved.approved_by_governance is True
    assert approved.adoption_date is not None
    assert approved.manifest_cid != registered_cid
    assert ApprovedSet.objects.get().version == 1
    # Approving again changes nothing.
    manifest_approve(manifest=approved, actor=None, reason="again")
    assert ApprovedSet.objects.count() == 1
    manifest_retire(manifest=approved, actor=None, reason="old")
    latest = ApprovedSet.objects.order_by("-version").first()
    assert latest.version == 2
    assert b'"manifests":[]' in bytes(latest.document)
    with pytest.raises(Conflict, match="retired"):
        manifest_approve(manifest=approved, actor=None, reason="back")
    assert audit_chain_verify().ok


def test_genesis_adoption_happens_once():
    first = register_test_manifest(name="e", kind="embedding")
    second = register_test_manifest(name="g", kind="generative", fmt="gguf")
    approved_set = genesis_adopt(manifests=[first, second], actor=None, reason="founding models")
    assert approved_set.version == 1
    assert Manifest.objects.filter(status=ManifestStatus.APPROVED).count() == 2
    assert not Manifest.objects.filter(approved_by_governance=True).exists()
    assert AuditEvent.objects.filter(event_type=EventType.GENESIS_ADOPTION).count() == 1
    assert genesis_adopt(manifests=[first, second], actor=None, reason="again") is None
    assert ApprovedSet.objects.count() == 1


def test_replace_approves_and_retires_in_one_approved_set_version():
    from registry.services import manifest_replace

    old = register_test_manifest(name="old-model")
    manifest_approve(manifest=old, actor=None, reason="first")
    new = register_test_manifest(name="new-model")
    approved, retired = manifest_replace(candidate=new, replaced=old, actor=None, reason="better", proposal_id=3)
    assert approved.status == ManifestStatus.APPROVED and retired.status == ManifestStatus.RETIRED
    assert list(ApprovedSet.objects.order_by("version").values_list("version", flat=True)) == [1, 2]
    latest = bytes(ApprovedSet.objects.get(version=2).document)
    assert b"new-model" in latest and b"old-model" not in latest


def test_manifest_metrics_record_merges_metrics_refreshes_the_document_cid_and_audits_it(
    django_capture_on_commit_callbacks,
):
    manifest = register_test_manifest(name="metrics-model")
    old_cid = manifest.manifest_cid
    with django_capture_on_commit_callbacks(execute=True):
        updated = manifest_metrics_record(
            manifest=manifest, metrics={"avg_tokens_per_sec": 123.4, "benchmark_run_id": 7}
        )
    stored = Manifest.objects.get(pk=manifest.pk)
    assert stored.metrics["avg_tokens_per_sec"] == 123.4
    assert stored.metrics["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert stored.manifest_cid == updated.manifest_cid != old_cid
    assert stored.pin_status == PinStatus.PINNED
    event = AuditEvent.objects.filter(event_type=EventType.MANIFEST_METRICS_RECORDED, object_id=str(manifest.pk)).get()
    assert event.payload["metrics"] == {"avg_tokens_per_sec": 123.4, "benchmark_run_id": 7}
    assert event.payload["manifest_cid"] == stored.manifest_cid
    assert audit_chain_verify().ok


def test_every_manifest_document_an_event_names_is_pinned_even_when_it_changed_again_before_the_pin(
    django_capture_on_commit_callbacks,
):
    from django.db import transaction

    manifest = register_test_manifest(name="raced-model")
    # The approval and a benchmark's metrics commit before any pin runs (a busy worker, a slow store).
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        manifest_approve(manifest=manifest, actor=None, reason="test")
        manifest_metrics_record(manifest=manifest, metrics={"avg_tokens_per_sec": 50.0})

    named = AuditEvent.objects.filter(object_type="manifest", object_id=str(manifest.pk)).values_list(
        "payload__manifest_cid", flat=True
    )
    assert len(set(named)) >= 3  # registered, approved, metrics recorded: three versions of the document
    backend = pinning_backend()
    assert all(backend.is_pinned(cid) for cid in named), [cid for cid in named if not backend.is_pinned(cid)]
