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
