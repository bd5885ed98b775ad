"""Benchmarks in the browser: the HTMX partials a proposal page loads."""

from django.shortcuts import get_object_or_404, render

from inference.selectors import benchmark_comparison, benchmark_runs
from registry.models import Manifest

# --- Benchmarks in the browser (HTMX partials the proposal page can load) ----------------------------


def benchmark_compare(request, manifest_id: int):
    """A candidate's latest benchmark beside the approved model's (hx-get from a proposal page)."""
    manifest = get_object_or_404(Manifest, pk=manifest_id)
    return render(request, "inference/_benchmark_comparison.html", {"comparison": benchmark_comparison(manifest)})


def benchmark_progress(request, run_id: int):
    """A benchmark run's progress bar; polls itself while the run is queued or running."""
    run = get_object_or_404(benchmark_runs(), pk=run_id)
    return render(request, "inference/_benchmark_progress.html", {"run": run})
