"""The overview panel on ten million latency samples: rollups against exact `percentile_cont`.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/dashboards_percentiles.py

Creates (and drops first) its own database, `conclave_bench_dashboards`, on
the server DATABASE_URL names, and loads --samples latency samples (default
10,000,000) spread over the 7 days before now with COPY (psycopg 3
`cursor.copy`): 4 models on 6 (model, endpoint) series, lognormal latencies,
about 2 % rejections and timeouts. Then, in one run:

* rolls the whole backlog up (`metrics_rollup`, the beat's task), and one
  steady-state run after a minute more of traffic;
* answers the overview panel (`dashboards.selectors.latency.overview`: per
  model counts, rates, p50/p95/p99 of e2e, queue and time to first token, and
  the per-step time series) for 1 h and 7 days from the rollups;
* answers the same numbers exactly with PostgreSQL's `percentile_cont` over
  the raw samples: the per-model totals alone, and totals plus the series;
* reports the largest relative difference between the two answers' totals.

Prints markdown tables (median of --repeat runs, milliseconds). --reuse keeps
the samples of an earlier run and redoes only the rollups and the timings.
"""

import argparse
import datetime as dt
import os
import statistics
import time
from urllib.parse import urlparse, urlunparse

import numpy as np
from _common import django_setup, postgres_database_fresh

BENCH_DB = "conclave_bench_dashboards"
# Keep every raw sample: the exact answers need them.
KEEP_SAMPLES = {"DASHBOARDS_SAMPLE_RETENTION_HOURS": "0"}
SPAN = dt.timedelta(days=7)
# (model, endpoint, share of traffic, median e2e ms, sigma, generates tokens)
SERIES = [
    ("all-MiniLM-L6-v2@1.0.0", "embed", 0.30, 6.0, 0.45, False),
    ("all-MiniLM-L6-v2@1.0.0", "v1/embeddings", 0.15, 7.0, 0.5, False),
    ("paraphrase-MiniLM-L3-v2@0.2.1", "embed", 0.10, 4.0, 0.4, False),
    ("SmolLM2-135M-Instruct@0.1.2", "generate", 0.20, 450.0, 0.6, True),
    ("SmolLM2-135M-Instruct@0.1.2", "v1/chat/completions", 0.20, 520.0, 0.6, True),
    ("gemma-3-270m@1.0.0", "generate", 0.05, 900.0, 0.7, True),
]
COLUMNS = (
    "created_at",
    "model",
    "endpoint",
    "status",
    "outcome",
    "queue_ms",
    "inference_ms",
    "e2e_ms",
    "time_to_first_token_ms",
    "prompt_tokens",
    "completion_tokens",
    "worker",
)


NULL = "\\N"


def _chunks(rng: np.random.Generator, start: dt.datetime, seconds: float, n: int):
    """COPY text for `n` samples over [start, start + seconds), 200,000 rows at a time.

    Columns are drawn with numpy and formatted as whole lists: one f-string
    per row is the only per-row Python work.
    """
    shares = np.array([s[2] for s in SERIES])
    labels = [f"{model}\t{endpoint}" for model, endpoint, *_ in SERIES]
    chunk = 200_000
    epoch = start.timestamp()
    for offset in range(0, n, chunk):
        size = min(chunk, n - offset)
        # In time order, chunk by chunk, as real traffic arrives (and lies on disk).
        times = epoch + np.sort(rng.uniform(offset / n * seconds, (offset + size) / n * seconds, size))
        series = rng.choice(len(SERIES), size=size, p=shares / shares.sum())
        medians = np.array([s[3] for s in SERIES])[series]
        sigmas = np.array([s[4] for s in SERIES])[series]
        e2e = medians * np.exp(rng.standard_normal(size) * sigmas)
        queue = rng.exponential(2.0, size)
        generative = np.array([s[5] for s in SERIES])[series]
        ttft = np.where(generative, e2e * rng.uniform(0.05, 0.25, size), np.nan)
        completion = np.where(generative, (e2e / 12).astype(int) + 1, 0)
        prompt = rng.integers(5, 60, size)
        fate = rng.random(size)
        status = np.select([fate < 0.012, fate < 0.017, fate < 0.019], [503, 400, 504], 200)
        outcome = np.select(
            [status == 503, status == 400, status == 504], ["queue_full", "max_tokens_exceeded", "timeout"], "ok"
        )
        rejected = (status == 503) | (status == 400)
        e2e = np.where(rejected, rng.uniform(0.1, 1.0, size), np.where(status == 504, 30000.0, e2e)).round(3)
        queue = np.where(rejected, np.nan, queue).round(3)
        inference = np.where(rejected, np.nan, e2e - np.nan_to_num(queue)).round(3)
        ttft = np.where(rejected, np.nan, ttft).round(3)
        completion = np.where(rejected, 0, completion)
        stamps = np.datetime_as_string((times * 1e6).astype("datetime64[us]"), unit="us", timezone="UTC").tolist()

        def text(values: np.ndarray) -> list:
            return [NULL if v != v else v for v in values.tolist()]

        yield "".join(
            f"{t}\t{labels[k]}\t{st}\t{o}\t{q}\t{i}\t{e}\t{f}\t{p}\t{c}\tbench\n"
            for t, k, st, o, q, i, e, f, p, c in zip(
                stamps,
                series.tolist(),
                status.tolist(),
                outcome.tolist(),
                text(queue),
                text(inference),
                e2e.tolist(),
                text(ttft),
                prompt.tolist(),
                completion.tolist(),
                strict=True,
            )
        )


