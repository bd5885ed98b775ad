"""`conclave-verify` re-checks what informed each adoption: the benchmark evidence, and re-runs it.

A real model (the all-MiniLM-L6 ONNX pack from PyPI) is benchmarked by the
platform's own service, adopted through a real proposal, and its evidence
pinned; the verifier fetches everything from a live server's gateway (or a
CAR) and, with --rerun-benchmarks, measures the model again here.
"""

import json

import pytest
from django.core.management import call_command

from audit.checkpoints import audit_checkpoint_create
from audit.models import AuditEvent
from conclave_node import verify
from conclave_node.benchmarks import evidence_parse
from core.ipfs import pinning_backend
from governance.models import ProposalType
from governance.services import proposal_create, vote_cast
from inference.models import BenchmarkRun, BenchmarkStatus
from inference.services import benchmark_execute, benchmark_request
from registry.services import manifest_pin
from tests.audit.rewrite import chain_rewrite
from tests.governance.factories import T0, person
from tests.inference.conftest import EMBEDDING_DEFAULT, pack_register
from tests.node.test_verify import run, run_to_the_end, sign_and_pin

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def adopted(db, settings):
    """MiniLM benchmarked by the platform, then adopted by a proposal whose vote its run informed."""
    settings.GOVERNANCE_BENCHMARK_CANDIDATES = True
    settings.INFERENCE_THREADS = 1
    settings.INFERENCE_BENCHMARK_REPEATS = 8
    settings.INFERENCE_BENCHMARK_HEARTBEAT_SECONDS = 0
    alice, carol = person("alice"), person("carol")
    candidate = pack_register(EMBEDDING_DEFAULT)
    queued = benchmark_request(manifest=candidate, run_task=False)
    benchmark = benchmark_execute(benchmark_run_id=queued.pk)
    assert benchmark.status == BenchmarkStatus.SUCCEEDED, benchmark.error
    proposal = proposal_create(
        author=alice,
        proposal_type=ProposalType.MODEL_ADOPTION,
        title=f"Adopt {candidate}",
        payload={"candidate": candidate.pk, "replaces": None, "reason": "measured"},
        now=T0,
    )
    # The run already finished: creating the proposal queued no other one.
    assert BenchmarkRun.objects.filter(manifest=candidate).count() == 1
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    vote_cast(proposal=proposal, voter=carol, choice="for", now=T0)
    run_to_the_end(proposal)
    manifest_pin(manifest=candidate)  # what the pin task the approval queued does
    sign_and_pin()
    audit_checkpoint_create()
    proposal.refresh_from_db()
    assert proposal.executed_at is not None
    return {"proposal": proposal, "run": benchmark, "candidate": candidate}


def executed_event(proposal) -> AuditEvent:
    return AuditEvent.objects.get(object_type="proposal", object_id=str(proposal.pk), event_type="proposal.executed")


def lines(report: dict, kind: str) -> list[dict]:
    return [line for line in report["decisions"] if line["kind"] == kind]


def test_a_finished_run_pins_its_evidence_and_the_adoption_names_it(adopted, live_server, capsys):
    benchmark, proposal, candidate = adopted["run"], adopted["proposal"], adopted["candidate"]
    assert benchmark.evidence_cid
    store = pinning_backend()
    evidence = evidence_parse(b"".join(store.read(benchmark.evidence_cid)))
    assert evidence["benchmark_run"] == benchmark.pk
    assert evidence["manifest"]["name"] == str(candidate) and evidence["manifest"]["sha256"] == candidate.sha256
    assert evidence["results"] == benchmark.results and evidence["hardware"] == benchmark.hardware
    assert evidence["parameters"] == benchmark.parameters
    evalset = b"".join(store.read(evidence["evaluation_set"]["cid"]))
    assert evalset == (verify.Path(__file__).parents[2] / "inference/evalsets/sentence_similarity.jsonl").read_bytes()
    assert executed_event(proposal).payload["result"]["evidence"] == [benchmark.evidence_cid]
    created = AuditEvent.objects.get(object_id=str(proposal.pk), event_type="proposal.created")
    assert created.payload["evidence_required"] is True

    code, report = run(capsys, "--server", live_server.url)
    assert report["problems"] == [] and code == 0
    (evidence_line,) = lines(report, "evidence")
    assert evidence_line["cid"] == benchmark.evidence_cid
    (files_line,) = lines(report, "files")
    assert files_line["checked"] is True and "2 file(s) hash to their published sha256 and CIDs" in files_line["text"]


