"""Benchmark a manifest (a candidate or an approved one) and copy the results into its metrics."""

import json
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.errors import DomainError
from inference import services
from inference.models import BenchmarkRun, BenchmarkStatus
from inference.selectors import manifest_find


class Command(BaseCommand):
    help = (
        "Benchmark a manifest given by id or name@version: load time, latency p50/p95/p99, throughput, "
        "peak memory and quality on the evaluation sets. Runs here by default; --enqueue sends it to the "
        "`benchmark` queue and follows its progress."
    )

    def add_arguments(self, parser):
        parser.add_argument("manifest", help="manifest id or name@version")
        parser.add_argument("--enqueue", action="store_true", help="run on a worker consuming the `benchmark` queue")
        parser.add_argument(
            "--timeout", type=float, default=1800.0, help="with --enqueue: give up waiting after this many seconds"
        )

    def handle(self, *args, manifest: str, enqueue: bool, timeout: float, **options):
        try:
            target = manifest_find(manifest)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        run = services.benchmark_request(manifest=target, run_task=enqueue)
        # tqdm redraws with "\r": the command's stderr must not add line endings.
        self.stderr.ending = ""
        bar = tqdm(
            total=100,
            desc=f"benchmark {target}",
            unit="%",
            bar_format="{l_bar}{bar}| {n:.0f}% {postfix}",
            file=self.stderr,
        )

        def progress(fraction: float, stage: str) -> None:
            bar.n = round(fraction * 100, 1)
            bar.set_postfix_str(stage)
            bar.refresh()

        if enqueue:
            run = self._follow(run, progress, timeout)
        else:
            run = services.benchmark_execute(benchmark_run_id=run.pk, worker="manage.py benchmark", progress=progress)
        bar.close()
        if run.status != BenchmarkStatus.SUCCEEDED:
            raise CommandError(f"benchmark #{run.pk} {run.status}: {run.error or 'no result'}")
        self.stdout.write(json.dumps(run.results, indent=2, sort_keys=True))
        self.stdout.write(
            self.style.SUCCESS(f"benchmark #{run.pk} of {target}: results copied into the manifest's metrics")
        )

    def _follow(self, run: BenchmarkRun, progress, timeout: float) -> BenchmarkRun:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run.refresh_from_db()
            progress(run.progress, run.stage or run.status)
            if run.status in (BenchmarkStatus.SUCCEEDED, BenchmarkStatus.FAILED):
                return run
            time.sleep(0.5)
        raise CommandError(
            f"benchmark #{run.pk} did not finish within {timeout:.0f} s; is a worker consuming `benchmark`?"
        )
