"""The shared serving state: admission, running slots, replies, cancellation, samples.

Each test runs against the implementation this run is configured with
(Redis on CI's PostgreSQL + Redis pass, this process's memory otherwise)
and against the in-memory one.
"""

import threading
import time

import numpy as np
import pytest

from inference.serving.shared_state import LocalCoordination, coordination


@pytest.fixture(params=["configured", "local"])
def state(request):
    return coordination() if request.param == "configured" else LocalCoordination()


def test_admission_refuses_past_capacity_and_frees_on_release(state):
    assert state.admit("a", capacity=2, lease_seconds=30)
    assert state.admit("b", capacity=2, lease_seconds=30)
    assert not state.admit("c", capacity=2, lease_seconds=30)
    state.release("a")
    assert state.admit("c", capacity=2, lease_seconds=30)


def test_running_slots_are_granted_in_arrival_order(state):
    for ticket in ("first", "second", "third"):
        assert state.admit(ticket, capacity=10, lease_seconds=30)
        time.sleep(0.002)
    # One slot: the second and third wait, and the third cannot jump the queue.
    assert state.wait_start("first", max_running=1, lease_seconds=30, until=time.time() + 1)
    assert not state.wait_start("third", max_running=1, lease_seconds=30, until=time.time() + 0.05)
    assert state.load() == (1, 2)
    state.release("first")
    assert not state.wait_start("third", max_running=1, lease_seconds=30, until=time.time() + 0.05)
    assert state.wait_start("second", max_running=1, lease_seconds=30, until=time.time() + 1)
    assert state.load() == (1, 1)


def test_a_waiting_request_starts_as_soon_as_a_slot_is_released(state):
    state.admit("running", capacity=5, lease_seconds=30)
    state.admit("waiting", capacity=5, lease_seconds=30)
    assert state.wait_start("running", max_running=1, lease_seconds=30, until=time.time() + 1)
    threading.Timer(0.1, state.release, args=("running",)).start()
    assert state.wait_start("waiting", max_running=1, lease_seconds=30, until=time.time() + 5)


def test_leases_expire_so_a_crashed_holder_cannot_block_for_ever(state):
    assert state.admit("crashed", capacity=1, lease_seconds=0.05)
    assert not state.admit("next", capacity=1, lease_seconds=30)
    time.sleep(0.1)
    assert state.admit("next", capacity=1, lease_seconds=30)


def test_replies_arrive_in_order_and_carry_embeddings(state):
    state.reply_open("r1")
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    state.reply_push("r1", {"t": "started"})
    state.reply_push("r1", {"t": "done", "vectors": vectors})
    assert state.reply_pop("r1", 1)["t"] == "started"
    done = state.reply_pop("r1", 1)
    assert np.array_equal(np.asarray(done["vectors"]), vectors)
    assert state.reply_pop("r1", 0.05) is None
    state.reply_close("r1")


def test_a_reader_blocked_on_a_reply_wakes_when_it_is_pushed(state):
    state.reply_open("r2")
    threading.Timer(0.05, state.reply_push, args=("r2", {"t": "done"})).start()
    assert state.reply_pop("r2", 5)["t"] == "done"
    state.reply_close("r2")


def test_cancellation_flags_and_worker_statuses(state):
    assert not state.is_cancelled("r3")
    state.cancel("r3")
    assert state.is_cancelled("r3")
    state.status_publish("w1", {"loading": False}, ttl=0.2)
    assert state.statuses() == {"w1": {"loading": False}}
    time.sleep(0.3)
    assert state.statuses() == {}


def test_a_worker_is_alive_while_it_beats_and_its_status_lives_as_long(state):
    assert not state.worker_alive("w-beat")
    state.status_publish("w-beat", {"loading": False}, ttl=0.2)
    state.heartbeat("w-beat", {"generating": 1}, ttl=1.0)
    assert state.worker_alive("w-beat")
    assert state.heartbeats()["w-beat"] == {"generating": 1}
    time.sleep(0.3)
    assert state.statuses() == {"w-beat": {"loading": False}}  # the heartbeat kept it
    time.sleep(0.8)
    assert not state.worker_alive("w-beat")
    assert "w-beat" not in state.heartbeats() and state.statuses() == {}


def test_samples_buffer_is_drained_in_order(state):
    for i in range(5):
        state.samples_push({"i": i})
    assert [s["i"] for s in state.samples_take(3)] == [0, 1, 2]
    assert [s["i"] for s in state.samples_take(10)] == [3, 4]
    assert state.samples_take(10) == []


def test_redis_samples_leave_the_request_path_and_arrive_in_batches():
    from inference.serving.shared_state import SAMPLES_SEND_SECONDS, RedisCoordination

    state = coordination()
    if not isinstance(state, RedisCoordination):
        pytest.skip("Redis is not configured in this run (CI's PostgreSQL + Redis pass runs this)")
    state.reset()
    state.samples_push({"i": 0})
    assert state.client.llen(state._samples) == 0  # no round trip on the request path
    deadline = time.monotonic() + SAMPLES_SEND_SECONDS * 6
    while state.client.llen(state._samples) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.client.llen(state._samples) == 1  # the sender thread delivered it
    for i in range(1, 4):
        state.samples_push({"i": i})
    assert [s["i"] for s in state.samples_take(10)] == [0, 1, 2, 3]  # taking sends what waits here first


def test_routing_records_are_replaced_atomically_across_threads(state):
    def bump(record):
        record = record or {"count": 0}
        record["count"] += 1
        return record

    threads = [
        threading.Thread(target=lambda: [state.routing_update("counter", bump, ttl=30) for _ in range(25)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state.routing_read(["counter", "absent"]) == {"counter": {"count": 100}}


def test_routing_records_expire_and_reset_forgets_them(state):
    state.routing_update("short", lambda record: {"v": 1}, ttl=0.05)
    state.routing_update("long", lambda record: {"v": 2}, ttl=30)
    time.sleep(0.1)
    assert state.routing_read(["short", "long"]) == {"long": {"v": 2}}
    state.reset()
    assert state.routing_read(["long"]) == {}
