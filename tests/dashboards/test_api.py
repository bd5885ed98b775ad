"""The metrics API: every panel's data as JSON, in the schema, with clear 4xx answers to bad input."""

import datetime as dt

import pytest
import yaml
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from conclave_node.sketch import LatencySketch
from dashboards.selectors.adoptions import adoption_history
from dashboards.selectors.latency import overview
from dashboards.services import metrics_rollup
from inference.models import BenchmarkRun, BenchmarkStatus
from nodes.models import NodeReport
from tests.dashboards.factories import sample, samples_add
from tests.governance.factories import person

pytestmark = pytest.mark.django_db


def get(client, name: str, *args, **query):
    return client.get(reverse(name, args=args), query)


def test_overview_json_equals_the_selector_for_the_same_end(story, api_client):
    end = timezone.now()
    response = get(api_client, "api-metrics-overview", window="1h", end=end.isoformat())
    assert response.status_code == 200
    body = response.json()
    expected = overview(window="1h", end=end)
    assert body["window"] == "1h" and body["relative_accuracy"] == 0.01
    assert [m["model"] for m in body["models"]] == ["mini@2"]
    model = body["models"][0]
    assert model["requests"] == expected["models"][0]["requests"] == 300
    assert model["latency_ms"] == expected["models"][0]["latency_ms"]
    assert len(model["series"]) == 60


def test_overview_after_a_rollup_is_unchanged(story, api_client):
    end = timezone.now()
    before = get(api_client, "api-metrics-overview", window="24h", end=end.isoformat()).json()
    metrics_rollup(now=end)
    after = get(api_client, "api-metrics-overview", window="24h", end=end.isoformat()).json()
    assert after == before
    assert {m["model"] for m in after["models"]} == {"mini@1", "mini@2"}


@pytest.mark.parametrize(
    "query, field",
    [({"window": "2w"}, "window"), ({"end": "yesterday"}, "end"), ({"window": "1H"}, "window")],
)
def test_bad_overview_queries_are_400_naming_the_field(api_client, query, field):
    response = get(api_client, "api-metrics-overview", **query)
    assert response.status_code == 400
    error = response.json()["error"]
    assert field in error["fields"]
    assert error["message"]


def test_adoption_history_has_proposal_tally_manifest_cids_and_the_replaced_model(story, api_client):
    body = get(api_client, "api-metrics-adoptions").json()
    kinds = [entry["kind"] for entry in body["entries"]]
    # Newest first: the parameter change, then the adoption's retirement and approval, then genesis.
    assert kinds == ["parameter-change", "retirement", "adoption", "genesis"]
    parameter, retirement, adoption, genesis = body["entries"]
    assert parameter["parameter"] == {"name": "queue_size", "old_value": 5, "new_value": 8}
    assert parameter["proposal"]["id"] == story.parameter_change.pk
    assert adoption["proposal"]["id"] == story.adoption.pk
    assert adoption["proposal"]["tally"]["for"] == 2
    assert adoption["manifest"]["label"] == "mini@2"
    assert adoption["manifest"]["manifest_cid"] == story.successor.manifest_cid
    assert adoption["manifest"]["files"][0]["cid"]
    assert adoption["replaced"]["label"] == "mini@1"
    assert adoption["audit_url"].endswith(f"object_type=manifest&object_id={story.successor.pk}")
    assert adoption["event"]["seq"] > genesis["event"]["seq"]
    assert adoption["comparison"]["replaced"]["served"]["requests"] == 200
    assert retirement["manifest"]["label"] == "mini@1"
    assert [m["label"] for m in genesis["manifests"]] == ["mini@1"]


def test_the_comparison_shows_the_new_model_after_adoption(story):
    adopted_at = [e for e in adoption_history() if e["kind"] == "adoption"][0]["at"]
    samples_add([sample(at=adopted_at + dt.timedelta(minutes=m), model="mini@2", e2e_ms=5.0 + m) for m in range(10)])
    entry = [e for e in adoption_history(now=adopted_at + dt.timedelta(hours=1)) if e["kind"] == "adoption"][0]
    served = entry["comparison"]["new"]["served"]
    assert served["requests"] == 10
    assert served["latency_ms"]["e2e"]["max"] == 14.0