def load_samples(n: int, *, start: dt.datetime, seconds: float, seed: int) -> float:
    from django.db import connection

    rng = np.random.default_rng(seed)
    began = time.perf_counter()
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg 3 cursor under Django's wrapper
        with raw.copy(f"COPY inference_latencysample ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for block in _chunks(rng, start, seconds, n):
                copy.write(block)
        cursor.execute("ANALYZE inference_latencysample")
    return time.perf_counter() - began


def timed(function, repeat: int):
    result = function()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        function()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


EXACT_TOTALS = """
SELECT model, count(*),
  percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY e2e_ms) FILTER (WHERE NOT ({rejected})),
  percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY queue_ms) FILTER (WHERE NOT ({rejected})),
  percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY time_to_first_token_ms) FILTER (WHERE NOT
  ({rejected})),
  count(*) FILTER (WHERE status >= 500 AND status <> 503), count(*) FILTER (WHERE {rejected}),
  sum(prompt_tokens), sum(completion_tokens)
FROM inference_latencysample WHERE created_at >= %s AND created_at < %s
GROUP BY model {series} ORDER BY model
"""
REJECTED_SQL = "status = 503 OR (status >= 400 AND status < 500 AND status <> 499)"


def exact(start, end, *, step_seconds: int | None):
    from django.db import connection

    series = ""
    if step_seconds:
        series = f", floor(extract(epoch FROM created_at) / {int(step_seconds)})"
    sql = EXACT_TOTALS.format(rejected=REJECTED_SQL, series=series)
    with connection.cursor() as cursor:
        cursor.execute(sql, [start, end])
        return cursor.fetchall()


def table_bytes(name: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s)", [name])
        return cursor.fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each rollup answer (median)")
    parser.add_argument("--exact-repeat", type=int, default=3, help="timed runs of each percentile_cont answer")
    parser.add_argument("--seed", type=int, default=20301)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the samples a previous run loaded (and its clock); only redo the rollups and the timings",
    )
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        raise SystemExit("Set DATABASE_URL to a PostgreSQL server (the benchmark creates its own database there).")
    if args.reuse:
        parsed = urlparse(url)
        django_setup(urlunparse(parsed._replace(path=f"/{BENCH_DB}")), **KEEP_SAMPLES)
    else:
        django_setup(
            postgres_database_fresh(url, BENCH_DB, why="the comparison is with its percentile_cont"), **KEEP_SAMPLES
        )

    from django.db import connection
    from django.db.models import Max

    from dashboards.models import LatencyRollup, RollupCursor
    from dashboards.selectors.latency import WINDOWS, overview, window_bounds
    from dashboards.services import metrics_rollup
    from inference.models import LatencySample

    if args.reuse:
        LatencyRollup.objects.all().delete()
        RollupCursor.objects.all().delete()
        latest = LatencySample.objects.aggregate(latest=Max("created_at"))["latest"]
        # Drop the previous run's extra minute (and a little more): this run adds its own.
        now = latest.replace(second=0, microsecond=0) - dt.timedelta(minutes=1)
        LatencySample.objects.filter(created_at__gte=now).delete()
        args.samples = LatencySample.objects.count()
        print(f"reusing {args.samples:,} samples loaded before, up to {now:%Y-%m-%d %H:%M}", flush=True)
    else:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        load_seconds = load_samples(args.samples, start=now - SPAN, seconds=SPAN.total_seconds(), seed=args.seed)
        print(f"loaded {args.samples:,} samples over 7 days with COPY in {load_seconds:.1f} s", flush=True)

    began = time.perf_counter()
    backlog = metrics_rollup(now=now)
    backlog_seconds = time.perf_counter() - began
    # One more minute of traffic, then the beat's steady-state run.
    load_samples(int(args.samples * 60 / SPAN.total_seconds()), start=now, seconds=60, seed=args.seed + 1)
    began = time.perf_counter()
    steady = metrics_rollup(now=now + dt.timedelta(minutes=3))
    steady_ms = (time.perf_counter() - began) * 1000
    end = now + dt.timedelta(minutes=3)

    rows = []
    accuracy: dict[str, list[float]] = {}
    for name in ("1h", "7d"):
        start, _ = window_bounds(WINDOWS[name], end)
        step = int(WINDOWS[name].step.total_seconds())
        rollup_ms, answer = timed(lambda name=name: overview(window=name, end=end), args.repeat)
        totals_ms, exact_totals = timed(lambda s=start: exact(s, end, step_seconds=None), args.exact_repeat)
        series_ms, _ = timed(lambda s=start, st=step: exact(s, end, step_seconds=st), args.exact_repeat)
        samples = LatencySample.objects.filter(created_at__gte=start, created_at__lt=end).count()
        rows.append((name, samples, rollup_ms, totals_ms, series_ms))
        by_model = {m["model"]: m for m in answer["models"]}
        for model, count, e2e, queue, ttft, *_ in exact_totals:
            shown = by_model[model]
            assert shown["requests"] == count, (model, shown["requests"], count)
            for metric, values in (("e2e", e2e), ("queue", queue), ("ttft", ttft)):
                if values is None or values[0] is None:
                    continue
                for pct, value in zip(("p50", "p95", "p99"), values, strict=True):
                    accuracy.setdefault(name, []).append(abs(shown["latency_ms"][metric][pct] - value) / value)

    minute_rows = LatencyRollup.objects.filter(resolution=60).count()
    hour_rows = LatencyRollup.objects.filter(resolution=3600).count()
    print()
    print(
        f"PostgreSQL {connection.pg_version // 10000}, {args.samples:,} samples + 1 minute more; "
        f"median of {args.repeat} (rollups) / {args.exact_repeat} (percentile_cont) warm runs, ms"
    )
    print()
    print(
        "| window | samples in window | overview from rollups | exact percentile_cont, totals only | "
        "exact percentile_cont, totals + series | speed-up (totals + series) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, samples, rollup_ms, totals_ms, series_ms in rows:
        print(
            f"| {name} | {samples:,} | {rollup_ms:.1f} | {totals_ms:.1f} | {series_ms:.1f} | "
            f"{series_ms / rollup_ms:.0f}× |"
        )
    print()
    print("| rollup work | value |")
    print("|---|---:|")
    print(
        f"| rolling the 7-day backlog up (one-off) | {backlog_seconds:.1f} s "
        f"({backlog.minute_rows:,} minute rows, {backlog.hour_rows:,} hour rows) |"
    )
    print(f"| steady-state beat run (one new minute) | {steady_ms:.0f} ms ({steady.minute_rows} minute rows) |")
    print(f"| raw samples table | {table_bytes('inference_latencysample') / 2**20:,.0f} MiB |")
    print(
        f"| rollup table ({minute_rows:,} minute + {hour_rows:,} hour rows) | "
        f"{table_bytes('dashboards_latencyrollup') / 2**20:,.1f} MiB |"
    )
    for name, differences in accuracy.items():
        print(
            f"| largest relative difference from percentile_cont, {name} (p50/p95/p99 of e2e, queue, TTFT, "
            f"every model) | {max(differences):.3%} |"
        )


if __name__ == "__main__":
    main()
