"""The routing rules on plain values: score, fitness, breaker, weighted majority."""

import numpy as np
import pytest

from inference.routing.policy import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breaker,
    Candidate,
    cosine_min,
    fitness_after,
    fitness_now,
    percentile,
    rank,
    scores,
    weighted_majority,
)


def test_score_is_seven_tenths_normalised_latency_plus_three_tenths_unfitness():
    result = scores([Candidate("a", 100.0, 1.0), Candidate("b", 50.0, 0.5)])
    assert result["a"] == pytest.approx(0.7 * 1.0 + 0.3 * 0.0)
    assert result["b"] == pytest.approx(0.7 * 0.5 + 0.3 * 0.5)
    assert [c.key for c in rank([Candidate("a", 100.0, 1.0), Candidate("b", 50.0, 0.5)])] == ["b", "a"]


def test_the_fitter_node_wins_at_equal_latency_and_the_faster_at_equal_fitness():
    assert rank([Candidate("a", 20.0, 0.5), Candidate("b", 20.0, 0.9)])[0].key == "b"
    assert rank([Candidate("a", 20.0, 0.8), Candidate("b", 40.0, 0.8)])[0].key == "a"


def test_a_node_without_samples_gets_the_candidates_median_latency():
    result = scores([Candidate("a", 10.0, 0.8), Candidate("b", 30.0, 0.8), Candidate("new", None, 0.8)])
    median = 20.0
    assert result["new"] == pytest.approx(0.7 * median / 30.0 + 0.3 * 0.2)
    # With no sample anywhere every node is equal on latency.
    fresh = scores([Candidate("a", None, 0.8), Candidate("b", None, 0.8)])
    assert fresh["a"] == fresh["b"]


def test_requests_in_flight_make_a_node_look_slower_so_concurrent_requests_spread():
    busy, idle = Candidate("busy", 10.0, 0.8, in_flight=3), Candidate("idle", 20.0, 0.8)
    assert rank([busy, idle])[0].key == "idle"


def test_fitness_falls_on_bad_rises_on_good_and_stays_in_bounds():
    fitness = 0.8
    fitness = fitness_after(fitness, good=False, alpha=0.2)
    assert fitness == pytest.approx(0.64)
    fitness = fitness_after(fitness, good=True, alpha=0.2)
    assert fitness == pytest.approx(0.712)
    for _ in range(200):
        fitness = fitness_after(fitness, good=True, alpha=0.5)
    assert fitness <= 1.0
    for _ in range(200):
        fitness = fitness_after(fitness, good=False, alpha=0.5)
    assert fitness >= 0.0


def test_fitness_drifts_back_to_the_prior_as_it_ages():
    assert fitness_now(0.2, age_seconds=0, prior=0.8, half_life=60) == 0.2
    assert fitness_now(0.2, age_seconds=60, prior=0.8, half_life=60) == pytest.approx(0.5)
    assert fitness_now(0.2, age_seconds=6000, prior=0.8, half_life=60) == pytest.approx(0.8)


def test_breaker_opens_after_consecutive_failures_then_half_opens_for_one_trial():
    breaker = Breaker()
    for _ in range(2):
        breaker = breaker.after(success=False, now=100.0, threshold=3)
        assert breaker.state == CLOSED
    assert breaker.after(success=True, now=100.0, threshold=3) == Breaker()  # a success resets the count
    breaker = breaker.after(success=False, now=100.0, threshold=3)
    assert breaker.state == OPEN and not breaker.admits(now=105.0, cooldown=10)
    assert breaker.take(now=105.0, cooldown=10) is None
    assert breaker.shown_state(now=111.0, cooldown=10) == HALF_OPEN
    trial = breaker.take(now=111.0, cooldown=10)
    assert trial.state == HALF_OPEN
    assert trial.take(now=112.0, cooldown=10) is None  # one trial at a time
    assert trial.after(success=True, now=112.0, threshold=3).state == CLOSED
    reopened = trial.after(success=False, now=112.0, threshold=3)
    assert reopened.state == OPEN and reopened.opened_at == 112.0
    assert Breaker.from_dict(reopened.as_dict()) == reopened


def test_a_node_that_joined_again_after_its_breaker_opened_gets_its_trial_at_once():
    opened = Breaker().after(success=False, now=100.0, threshold=1)
    assert not opened.admits(now=101.0, cooldown=10, joined_at=99.0)  # joined before: the failures are its own
    assert opened.admits(now=101.0, cooldown=10, joined_at=100.5)  # a restarted process
    trial = opened.take(now=101.0, cooldown=10, joined_at=100.5)
    assert trial.state == HALF_OPEN and trial.take(now=101.5, cooldown=10, joined_at=100.5) is None


def test_weighted_majority_outvotes_a_dissenter_and_weights_by_fitness():
    rng = np.random.default_rng(0)
    honest = rng.normal(size=(2, 8))
    perturbed = honest + rng.normal(scale=2.0, size=(2, 8))
    winner, agree = weighted_majority([perturbed, honest, honest.copy()], [0.9, 0.6, 0.6], min_cosine=0.98)
    assert winner in (1, 2) and agree == [False, True, True]
    # Two answers that disagree: the fitter one wins.
    winner, agree = weighted_majority([perturbed, honest], [0.3, 0.9], min_cosine=0.98)
    assert winner == 1 and agree == [False, True]


def test_cosine_min_takes_the_worst_text_and_refuses_mismatched_shapes():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert cosine_min(a, a) == pytest.approx(1.0)
    assert cosine_min(a, b) == pytest.approx(0.0)
    assert cosine_min(a, a[:1]) == -1.0


def test_percentile():
    assert percentile([], 50) is None
    assert percentile([1, 2, 3], 50) == 2.0
