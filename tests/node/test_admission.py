"""Admission of generations on a node: running slots, a bounded queue in arrival order, live limits."""

import threading
import time

import pytest

from conclave_node.limits import Limits
from conclave_node.serve import AdmissionGate, ApiError
from tests.node.serving import wait_until

FAR = 3600.0


def gate_with(**values):
    limits = {"value": Limits(**values)}
    return AdmissionGate(lambda: limits["value"]), limits


def enter_in_thread(gate, entered: list, name: str, deadline: float | None = None):
    def run():
        try:
            gate.enter(deadline=deadline or time.monotonic() + FAR)
            entered.append(name)
        except ApiError as exc:
            entered.append(f"{name}:{exc.status}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_beyond_running_plus_queue_is_503_with_retry_after_and_the_queue_is_served_in_order():
    gate, _ = gate_with(max_concurrent_requests=1, queue_size=2, request_timeout_seconds=30)
    gate.enter(deadline=time.monotonic() + FAR)
    entered: list[str] = []
    second = enter_in_thread(gate, entered, "second")
    assert wait_until(lambda: gate.waiting == 1)
    third = enter_in_thread(gate, entered, "third")
    assert wait_until(lambda: gate.waiting == 2)
    with pytest.raises(ApiError) as refused:
        gate.enter(deadline=time.monotonic() + FAR)
    assert (refused.value.status, refused.value.code) == (503, "queue_full")
    assert refused.value.headers == {"Retry-After": "3"}

    gate.leave()
    second.join(10)
    assert entered == ["second"] and gate.waiting == 1
    gate.leave()
    third.join(10)
    assert entered == ["second", "third"] and gate.running == 1


def test_a_request_still_queued_at_its_deadline_gets_504_and_leaves_the_queue():
    gate, _ = gate_with(max_concurrent_requests=1, queue_size=1)
    gate.enter(deadline=time.monotonic() + FAR)
    with pytest.raises(ApiError) as late:
        gate.enter(deadline=time.monotonic())
    assert (late.value.status, late.value.code) == (504, "timeout")
    assert gate.waiting == 0 and gate.running == 1


def test_a_raised_concurrency_limit_admits_the_waiting_request_at_once():
    gate, limits = gate_with(max_concurrent_requests=1, queue_size=1)
    gate.enter(deadline=time.monotonic() + FAR)
    entered: list[str] = []
    waiting = enter_in_thread(gate, entered, "waiting")
    assert wait_until(lambda: gate.waiting == 1)
    limits["value"] = Limits(max_concurrent_requests=2, queue_size=1)
    gate.wake()
    waiting.join(10)
    assert entered == ["waiting"] and gate.running == 2
