"""The web side's reads of the approved set's head and the governed limits: cached, never stale after a write here."""

import pytest
from django.db import connection

from governance.models import GovernedParameter
from inference.selectors import limits_current, served_manifests
from registry.models import ModelKind
from tests.inference.conftest import EMBEDDING_CANDIDATE, defaults_adopt, pack_register, parameter_set

pytestmark = pytest.mark.django_db


def _write_elsewhere(name: str, value: int) -> None:
    """What another process's write looks like to this one: no signal here, only new rows."""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {GovernedParameter._meta.db_table} SET value = %s WHERE name = %s", [value, name])


def test_a_change_made_in_this_process_applies_to_the_next_request(settings):
    settings.INFERENCE_SERVING_READS_CACHE_SECONDS = 3600
    parameter_set("max_tokens_per_request", 100)
    assert limits_current()["max_tokens_per_request"] == 100
    parameter_set("max_tokens_per_request", 64)
    assert limits_current()["max_tokens_per_request"] == 64


def test_a_change_made_elsewhere_is_read_once_the_cache_time_passes(settings):
    settings.INFERENCE_SERVING_READS_CACHE_SECONDS = 3600
    parameter_set("queue_size", 5)
    assert limits_current()["queue_size"] == 5
    _write_elsewhere("queue_size", 9)
    assert limits_current()["queue_size"] == 5  # within the cache time: the value read before

    settings.INFERENCE_SERVING_READS_CACHE_SECONDS = 0
    assert limits_current()["queue_size"] == 5  # the old entry still runs to its expiry
    from inference.selectors import serving_reads_clear

    serving_reads_clear()  # what the expiry does
    assert limits_current()["queue_size"] == 9
    _write_elsewhere("queue_size", 7)
    assert limits_current()["queue_size"] == 7  # 0: read on every request


def test_an_adoption_in_this_process_changes_the_served_models_at_once(settings):
    from registry.services import manifest_approve

    settings.INFERENCE_SERVING_READS_CACHE_SECONDS = 3600
    defaults = defaults_adopt()
    assert [m.model_name for m in served_manifests(ModelKind.EMBEDDING)] == [defaults["all-MiniLM-L6-v2"].model_name]
    candidate = pack_register(EMBEDDING_CANDIDATE)
    manifest_approve(manifest=candidate, actor=None, reason="adopted by vote")
    assert served_manifests(ModelKind.EMBEDDING)[0].pk == candidate.pk


def test_the_returned_limits_are_a_copy():
    limits = limits_current()
    limits["queue_size"] = -1
    assert limits_current()["queue_size"] != -1


def test_a_read_that_a_write_overtook_is_not_reused(settings):
    from inference.selectors import _Fresh

    settings.INFERENCE_SERVING_READS_CACHE_SECONDS = 60
    values = iter([1, 2, 3])

    def read():
        value = next(values)
        if value == 1:
            fresh.clear()  # a write in this process lands while the read is in flight
        return value

    fresh = _Fresh(read)
    assert fresh() == 1
    assert fresh() == 2  # the overtaken read was not kept
    assert fresh() == 2  # this one was