def test_the_proposal_page_shows_the_runs_evidence_cid(adopted, client):
    benchmark = adopted["run"]
    page = client.get(f"/inference/benchmarks/compare/{adopted['candidate'].pk}/").content.decode()
    assert f'href="/ipfs/{benchmark.evidence_cid}"' in page


def test_evidence_verifies_from_the_checkpoint_alone_and_offline(adopted, live_server, tmp_path, capsys):
    from audit.models import AuditCheckpoint

    checkpoint = AuditCheckpoint.objects.order_by("-seq").first()
    code, report = run(capsys, "--checkpoint", checkpoint.cid, "--gateway", live_server.url)
    assert report["problems"] == [] and code == 0
    assert len(lines(report, "evidence")) == 1 and lines(report, "files")[0]["checked"] is True
    assert any("valid signature(s)" in line["text"] for line in lines(report, "adoption"))

    light, full = tmp_path / "light.car", tmp_path / "full.car"
    call_command("audit_export", "--car", str(light))
    call_command("audit_export", "--car", str(full), "--files")
    capsys.readouterr()
    code, report = run(capsys, "--car", str(light))
    # Evidence and evaluation sets travel in every CAR; the model's files only with --files.
    assert report["problems"] == [] and code == 0 and len(lines(report, "evidence")) == 1
    assert lines(report, "files")[0]["checked"] is False and "NOT CHECKED" in lines(report, "files")[0]["text"]
    code, report = run(capsys, "--car", str(full))
    assert report["problems"] == [] and code == 0 and lines(report, "files")[0]["checked"] is True


def test_skip_files_reports_the_files_as_not_checked(adopted, live_server, capsys):
    code, report = run(capsys, "--server", live_server.url, "--skip-files")
    assert code == 0
    (files_line,) = lines(report, "files")
    assert files_line["checked"] is False and "NOT CHECKED (--skip-files)" in files_line["text"]


def test_missing_benchmark_evidence_is_caught(adopted, live_server, capsys):
    executed = executed_event(adopted["proposal"])
    chain_rewrite(lambda e: e.seq == executed.seq and _set(e.payload["result"], evidence=[]))
    code, report = run(capsys, "--server", live_server.url)
    assert code == verify.EXIT_CODES["evidence"] == 21
    assert [(p["kind"], p["seq"]) for p in report["problems"]] == [("evidence", executed.seq)]
    assert "naming no benchmark evidence" in report["problems"][0]["message"]


def test_evidence_the_gateway_cannot_serve_is_caught(adopted, live_server, settings, capsys):
    from pathlib import Path

    cid = adopted["run"].evidence_cid
    (Path(settings.IPFS_STORE_DIR) / "blobs" / cid).unlink()  # the platform lost (or never pinned) it
    code, report = run(capsys, "--server", live_server.url)
    assert code == verify.EXIT_CODES["evidence"]
    problem = report["problems"][0]
    assert problem["seq"] == executed_event(adopted["proposal"]).seq and cid in problem["message"]


def test_rerun_benchmarks_reproduces_the_recorded_quality_exactly(adopted, live_server, capsys):
    code, report = run(capsys, "--server", live_server.url, "--rerun-benchmarks")
    assert report["problems"] == [] and code == 0
    (rerun,) = lines(report, "rerun")
    assert rerun["quality"] == adopted["run"].results["quality_score"]
    assert rerun["hardware"]["recorded"] == adopted["run"].hardware
    assert "exactly as recorded" in rerun["text"] and "speed" in rerun["text"]


def test_rerun_catches_evidence_whose_quality_was_inflated(adopted, live_server, tmp_path, capsys):
    """Evidence re-pinned with a better quality figure than the model measures, and the adoption re-pointed at it."""
    store = pinning_backend()
    original = adopted["run"].evidence_cid
    evidence = json.loads(b"".join(store.read(original)))
    evidence["results"]["quality_score"] = round(evidence["results"]["quality_score"] + 0.01, 4)
    from aleph_cid import compute_cid
    from rfc8785 import dumps

    forged = dumps(evidence)
    store.pin_bytes(forged, cid=compute_cid(forged))
    executed = executed_event(adopted["proposal"])
    chain_rewrite(lambda e: e.seq == executed.seq and _set(e.payload["result"], evidence=[compute_cid(forged)]))
    code, report = run(capsys, "--server", live_server.url, "--rerun-benchmarks")
    assert code == verify.EXIT_CODES["rerun"] == 23
    assert [(p["kind"], p["seq"]) for p in report["problems"]] == [("rerun", executed.seq)]


def _set(mapping: dict, **values) -> bool:
    mapping.update(values)
    return True
