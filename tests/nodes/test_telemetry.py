"""POST /api/v1/telemetry/: nodes report latency sketches under their own account only, and they merge."""

import datetime as dt
import json

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from conclave_node.sketch import RELATIVE_ACCURACY, LatencySketch, sketch_key
from conclave_node.state import NodeHome
from dashboards.selectors.latency import node_latency
from nodes.models import NodeReport
from nodes.selectors import node_reports_latest

pytestmark = pytest.mark.django_db

URL = "/api/v1/telemetry/"
# Float rounding at bucket edges may add a few ulps to the bound.
BOUND = RELATIVE_ACCURACY * (1 + 1e-9)


def summary(*values: float) -> dict:
    sketch = LatencySketch()
    sketch.add_many(values)
    return sketch.as_dict()


def report(**overrides) -> dict:
    body = {
        "signed_set_version": 4,
        "approved_set_version": 2,
        "period": {"start": "2030-01-01T00:00:00Z", "end": "2030-01-01T01:00:00Z"},
        "models": [{"model_name": "mini-embed", "version": "1", "latency_ms": summary(3, 4, 40)}],
    }
    body.update(overrides)
    return body


def one_model(latency, name: str = "m", version: str = "1") -> dict:
    return report(models=[{"model_name": name, "version": version, "latency_ms": latency}])


def test_a_node_reports_under_its_own_account(client_as):
    response = client_as("node", "node-a").post(URL, report(), format="json")
    assert response.status_code == 201, response.content
    stored = NodeReport.objects.get()
    assert stored.node.username == "node-a"
    assert stored.models == ["mini-embed@1"]
    sketch = stored.summary["mini-embed@1"]
    assert (sketch["kind"], sketch["alpha"], sketch["unit"]) == ("ddsketch", RELATIVE_ACCURACY, "ms")
    assert sketch["keys"] == sorted({sketch_key(3), sketch_key(4), sketch_key(40)})
    assert (sketch["count"], sketch["sum"], sketch["min"], sketch["max"]) == (3, 47.0, 3.0, 40.0)
    assert response.json()["summary"] == stored.summary
    assert (stored.signed_set_version, stored.approved_set_version) == (4, 2)


def test_the_stored_sketch_is_normalised(client_as):
    latency = {**summary(5, 5, 9), "zero": 0}
    del latency["count"]  # optional: it is derived
    latency["alpha"] = 0.010000000000000002  # the same accuracy, written differently
    response = client_as("node").post(URL, one_model(latency), format="json")
    assert response.status_code == 201, response.content
    assert NodeReport.objects.get().summary["m@1"] == summary(5, 5, 9)


def test_a_node_cannot_write_another_nodes_data(client_as):
    node_a = client_as("node", "node-a")
    assert node_a.post(URL, report(), format="json").status_code == 201
    before = list(NodeReport.objects.values_list("pk", "node__username", "summary"))

    node_b = client_as("node", "node-b")
    claimed = node_b.post(URL, report(node="node-a"), format="json")
    assert claimed.status_code == 403
    assert claimed.json()["error"]["code"] == "not_your_node"
    assert list(NodeReport.objects.values_list("pk", "node__username", "summary")) == before

    assert node_b.post(URL, report(node="node-b"), format="json").status_code == 201
    assert [r["node"] for r in node_b.get(URL).json()] == ["node-b"]
    assert [r["node"] for r in node_a.get(URL).json()] == ["node-a"]
    assert NodeReport.objects.filter(node__username="node-a").count() == 1


@pytest.mark.parametrize("role", [None, "contributor", "operator"])
def test_only_nodes_may_report(client_as, role):
    response = client_as(role).post(URL, report(), format="json")
    assert response.status_code in (401, 403)
    assert not NodeReport.objects.exists()


GOOD = summary(1, 3, 7)


