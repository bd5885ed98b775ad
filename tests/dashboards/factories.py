"""Builders for dashboard tests: latency samples as the inference app records them, at chosen times."""

import datetime as dt

import numpy as np

from inference.models import LatencySample

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)


def sample(
    *,
    at: dt.datetime,
    model: str = "mini@1",
    endpoint: str = "embed",
    status: int = 200,
    outcome: str = "ok",
    e2e_ms: float = 10.0,
    queue_ms: float | None = 1.0,
    ttft_ms: float | None = None,
    prompt_tokens: int = 5,
    completion_tokens: int = 0,
    cpu_ms: float | None = None,
) -> LatencySample:
    return LatencySample(
        created_at=at,
        model=model,
        endpoint=endpoint,
        status=status,
        outcome=outcome,
        e2e_ms=e2e_ms,
        queue_ms=queue_ms,
        inference_ms=None if e2e_ms is None else max(0.0, e2e_ms - (queue_ms or 0.0)),
        time_to_first_token_ms=ttft_ms,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cpu_ms=cpu_ms,
    )


def samples_add(samples: list[LatencySample]) -> list[LatencySample]:
    return LatencySample.objects.bulk_create(samples, batch_size=1000)


def random_traffic(
    rng: np.random.Generator,
    *,
    start: dt.datetime,
    span: dt.timedelta,
    n: int,
    model: str = "mini@1",
    endpoint: str = "generate",
    distribution: str = "lognormal",
) -> list[LatencySample]:
    """`n` served generation samples spread uniformly over [start, start + span), e2e from `distribution`."""
    offsets = np.sort(rng.uniform(0, span.total_seconds(), n))
    if distribution == "lognormal":
        e2e = rng.lognormal(4.0, 0.8, n)
    elif distribution == "uniform":
        e2e = rng.uniform(5.0, 3000.0, n)
    elif distribution == "bimodal":
        e2e = np.where(rng.random(n) < 0.7, rng.normal(40.0, 5.0, n), rng.normal(1500.0, 200.0, n)).clip(0.5)
    else:
        raise ValueError(distribution)
    queue = rng.exponential(3.0, n)
    ttft = e2e * rng.uniform(0.05, 0.3, n)
    return [
        sample(
            at=start + dt.timedelta(seconds=float(o)),
            model=model,
            endpoint=endpoint,
            e2e_ms=float(e),
            queue_ms=float(q),
            ttft_ms=float(t),
            prompt_tokens=12,
            completion_tokens=int(e // 10) + 1,
        )
        for o, e, q, t in zip(offsets, e2e, queue, ttft, strict=True)
    ]
