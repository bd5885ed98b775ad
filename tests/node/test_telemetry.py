"""POST /api/v1/telemetry/: nodes report latency summaries under their own account only."""

import json

import pytest
from django.contrib.auth import get_user_model

from conclave.node.latency import DEFAULT_BOUNDS_MS, LatencyHistogram
from registry.models_nodes import NodeReport
from registry.telemetry import node_latency_merged, node_reports_latest

pytestmark = pytest.mark.django_db

URL = "/api/v1/telemetry/"


def summary(*values: float) -> dict:
    histogram = LatencyHistogram()
    histogram.observe_many(values)
    return histogram.as_dict()


def report(**overrides) -> dict:
    body = {
        "signed_set_version": 4,
        "approved_set_version": 2,
        "period": {"start": "2030-01-01T00:00:00Z", "end": "2030-01-01T01:00:00Z"},
        "models": [{"model_name": "mini-embed", "version": "1", "latency_ms": summary(3, 4, 40)}],
    }
    body.update(overrides)
    return body


def test_a_node_reports_under_its_own_account(client_as):
    response = client_as("node", "node-a").post(URL, report(), format="json")
    assert response.status_code == 201, response.content
    stored = NodeReport.objects.get()
    assert stored.node.username == "node-a"
    assert stored.models == ["mini-embed@1"]
    assert stored.summary["mini-embed@1"]["counts"][2] == 2  # 3 and 4 ms: in (2, 5]
    assert stored.summary["mini-embed@1"]["counts"][5] == 1  # 40 ms: in (20, 50]
    assert stored.summary["mini-embed@1"]["count"] == 3
    assert (stored.signed_set_version, stored.approved_set_version) == (4, 2)


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


@pytest.mark.parametrize(
    ("latency", "field"),
    [
        ({**summary(1), "counts": [1] * 3}, "models.0.latency_ms"),
        ({**summary(1), "count": 7}, "models.0.latency_ms"),
        ({**summary(1), "bounds": [1, 2, 3]}, "models.0.latency_ms"),
        ({**summary(1), "counts": [-1] + [0] * len(DEFAULT_BOUNDS_MS)}, "models.0.latency_ms.counts.0"),
        ("fast", "models.0.latency_ms.non_field_errors"),
    ],
)
def test_malformed_summaries_are_refused_with_the_field_to_fix(client_as, latency, field):
    body = report(models=[{"model_name": "m", "version": "1", "latency_ms": latency}])
    response = client_as("node").post(URL, body, format="json")
    assert response.status_code == 400, response.content
    fields = response.json()["error"]["fields"]
    assert any(name.startswith(field) for name in fields), fields
    assert not NodeReport.objects.exists()


def test_a_report_without_traffic_still_records_the_nodes_set(client_as):
    response = client_as("node", "idle-node").post(URL, {"approved_set_version": 3, "models": []}, format="json")
    assert response.status_code == 201
    assert NodeReport.objects.get().approved_set_version == 3


def test_the_same_model_twice_is_refused(client_as):
    entry = {"model_name": "m", "version": "1", "latency_ms": summary(1)}
    response = client_as("node").post(URL, report(models=[entry, entry]), format="json")
    assert response.status_code == 400


def test_an_oversized_report_is_refused_before_parsing(client_as, settings):
    settings.TELEMETRY_MAX_BYTES = 512
    body = json.dumps(report(models=[{"model_name": f"m{i}", "version": "1", "latency_ms": summary(1)} for i in range(10)]))
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
    assert [node_a.post(URL, report(), format="json").status_code for _ in range(2)] == [201, 201]
    limited = node_a.post(URL, report(), format="json")
    assert limited.status_code == 429
    assert 0 < int(limited["Retry-After"]) <= 3600
    assert limited.json()["error"]["type"] == "rate_limit_error"
    # Another node's allowance is its own.
    assert client_as("node", "node-b").post(URL, report(), format="json").status_code == 201


def test_network_latency_is_the_exact_merge_of_every_nodes_summary(client_as):
    client_as("node", "node-a").post(URL, report(models=[
        {"model_name": "m", "version": "1", "latency_ms": summary(1, 3, 7)}]), format="json")
    client_as("node", "node-b").post(URL, report(models=[
        {"model_name": "m", "version": "1", "latency_ms": summary(30, 300)}]), format="json")
    merged = node_latency_merged(model="m@1")
    assert merged.count == 5
    assert merged.as_dict() == summary(1, 3, 7, 30, 300)
    node_a = get_user_model().objects.get(username="node-a")
    assert node_latency_merged(model="m@1", node=node_a).count == 3
    assert [r.node.username for r in node_reports_latest()] == ["node-a", "node-b"]
