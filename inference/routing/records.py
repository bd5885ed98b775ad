"""What the router learns about nodes, kept in the shared state so every web process routes alike.

Two records (`Coordination.routing_update` / `routing_read`, Redis when
configured, this process's memory in the embedded default):

* per node and model (`model:<node_id>:<manifest_cid>`): fitness and when it
  was last judged, the window of observed latencies ([time, ms]), requests
  routed per 10 s bucket (traffic shares), spot checks done and agreed;
* per node (`breaker:<node_id>`): its circuit breaker.
"""

import time
from dataclasses import dataclass

from django.conf import settings

from inference.routing.policy import Breaker, fitness_after, fitness_now, percentile
from inference.serving.shared_state import coordination

RECORD_TTL_SECONDS = 7 * 24 * 3600
# Routed requests are counted in buckets of this many seconds (the fleet's traffic shares).
BUCKET_SECONDS = 10


def model_key(node_id: int, manifest_cid: str) -> str:
    return f"model:{node_id}:{manifest_cid}"


def breaker_key(node_id: int) -> str:
    return f"breaker:{node_id}"


@dataclass(frozen=True)
class NodeModelView:
    fitness: float
    latencies: list[float]
    sampled_at: float  # time of the latest latency sample (0: never)
    routed: dict[str, int]  # bucket start (seconds, as text) -> requests routed
    spot_checks: int
    spot_agreed: int

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latencies, 50)

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.latencies, 95)

    def routed_since(self, since: float) -> int:
        """Requests routed since about `since` (whole buckets: up to BUCKET_SECONDS more)."""
        return sum(count for start, count in self.routed.items() if float(start) + BUCKET_SECONDS > since)


def _fitness(record: dict | None, now: float) -> float:
    prior = settings.INFERENCE_ROUTING_FITNESS_PRIOR
    if not record or "fitness" not in record:
        return prior
    return fitness_now(
        record["fitness"],
        age_seconds=now - record.get("judged_at", now),
        prior=prior,
        half_life=settings.INFERENCE_ROUTING_FITNESS_HALF_LIFE_SECONDS,
    )


def model_view(record: dict | None, *, now: float | None = None) -> NodeModelView:
    """The record as the router reads it: latencies younger than INFERENCE_ROUTING_LATENCY_MAX_AGE_SECONDS only."""
    now = time.time() if now is None else now
    record = record or {}
    since = now - settings.INFERENCE_ROUTING_LATENCY_MAX_AGE_SECONDS
    return NodeModelView(
        fitness=_fitness(record, now),
        latencies=[ms for at, ms in record.get("latencies", []) if at >= since],
        sampled_at=max((at for at, _ in record.get("latencies", [])), default=0.0),
        routed=dict(record.get("routed", {})),
        spot_checks=int(record.get("spot_checks", 0)),
        spot_agreed=int(record.get("spot_agreed", 0)),
    )


def records_read(node_ids: list[int], manifest_cid: str | None) -> tuple[dict, dict]:
    """({node_id: NodeModelView}, {node_id: Breaker}) in one read of the shared state."""
    keys = [breaker_key(n) for n in node_ids]
    if manifest_cid:
        keys += [model_key(n, manifest_cid) for n in node_ids]
    raw = coordination().routing_read(keys)
    now = time.time()
    views = {n: model_view(raw.get(model_key(n, manifest_cid or "")), now=now) for n in node_ids}
    breakers = {n: Breaker.from_dict(raw.get(breaker_key(n))) for n in node_ids}
    return views, breakers


def observe(
    node_id: int,
    manifest_cid: str,
    *,
    good: bool | None,
    latency_ms: float | None = None,
    routed: bool = False,
    spot_check: bool | None = None,
) -> None:
    """One observation of a node's answer: its latency, whether it was good (None: no judgement), a spot check."""
    now = time.time()

    def update(record: dict | None) -> dict:
        record = record or {}
        if good is not None:
            record["fitness"] = fitness_after(
                _fitness(record, now), good=good, alpha=settings.INFERENCE_ROUTING_FITNESS_ALPHA
            )
            record["judged_at"] = now
        if latency_ms is not None:
            window = settings.INFERENCE_ROUTING_LATENCY_WINDOW
            record["latencies"] = [*record.get("latencies", []), [round(now, 3), round(latency_ms, 3)]][-window:]
        if routed:
            keep_since = now - settings.INFERENCE_ROUTING_SHARE_WINDOW_SECONDS - BUCKET_SECONDS
            buckets = {start: n for start, n in record.get("routed", {}).items() if float(start) >= keep_since}
            bucket = str(int(now // BUCKET_SECONDS) * BUCKET_SECONDS)
            buckets[bucket] = buckets.get(bucket, 0) + 1
            record["routed"] = buckets
        if spot_check is not None:
            record["spot_checks"] = record.get("spot_checks", 0) + 1
            record["spot_agreed"] = record.get("spot_agreed", 0) + int(spot_check)
        return record

    coordination().routing_update(model_key(node_id, manifest_cid), update, ttl=RECORD_TTL_SECONDS)


def breaker_take(node_id: int, *, joined_at: float = 0.0) -> bool:
    """Whether a request may go to the node now; takes the half-open trial when that is the way through."""
    now = time.time()
    cooldown = settings.INFERENCE_ROUTING_BREAKER_COOLDOWN_SECONDS
    allowed: list[bool] = []

    def update(record: dict | None) -> dict:
        breaker = Breaker.from_dict(record)
        taken = breaker.take(now=now, cooldown=cooldown, joined_at=joined_at)
        allowed[:] = [taken is not None]
        return (taken or breaker).as_dict()

    coordination().routing_update(breaker_key(node_id), update, ttl=RECORD_TTL_SECONDS)
    return allowed[0]


def breaker_report(node_id: int, *, success: bool) -> None:
    now = time.time()
    threshold = settings.INFERENCE_ROUTING_BREAKER_FAILURES

    def update(record: dict | None) -> dict:
        return Breaker.from_dict(record).after(success=success, now=now, threshold=threshold).as_dict()

    coordination().routing_update(breaker_key(node_id), update, ttl=RECORD_TTL_SECONDS)
