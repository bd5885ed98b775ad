"""Benchmarks of real model packs: on the `benchmark` queue, from the command line, into manifest metrics."""

import io

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from core.ipfs import pinning_backend
from inference.benchmarks import answer_matches, spearman
from inference.models import BenchmarkRun, BenchmarkStatus
from tests.inference.conftest import (
    EMBEDDING_CANDIDATE,
    EMBEDDING_DEFAULT,
    GENERATIVE_DEFAULT,
    pack_register,
    parameter_set,
    wait_for,
)


def test_spearman_and_answer_matching():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert answer_matches(" Paris.\nQ: next", ["Paris"])
    assert answer_matches("The answer is 42", ["42"])
    assert not answer_matches("420", ["42"])
    assert not answer_matches("4.5", ["4"])


@pytest.mark.django_db(transaction=True)
def test_a_candidate_is_benchmarked_on_the_benchmark_queue_into_its_metrics(inference_worker, client_as):
    candidate = pack_register(EMBEDDING_CANDIDATE)
    document_cid = candidate.manifest_cid
    response = client_as("operator").post("/api/v1/benchmarks/", {"manifest": f"{candidate}"}, format="json")
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]

    run = wait_for(
        lambda: (
            (r := BenchmarkRun.objects.get(pk=run_id)).status in (BenchmarkStatus.SUCCEEDED, BenchmarkStatus.FAILED)
            and r
        ),
        timeout=120,
    )
    assert run and run.status == BenchmarkStatus.SUCCEEDED, run and run.error
    assert run.progress == 1.0
    assert run.hardware["cpus"] >= 1 and run.library_versions["onnxruntime"]
    assert run.parameters["threads"] >= 1
    results = run.results
    assert 0.5 < results["quality_score"] <= 1.0  # Spearman on the graded pairs
    assert results["latency_ms"]["p50"] > 0 and results["latency_ms"]["p99"] >= results["latency_ms"]["p50"]
    assert results["sentences_per_sec_batch_32"] > 0 and results["sentences_per_sec_batch_1"] > 0
    assert results["load_seconds"] > 0 and results["memory_usage_mb"] >= 0

    candidate.refresh_from_db()
    assert candidate.status == "candidate"  # benchmarked, not adopted
    assert candidate.metrics["quality_score"] == results["quality_score"]
    # The run's evidence is pinned, and the manifest lists it for the adoption it may inform.
    assert run.evidence_cid and pinning_backend().is_pinned(run.evidence_cid)
    assert candidate.metrics["evidence_cids"] == [run.evidence_cid]
    assert candidate.metrics["latency_ms"] == results["latency_ms"]
    assert candidate.metrics["benchmark_run_id"] == run.pk
    assert candidate.manifest_cid != document_cid
    assert wait_for(lambda: pinning_backend().is_pinned(candidate.manifest_cid), timeout=10)

    detail = APIClient().get(f"/api/v1/benchmarks/{run.pk}/").json()
    assert detail["status"] == "succeeded" and detail["manifest_label"] == str(candidate)
    comparison = APIClient().get(f"/inference/benchmarks/compare/{candidate.pk}/").content.decode()
    assert "candidate" in comparison and str(results["quality_score"]) in comparison


@pytest.mark.django_db(transaction=True)
def test_benchmark_command_measures_a_generative_model_with_a_progress_bar(settings):
    # A short run: the first 10 questions, 16 tokens per throughput prompt.
    settings.INFERENCE_BENCHMARK_GENERATION_TOKENS = 16
    settings.INFERENCE_BENCHMARK_MAX_ITEMS = 10
    manifest = pack_register(GENERATIVE_DEFAULT)
    out, err = io.StringIO(), io.StringIO()
    call_command("benchmark", f"{manifest.model_name}@{manifest.version}", stdout=out, stderr=err)
    assert "100%" in err.getvalue()  # tqdm writes the bar to stderr
    run = BenchmarkRun.objects.get(manifest=manifest)
    assert run.status == BenchmarkStatus.SUCCEEDED
    results = run.results
    assert results["avg_tokens_per_sec"] > 0
    assert results["time_to_first_token_ms"]["p50"] > 0
    assert 0.0 <= results["quality_score"] <= 1.0 and "accuracy on 10" in results["quality_metric"]
    assert run.parameters["evalset_max_items"] == 10
    manifest.refresh_from_db()
    assert manifest.metrics["avg_tokens_per_sec"] == results["avg_tokens_per_sec"]


