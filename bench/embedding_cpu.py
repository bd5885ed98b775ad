"""CPU time onnxruntime spends per sentence, by batch size and threads.

    .venv/bin/python bench/embedding_cpu.py [--batches 1,4,8,11,16,32] [--threads 1,2] [--sentences 400]

The floor under the server's embedding throughput: whatever else a request
costs (HTTP, Django, the Celery hand-off, the reply) comes on top of this,
on the same CPUs. MiniLM-L6 from the installed pack, tokenizers + the
onnxruntime session exactly as the bench's raw baseline builds them
(spinning off), the same 8 sentences. CPU is this process's CPU time
(`time.process_time`, all threads) over about `--sentences` sentences per
cell, after 5 warm-up calls; wall-clock throughput beside it. Prints a
markdown table.
"""

import argparse
import time

from inference_overhead import SENTENCES, raw_embedding_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,4,8,11,16,32")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--sentences", type=int, default=400, help="sentences per cell (about)")
    options = parser.parse_args()

    print("| threads | batch | CPU ms per sentence | sentences/s (wall) |")
    print("|---:|---:|---:|---:|")
    for threads in (int(t) for t in options.threads.split(",")):
        embed = raw_embedding_session(threads)
        for size in (int(b) for b in options.batches.split(",")):
            batch = [SENTENCES[i % len(SENTENCES)] for i in range(size)]
            for _ in range(5):
                embed(batch)
            calls = max(3, options.sentences // size)
            cpu_started, started = time.process_time(), time.perf_counter()
            for _ in range(calls):
                embed(batch)
            cpu, wall = time.process_time() - cpu_started, time.perf_counter() - started
            print(f"| {threads} | {size} | {cpu * 1000 / (calls * size):.2f} | {calls * size / wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
