"""Measurements of one model: speed, latency, memory and quality on the evaluation sets.

Pure measurement: no database writes here (inference.services.benchmark_execute
records the run and copies the results into the manifest). The measuring
itself is `conclave_node.benchmarks`, which `conclave-verify
--rerun-benchmarks` runs too; this module adds the platform's evaluation
sets (inference/evalsets/, see its README for how they were made) and
memory sampling.
"""

from pathlib import Path

from conclave_node import benchmarks as measure
from conclave_node.benchmarks import (  # noqa: F401 - the platform's names for them
    answer_matches,
    evalset_parse,
    hardware_info,
    library_versions,
    percentiles_ms,
    spearman,
)
from conclave_node.runtimes.embedding import EmbeddingRuntime
from conclave_node.runtimes.generation import GenerationRuntime
from conclave_node.runtimes.memory import process_peak_rss_mb, process_rss_mb

EVALSETS = Path(__file__).resolve().parent / "evalsets"
EMBEDDING_EVALSET = EVALSETS / "sentence_similarity.jsonl"
GENERATION_EVALSET = EVALSETS / "short_answers.jsonl"

Progress = measure.Progress


def evalset_load(path: Path) -> list[dict]:
    return evalset_parse(path.read_bytes())


def evalset_for(runtime) -> Path:
    """The evaluation set a runtime's quality is measured on."""
    return EMBEDDING_EVALSET if isinstance(runtime, EmbeddingRuntime) else GENERATION_EVALSET


def embedding_benchmark(
    runtime: EmbeddingRuntime, *, repeats: int, max_items: int = 0, progress: Progress = measure._noop
) -> dict:
    return measure.embedding_benchmark(
        runtime,
        pairs=evalset_load(EMBEDDING_EVALSET),
        set_name=EMBEDDING_EVALSET.name,
        repeats=repeats,
        max_items=max_items,
        progress=progress,
    )


def generation_benchmark(
    runtime: GenerationRuntime, *, max_tokens: int, max_items: int = 0, progress: Progress = measure._noop
) -> dict:
    return measure.generation_benchmark(
        runtime,
        questions=evalset_load(GENERATION_EVALSET),
        set_name=GENERATION_EVALSET.name,
        max_tokens=max_tokens,
        max_items=max_items,
        progress=progress,
    )


class RssSampler:
    """Samples this process's resident memory every `interval` seconds; keeps the peak."""

    def __init__(self, interval: float = 0.02):
        import threading

        self.interval = interval
        self.baseline = process_rss_mb()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, process_rss_mb())

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, process_rss_mb())

    @property
    def peak_delta_mb(self) -> float:
        return round(self.peak - self.baseline, 1)


def process_memory() -> dict:
    return {"rss_mb": round(process_rss_mb(), 1), "peak_rss_mb": round(process_peak_rss_mb(), 1)}
