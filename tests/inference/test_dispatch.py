"""The web side's coalescing of concurrent embedding requests (no worker needed)."""

import threading
import time

from inference.serving.web import EmbeddingCoalescer


def test_the_web_coalescer_sends_concurrent_requests_as_one_batch_and_splits_the_answer():
    sent = []
    release = threading.Event()

    def send(texts):
        sent.append(list(texts))
        release.wait(5)
        return {"t": "done", "vectors": [[len(t)] for t in texts]}

    coalescer = EmbeddingCoalescer(max_texts=32, max_in_flight=1)
    answers = {}

    def ask(text):
        waiter = coalescer.embed([text], send=send, timeout=10)
        answers[text] = waiter.message["vectors"][waiter.offset]

    first = threading.Thread(target=ask, args=("a",))
    first.start()
    while not sent:
        time.sleep(0.001)
    others = [threading.Thread(target=ask, args=("b" * n,)) for n in range(2, 6)]
    for thread in others:
        thread.start()
    while len(coalescer._pending) < 4:
        time.sleep(0.001)
    release.set()
    for thread in [first, *others]:
        thread.join()
    assert sent[0] == ["a"]
    assert sorted(sent[1]) == ["bb", "bbb", "bbbb", "bbbbb"]  # one task for the four that waited
    assert answers == {"a": [1], "bb": [2], "bbb": [3], "bbbb": [4], "bbbbb": [5]}
