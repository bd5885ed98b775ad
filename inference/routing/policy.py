"""The routing rules, as pure functions of plain values (no I/O, no Django): unit-tested on their own.

The choice (the DELLM rule): over the nodes that serve the model, have room in
their queue and whose breaker lets a request through,

    score = 0.7 × normalised latency + 0.3 × (1 − fitness), lowest wins.

Latency is the node's recent observed p50 for the model (a window of the
platform's own samples), times one plus the requests this web process has
in flight to it, so that concurrent requests spread instead of all piling on
the node that was fastest a moment ago. A node with no sample yet (the router
also counts one with too few recent samples as new) gets the candidates'
median p50, so a new node is tried. Latencies are normalised by
the largest among the candidates.

Fitness (0..1, per node and model) is an exponentially weighted average of
good (1) and bad (0) observations starting at a prior: errors, timeouts,
deadline misses and failed spot checks pull it down, good answers and
agreeing spot checks pull it up; it drifts back to the prior while a node
is not observed. A node under a minimum fitness is out of the rotation for
that model (until it drifts back over it).

Breaker (per node): closed → open after N consecutive failures → half-open
after a cool-down, when one trial request goes through; its success closes
the breaker, its failure opens it again.
"""

from dataclasses import dataclass, replace

import numpy as np

LATENCY_WEIGHT = 0.7
FITNESS_WEIGHT = 0.3

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def percentile(values, q: float) -> float | None:
    """The q-th percentile (0..100) of `values` (linear interpolation, as numpy's default), None when there are none.

    Plain Python: the windows are small, and this runs for every candidate of every request.
    """
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


@dataclass(frozen=True)
class Candidate:
    key: str  # the node's identity (its account id, as text)
    p50_ms: float | None  # None: no sample yet
    fitness: float
    in_flight: int = 0


def scores(candidates: list[Candidate]) -> dict[str, float]:
    """Each candidate's score (lower is better)."""
    known = [c.p50_ms for c in candidates if c.p50_ms is not None]
    median = float(np.median(known)) if known else 1.0
    expected = {c.key: (c.p50_ms if c.p50_ms is not None else median) * (1 + max(0, c.in_flight)) for c in candidates}
    largest = max(expected.values(), default=0.0)
    result = {}
    for candidate in candidates:
        latency = expected[candidate.key] / largest if largest > 0 else 0.0
        fitness = min(1.0, max(0.0, candidate.fitness))
        result[candidate.key] = LATENCY_WEIGHT * latency + FITNESS_WEIGHT * (1 - fitness)
    return result


def rank(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates best first (lowest score; ties by key, so the order is stable)."""
    by_score = scores(candidates)
    return sorted(candidates, key=lambda c: (by_score[c.key], c.key))


def fitness_after(fitness: float, *, good: bool, alpha: float) -> float:
    """The moving average after one observation (good pulls it towards 1, bad towards 0)."""
    target = 1.0 if good else 0.0
    return min(1.0, max(0.0, (1 - alpha) * fitness + alpha * target))


def fitness_now(fitness: float, *, age_seconds: float, prior: float, half_life: float) -> float:
    """Fitness drifts back towards the prior as its last observation ages (half the gap per `half_life`).

    A node that fell out of the rotation gets a new chance after a while
    (and is judged again); one that keeps serving is judged by what it does.
    """
    if half_life <= 0 or age_seconds <= 0:
        return fitness
    return prior + (fitness - prior) * 0.5 ** (age_seconds / half_life)


@dataclass(frozen=True)
class Breaker:
    state: str = CLOSED
    failures: int = 0  # consecutive
    opened_at: float = 0.0
    trial_at: float = 0.0  # when the half-open trial went out

    @classmethod
    def from_dict(cls, data: dict | None) -> "Breaker":
        if not data:
            return cls()
        return cls(
            state=data.get("state", CLOSED),
            failures=int(data.get("failures", 0)),
            opened_at=float(data.get("opened_at", 0.0)),
            trial_at=float(data.get("trial_at", 0.0)),
        )

    def as_dict(self) -> dict:
        return {"state": self.state, "failures": self.failures, "opened_at": self.opened_at, "trial_at": self.trial_at}

    def shown_state(self, *, now: float, cooldown: float) -> str:
        """The state as the next request would find it (open turns half-open after the cool-down)."""
        if self.state == OPEN and now >= self.opened_at + cooldown:
            return HALF_OPEN
        return self.state

    def admits(self, *, now: float, cooldown: float, joined_at: float = 0.0) -> bool:
        """Whether a request may go to the node now (without taking the half-open trial).

        A node that joined again after its breaker opened (or after its trial
        went out) is a restarted process: the failures were the old one's, so
        it gets its trial at once instead of after the cool-down.
        """
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return now >= self.opened_at + cooldown or joined_at > self.opened_at
        # half-open: one trial at a time; a trial that never reported frees the turn after a cool-down.
        return now >= self.trial_at + cooldown or joined_at > self.trial_at

    def take(self, *, now: float, cooldown: float, joined_at: float = 0.0) -> "Breaker | None":
        """The breaker after sending a request now, or None when it does not let one through."""
        if not self.admits(now=now, cooldown=cooldown, joined_at=joined_at):
            return None
        if self.state == CLOSED:
            return self
        return replace(self, state=HALF_OPEN, trial_at=now)

    def after(self, *, success: bool, now: float, threshold: int) -> "Breaker":
        if success:
            return Breaker()
        failures = self.failures + 1
        if self.state == HALF_OPEN or failures >= threshold:
            return Breaker(state=OPEN, failures=failures, opened_at=now)
        return replace(self, failures=failures)


def cosine_min(a, b) -> float:
    """The lowest cosine between corresponding rows of two answers (one vector per text)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape != b.shape:
        return -1.0
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosines = np.einsum("ij,ij->i", a, b) / np.where(norms > 0, norms, 1.0)
    return float(cosines.min())


def weighted_majority(answers: list, weights: list[float], *, min_cosine: float) -> tuple[int, list[bool]]:
    """The answer backed by the most fitness, and which answers agree with it.

    Answers agree when their cosine (per text, the lowest) is at least
    `min_cosine`. Each answer's support is the summed weight of the answers
    that agree with it, itself included; the best supported wins (ties: the
    heavier answer, then the first).
    """
    count = len(answers)
    agree = [[i == j or cosine_min(answers[i], answers[j]) >= min_cosine for j in range(count)] for i in range(count)]
    support = [sum(weights[j] for j in range(count) if agree[i][j]) for i in range(count)]
    winner = max(range(count), key=lambda i: (support[i], weights[i], -i))
    return winner, agree[winner]