def test_governance_lists_open_proposals_with_live_tallies(story, api_client):
    body = get(api_client, "api-metrics-governance").json()
    assert [p["id"] for p in body["open_proposals"]] == [story.open_proposal.pk]
    proposal = body["open_proposals"][0]
    assert proposal["state"] == "active"
    assert (proposal["tally"]["for"], proposal["tally"]["against"]) == (1, 1)
    assert 0 < proposal["time_left_seconds"] <= 7 * 24 * 3600
    vote_cast_now(story.open_proposal, story.voters[2], "for")
    again = get(api_client, "api-metrics-governance").json()["open_proposals"][0]
    assert again["tally"]["for"] == 2
    assert len(body["votes_per_day"]) == 30
    assert body["votes_per_day"][-1]["votes"] >= 7


def vote_cast_now(proposal, voter, choice):
    from governance.services import vote_cast

    vote_cast(proposal=proposal, voter=voter, choice=choice)


def test_fleet_lists_benchmarks_in_progress_and_nodes(story, api_client):
    BenchmarkRun.objects.create(manifest=story.successor, status=BenchmarkStatus.RUNNING, progress=0.4, stage="latency")
    BenchmarkRun.objects.create(manifest=story.original, status=BenchmarkStatus.SUCCEEDED, progress=1.0)
    node = person("node-7", "node")
    sketch = LatencySketch()
    sketch.add_many([5.0, 6.0, 7.0])
    NodeReport.objects.create(
        node=node,
        signed_set_version=3,
        approved_set_version=2,
        models=["mini@2"],
        summary={"mini@2": sketch.as_dict()},
        received_at=timezone.now(),
    )
    body = get(api_client, "api-metrics-fleet").json()
    assert [(b["label"], b["progress"], b["status"]) for b in body["benchmarks"]] == [("mini@2", 0.4, "running")]
    assert body["nodes"] == [
        {
            "node": "node-7",
            "last_report": body["nodes"][0]["last_report"],
            "signed_set_version": 3,
            "approved_set_version": 2,
            "circuit_breaker": None,
            "client_success_rate": None,
            "models": [{"model": "mini@2", "requests": 3}],
        }
    ]
    # A report in another summary form is counted, not approximated.
    NodeReport.objects.create(
        node=person("node-8", "node"),
        models=["mini@2"],
        received_at=timezone.now(),
        summary={"mini@2": {"unit": "ms", "bounds": [1, 2], "counts": [0, 4, 0], "count": 4}},
    )
    latency = get(api_client, "api-metrics-node-latency", model="mini@2").json()
    assert (latency["reports"], latency["unmergeable"]) == (1, 1)
    assert (latency["e2e"]["count"], latency["e2e"]["max"]) == (3, 7.0)
    one = get(api_client, "api-metrics-node-latency", model="mini@2", node="node-7").json()
    assert (one["node"], one["reports"], one["unmergeable"]) == ("node-7", 1, 0)
    assert get(api_client, "api-metrics-node-latency", model="mini@2", node="nobody").status_code == 404


def test_model_page_has_files_cids_benchmarks_and_adoption_record(story, api_client):
    BenchmarkRun.objects.create(
        manifest=story.successor,
        status=BenchmarkStatus.SUCCEEDED,
        progress=1.0,
        results={"latency_ms": {"p50": 4.2, "p95": 6.0, "p99": 7.5}, "quality_score": 0.81},
    )
    body = get(api_client, "api-metrics-model", story.successor.pk).json()
    manifest = body["manifest"]
    assert manifest["label"] == "mini@2" and manifest["license"] == "Apache-2.0"
    assert manifest["status"] == "approved" and manifest["approved_by_governance"] is True
    files = {f["path"]: f for f in manifest["files"]}
    stored = {f.path: f for f in story.successor.files.all()}
    assert {path: (f["sha256"], f["cid"]) for path, f in files.items()} == {
        path: (f.sha256, f.cid) for path, f in stored.items()
    }
    assert body["benchmarks"][0]["latency_ms"]["p50"] == 4.2
    assert [e["type"] for e in body["adoption_record"]][:2] == ["manifest.registered", "manifest.pinned"]
    assert "manifest.approved" in [e["type"] for e in body["adoption_record"]]
    assert [p["id"] for p in body["proposals"]] == [story.adoption.pk]
    assert body["served_24h"]["requests"] == 300


