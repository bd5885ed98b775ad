"""The node's embedding micro-batching, on the real MiniLM runtime.

The order of events is fixed by holding the first batch inside the model
call until the others are queued, so nothing depends on the host's speed.
"""

import threading

import numpy as np
import pytest

from conclave_node.batching import EmbeddingQueue, EmbeddingTimeout
from conclave_node.runtimes.embedding import EmbeddingRuntime
from tests.inference.test_runtimes import MINILM, SENTENCES, TOKENIZER, raw_embedding
from tests.node.serving import wait_until


class HeldRuntime(EmbeddingRuntime):
    """The real runtime; its first call waits for `release` (the batch that is running while others arrive)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[int] = []
        self.callers: list[str] = []

    def embed(self, texts):
        self.calls.append(len(texts))
        self.callers.append(threading.current_thread().name)
        if len(self.calls) == 1:
            self.entered.set()
            self.release.wait(60)
        return super().embed(texts)


@pytest.fixture
def runtime():
    return HeldRuntime(model_path=MINILM, tokenizer_path=TOKENIZER, threads=1)


def test_a_lone_request_runs_at_once_and_requests_that_arrive_meanwhile_share_one_call(runtime):
    queue = EmbeddingQueue(runtime, max_batch=32)
    answers = {}

    def ask(name, texts):
        answers[name] = queue.embed(texts, timeout=60)

    first = threading.Thread(target=ask, args=("first", [SENTENCES[0]]), name="first")
    first.start()
    assert runtime.entered.wait(60)
    waiting = [threading.Thread(target=ask, args=(f"w{i}", [SENTENCES[i % 3]]), name=f"w{i}") for i in range(3)]
    waiting.append(threading.Thread(target=ask, args=("pair", SENTENCES[1:3]), name="pair"))
    for thread in waiting:
        thread.start()
    assert wait_until(lambda: len(queue._pending) == 4, timeout=60)
    runtime.release.set()
    for thread in [first, *waiting]:
        thread.join(60)

    assert runtime.calls == [1, 5]
    # Both calls ran on the lane's own thread, not on a request's.
    assert runtime.callers == ["embedding-lane-0", "embedding-lane-0"]
    assert answers["first"].batch_size == 1
    assert {answers[name].batch_size for name in ("w0", "w1", "w2", "pair")} == {5}
    for i in range(3):
        assert float(np.dot(answers[f"w{i}"].vectors[0], raw_embedding(SENTENCES[i % 3]))) >= 0.999
    assert answers["pair"].vectors.shape == (2, 384)
    assert float(np.dot(answers["pair"].vectors[1], raw_embedding(SENTENCES[2]))) >= 0.999
    assert wait_until(lambda: queue.busy == 0, timeout=60) and not queue._pending  # idle once drained
    queue.close()


def test_a_request_still_waiting_at_its_deadline_gives_up_and_leaves_the_queue(runtime):
    queue = EmbeddingQueue(runtime, max_batch=32)
    first = threading.Thread(target=queue.embed, args=([SENTENCES[0]],), kwargs={"timeout": 60})
    first.start()
    assert runtime.entered.wait(60)
    with pytest.raises(EmbeddingTimeout):
        queue.embed([SENTENCES[1]], timeout=0.01)
    assert len(queue._pending) == 0
    runtime.release.set()
    first.join(60)
    assert queue.embed([SENTENCES[2]], timeout=60).batch_size == 1
    assert runtime.calls == [1, 1]  # the request that gave up was never embedded
    queue.close()


def test_with_two_lanes_a_request_runs_beside_a_running_batch_and_the_third_waits_for_a_free_lane(runtime):
    second_lane = HeldRuntime(model_path=MINILM, tokenizer_path=TOKENIZER, threads=1)
    queue = EmbeddingQueue(runtime, max_batch=32, lanes=[second_lane])
    answers = {}

    def ask(name, texts):
        answers[name] = queue.embed(texts, timeout=60)

    threads = [threading.Thread(target=ask, args=(name, [SENTENCES[i]]), name=name) for i, name in enumerate("ab")]
    for thread in threads:
        thread.start()
    # Both lanes hold a call: neither request waited for the other.
    assert runtime.entered.wait(60) and second_lane.entered.wait(60)
    third = threading.Thread(target=ask, args=("c", [SENTENCES[2]]), name="c")
    third.start()
    assert wait_until(lambda: len(queue._pending) == 1, timeout=60)  # no lane free: it waits
    runtime.release.set()
    second_lane.release.set()
    for thread in [*threads, third]:
        thread.join(60)

    assert {answers[name].batch_size for name in "abc"} == {1}
    for i, name in enumerate("abc"):
        assert float(np.dot(answers[name].vectors[0], raw_embedding(SENTENCES[i]))) >= 0.999
    assert sorted(runtime.calls + second_lane.calls) == [1, 1, 1]
    assert {runtime.callers[0], second_lane.callers[0]} == {"embedding-lane-0", "embedding-lane-1"}
    assert wait_until(lambda: queue.busy == 0, timeout=60)
    queue.close()


def test_closing_the_queue_stops_its_lane_threads_and_refuses_new_requests(runtime):
    runtime.release.set()
    queue = EmbeddingQueue(runtime, max_batch=32, lanes=[EmbeddingRuntime(model_path=MINILM, tokenizer_path=TOKENIZER)])
    assert queue.embed([SENTENCES[0]], timeout=60).vectors.shape == (1, 384)
    lanes = [t for t in threading.enumerate() if t.name.startswith("embedding-lane-")]
    assert len(lanes) >= 2
    queue.close()
    for thread in queue._threads:
        thread.join(60)
        assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        queue.embed([SENTENCES[1]], timeout=60)


def test_requests_one_after_another_stay_on_the_lane_that_finished_last(runtime):
    # Taking turns between lanes would run each lone sentence on a session that is cold in the caches.
    runtime.release.set()
    second_lane = HeldRuntime(model_path=MINILM, tokenizer_path=TOKENIZER, threads=1)
    second_lane.release.set()
    queue = EmbeddingQueue(runtime, max_batch=32, lanes=[second_lane])
    for i in range(5):
        assert queue.embed([SENTENCES[i % 3]], timeout=60).batch_size == 1
    assert runtime.callers == ["embedding-lane-0"] * 5 and second_lane.callers == []
    queue.close()


def two_lanes_and_solo(runtime: HeldRuntime):
    """A queue on `runtime` and a second one-thread lane, with a two-thread solo runtime; `ask` records answers."""
    second_lane = HeldRuntime(model_path=MINILM, tokenizer_path=TOKENIZER, threads=1)
    solo = HeldRuntime(model_path=MINILM, tokenizer_path=TOKENIZER, threads=2)
    queue = EmbeddingQueue(runtime, max_batch=32, lanes=[second_lane], solo=solo)
    answers = {}

    def ask(name, texts):
        answers[name] = queue.embed(texts, timeout=60)

    return queue, second_lane, solo, answers, ask


def test_a_batch_that_starts_with_no_other_lane_busy_runs_on_the_solo_runtime_and_one_beside_it_on_a_lane(runtime):
    runtime.release.set()
    queue, second_lane, solo, answers, ask = two_lanes_and_solo(runtime)
    second_lane.release.set()

    alone = threading.Thread(target=ask, args=("alone", [SENTENCES[0]]), name="alone")
    alone.start()
    assert solo.entered.wait(60)  # the lone request is on the solo runtime, held there
    beside = threading.Thread(target=ask, args=("beside", [SENTENCES[1]]), name="beside")
    beside.start()
    beside.join(60)  # answered while the solo call is still held: by a lane's own runtime
    assert answers["beside"].batch_size == 1 and solo.calls == [1]
    assert len(runtime.calls) + len(second_lane.calls) == 1
    solo.release.set()
    alone.join(60)
    assert wait_until(lambda: queue.busy == 0, timeout=60)
    ask("later", [SENTENCES[2]])  # alone again: the solo runtime is free, and used

    assert solo.calls == [1, 1]
    assert len(runtime.calls) + len(second_lane.calls) == 1
    for i, name in enumerate(["alone", "beside", "later"]):
        assert float(np.dot(answers[name].vectors[0], raw_embedding(SENTENCES[i]))) >= 0.999
    queue.close()


def test_a_lane_that_starts_while_another_lane_is_busy_runs_on_its_own_runtime_though_solo_is_free(runtime):
    runtime.release.set()
    queue, second_lane, solo, answers, ask = two_lanes_and_solo(runtime)

    alone = threading.Thread(target=ask, args=("alone", [SENTENCES[0]]), name="alone")
    alone.start()
    assert solo.entered.wait(60)
    held = threading.Thread(target=ask, args=("held", [SENTENCES[1]]), name="held")
    held.start()
    assert second_lane.entered.wait(60)  # the second lane, on its own runtime, held
    solo.release.set()
    alone.join(60)
    assert wait_until(lambda: queue.busy == 1, timeout=60)  # only the held lane runs; solo is free

    ask("beside", [SENTENCES[2]])  # another lane is busy: the lane that takes it uses its own runtime

    assert runtime.calls == [1] and solo.calls == [1] and second_lane.calls == [1]
    second_lane.release.set()
    held.join(60)
    for i, name in enumerate(["alone", "held", "beside"]):
        assert float(np.dot(answers[name].vectors[0], raw_embedding(SENTENCES[i]))) >= 0.999
    queue.close()
