"""`metrics_rollup` and `demo_traffic`: the latter sends real requests to a real server and worker."""

import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from dashboards.models import LatencyRollup
from dashboards.selectors.latency import overview
from inference.models import LatencySample
from tests.dashboards.factories import sample, samples_add

# The inference tests' fixtures: the default model packs approved and loaded in a real serving worker.
from tests.inference.conftest import _inference_state, inference_worker, served  # noqa: F401


def test_metrics_rollup_command_reports_what_it_wrote(db):
    now = timezone.now()
    samples_add([sample(at=now - dt.timedelta(minutes=30))])
    out = StringIO()
    call_command("metrics_rollup", stdout=out)
    assert "1 minute rows" in out.getvalue()
    call_command("metrics_rollup", "--redo", "2h", stdout=out)
    assert "recomputed 1 minute rows" in out.getvalue()
    assert LatencyRollup.objects.filter(resolution=60).count() == 1


def test_metrics_rollup_command_refuses_a_bad_span(db):
    with pytest.raises(CommandError, match="90m, 6h or 2d"):
        call_command("metrics_rollup", "--redo", "yesterday")


def test_demo_traffic_says_when_the_server_is_not_there(db):
    with pytest.raises(CommandError, match="Start the server first"):
        call_command("demo_traffic", "--url", "http://127.0.0.1:9", "--requests", "1")


def test_demo_traffic_sends_real_requests_that_the_panels_then_show(served, live_server):  # noqa: F811
    """Real models, a real worker, a real HTTP server: every sample comes from a served request."""
    from inference.services import latency_samples_flush

    out = StringIO()
    call_command(
        "demo_traffic", "--url", live_server.url, "--requests", "24", "--concurrency", "2", "--seed", "1", stdout=out
    )
    assert "Sent 24 requests" in out.getvalue()
    latency_samples_flush()
    samples = LatencySample.objects.all()
    assert samples.count() == 24
    endpoints = set(samples.values_list("endpoint", flat=True))
    assert {"embed", "generate"} <= endpoints
    # The one deliberate over-limit request is a real 400 from the governed limit check,
    # refused before any model was chosen (so it has no model).
    refused = samples.get(status=400)
    assert (refused.outcome, refused.model, refused.endpoint) == ("max_tokens_exceeded", "", "generate")
    assert samples.filter(status=200).count() == 23

    models = {m["model"]: m for m in overview(window="15m")["models"]}
    assert sum(m["requests"] for m in models.values()) == 24
    assert models[""]["rejection_reasons"] == {"max_tokens_exceeded": 1}
    generative = next(m for name, m in models.items() if name.startswith("SmolLM2"))
    assert generative["rejections"] == 0 and generative["errors"] == 0
    assert generative["completion_tokens"] > 0
    assert generative["latency_ms"]["ttft"]["count"] == generative["requests"]
    embedding = next(m for name, m in models.items() if name.startswith("all-MiniLM"))
    assert embedding["prompt_tokens"] > 0 and embedding["latency_ms"]["e2e"]["count"] == embedding["requests"]
