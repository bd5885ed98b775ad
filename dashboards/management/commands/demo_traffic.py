"""Send real requests through the running server's API, so the dashboards have real numbers.

Nothing is written to the database by this command: every sample the
dashboards show afterwards was recorded by the server while answering.
"""

import itertools
import logging
import os
import random
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
from django.core.management.base import BaseCommand, CommandError

SENTENCES = [
    "A community decides which models its nodes run.",
    "Votes are counted in the database, never in a loop over rows.",
    "The approved set is pinned on IPFS and signed by the platform.",
    "Small embedding models answer in a few milliseconds on a CPU.",
    "A node verifies every file's sha256 before it installs a model.",
    "Quorum counts the votes for and the abstentions.",
    "Latency percentiles come from mergeable per-minute summaries.",
    "The queue refuses requests with a 503 when it is full.",
]
QUESTIONS = [
    "What is the capital of France?",
    "What is 7 times 8?",
    "Name a primary colour.",
    "How many days are in a week?",
    "Write one sentence about the sea.",
]


def _requests(rng: random.Random, *, rejections: bool):
    """An endless mix of the serving API's requests: (label, method path, JSON body)."""
    for n in itertools.count():
        if rejections and n % 20 == 19:
            # Over the governed token limit on purpose: shows a real rejection (400) on the panels.
            yield "generate (over limit)", "/generate", {"prompt": "Hello", "max_tokens": 1_000_000}
            continue
        choice = rng.random()
        if choice < 0.35:
            yield "embed", "/embed", {"text": rng.choice(SENTENCES)}
        elif choice < 0.5:
            yield "embed (batch)", "/embed", {"texts": rng.sample(SENTENCES, k=4)}
        elif choice < 0.6:
            yield "v1/embeddings", "/v1/embeddings", {"input": rng.choice(SENTENCES)}
        elif choice < 0.8:
            yield "generate", "/generate", {"prompt": rng.choice(QUESTIONS), "max_tokens": 24, "temperature": 0.7}
        else:
            yield (
                "v1/chat/completions",
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": rng.choice(QUESTIONS)}], "max_tokens": 24},
            )


class Command(BaseCommand):
    help = (
        "Send real /embed, /generate and OpenAI-compatible requests to a running Conclave server "
        "(bin/run), so the dashboards show real latency, rates and tokens. Writes nothing itself."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default http://127.0.0.1:8000)")
        parser.add_argument("--requests", type=int, default=60, help="how many requests to send (default 60)")
        parser.add_argument("--concurrency", type=int, default=2, help="requests in flight at once (default 2)")
        parser.add_argument(
            "--token",
            default=os.environ.get("CONCLAVE_TOKEN", ""),
            help="API token, when the server requires one (default $CONCLAVE_TOKEN)",
        )
        parser.add_argument("--no-rejections", action="store_true", help="send no over-limit requests")
        parser.add_argument("--seed", type=int, default=None, help="random seed for the request mix")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer")

    def handle(
        self,
        *args,
        url: str,
        requests: int,
        concurrency: int,
        token: str,
        no_rejections: bool,
        seed: int | None,
        timeout: float,
        **options,
    ):
        if requests < 1 or concurrency < 1:
            raise CommandError("--requests and --concurrency must be at least 1")
        # One log line per request would bury the summary.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        base = url.rstrip("/")
        try:
            with httpx.Client(timeout=5.0) as probe:
                health = probe.get(f"{base}/health/live")
        except httpx.HTTPError as exc:
            raise CommandError(f"Cannot reach {base}: {exc}. Start the server first (bin/run).") from exc
        if health.status_code >= 400:
            raise CommandError(f"{base}/health/live answered {health.status_code}; is this a Conclave server?")

        rng = random.Random(seed)
        mix = _requests(rng, rejections=not no_rejections)
        plan = [next(mix) for _ in range(requests)]
        statuses: Counter = Counter()
        latencies: dict[str, list[float]] = {}
        lock = threading.Lock()
        done = itertools.count(1)

        with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:

            def send(item):
                label, path, body = item
                started = time.perf_counter()
                try:
                    status = client.post(path, json=body).status_code
                except httpx.HTTPError as exc:
                    status = f"error: {type(exc).__name__}"
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    statuses[(label, status)] += 1
                    latencies.setdefault(label, []).append(elapsed)
                    count = next(done)
                if options["verbosity"] >= 1 and (count % 10 == 0 or count == requests):
                    self.stdout.write(f"  {count}/{requests} sent")

            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                list(pool.map(send, plan))

        self.stdout.write(self.style.SUCCESS(f"Sent {requests} requests to {base}:"))
        for label in sorted(latencies):
            values = latencies[label]
            answers = ", ".join(
                f"{status}×{n}" for (name, status), n in sorted(statuses.items(), key=str) if name == label
            )
            self.stdout.write(
                f"  {label:22} {len(values):4d}  median {statistics.median(values):8.1f} ms  answers: {answers}"
            )
        self.stdout.write(
            f"Open {base}/dashboards/ — samples reach the database every few seconds "
            "(INFERENCE_SAMPLES_FLUSH_SECONDS) and the panels refresh themselves."
        )
