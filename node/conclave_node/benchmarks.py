"""Measurements of one model on an evaluation set: speed, latency and quality, with no Django.

The platform's benchmark runs (`inference.benchmarks`) and `conclave-verify
--rerun-benchmarks` both measure with these functions, so a re-run on a
pinned evaluation set computes its quality figure the same way as the
recorded run did. Quality is deterministic for a given model, set and
runtime settings; speed is not, and is only ever compared as a ratio.
"""

import json
import os
import platform
import re
import time
from collections.abc import Callable
from importlib import metadata

import numpy as np

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
# The figures a re-run must reproduce exactly, and those it compares as a ratio (higher is faster).
QUALITY_FIGURES = ("quality_score",)
SPEED_FIGURES = ("sentences_per_sec_batch_32", "avg_tokens_per_sec")

Progress = Callable[[float, str], None]


def _noop(fraction: float, stage: str) -> None:
    pass


def evalset_parse(data: bytes) -> list[dict]:
    """The items of an evaluation set: one JSON object a line; blank lines and `#` comments skipped."""
    lines = data.decode("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip() and not line.startswith("#")]


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
    line = answer.strip().split("\n", 1)[0].lower()
    return any(re.search(rf"(?<![\w.]){re.escape(a.lower())}(?![\w]|\.\d)", line) for a in accepted)


def hardware_info() -> dict:
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


def embedding_quality(runtime, pairs: list[dict]) -> float:
    """Spearman correlation of the pairs' cosine similarities with their graded scores, rounded as recorded."""
    vectors1 = runtime.embed([p["sentence1"] for p in pairs]).vectors
    vectors2 = runtime.embed([p["sentence2"] for p in pairs]).vectors
    cosines = (vectors1 * vectors2).sum(axis=1)
    return round(spearman(cosines.tolist(), [p["score"] for p in pairs]), 4)


def embedding_benchmark(
    runtime, *, pairs: list[dict], set_name: str, repeats: int, max_items: int = 0, progress: Progress = _noop
) -> dict:
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
    quality = embedding_quality(runtime, pairs)
    progress(0.95, "done")
    return {
        "latency_ms": percentiles_ms(singles),
        "sentences_per_sec_batch_1": round(len(singles) / sum(singles), 2),
        "sentences_per_sec_batch_32": round(32 * len(batches) / sum(batches), 2),
        "tokens_per_sec_batch_32": round(tokens / sum(batches), 1),
        "quality_score": quality,
        "quality_metric": f"spearman on {len(pairs)} graded sentence pairs ({set_name})",
    }


def generation_benchmark(
    runtime,
    *,
    questions: list[dict],
    set_name: str,
    max_tokens: int,
    max_items: int = 0,
    progress: Progress = _noop,
) -> dict:
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
        "quality_metric": f"accuracy on {len(questions)} short factual and arithmetic questions ({set_name})",
    }


# --- Evidence: a finished run as a pinned document ---------------------------------------------------

EVIDENCE_TYPE = "conclave.benchmark-evidence"
EVIDENCE_VERSION = 1


def evidence_document(
    *,
    run_id: int,
    manifest: dict,
    worker: str,
    hardware: dict,
    library_versions: dict,
    parameters: dict,
    evaluation_set: dict,
    results: dict,
    started_at: str,
    finished_at: str,
) -> bytes:
    """The canonical JSON (RFC 8785) of one finished benchmark run: what was measured, where, how, on what.

    `manifest` names the model measured (`name`, `model_name`, `version`,
    `kind`, `format`, `sha256`, `ipfs_cid`, `manifest_cid`);
    `evaluation_set` is `{name, cid, items}`, the set's bytes pinned under
    that CID. A verifier fetches this by its CID and re-runs it.
    """
    import rfc8785

    return rfc8785.dumps(
        {
            "type": EVIDENCE_TYPE,
            "version": EVIDENCE_VERSION,
            "benchmark_run": run_id,
            "manifest": manifest,
            "worker": worker,
            "hardware": hardware,
            "library_versions": library_versions,
            "parameters": parameters,
            "evaluation_set": evaluation_set,
            "results": results,
            "started_at": started_at,
            "finished_at": finished_at,
        }
    )


class EvidenceFormatError(ValueError):
    pass


def evidence_parse(data: bytes) -> dict:
    """A benchmark evidence document, its shape checked; raises EvidenceFormatError."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise EvidenceFormatError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("type") != EVIDENCE_TYPE:
        raise EvidenceFormatError("not a benchmark evidence document")
    for name, kind in (("manifest", dict), ("evaluation_set", dict), ("results", dict), ("parameters", dict)):
        if not isinstance(document.get(name), kind):
            raise EvidenceFormatError(f"its {name} is missing")
    if not isinstance(document["evaluation_set"].get("cid"), str):
        raise EvidenceFormatError("it names no evaluation set CID")
    return document


def rerun(evidence: dict, *, evalset: bytes, files: dict, kind: str | None = None) -> dict:
    """Measure the model again as the evidence says it was measured: same evaluation set, same settings.

    `files` maps a file's role ("weights", "tokenizer") to its local path,
    every byte already checked against the manifest. Returns the new results.
    """
    parameters = evidence["parameters"]
    kind = kind or evidence["manifest"].get("kind")
    threads = int(parameters.get("threads") or 1)
    max_items = int(parameters.get("evalset_max_items") or 0)
    set_name = evidence["evaluation_set"].get("name", "")
    if kind == "embedding":
        from conclave_node.runtimes.embedding import EmbeddingRuntime

        runtime = EmbeddingRuntime(
            model_path=files["weights"],
            tokenizer_path=files["tokenizer"],
            threads=threads,
            providers=list(parameters.get("onnx_providers") or []) or None,
            max_tokens=int(parameters.get("embed_max_tokens") or 256),
        )
        return embedding_benchmark(
            runtime,
            pairs=evalset_parse(evalset),
            set_name=set_name,
            repeats=int(parameters.get("repeats") or 8),
            max_items=max_items,
        )
    from conclave_node.runtimes.generation import GenerationRuntime

    runtime = GenerationRuntime(
        model_path=files["weights"],
        n_ctx=int(parameters.get("n_ctx") or 2048),
        threads=threads,
        n_gpu_layers=int(parameters.get("n_gpu_layers") or 0),
    )
    try:
        return generation_benchmark(
            runtime,
            questions=evalset_parse(evalset),
            set_name=set_name,
            max_tokens=int(parameters.get("generation_tokens") or 32),
            max_items=max_items,
        )
    finally:
        runtime.close()
