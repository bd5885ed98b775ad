"""Content checks run on a proposal's subject before it may open for voting.

A blocking check that fails refuses the proposal; an informational one is
shown on the proposal but never blocks it (the benchmark: creating an
adoption proposal queues one, and its results arrive while voting runs).
"""

from dataclasses import dataclass

from django.conf import settings

from registry.models import Manifest, ManifestStatus, ModelKind, PinStatus


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str
    blocking: bool = True

    def as_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "blocking": self.blocking, "detail": self.detail}


def failed_checks(results: list[CheckResult]) -> list[CheckResult]:
    return [result for result in results if result.blocking and not result.passed]


def size_limit_bytes(kind: str) -> int:
    if kind == ModelKind.GENERATIVE:
        return settings.GOVERNANCE_MAX_GENERATIVE_BYTES
    return settings.GOVERNANCE_MAX_EMBEDDING_BYTES


def manifest_total_bytes(manifest: Manifest) -> int:
    sizes = [record.size_bytes for record in manifest.files.all()]
    return sum(sizes) if sizes else manifest.size_bytes


def _megabytes(size: int) -> str:
    return f"{size / 1000**2:,.1f} MB"


def check_candidate_status(manifest: Manifest) -> CheckResult:
    return CheckResult(
        "candidate",
        manifest.status == ManifestStatus.CANDIDATE,
        f"{manifest} is {manifest.status}"
        + ("" if manifest.status == ManifestStatus.CANDIDATE else "; only a candidate can be adopted"),
    )


def check_files_verified(manifest: Manifest) -> CheckResult:
    """Re-read the pinned bytes and compare them with the manifest's sha256 and CIDs."""
    from registry.services import manifest_verify_files

    if manifest.pin_status != PinStatus.PINNED:
        return CheckResult("files", False, f"pin status is {manifest.pin_status}; the files must be pinned first")
    problems = manifest_verify_files(manifest=manifest)
    if problems:
        return CheckResult("files", False, "; ".join(problems))
    count = manifest.files.count()
    return CheckResult("files", True, f"{count} file(s) pinned; sha256 and CID re-verified from the pinned bytes")


def check_license(manifest: Manifest) -> CheckResult:
    allowed = settings.GOVERNANCE_ALLOWED_LICENSES
    if manifest.license in allowed:
        return CheckResult("license", True, f"{manifest.license} is an allowed license")
    return CheckResult("license", False, f"{manifest.license!r} is not in the allowed licenses ({', '.join(allowed)})")


def check_size(manifest: Manifest) -> CheckResult:
    size = manifest_total_bytes(manifest)
    limit = size_limit_bytes(manifest.kind)
    verdict = "within" if size < limit else "over"
    return CheckResult(
        "size", size < limit, f"{_megabytes(size)} is {verdict} the {manifest.kind} limit of {_megabytes(limit)}"
    )


def check_benchmark(manifest: Manifest) -> CheckResult:
    """Informational: what the candidate's metrics say when the proposal is created.

    Never blocking: creating the proposal is what queues the candidate's
    benchmark (GOVERNANCE_BENCHMARK_CANDIDATES), and the proposal page shows
    the live comparison with the approved model as soon as it finishes.
    """
    metrics = manifest.metrics or {}
    latency = (metrics.get("latency_ms") or {}).get("p50")
    measured = {key: value for key, value in metrics.items() if value not in (None, {}) and key != "latency_ms"}
    if latency is None and not measured:
        return CheckResult("benchmark", False, "not yet benchmarked", blocking=False)
    parts = [f"{key}={value}" for key, value in sorted(measured.items())]
    if latency is not None:
        parts.append(f"latency p50={latency} ms")
    return CheckResult("benchmark", True, "benchmarked: " + ", ".join(parts), blocking=False)


# Checks whose answer can change after the proposal was created, by name: the
# proposal page shows them as they are now (see governance.selectors.proposal_checks).
CHANGING_CHECKS = {"benchmark": check_benchmark}


def check_replaces(manifest: Manifest, replaces: Manifest) -> CheckResult:
    ok = replaces.status == ManifestStatus.APPROVED and replaces.kind == manifest.kind and replaces.pk != manifest.pk
    return CheckResult(
        "replaces",
        ok,
        f"{replaces} is {replaces.status} ({replaces.kind})"
        + ("" if ok else f"; the manifest replaced must be another approved {manifest.kind} manifest"),
    )


def adoption_checks(manifest: Manifest, replaces: Manifest | None = None) -> list[CheckResult]:
    results = [check_candidate_status(manifest)]
    if replaces is not None:
        results.append(check_replaces(manifest, replaces))
    results += [check_license(manifest), check_size(manifest)]
    # Re-reading the bytes is the slow check: skip it when another one already failed.
    if failed_checks(results):
        results.append(CheckResult("files", False, "skipped until the checks above pass", blocking=False))
    else:
        results.append(check_files_verified(manifest))
    results.append(check_benchmark(manifest))
    return results


def retirement_checks(manifest: Manifest, replacement: Manifest | None) -> list[CheckResult]:
    results = [
        CheckResult(
            "approved",
            manifest.status == ManifestStatus.APPROVED,
            f"{manifest} is {manifest.status}"
            + ("" if manifest.status == ManifestStatus.APPROVED else "; only an approved manifest can be retired"),
        )
    ]
    if replacement is not None:
        ok = replacement.status == ManifestStatus.APPROVED and replacement.kind == manifest.kind
        results.append(
            CheckResult(
                "replacement",
                ok,
                f"{replacement} is {replacement.status} ({replacement.kind})"
                + ("" if ok else f"; a replacement must be an approved {manifest.kind} manifest"),
            )
        )
    remaining = (
        Manifest.objects.filter(status=ManifestStatus.APPROVED, kind=manifest.kind).exclude(pk=manifest.pk).count()
    )
    results.append(
        CheckResult(
            "coverage",
            remaining > 0,
            f"{remaining} other approved {manifest.kind} manifest(s) would remain"
            + ("" if remaining else "; nodes would have no approved model of this kind"),
            blocking=False,
        )
    )
    return results
