"""Registry tasks on a real worker: the in-memory broker on embedded runs, Redis in CI's second pass."""

import time

import pytest

from registry.models import Manifest, PinStatus
from registry.tasks import registry_retry_unpinned
from tests.registry.factories import register_test_manifest


def _wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.django_db(transaction=True)
def test_sweep_repins_a_failed_manifest_on_the_worker(celery_worker, settings):
    manifest = register_test_manifest(name="sweep", pin="none")
    Manifest.objects.filter(pk=manifest.pk).update(pin_status=PinStatus.FAILED, pin_error="kubo was down")
    queued = registry_retry_unpinned.delay().get(timeout=30)
    assert queued >= 1
    assert _wait_for(lambda: Manifest.objects.get(pk=manifest.pk).pin_status == PinStatus.PINNED)
    assert Manifest.objects.get(pk=manifest.pk).pin_error == ""


@pytest.mark.django_db(transaction=True)
def test_registration_enqueues_the_pin_only_after_commit(celery_worker):
    from django.db import transaction

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            register_test_manifest(name="rolled-back", pin="async")
            raise RuntimeError("the caller's transaction fails")
    assert not Manifest.objects.exists()
    manifest = register_test_manifest(name="committed", pin="async")
    assert _wait_for(lambda: Manifest.objects.get(pk=manifest.pk).pin_status == PinStatus.PINNED)
