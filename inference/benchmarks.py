"""Measurements of one model: speed, latency, memory and quality on the evaluation sets.

Pure measurement: no database writes here (inference.services.benchmark_execute
records the run and copies the results into the manifest). The evaluation
sets live in inference/evalsets/ (see its README for how they were made).
"""

import json
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from conclave_node.runtimes.embedding import EmbeddingRuntime
from conclave_node.runtimes.generation import GenerationRuntime
from conclave_node.runtimes.memory import process_peak_rss_mb, process_rss_mb

EVALSETS = Path(__file__).resolve().parent / "evalsets"
EMBEDDING_EVALSET = EVALSETS / "sentence_similarity.jsonl"
GENERATION_EVALSET = EVALSETS / "short_answers.jsonl"

# One prompt for every generative model, instruct or base: a few-shot
# completion with a line break as the end of the answer.
FEW_SHOT_PROMPT = (
    "Answer each question with a single word or number.\n\n"
    "Q: What is the capital of Italy?\nA: Rome\n\n"
    "Q: What is 7 + 5?\nA: 12\n\n"
    "Q: How many legs does a spider have?\nA: 8\n\n"
    "Q: {question}\nA:"
)
THROUGHPUT_PROMPTS = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a bicycle works to a ten year old.",
    "Describe a busy market in the morning.",
)

Progress = Callable[[float, str], None]


def _noop(fraction: float, stage: str) -> None:
    pass


def evalset_load(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip() and not line.startswith("#")]


def percentiles_ms(seconds: list[float]) -> dict:
    if not seconds:
        return {"p50": None, "p95": None, "p99": None}
    values = np.asarray(seconds) * 1000
    return {name: round(float(np.percentile(values, q)), 3) for name, q in (("p50", 50), ("p95", 95), ("p99", 99))}


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    a, b = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    a -= a.mean()
    b -= b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator else 0.0


def answer_matches(answer: str, accepted: list[str]) -> bool:
    """The first line of the answer contains an accepted answer as a whole word (case-insensitive)."""
    import re

    line = answer.strip().split("\n", 1)[0].lower()
    return any(re.search(rf"(?<![\w.]){re.escape(a.lower())}(?![\w]|\.\d)", line) for a in accepted)


def hardware_info() -> dict:
    import os

    info = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }
    try:
        with open("/proc/meminfo") as handle:
            info["memory_mb"] = int(handle.readline().split()[1]) // 1024
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["processor"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def library_versions() -> dict:
    versions = {}
    for name in ("onnxruntime", "tokenizers", "llama_cpp_python", "numpy", "Django", "celery"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def embedding_benchmark(
    runtime: EmbeddingRuntime, *, repeats: int, max_items: int = 0, progress: Progress = _noop
) -> dict:
    pairs = evalset_load(EMBEDDING_EVALSET)
    pairs = pairs[:max_items] if max_items else pairs
    sentences = [p["sentence1"] for p in pairs] + [p["sentence2"] for p in pairs]
    runtime.embed(sentences[:4])  # warm-up
    progress(0.1, "latency at batch 1")
    singles = []
    for i in range(repeats):
        started = time.perf_counter()
        runtime.embed([sentences[i % len(sentences)]])
        singles.append(time.perf_counter() - started)
        if i % max(1, repeats // 5) == 0:
            progress(0.1 + 0.3 * i / repeats, "latency at batch 1")
    progress(0.4, "throughput at batch 32")
    batches = []
    tokens = 0
    for i in range(max(2, repeats // 8)):
        chunk = [sentences[(i * 32 + j) % len(sentences)] for j in range(32)]
        started = time.perf_counter()
        result = runtime.embed(chunk)
        batches.append(time.perf_counter() - started)
        tokens += sum(result.token_counts)
    progress(0.7, "quality: sentence similarity")
    vectors1 = runtime.embed([p["sentence1"] for p in pairs]).vectors
    vectors2 = runtime.embed([p["sentence2"] for p in pairs]).vectors
    cosines = (vectors1 * vectors2).sum(axis=1)
    quality = spearman(cosines.tolist(), [p["score"] for p in pairs])
    progress(0.95, "done")
    return {
        "latency_ms": percentiles_ms(singles),
        "sentences_per_sec_batch_1": round(len(singles) / sum(singles), 2),
        "sentences_per_sec_batch_32": round(32 * len(batches) / sum(batches), 2),
        "tokens_per_sec_batch_32": round(tokens / sum(batches), 1),
        "quality_score": round(quality, 4),
        "quality_metric": f"spearman on {len(pairs)} graded sentence pairs ({EMBEDDING_EVALSET.name})",
    }


def generation_benchmark(
    runtime: GenerationRuntime, *, max_tokens: int, max_items: int = 0, progress: Progress = _noop
) -> dict:
    questions = evalset_load(GENERATION_EVALSET)
    questions = questions[:max_items] if max_items else questions
    with runtime.context() as llm:
        warm, _ = runtime.completion_prompt(llm, "Hello")
        runtime.generate(llm, prompt_tokens=warm, max_tokens=4, temperature=0.0)
        progress(0.1, "tokens/s and time to first token")
        speeds, first_tokens = [], []
        ban_end = dict.fromkeys(runtime.end_of_generation_token_ids, -100.0)
        for i, prompt in enumerate(THROUGHPUT_PROMPTS):
            tokens, _ = runtime.completion_prompt(llm, prompt)
            outcome = runtime.generate(
                llm, prompt_tokens=tokens, max_tokens=max_tokens, temperature=0.0, logit_bias=ban_end
            )
            if outcome.tokens_per_second:
                speeds.append(outcome.tokens_per_second)
            first_tokens.append(outcome.time_to_first_token)
            progress(0.1 + 0.3 * (i + 1) / len(THROUGHPUT_PROMPTS), "tokens/s and time to first token")
        latencies, correct = [], 0
        for i, item in enumerate(questions):
            tokens, _ = runtime.completion_prompt(llm, FEW_SHOT_PROMPT.format(question=item["question"]))
            started = time.perf_counter()
            outcome = runtime.generate(llm, prompt_tokens=tokens, max_tokens=12, temperature=0.0, stop=["\n"])
            latencies.append(time.perf_counter() - started)
            correct += answer_matches(outcome.text, item["answers"])
            if i % 5 == 0:
                progress(0.4 + 0.55 * (i + 1) / len(questions), "quality: short answers")
    progress(0.95, "done")
    return {
        "latency_ms": percentiles_ms(latencies),
        "avg_tokens_per_sec": round(float(np.mean(speeds)), 2) if speeds else None,
        "time_to_first_token_ms": percentiles_ms(first_tokens),
        "quality_score": round(correct / len(questions), 4),
        "quality_metric": f"accuracy on {len(questions)} short factual and arithmetic questions "
        "({GENERATION_EVALSET.name})",
    }


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
