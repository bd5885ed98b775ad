import socket

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Role
from accounts.services import user_grant_role
from core.errors import DomainError
from core.ipfs import PinError
from registry.models import ManifestStatus, PinStatus
from registry.packs import PACKS, PackMissing, pack_declared_sha256, pack_source_info, pack_sources, pack_version
from registry.services import approved_set_pin, approved_set_publish, genesis_adopt, manifest_pin, manifest_register
from signing.services import signed_set_refresh

GENESIS_REASON = (
    "Genesis adoption: the default embedding and generative models that ship with Conclave, "
    "approved by the operator at bootstrap so the network can serve before its first vote."
)
BENCHMARKS_REASON = "Benchmarks of the approved models recorded: their manifests now carry their metrics."


class Command(BaseCommand):
    help = (
        "Migrate, register and pin the model packs installed from PyPI, benchmark the two default "
        "models and approve them as the recorded genesis adoption. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--operator", default="operator", help="operator account the genesis adoption is recorded under"
        )
        parser.add_argument("--skip-migrate", action="store_true")
        parser.add_argument(
            "--no-benchmark",
            action="store_true",
            help="do not benchmark the default models (their manifests then carry no metrics)",
        )

    def handle(self, *args, operator: str, skip_migrate: bool, no_benchmark: bool = False, **options):
        if not skip_migrate:
            call_command("migrate", interactive=False, verbosity=0)
        actor = user_grant_role(username=operator, role=Role.OPERATOR)
        defaults = []
        for pack in PACKS:
            try:
                sources = pack_sources(pack)
            except PackMissing as exc:
                level = self.style.ERROR if pack.default else self.style.WARNING
                self.stdout.write(level(f"skip {pack.model_name}: {exc}"))
                if pack.default:
                    raise CommandError(f"default model pack {pack.distribution} is missing: {exc}") from exc
                continue
            try:
                manifest, created = manifest_register(
                    model_name=pack.model_name,
                    version=pack_version(pack),
                    kind=pack.kind,
                    fmt=pack.fmt,
                    quantization=pack.quantization,
                    license=pack.license,
                    files=sources,
                    source=pack_source_info(pack),
                    actor=actor,
                    pin="none",
                    expected_sha256=pack_declared_sha256(pack),
                )
                if manifest.pin_status != PinStatus.PINNED:
                    manifest = manifest_pin(manifest=manifest)
            except (DomainError, PinError) as exc:
                raise CommandError(f"{pack.model_name}: {exc}") from exc
            verb = "registered" if created else "already registered"
            self.stdout.write(f"{verb} {manifest} ({manifest.kind}, {manifest.size_bytes:,} B) cid {manifest.ipfs_cid}")
            if pack.default:
                defaults.append(manifest)
        # Benchmarked before adoption, so the approved set carries their metrics from version 1.
        benchmarked = [] if no_benchmark else [m for m in defaults if self._benchmark(m, actor)]
        with transaction.atomic():
            approved_set = genesis = genesis_adopt(manifests=defaults, actor=actor, reason=GENESIS_REASON)
            if genesis is None and any(m.status == ManifestStatus.APPROVED for m in self._refreshed(benchmarked)):
                # Adopted before they were benchmarked: publish the set again, with the metrics.
                approved_set = approved_set_publish(actor=actor, reason=BENCHMARKS_REASON)
        if approved_set is not None:
            # No worker runs inside this command: pin the new documents here.
            for manifest in defaults:
                manifest_pin(manifest=manifest)
            approved_set_pin(approved_set=approved_set)
        if genesis is not None:
            self.stdout.write(
                self.style.SUCCESS(f"genesis adoption recorded: approved set v{genesis.version} cid {genesis.cid}")
            )
        else:
            self.stdout.write("genesis adoption already recorded")
            if approved_set is not None:
                self.stdout.write(f"approved set v{approved_set.version} published with the new metrics")
        # Sign (or re-sign, near expiry) the current set so nodes can pull at once.
        signed = signed_set_refresh()
        if signed is not None:
            self.stdout.write(f"signed approved set v{signed.version}, expires {signed.expires:%Y-%m-%d %H:%M}Z")

    def _benchmark(self, manifest, actor) -> bool:
        """Benchmark `manifest` unless it has a finished benchmark; True when it ran one now."""
        from inference.models import BenchmarkStatus
        from inference.selectors import benchmark_latest
        from inference.services import benchmark_execute, benchmark_request

        if benchmark_latest(manifest) is not None:
            return False
        self.stdout.write(f"benchmarking {manifest} (speed, memory, quality on the evaluation set)…")
        run = benchmark_request(manifest=manifest, actor=actor, run_task=False)
        run = benchmark_execute(benchmark_run_id=run.pk, worker=f"bootstrap@{socket.gethostname()}")
        if run.status != BenchmarkStatus.SUCCEEDED:
            raise CommandError(f"the benchmark of {manifest} failed: {run.error}")
        results = run.results
        self.stdout.write(
            f"benchmarked {manifest}: {results.get('avg_tokens_per_sec')} tokens/s, "
            f"{results.get('memory_usage_mb')} MB, quality {results.get('quality_score')}"
        )
        return True

    @staticmethod
    def _refreshed(manifests):
        for manifest in manifests:
            manifest.refresh_from_db()
        return manifests
