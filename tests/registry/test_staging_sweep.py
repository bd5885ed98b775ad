"""The staging sweep: staged copies nothing will pin are removed; those a pin still needs stay."""

import os
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

from registry.models import Manifest, PinStatus
from registry.services import staging_sweep
from tests.registry.factories import register_test_manifest

pytestmark = pytest.mark.django_db

DAY = 24 * 3600


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _staged() -> set[str]:
    folder = Path(settings.REGISTRY_STAGING_DIR)
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


class _Rollback(Exception):
    pass


def test_a_rolled_back_registration_leaves_a_copy_that_the_sweep_removes_once_old():
    with pytest.raises(_Rollback), transaction.atomic():
        manifest = register_test_manifest(name="rolled-back", pin="none")
        cid = manifest.ipfs_cid
        raise _Rollback
    assert not Manifest.objects.filter(ipfs_cid=cid).exists()
    assert cid in _staged()  # what the caller's rollback left behind

    assert staging_sweep() == []  # young: it could be a registration in progress
    _age(Path(settings.REGISTRY_STAGING_DIR) / cid, 2 * DAY)
    removed = staging_sweep()
    assert [p.name for p in removed] == [cid]
    assert cid not in _staged()


def test_the_bytes_a_pending_or_failed_pin_needs_are_kept_however_old():
    pending = register_test_manifest(name="pending", pin="none")
    failed = register_test_manifest(name="failed", pin="none")
    Manifest.objects.filter(pk=failed.pk).update(pin_status=PinStatus.FAILED)
    staging = Path(settings.REGISTRY_STAGING_DIR)
    interrupted = staging / ".incoming-0123abcd"
    interrupted.mkdir()
    (interrupted / "model.onnx").write_bytes(b"half a copy")
    for entry in staging.iterdir():
        _age(entry, 3 * DAY)

    removed = {p.name for p in staging_sweep()}
    assert removed == {".incoming-0123abcd"}
    assert {pending.ipfs_cid, failed.ipfs_cid} <= _staged()


def test_pinned_manifests_leave_nothing_and_the_sweep_keeps_it_that_way():
    manifest = register_test_manifest(name="pinned", pin="sync")
    assert manifest.ipfs_cid not in _staged()  # the pin discarded its staged copy
    assert staging_sweep(older_than_seconds=0) == []


# --- Partial copies and uploads of processes that died ---------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]

# A registration's copy step that stops after its first megabyte, as a
# process killed mid-copy would (the parent kills it with SIGKILL there).
_COPY_THEN_HANG = """
import sys, time
from pathlib import Path
from registry.staging import FileSource, stage_files

def progress(count):
    print("copying", flush=True)
    time.sleep(3600)

stage_files([FileSource.single("model.gguf", "model", Path(sys.argv[1]))], staging_dir=Path(sys.argv[2]),
progress=progress)
"""


def _incoming() -> list[Path]:
    folder = Path(settings.REGISTRY_STAGING_DIR)
    return sorted(p for p in folder.iterdir() if p.name.startswith(".incoming-")) if folder.exists() else []


def test_the_partial_copy_of_a_killed_registration_is_removed_by_the_next_sweep(tmp_path):
    import signal
    import subprocess
    import sys

    source = tmp_path / "model.gguf"
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    copier = subprocess.Popen(
        [sys.executable, "-c", _COPY_THEN_HANG, str(source), str(settings.REGISTRY_STAGING_DIR)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert copier.stdout.readline().strip() == "copying"
        [partial] = _incoming()
        assert (partial / "model.gguf").stat().st_size > 0

        assert staging_sweep() == []  # its writer still runs
        assert _incoming() == [partial]

        copier.send_signal(signal.SIGKILL)
        copier.wait(timeout=30)
        assert partial.exists()  # nothing cleaned up after a SIGKILL

        assert staging_sweep() == [partial]
        assert _incoming() == []
    finally:
        copier.kill()
        copier.wait()


def test_a_partial_copy_written_elsewhere_stays_while_fresh_and_goes_once_nothing_wrote_to_it(settings):
    settings.REGISTRY_STAGING_INCOMING_STALE_SECONDS = 3600
    staging = Path(settings.REGISTRY_STAGING_DIR)
    staging.mkdir(parents=True, exist_ok=True)
    partial = staging / ".incoming-0123456789ab-4242-1000-0123abcd"  # another machine's writer
    partial.mkdir()
    (partial / "model.onnx").write_bytes(b"half a copy")

    assert staging_sweep() == []
    _age(partial / "model.onnx", 3601)
    _age(partial, 3601)
    assert staging_sweep() == [partial]


def test_a_partial_upload_is_removed_once_nothing_wrote_to_it_for_the_staleness_bound(settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    settings.REGISTRY_STAGING_INCOMING_STALE_SECONDS = 3600
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    in_progress = uploads / "tmpa1b2c3.upload.gguf"
    in_progress.write_bytes(b"still arriving")
    abandoned = uploads / "tmpd4e5f6.upload.onnx"
    abandoned.write_bytes(b"171 MB of 300")
    _age(abandoned, 3601)

    assert staging_sweep() == [abandoned]
    assert in_progress.exists()