@pytest.mark.django_db(transaction=True)
def test_a_benchmark_over_the_memory_limit_fails_with_the_reason():
    parameter_set("memory_limit_mb", 256)
    candidate = pack_register(EMBEDDING_CANDIDATE)
    with pytest.raises(Exception, match="memory_limit_mb is 256"):
        call_command("benchmark", str(candidate.pk), stdout=io.StringIO(), stderr=io.StringIO())
    run = BenchmarkRun.objects.get(manifest=candidate)
    assert run.status == BenchmarkStatus.FAILED and "memory_limit_mb is 256" in run.error
    candidate.refresh_from_db()
    assert candidate.metrics["quality_score"] is None


@pytest.mark.django_db
def test_only_operators_queue_benchmarks(client_as):
    assert client_as("contributor").post("/api/v1/benchmarks/", {"manifest": "1"}, format="json").status_code == 403
    assert (
        client_as("operator").post("/api/v1/benchmarks/", {"manifest": "no-such@1"}, format="json").status_code == 404
    )


def _adoption_proposed(candidate, author_name: str = "alice"):
    from governance.models import ProposalType
    from governance.services import proposal_create
    from tests.governance.factories import person

    return proposal_create(
        author=person(author_name),
        proposal_type=ProposalType.MODEL_ADOPTION,
        title=f"Adopt {candidate}",
        payload={"candidate": candidate.pk, "reason": "smaller, as good"},
    )


@pytest.mark.django_db
def test_an_adoption_proposal_queues_one_benchmark_of_its_candidate(settings, django_capture_on_commit_callbacks):
    from governance.services import proposal_cancel
    from tests.governance.factories import operator

    settings.GOVERNANCE_BENCHMARK_CANDIDATES = True
    candidate = pack_register(EMBEDDING_CANDIDATE)
    with django_capture_on_commit_callbacks() as callbacks:
        proposal = _adoption_proposed(candidate)
    run = BenchmarkRun.objects.get(manifest=candidate)
    assert run.status == BenchmarkStatus.QUEUED and run.requested_by == proposal.author
    assert len(callbacks) >= 1  # the enqueue waits for the commit
    # The proposal page's comparison shows the queued run's progress, and polls until it ends.
    pending = APIClient().get(f"/inference/benchmarks/compare/{candidate.pk}/").content.decode()
    assert f'id="benchmark-{run.pk}"' in pending and "queued" in pending
    assert 'hx-trigger="every' in pending

    # A second proposal on the same candidate does not queue a second run while one is pending.
    proposal_cancel(proposal=proposal, actor=operator(), reason="superseded")
    _adoption_proposed(candidate, author_name="bob")
    assert BenchmarkRun.objects.filter(manifest=candidate).count() == 1

    settings.GOVERNANCE_BENCHMARK_CANDIDATES = False
    other = pack_register(GENERATIVE_DEFAULT)
    _adoption_proposed(other, author_name="carol")
    assert not BenchmarkRun.objects.filter(manifest=other).exists()


