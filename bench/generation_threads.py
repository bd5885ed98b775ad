"""Tokens/s of llama.cpp when generations come from long-lived threads, as a Celery pool sends them.

    .venv/bin/python bench/generation_threads.py [--runs 4] [--threads 2]

llama.cpp's CPU backend is built with OpenMP here; libgomp keeps a team of
worker threads for every thread that ever computed, while that thread lives.
Each case runs in a fresh interpreter (OpenMP state is per process), on
SmolLM2-135M, 128 greedy tokens with end-of-text banned:

* `main thread only`: `create_completion` on the main thread, the way a
  plain script (and bench/inference_overhead.py's raw baseline) calls it;
* `two pool threads, raw`: two persistent threads take turns calling
  `create_completion`, as Celery's threads pool would without the fix;
* `two pool threads, GenerationRuntime`: the same two threads take turns
  calling `GenerationRuntime.generate`, which runs each computation on a
  thread of its own (node/conclave_node/runtimes/generation.py).

Prints the median tokens/s of each case and its ratio to the first.
"""

import argparse
import json
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import SMOLLM

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Once upon a time, in a small village by the sea,"
TOKENS = 128
BAN_END = {0: -100.0, 2: -100.0}
CASES = ["main thread only", "two pool threads, raw", "two pool threads, GenerationRuntime"]


class PoolThread:
    """A persistent thread that runs what it is given, like a Celery pool thread."""

    def __init__(self):
        self.jobs: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            self.results.put(self.jobs.get()())

    def run(self, job):
        self.jobs.put(job)
        return self.results.get()


def measure(case: str, runs: int, threads: int) -> list[float]:
    sys.path.insert(0, str(REPO))
    import llama_cpp

    from conclave_node.runtimes.generation import GenerationRuntime

    if case == "two pool threads, GenerationRuntime":
        runtime = GenerationRuntime(model_path=Path(SMOLLM), n_ctx=2048, threads=threads)

        def generate() -> float:
            with runtime.context() as llm:
                tokens, _ = runtime.completion_prompt(llm, PROMPT)
                started = time.perf_counter()
                outcome = runtime.generate(
                    llm, prompt_tokens=tokens, max_tokens=TOKENS, temperature=0.0, logit_bias=BAN_END
                )
                return outcome.completion_tokens / (time.perf_counter() - started)
    else:
        llm = llama_cpp.Llama(model_path=SMOLLM, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)

        def generate() -> float:
            started = time.perf_counter()
            out = llm.create_completion(PROMPT, max_tokens=TOKENS, temperature=0.0, logit_bias=BAN_END)
            return out["usage"]["completion_tokens"] / (time.perf_counter() - started)

    if case == "main thread only":
        generate()
        return [generate() for _ in range(runs)]
    pool = [PoolThread(), PoolThread()]
    for thread in pool:
        thread.run(generate)  # each pool thread has generated once, as in a worker that has served a while
    return [pool[i % 2].run(generate) for i in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp n_threads")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.case:
        print(json.dumps(measure(options.case, options.runs, options.threads)))
        return
    results = {}
    for case in CASES:
        command = [
            sys.executable,
            __file__,
            "--case",
            case,
            "--runs",
            str(options.runs),
            "--threads",
            str(options.threads),
        ]
        completed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
        results[case] = json.loads(completed.stdout.strip().splitlines()[-1])
    first = statistics.median(results[CASES[0]])
    print(f"SmolLM2-135M Q4_1, {TOKENS} tokens, n_threads={options.threads}, {options.runs} runs per case\n")
    print("| case | tokens/s (median) | runs | vs main thread only |")
    print("|---|---:|---|---:|")
    for case, runs in results.items():
        median = statistics.median(runs)
        print(f"| {case} | {median:.1f} | {', '.join(f'{r:.0f}' for r in runs)} | {median / first:.2f}x |")


if __name__ == "__main__":
    main()
