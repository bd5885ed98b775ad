"""The overview panel's numbers: within 1 % of exact percentiles, and the same from rollups or raw samples."""

import datetime as dt

import numpy as np
import pytest

from conclave_node.sketch import RELATIVE_ACCURACY
from core.errors import ValidationFailed
from dashboards.selectors.latency import WINDOWS, overview, window_bounds, window_plan
from dashboards.services import metrics_rollup
from inference.models import LatencySample
from tests.dashboards.factories import HOUR, MINUTE, T0, random_traffic, sample, samples_add

pytestmark = pytest.mark.django_db


def exact_lower(values, q: float) -> float:
    return float(np.percentile(values, q * 100, method="lower"))


@pytest.mark.parametrize("distribution", ["lognormal", "uniform", "bimodal"])
def test_overview_percentiles_are_within_one_percent_of_the_exact_ones(distribution):
    rng = np.random.default_rng(42)
    end = T0 + HOUR
    samples_add(random_traffic(rng, start=T0, span=HOUR, n=4000, distribution=distribution))
    metrics_rollup(now=end)  # most of the hour from rollups, the last minutes from raw samples
    start, _ = window_bounds(WINDOWS["1h"], end)
    entry = overview(window="1h", end=end)["models"][0]
    in_window = LatencySample.objects.filter(created_at__gte=start, created_at__lt=end)
    for metric, column in (("e2e", "e2e_ms"), ("queue", "queue_ms"), ("ttft", "time_to_first_token_ms")):
        values = list(in_window.values_list(column, flat=True))
        assert entry["latency_ms"][metric]["count"] == len(values)
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            exact = exact_lower(values, q)
            shown = entry["latency_ms"][metric][name]
            # Shown values are rounded to 3 decimals (a micro-second).
            assert abs(shown - exact) <= RELATIVE_ACCURACY * exact + 0.0005, (metric, name, shown, exact)


@pytest.mark.parametrize("window, span, n", [("1h", HOUR, 1500), ("24h", 20 * HOUR, 1500), ("7d", 5 * 24 * HOUR, 2000)])
def test_rollups_answer_exactly_what_the_raw_samples_answer(window, span, n):
    rng = np.random.default_rng(3)
    end = T0 + span + 7 * MINUTE + dt.timedelta(seconds=13)
    samples_add(random_traffic(rng, start=T0, span=span + 7 * MINUTE, n=n))
    samples_add([sample(at=T0 + span / 2, status=503, outcome="queue_full", model="mini@1", endpoint="generate")])
    from_raw = overview(window=window, end=end)
    metrics_rollup(now=end)
    plan = window_plan(start=window_bounds(WINDOWS[window], end)[0], end=end, step=WINDOWS[window].step)
    assert plan.minutes is not None
    if window in ("24h", "7d"):
        assert plan.hours is not None
    from_rollups = overview(window=window, end=end)
    assert from_rollups == from_raw


def test_rates_and_classes_over_the_window():
    end = T0 + HOUR
    start, _ = window_bounds(WINDOWS["1h"], end)
    samples_add(
        [sample(at=start + MINUTE * i, endpoint="generate", completion_tokens=10, prompt_tokens=4) for i in range(8)]
        + [
            sample(at=start + 2 * MINUTE, endpoint="generate", status=503, outcome="queue_full", queue_ms=None),
            sample(at=start + 3 * MINUTE, endpoint="generate", status=504, outcome="timeout", e2e_ms=30000.0),
        ]
    )
    entry = overview(window="1h", end=end)["models"][0]
    seconds = (end - start).total_seconds()
    assert entry["requests"] == 10
    assert (entry["ok"], entry["rejections"], entry["errors"]) == (8, 1, 1)
    assert entry["request_rate"] == round(10 / seconds, 4)
    assert entry["error_rate"] == 0.1 and entry["rejection_rate"] == 0.1
    assert entry["rejection_reasons"] == {"queue_full": 1}
    assert entry["completion_tokens_per_second"] == round(80 / seconds, 3)
    assert seconds == 3600
    # The rejected request is not a latency: 9 served requests in e2e.
    assert entry["latency_ms"]["e2e"]["count"] == 9
    assert entry["latency_ms"]["e2e"]["max"] == 30000.0


def test_series_has_one_point_per_step_and_adds_up_to_the_total():
    rng = np.random.default_rng(9)
    end = T0 + 24 * HOUR
    samples_add(random_traffic(rng, start=T0, span=24 * HOUR, n=900))
    result = overview(window="24h", end=end)
    entry = result["models"][0]
    assert result["step_seconds"] == 3600
    assert len(entry["series"]) == 24
    assert sum(point["requests"] for point in entry["series"]) == entry["requests"]
    starts = [point["start"] for point in entry["series"]]
    assert starts == sorted(starts) and starts[-1] < end <= starts[-1] + dt.timedelta(hours=1)


def test_filters_by_model_and_endpoint():
    samples_add(
        [
            sample(at=T0, model="a@1", endpoint="embed"),
            sample(at=T0, model="b@1", endpoint="generate"),
            sample(at=T0, model="a@1", endpoint="v1/embeddings"),
        ]
    )
    end = T0 + 10 * MINUTE
    assert [m["model"] for m in overview(window="15m", end=end)["models"]] == ["a@1", "b@1"]
    only_a = overview(window="15m", end=end, model="a@1")["models"]
    assert [(m["model"], m["endpoints"], m["requests"]) for m in only_a] == [("a@1", ["embed", "v1/embeddings"], 2)]
    assert overview(window="15m", end=end, endpoint="embed")["models"][0]["requests"] == 1


def test_an_unknown_window_is_refused_naming_the_choices():
    with pytest.raises(ValidationFailed) as excinfo:
        overview(window="2w")
    assert "15m, 1h, 24h, 7d" in excinfo.value.message
    assert "window" in excinfo.value.fields


def test_an_empty_window_has_no_models():
    result = overview(window="15m", end=T0)
    assert result["models"] == [] and result["relative_accuracy"] == RELATIVE_ACCURACY