@pytest.mark.django_db
def test_an_adoption_proposal_also_queues_the_approved_models_benchmark_when_it_has_none(settings):
    from accounts.models import Role
    from accounts.services import user_grant_role
    from registry.services import genesis_adopt

    settings.GOVERNANCE_BENCHMARK_CANDIDATES = True
    approved = pack_register(EMBEDDING_DEFAULT)
    genesis_adopt(manifests=[approved], actor=user_grant_role(username="operator", role=Role.OPERATOR), reason="test")
    candidate = pack_register(EMBEDDING_CANDIDATE)
    _adoption_proposed(candidate)

    assert BenchmarkRun.objects.filter(manifest=candidate, status=BenchmarkStatus.QUEUED).count() == 1
    assert BenchmarkRun.objects.filter(manifest=approved, status=BenchmarkStatus.QUEUED).count() == 1
    # Both sides of the comparison show their run's progress, and the panel polls until both end.
    comparison = APIClient().get(f"/inference/benchmarks/compare/{candidate.pk}/").content.decode()
    for run in BenchmarkRun.objects.all():
        assert f'id="benchmark-{run.pk}"' in comparison
    assert 'hx-trigger="every' in comparison


@pytest.mark.django_db(transaction=True)
def test_voters_see_the_candidates_benchmark_without_anyone_asking(inference_worker, settings):
    settings.GOVERNANCE_BENCHMARK_CANDIDATES = True
    candidate = pack_register(EMBEDDING_CANDIDATE)
    proposal = _adoption_proposed(candidate)

    assert proposal.pk
    run = wait_for(
        lambda: (
            (r := BenchmarkRun.objects.filter(manifest=candidate).first())
            and r.status in (BenchmarkStatus.SUCCEEDED, BenchmarkStatus.FAILED)
            and r
        ),
        timeout=120,
    )
    assert run and run.status == BenchmarkStatus.SUCCEEDED, run and run.error
    candidate.refresh_from_db()
    assert candidate.metrics["benchmark_run_id"] == run.pk
    comparison = APIClient().get(f"/inference/benchmarks/compare/{candidate.pk}/").content.decode()
    assert str(run.results["quality_score"]) in comparison
    assert "benchmark-progress" not in comparison and 'hx-trigger="every' not in comparison


# --- A run whose worker died ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_running_benchmark_whose_heartbeat_stopped_is_failed_with_the_reason_and_a_new_one_may_be_queued(settings):
    import datetime as dt

    from django.utils import timezone

    from inference.services import benchmark_ensure, benchmark_request, benchmark_runs_stalled_fail

    settings.INFERENCE_BENCHMARK_STALE_SECONDS = 120
    candidate = pack_register(EMBEDDING_CANDIDATE)
    other = pack_register(GENERATIVE_DEFAULT)
    now = timezone.now()
    silent = benchmark_request(manifest=candidate, run_task=False)
    BenchmarkRun.objects.filter(pk=silent.pk).update(
        status=BenchmarkStatus.RUNNING,
        worker="w1@host",
        progress=0.1,
        started_at=now - dt.timedelta(seconds=600),
        heartbeat_at=now - dt.timedelta(seconds=121),
    )
    beating = benchmark_request(manifest=other, run_task=False)
    BenchmarkRun.objects.filter(pk=beating.pk).update(
        status=BenchmarkStatus.RUNNING, started_at=now - dt.timedelta(seconds=600), heartbeat_at=now
    )
    assert benchmark_ensure(manifest=candidate) is None  # "in progress" blocks a new run

    assert benchmark_runs_stalled_fail() == [silent.pk]

    silent.refresh_from_db()
    assert silent.status == BenchmarkStatus.FAILED and silent.finished_at is not None
    assert "w1@host" in silent.error and "stopped sending heartbeats" in silent.error
    assert BenchmarkRun.objects.get(pk=beating.pk).status == BenchmarkStatus.RUNNING
    again = benchmark_ensure(manifest=candidate)
    assert again is not None and again.status == BenchmarkStatus.QUEUED


