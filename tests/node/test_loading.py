"""What a served embedding model holds, counted before it is loaded (the governed memory limit uses it)."""

import pytest

from conclave_node.loading import RuntimeOptions, embedding_sessions


@pytest.mark.parametrize(
    ("threads", "lanes", "sessions"),
    [
        (2, 1, 1),  # one lane on every thread: it is the solo runtime already
        (2, 2, 3),  # two one-thread lanes, and a two-thread session for a batch that runs alone
        (4, 2, 3),
        (1, 2, 2),  # one thread: every lane has it all, no solo session
    ],
)
def test_sessions_are_one_per_lane_and_a_solo_one_when_lanes_split_the_threads(threads, lanes, sessions):
    assert embedding_sessions(RuntimeOptions(threads=threads, embed_lanes=lanes)) == sessions