def test_an_unknown_model_is_a_404_in_the_error_shape(api_client, db):
    response = get(api_client, "api-metrics-model", 99999)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_every_metrics_endpoint_is_in_the_openapi_schema(tmp_path, db):
    path = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(path))
    paths = yaml.safe_load(path.read_text())["paths"]
    for expected in ("overview/", "adoptions/", "governance/", "fleet/", "models/{manifest_id}/", "nodes/latency/"):
        assert f"/api/v1/metrics/{expected}" in paths
    overview_schema = paths["/api/v1/metrics/overview/"]["get"]
    assert {p["name"] for p in overview_schema["parameters"]} >= {"window", "model", "endpoint", "end"}


def test_fleet_shows_every_serving_node_with_what_the_router_learnt(db, api_client, client, settings):
    from inference.routing import records
    from inference.serving.shared_state import coordination
    from nodes.services import serving_node_heartbeat, serving_node_join

    settings.NODES_ALLOW_PRIVATE_URLS = True
    coordination().reset()
    fast, gone = person("node-fast", "node"), person("node-gone", "node")
    for account, port in ((fast, 9001), (gone, 9002)):
        serving_node_join(node=account, url=f"http://127.0.0.1:{port}", secret="s" * 40, models=["bafy-model"])
        serving_node_heartbeat(node=account, running=1, waiting=0, queue_capacity=8)
    serving_node_heartbeat(
        node=gone, running=0, waiting=0, queue_capacity=8, now=timezone.now() - dt.timedelta(minutes=5)
    )
    for latency in (10.0, 20.0, 30.0):
        records.observe(fast.pk, "bafy-model", good=True, latency_ms=latency, routed=True, spot_check=True)
    records.observe(gone.pk, "bafy-model", good=False, routed=True, spot_check=False)
    for _ in range(settings.INFERENCE_ROUTING_BREAKER_FAILURES):
        records.breaker_report(gone.pk, success=False)

    body = get(api_client, "api-metrics-fleet").json()
    rows = {row["node"]: row for row in body["serving_nodes"]}
    assert body["routing"] == "local"
    assert rows["node-fast"]["in_rotation"] and rows["node-fast"]["breaker"] == "closed"
    assert not rows["node-gone"]["in_rotation"] and rows["node-gone"]["breaker"] == "open"
    assert not rows["node-gone"]["heartbeat_fresh"]
    (model,) = rows["node-fast"]["models"]
    assert model["model"] == "bafy-model"  # no manifest with that CID here: the CID itself
    assert model["p50_ms"] == 20.0 and model["p95_ms"] == pytest.approx(29.0)
    assert model["traffic_share"] == 0.75 and model["requests_in_window"] == 3
    assert model["spot_checks"] == 3 and model["spot_agreement"] == 1.0
    assert model["fitness"] > settings.INFERENCE_ROUTING_FITNESS_PRIOR
    assert rows["node-gone"]["models"][0]["fitness"] < settings.INFERENCE_ROUTING_FITNESS_PRIOR
    assert rows["node-gone"]["models"][0]["spot_agreement"] == 0.0

    html = client.get(reverse("dashboards:fleet-panel")).content.decode()
    assert 'data-serving-node="node-fast"' in html and 'data-serving-node="node-gone"' in html
    assert 'data-api="serving_nodes.0.models.0.p50_ms" data-format="ms">20.00<' in html