@pytest.mark.django_db(transaction=True)
def test_a_running_benchmark_stamps_its_heartbeat_while_its_progress_stands_still(settings):
    from inference.services import benchmark_execute, benchmark_request

    settings.INFERENCE_BENCHMARK_HEARTBEAT_SECONDS = 0.1
    settings.INFERENCE_BENCHMARK_REPEATS = 2
    settings.INFERENCE_BENCHMARK_MAX_ITEMS = 2
    candidate = pack_register(EMBEDDING_CANDIDATE)
    run = benchmark_request(manifest=candidate, run_task=False)
    beats = []

    def progress(fraction: float, stage: str) -> None:
        if stage == "model loaded":
            first = BenchmarkRun.objects.get(pk=run.pk).heartbeat_at
            later = wait_for(lambda: (b := BenchmarkRun.objects.get(pk=run.pk).heartbeat_at) != first and b)
            beats.extend([first, later])

    finished = benchmark_execute(benchmark_run_id=run.pk, worker="test", progress=progress)
    assert finished.status == BenchmarkStatus.SUCCEEDED, finished.error
    assert beats[0] is not None and beats[1] and beats[1] > beats[0]


def test_beat_fails_stalled_benchmarks_on_a_schedule(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["inference-stalled-benchmarks-fail"]
    assert entry["task"] == "inference.tasks.stalled_benchmarks_fail"
    assert entry["schedule"] == settings.INFERENCE_BENCHMARK_SWEEP_SECONDS


@pytest.mark.django_db(transaction=True)
def test_a_queued_benchmark_whose_message_was_lost_is_sent_again_and_runs(inference_worker, settings):
    import datetime as dt

    from django.utils import timezone

    from inference.services import benchmark_request, benchmark_runs_stalled_fail

    settings.INFERENCE_BENCHMARK_RESEND_SECONDS = 600
    settings.INFERENCE_BENCHMARK_REPEATS = 2
    settings.INFERENCE_BENCHMARK_MAX_ITEMS = 2
    candidate = pack_register(EMBEDDING_CANDIDATE)
    lost = benchmark_request(manifest=candidate, run_task=False)  # recorded, its message never sent
    recent = benchmark_request(manifest=pack_register(GENERATIVE_DEFAULT), run_task=False)
    BenchmarkRun.objects.filter(pk=lost.pk).update(created_at=timezone.now() - dt.timedelta(seconds=601))

    assert benchmark_runs_stalled_fail() == []

    run = wait_for(
        lambda: (
            (r := BenchmarkRun.objects.get(pk=lost.pk)).status in (BenchmarkStatus.SUCCEEDED, BenchmarkStatus.FAILED)
            and r
        ),
        timeout=120,
    )
    assert run.status == BenchmarkStatus.SUCCEEDED, run.error
    recent.refresh_from_db()
    assert recent.status == BenchmarkStatus.QUEUED and recent.heartbeat_at is None  # not yet due: not sent again


@pytest.mark.django_db(transaction=True)
def test_a_benchmark_message_delivered_twice_runs_once(settings):
    from inference.services import benchmark_execute, benchmark_request

    settings.INFERENCE_BENCHMARK_REPEATS = 2
    settings.INFERENCE_BENCHMARK_MAX_ITEMS = 2
    run = benchmark_request(manifest=pack_register(EMBEDDING_CANDIDATE), run_task=False)
    BenchmarkRun.objects.filter(pk=run.pk).update(status=BenchmarkStatus.RUNNING, worker="first@host")

    second = benchmark_execute(benchmark_run_id=run.pk, worker="second@host")

    assert (second.status, second.worker) == (BenchmarkStatus.RUNNING, "first@host")  # left to the first worker


@pytest.mark.django_db
def test_a_benchmark_no_worker_takes_is_failed_with_the_reason(settings):
    import datetime as dt

    from django.utils import timezone

    from inference.services import benchmark_request, benchmark_runs_stalled_fail

    settings.INFERENCE_BENCHMARK_QUEUED_MAX_SECONDS = 3600
    run = benchmark_request(manifest=pack_register(EMBEDDING_CANDIDATE), run_task=False)
    BenchmarkRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - dt.timedelta(seconds=3601))

    assert benchmark_runs_stalled_fail() == [run.pk]

    run.refresh_from_db()
    assert run.status == BenchmarkStatus.FAILED and "No worker of the benchmark queue" in run.error