@pytest.mark.parametrize(
    ("latency", "field"),
    [
        # The deep checks (LatencySketch.from_dict, in the service) name the summary.
        ({**GOOD, "keys": list(reversed(GOOD["keys"]))}, "models.0.latency_ms"),
        ({**GOOD, "keys": [GOOD["keys"][0]] * 3}, "models.0.latency_ms"),
        ({**GOOD, "counts": [1, 1]}, "models.0.latency_ms"),
        ({**GOOD, "count": 7}, "models.0.latency_ms"),
        ({**GOOD, "alpha": 0.02}, "models.0.latency_ms"),
        ({**GOOD, "min": 9.0, "max": 1.0}, "models.0.latency_ms"),
        ({**GOOD, "min": None}, "models.0.latency_ms"),
        ({**GOOD, "sum": 1e300}, "models.0.latency_ms"),
        # The shape (the serializer) names the field.
        ({**GOOD, "kind": "hist"}, "models.0.latency_ms.kind"),
        ({**GOOD, "unit": "s"}, "models.0.latency_ms.unit"),
        ({**GOOD, "keys": ["a", "b", "c"]}, "models.0.latency_ms.keys.0"),
        ({**GOOD, "keys": ["1", "2", "3"]}, "models.0.latency_ms.keys.0"),
        ({**GOOD, "keys": [1.5, 2, 3]}, "models.0.latency_ms.keys.0"),
        ({**GOOD, "keys": [10**6, 10**6 + 1, 10**6 + 2]}, "models.0.latency_ms.keys.0"),
        ({**GOOD, "keys": "1,2,3"}, "models.0.latency_ms.keys"),
        ({**GOOD, "counts": [0, 1, 2]}, "models.0.latency_ms.counts.0"),
        ({**GOOD, "counts": [-1, 1, 1]}, "models.0.latency_ms.counts.0"),
        ({**GOOD, "counts": [True, 1, 1]}, "models.0.latency_ms.counts.0"),
        ({**GOOD, "counts": [2**60, 1, 1]}, "models.0.latency_ms.counts.0"),
        ({**GOOD, "keys": list(range(5000)), "counts": [1] * 5000}, "models.0.latency_ms.keys"),
        ({**GOOD, "zero": -1}, "models.0.latency_ms.zero"),
        ({**GOOD, "sum": "fast"}, "models.0.latency_ms.sum"),
        ({**GOOD, "sum": "NaN"}, "models.0.latency_ms.sum"),
        ({**GOOD, "sum": "Infinity"}, "models.0.latency_ms.sum"),
        ({**GOOD, "sum": 10**400}, "models.0.latency_ms.sum"),
        ({**GOOD, "sum": -1.0}, "models.0.latency_ms.sum"),
        ({**GOOD, "max": 10**400}, "models.0.latency_ms.max"),
        ({**GOOD, "alpha": "0.01"}, "models.0.latency_ms.alpha"),
        ({key: value for key, value in GOOD.items() if key != "alpha"}, "models.0.latency_ms.alpha"),
        # A summary in the old fixed-bucket form is not a sketch.
        ({"unit": "ms", "bounds": [1, 2, 5], "counts": [0, 1, 0, 0], "count": 1, "sum": 1.5}, "models.0.latency_ms"),
        ("fast", "models.0.latency_ms.non_field_errors"),
    ],
)
def test_malformed_sketches_are_refused_with_the_field_to_fix(client_as, latency, field):
    body = json.dumps(one_model(latency))  # not DRF's renderer, which would refuse some of these itself
    response = client_as("node").post(URL, body, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert any(name == field or name.startswith(field + ".") for name in error["fields"]), error
    assert all(error["fields"].values()), error  # each field says what is wrong
    assert not NodeReport.objects.exists()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_refused(client_as, literal):
    body = json.dumps(one_model(GOOD)).replace('"sum": 11.0', f'"sum": {literal}')
    assert literal in body
    response = client_as("node").post(URL, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert not NodeReport.objects.exists()


def test_a_report_without_traffic_still_records_the_nodes_set(client_as):
    response = client_as("node", "idle-node").post(URL, {"approved_set_version": 3, "models": []}, format="json")
    assert response.status_code == 201
    assert NodeReport.objects.get().approved_set_version == 3


def test_an_empty_sketch_is_accepted(client_as):
    response = client_as("node").post(URL, one_model(LatencySketch().as_dict()), format="json")
    assert response.status_code == 201, response.content
    assert NodeReport.objects.get().summary["m@1"]["count"] == 0


def test_the_client_librarys_state_is_stored_and_a_bad_one_refused(client_as):
    client_metrics = {
        "calls": 10,
        "successes": 7,
        "failures": 3,
        "success_rate": 0.7,
        "latency_ms": {"count": 10, "mean": 12.5, "p50": 10.0, "p95": 30.0, "p99": 31.0, "max": 31.0},
        "circuit_breaker": {"state": "half_open", "consecutive_failures": 3, "failure_threshold": 3},
    }
    accepted = client_as("node", "node-c").post(URL, report(client=client_metrics), format="json")
    assert accepted.status_code == 201, accepted.content
    stored = NodeReport.objects.get()
    assert stored.circuit_breaker == "half_open" and stored.client["success_rate"] == 0.7
    assert accepted.json()["circuit_breaker"] == "half_open"

    bad = {**client_metrics, "circuit_breaker": {"state": "melted"}}
    refused = client_as("node", "node-c").post(URL, report(client=bad), format="json")
    assert refused.status_code == 400
    assert "client.circuit_breaker.state" in refused.json()["error"]["fields"]


def test_the_same_model_twice_is_refused(client_as):
    entry = {"model_name": "m", "version": "1", "latency_ms": summary(1)}
    response = client_as("node").post(URL, report(models=[entry, entry]), format="json")
    assert response.status_code == 400
    assert not NodeReport.objects.exists()


def test_an_oversized_report_is_refused_before_parsing(client_as, settings):
    settings.TELEMETRY_MAX_BYTES = 512
    body = json.dumps(
        report(models=[{"model_name": f"m{i}", "version": "1", "latency_ms": summary(1)} for i in range(10)])
    )
    response = client_as("node").post(URL, body, content_type="application/json")
    assert response.status_code == 413
    assert "TELEMETRY_MAX_BYTES" in response.json()["error"]["message"]


def test_too_many_models_are_refused(client_as, settings):
    settings.TELEMETRY_MAX_MODELS = 2
    models = [{"model_name": f"m{i}", "version": "1", "latency_ms": summary(1)} for i in range(3)]
    response = client_as("node").post(URL, report(models=models), format="json")
    assert response.status_code == 400
    assert "models" in response.json()["error"]["fields"]


def test_reports_are_rate_limited_per_node(client_as, settings):
    settings.TELEMETRY_MAX_REPORTS_PER_HOUR = 2
    node_a = client_as("node", "node-a")
    hours = [{"start": f"2030-01-01T0{h}:00:00Z", "end": f"2030-01-01T0{h + 1}:00:00Z"} for h in range(3)]
    assert [node_a.post(URL, report(period=hours[h]), format="json").status_code for h in range(2)] == [201, 201]
    limited = node_a.post(URL, report(period=hours[2]), format="json")
    assert limited.status_code == 429
    assert 0 < int(limited["Retry-After"]) <= 3600
    assert limited.json()["error"]["type"] == "rate_limit_error"
    # Another node's allowance is its own.
    assert client_as("node", "node-b").post(URL, report(), format="json").status_code == 201


def test_a_report_resent_for_the_same_period_is_stored_once(client_as):
    node_a = client_as("node", "node-a")
    first = node_a.post(URL, report(), format="json")
    again = node_a.post(URL, report(), format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert NodeReport.objects.count() == 1
    # Another period, or the same period from another node, is a new report.
    later = {"start": "2030-01-01T01:00:00Z", "end": "2030-01-01T02:00:00Z"}
    assert node_a.post(URL, report(period=later), format="json").status_code == 201
    assert client_as("node", "node-b").post(URL, report(), format="json").status_code == 201
    assert NodeReport.objects.count() == 3


def test_the_first_report_and_its_resend_match_the_generated_schema(client_as):
    from tests.openapi import response_check, schema_generated

    schema = schema_generated()
    node_a = client_as("node", "node-a")
    for expected in (201, 200):
        response = node_a.post(URL, report(), format="json")
        assert response.status_code == expected
        response_check(schema, path=URL, method="POST", response=response)


def test_a_resend_does_not_count_against_the_rate_limit(client_as, settings):
    settings.TELEMETRY_MAX_REPORTS_PER_HOUR = 1
    node_a = client_as("node", "node-a")
    assert [node_a.post(URL, report(), format="json").status_code for _ in range(3)] == [201, 200, 200]


def test_other_figures_for_a_stored_period_are_a_conflict(client_as):
    node_a = client_as("node", "node-a")
    assert node_a.post(URL, report(), format="json").status_code == 201
    other = node_a.post(
        URL, report(models=[{"model_name": "mini-embed", "version": "1", "latency_ms": summary(9)}]), format="json"
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "period_already_reported"
    assert NodeReport.objects.count() == 1


def test_the_database_refuses_a_second_report_for_a_period(client_as):
    from django.db import IntegrityError, transaction

    node_a = client_as("node", "node-a")
    assert node_a.post(URL, report(), format="json").status_code == 201
    stored = NodeReport.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        NodeReport.objects.create(
            node=stored.node, period_start=stored.period_start, period_end=stored.period_end, received_at=timezone.now()
        )


def test_wide_sketches_for_a_few_models_fit_the_size_limit(client_as, settings):
    """Latencies spread over eight orders of magnitude (about 900 buckets a model) stay inside TELEMETRY_MAX_BYTES."""
    rng = np.random.default_rng(3)
    models = []
    for i in range(3):
        sketch = LatencySketch()
        sketch.add_many(rng.lognormal(4.0, 2.0, 20_000).tolist())
        models.append({"model_name": f"m{i}", "version": "1", "latency_ms": sketch.as_dict()})
    body = json.dumps(report(models=models))
    assert len(body) < settings.TELEMETRY_MAX_BYTES
    assert client_as("node").post(URL, body, content_type="application/json").status_code == 201


# --- The node side ------------------------------------------------------------------------------


def test_record_latency_extends_one_sketch_per_model(tmp_path):
    home = NodeHome(tmp_path / "node")
    home.record_latency(model_name="m", version="1", values_ms=[1.0, 2.0])
    home.record_latency(model_name="m", version="1", values_ms=[0.0, 300.0])
    home.record_latency(model_name="other", version="2", values_ms=[5.0])
    models = json.loads(home.telemetry_path.read_text())["models"]
    assert [(m["model_name"], m["version"]) for m in models] == [("m", "1"), ("other", "2")]
    assert models[0]["latency_ms"] == summary(1.0, 2.0, 0.0, 300.0)
    assert models[1]["latency_ms"] == summary(5.0)


def test_record_latency_starts_afresh_over_a_summary_from_an_older_agent(tmp_path):
    home = NodeHome(tmp_path / "node")
    home.telemetry_path.parent.mkdir(parents=True)
    legacy = {"unit": "ms", "bounds": [1, 2], "counts": [0, 4, 0], "count": 4, "sum": 6.0}
    home.telemetry_path.write_text(json.dumps({"models": [{"model_name": "m", "version": "1", "latency_ms": legacy}]}))
    home.record_latency(model_name="m", version="1", values_ms=[7.0])
    assert json.loads(home.telemetry_path.read_text())["models"][0]["latency_ms"] == summary(7.0)


# --- Merging: one node, or the whole network ---------------------------------------------------


def window() -> tuple[dt.datetime, dt.datetime]:
    now = timezone.now()
    return now - dt.timedelta(hours=1), now + dt.timedelta(seconds=1)


def test_network_latency_is_the_exact_merge_of_every_nodes_sketch(client_as):
    client_as("node", "node-a").post(URL, one_model(summary(1, 3, 7)), format="json")
    client_as("node", "node-b").post(URL, one_model(summary(30, 300)), format="json")
    start, end = window()
    network = node_latency(model="m@1", start=start, end=end)
    assert (network["reports"], network["unmergeable"], network["e2e"]["count"]) == (2, 0, 5)
    assert network["e2e"]["max"] == 300.0
    node_a = get_user_model().objects.get(username="node-a")
    one = node_latency(model="m@1", start=start, end=end, node=node_a)
    assert (one["reports"], one["e2e"]["count"], one["e2e"]["max"]) == (1, 3, 7.0)
    assert [r.node.username for r in node_reports_latest()] == ["node-a", "node-b"]


def test_sketches_recorded_on_two_nodes_merge_to_the_networks_percentiles_within_one_percent(client_as, tmp_path):
    """What `record_latency` writes on each node, sent and merged, matches the exact percentiles of the union."""
    rng = np.random.default_rng(2024)
    values = {
        "node-a": rng.lognormal(mean=3.0, sigma=0.8, size=3000),
        "node-b": rng.lognormal(mean=4.5, sigma=1.2, size=4500),
    }
    for name, observed in values.items():
        home = NodeHome(tmp_path / name)
        # The runtime records in batches; each call extends the stored sketch.
        for batch in np.array_split(observed, 7):
            home.record_latency(model_name="m", version="1", values_ms=batch.tolist())
        models = json.loads(home.telemetry_path.read_text())["models"]
        assert client_as("node", name).post(URL, report(models=models), format="json").status_code == 201

    start, end = window()
    union = np.concatenate(list(values.values()))
    network = node_latency(model="m@1", start=start, end=end)
    assert (network["reports"], network["unmergeable"], network["e2e"]["count"]) == (2, 0, union.size)
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        exact = float(np.percentile(union, q, method="lower"))
        # The API rounds to 3 decimals (0.0005 ms), far below 1 % of these values.
        assert abs(network["e2e"][name] - exact) <= BOUND * exact + 0.0005, (name, network["e2e"][name], exact)
    assert network["e2e"]["max"] == pytest.approx(union.max(), abs=0.0005)

    for name, observed in values.items():
        node = get_user_model().objects.get(username=name)
        one = node_latency(model="m@1", start=start, end=end, node=node)
        assert one["e2e"]["count"] == observed.size
        exact = float(np.percentile(observed, 99, method="lower"))
        assert abs(one["e2e"]["p99"] - exact) <= BOUND * exact + 0.0005


def test_the_metrics_api_shows_one_node_or_the_whole_network(client_as, api_client):
    client_as("node", "node-a").post(URL, one_model(summary(1, 2, 3)), format="json")
    next_hour = {"start": "2030-01-01T01:00:00Z", "end": "2030-01-01T02:00:00Z"}
    client_as("node", "node-a").post(URL, {**one_model(summary(4)), "period": next_hour}, format="json")
    client_as("node", "node-b").post(URL, one_model(summary(10, 20, 30, 40)), format="json")
    client_as("node", "node-c").post(URL, one_model(summary(5), name="other"), format="json")
    latency = reverse("api-metrics-node-latency")

    network = api_client.get(latency, {"model": "m@1"}).json()
    assert (network["node"], network["reports"], network["unmergeable"]) == (None, 3, 0)
    assert (network["e2e"]["count"], network["e2e"]["max"]) == (8, 40.0)
    one = api_client.get(latency, {"model": "m@1", "node": "node-a"}).json()
    assert (one["node"], one["reports"], one["unmergeable"]) == ("node-a", 2, 0)
    assert (one["e2e"]["count"], one["e2e"]["max"], one["e2e"]["mean"]) == (4, 4.0, 2.5)
    other = api_client.get(latency, {"model": "m@1", "node": "node-c"}).json()
    assert (other["reports"], other["e2e"]["count"], other["e2e"]["p50"]) == (0, 0, None)
    assert api_client.get(latency, {"model": "m@1", "node": "nobody"}).status_code == 404


def test_node_reports_keep_the_table_they_had_in_the_registry():
    assert NodeReport._meta.db_table == "registry_nodereport"


@pytest.mark.parametrize("field", ["signed_set_version", "approved_set_version"])
@pytest.mark.parametrize("value", [2**31, "3", True])
def test_set_versions_are_json_integers_a_database_column_holds(client_as, field, value):
    response = client_as("node").post(URL, report(**{field: value}), format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
