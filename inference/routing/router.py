"""Sending a serving request to nodes: choose, race, retry, hedge, vote, spot-check, learn.

`inference.serving.web` calls `embed` and `generation_open` once it has
checked the request (model, governed limits, deadline) and
INFERENCE_ROUTING is not `local`. They return None when the request should
run on the local workers (hybrid, no node with room) and raise
`NoNodeAvailable` (federated, none) or the usual 503/504 when the nodes
failed.

* Choice: `policy.rank` over the nodes in the rotation (fresh heartbeat)
  that serve the model's manifest CID, have room in their queue, a breaker
  that lets a request through and a fitness over the minimum.
* Retry: a node that fails (connection refused or reset, 5xx, timeout,
  busy) costs the request nothing: it goes once to the next node, within
  its deadline (counted from arrival).
* Hedging (k = 1): when the chosen node has not answered by its p95 (known
  after INFERENCE_ROUTING_HEDGE_MIN_SAMPLES answers; for a generation, its
  first token or end), the next node is asked too; the first good answer
  wins and the other call is cancelled (its socket shut down). A hedge uses
  the request's one spare, as a retry does.
* Redundancy k: embeddings ask k nodes and return the answer of the
  fitness-weighted majority (cosine, INFERENCE_SPOT_CHECK_MIN_COSINE);
  dissenters lose fitness. Generations ask k nodes and keep the first to
  answer; the others are cancelled.
* Spot checks: INFERENCE_SPOT_CHECK_SHARE of embedding requests are
  computed again after the client has its answer, on a small bounded pool,
  by a local worker or the fittest other nodes; the node's fitness follows
  the verdict.
"""

import collections
import logging
import random
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings

from core.errors import DomainError
from inference.errors import InferenceTimeout, NodeFailed, NoNodeAvailable
from inference.metrics import routing_observe
from inference.routing import records
from inference.routing.node_client import NodeCall, NodeCallFailed, NodeRefused
from inference.routing.policy import CLOSED, Breaker, Candidate, cosine_min, rank, weighted_majority
from inference.serving.shared_state import coordination
from nodes.selectors import RoutableNode, serving_nodes_routable
from registry.models import Manifest
from registry.selectors import manifest_document_cids

logger = logging.getLogger(__name__)

LOCAL, FEDERATED, HYBRID = "local", "federated", "hybrid"
MODES = (LOCAL, FEDERATED, HYBRID)
# Spot checks by nodes ask this many other nodes (a majority of three can tell who is wrong).
SPOT_CHECK_REFERENCES = 2
SPOT_CHECK_TIMEOUT_SECONDS = 30.0


def mode() -> str:
    value = settings.INFERENCE_ROUTING
    return value if value in MODES else LOCAL


# --- what this process knows -------------------------------------------------------------------

_in_flight: collections.Counter = collections.Counter()
_in_flight_lock = threading.Lock()


def _in_flight_add(node_id: int, delta: int) -> None:
    with _in_flight_lock:
        _in_flight[node_id] = max(0, _in_flight[node_id] + delta)


_routable_cache: dict[str, tuple[float, list[RoutableNode]]] = {}
_routable_lock = threading.Lock()


def _routable(manifest_cid: str) -> list[RoutableNode]:
    """The rotation for a model, read from the database at most once per INFERENCE_SERVING_READS_CACHE_SECONDS.

    Nodes announcing an earlier CID of the same manifest count: they serve the same files.
    """
    now = time.monotonic()
    with _routable_lock:
        cached = _routable_cache.get(manifest_cid)
    if cached is not None and cached[0] > now:
        return cached[1]
    manifest = Manifest.objects.filter(manifest_cid=manifest_cid).first()
    earlier = manifest_document_cids(manifest) if manifest is not None else set()
    nodes = serving_nodes_routable(manifest_cid=manifest_cid, also_as=earlier)
    with _routable_lock:
        _routable_cache[manifest_cid] = (now + settings.INFERENCE_SERVING_READS_CACHE_SECONDS, nodes)
    return nodes


def routable_clear() -> None:
    with _routable_lock:
        _routable_cache.clear()


_executor_lock = threading.Lock()
_executors: dict[str, futures.ThreadPoolExecutor] = {}


def _executor(name: str, workers: int) -> futures.ThreadPoolExecutor:
    with _executor_lock:
        pool = _executors.get(name)
        if pool is None:
            pool = _executors[name] = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        return pool


# --- choice ------------------------------------------------------------------------------------


@dataclass
class Choice:
    node: RoutableNode
    fitness: float
    p50_ms: float | None
    p95_ms: float | None
    samples: int
    breaker: Breaker

    @property
    def name(self) -> str:
        return self.node.name


def ranked(manifest_cid: str, *, exclude: tuple[int, ...] = ()) -> list[Choice]:
    """The nodes that may take a request for the model now, best first (see `policy`)."""
    nodes = [n for n in _routable(manifest_cid) if n.has_room and n.node_id not in exclude]
    if not nodes:
        return []
    views, breakers = records.records_read([n.node_id for n in nodes], manifest_cid)
    now = time.time()
    cooldown = settings.INFERENCE_ROUTING_BREAKER_COOLDOWN_SECONDS
    choices = {}
    for node in nodes:
        view, breaker = views[node.node_id], breakers[node.node_id]
        if not breaker.admits(now=now, cooldown=cooldown, joined_at=node.joined_at.timestamp()):
            continue
        if view.fitness < settings.INFERENCE_ROUTING_MIN_FITNESS:
            continue
        # Too few recent samples say little (the first answers of a node include its warm-up): such a node
        # counts as new, and gets the candidates' median, until it has enough.
        enough = len(view.latencies) >= settings.INFERENCE_ROUTING_MIN_SAMPLES
        choices[str(node.node_id)] = Choice(
            node=node,
            fitness=view.fitness,
            p50_ms=view.p50_ms if enough else None,
            p95_ms=view.p95_ms,
            samples=len(view.latencies),
            breaker=breaker,
        )
    with _in_flight_lock:
        in_flight = dict(_in_flight)
    candidates = [
        Candidate(key=key, p50_ms=c.p50_ms, fitness=c.fitness, in_flight=in_flight.get(c.node.node_id, 0))
        for key, c in choices.items()
    ]
    best = [choices[c.key] for c in rank(candidates)]
    return _probe_first(best, {n.node_id: views[n.node_id].sampled_at for n in nodes}, now=now)


_probed: dict[int, float] = {}


def _probe_first(best: list[Choice], sampled_at: dict[int, float], *, now: float) -> list[Choice]:
    """Put first a node whose latency estimate is older than INFERENCE_ROUTING_RESAMPLE_SECONDS, if any.

    Lowest score wins, so a node that lost once (a slow first answer, a
    busy moment) would never be measured again and its estimate never
    corrected. Each web process sends such a node one request per
    RESAMPLE seconds (the oldest estimate first); its answer refreshes the
    estimate. Cost: at most one request per node per RESAMPLE seconds.
    """
    resample = settings.INFERENCE_ROUTING_RESAMPLE_SECONDS
    if resample <= 0 or len(best) < 2:
        return best
    stale = [c for c in best[1:] if now - sampled_at.get(c.node.node_id, 0.0) >= resample]
    with _in_flight_lock:
        stale = [c for c in stale if now - _probed.get(c.node.node_id, 0.0) >= resample]
        if not stale:
            return best
        probe = min(stale, key=lambda c: sampled_at.get(c.node.node_id, 0.0))
        _probed[probe.node.node_id] = now
    routing_observe(node=probe.name, outcome="probed")
    return [probe, *[c for c in best if c is not probe]]


def _take(choice: Choice) -> bool:
    if choice.breaker.state == CLOSED:
        return True
    return records.breaker_take(choice.node.node_id, joined_at=choice.node.joined_at.timestamp())


def _settle(choice: Choice, manifest_cid: str, *, outcome: str, latency_ms: float | None = None) -> None:
    """Learn from one call's outcome: latency and fitness per node and model, the node's breaker, the counter."""
    routing_observe(node=choice.name, outcome=outcome)
    node_id = choice.node.node_id
    try:
        if outcome == "ok":
            records.observe(node_id, manifest_cid, good=True, latency_ms=latency_ms, routed=True)
            if choice.breaker.state != CLOSED or choice.breaker.failures:
                records.breaker_report(node_id, success=True)
        elif outcome in ("failed", "timeout"):
            records.observe(node_id, manifest_cid, good=False, routed=True)
            records.breaker_report(node_id, success=False)
        elif outcome == "unreachable":
            # A node that is not there (killed, restarting) is absent, not unfit: its breaker and
            # heartbeat take it out, and its fitness (what its answers earned) is kept for its return.
            records.observe(node_id, manifest_cid, good=None, routed=True)
            records.breaker_report(node_id, success=False)
        else:  # busy, refused, cancelled: not the node's fault
            records.observe(node_id, manifest_cid, good=None, routed=True)
    except Exception:  # noqa: BLE001 - the shared state away must not fail the answered request
        logger.warning("could not record the routing outcome of %s", choice.name, exc_info=True)


# --- racing calls ------------------------------------------------------------------------------


_hedges_out = 0


def _hedge_take() -> bool:
    """A place among this process's hedged requests (INFERENCE_ROUTING_MAX_HEDGES_IN_FLIGHT)."""
    global _hedges_out
    with _in_flight_lock:
        if _hedges_out >= settings.INFERENCE_ROUTING_MAX_HEDGES_IN_FLIGHT:
            return False
        _hedges_out += 1
        return True


def _hedge_give_back() -> None:
    global _hedges_out
    with _in_flight_lock:
        _hedges_out = max(0, _hedges_out - 1)


class _NoneTaken(Exception):
    """Every candidate's breaker refused at the last moment (another process took the half-open trial)."""


@dataclass
class Answer:
    choice: Choice
    value: object
    latency_ms: float
    call: NodeCall


def _race(
    choices: list[Choice],
    manifest_cid: str,
    work,
    *,
    deadline: float,
    launch: int,
    want: int,
    hedge: bool,
    keep_in_flight: bool = False,
) -> list[Answer]:
    """Send `work(call)` to the first `launch` nodes; collect `want` good answers before the deadline.

    One spare call covers a failure (the retry) or a slow node (the hedge).
    Calls still out when enough answers are in (or at the deadline) are
    cancelled. With `keep_in_flight` the winners stay counted as in flight
    (a stream still running); the caller releases them.
    """
    queue = list(choices)
    pending: dict[futures.Future, tuple[Choice, NodeCall]] = {}
    answers: list[Answer] = []
    refused: NodeRefused | None = None
    failures: list[str] = []
    spare = 1
    hedged = False
    pool = _executor("route", 64)

    def start() -> bool:
        while queue:
            choice = queue.pop(0)
            if not _take(choice):
                continue
            call = NodeCall(choice.node.url, choice.node.secret, timeout=max(0.05, deadline - time.time()))
            _in_flight_add(choice.node.node_id, 1)
            pending[pool.submit(work, call)] = (choice, call)
            return True
        return False

    for _ in range(max(1, launch)):
        start()
    if not pending:
        raise _NoneTaken()
    while pending:
        now = time.time()
        if now >= deadline:
            break
        hedge_at = None
        if hedge and spare and queue and not answers and len(pending) == 1:
            ((choice, call),) = pending.values()
            if choice.p95_ms is not None and choice.samples >= settings.INFERENCE_ROUTING_HEDGE_MIN_SAMPLES:
                hedge_at = now + (choice.p95_ms / 1000 - (time.perf_counter() - call.started))
        wait = deadline - now if hedge_at is None else max(0.0, min(deadline, hedge_at) - now)
        done, _ = futures.wait(list(pending), timeout=wait, return_when=futures.FIRST_COMPLETED)
        if not done:
            if hedge_at is not None and time.time() >= hedge_at:
                if not _hedge_take():
                    hedge = False  # enough hedges out already: under load they would only add to it
                    continue
                spare -= 1
                hedged = True
                if start():
                    routing_observe(node=pending[list(pending)[-1]][0].name, outcome="hedged")
            continue
        for future in done:
            choice, call = pending.pop(future)
            latency_ms = (time.perf_counter() - call.started) * 1000
            try:
                value = future.result()
            except NodeRefused as exc:
                _in_flight_add(choice.node.node_id, -1)
                _settle(choice, manifest_cid, outcome="refused")
                refused = exc
                continue
            except Exception as exc:  # noqa: BLE001 - whatever went wrong with this node's answer, another may do
                _in_flight_add(choice.node.node_id, -1)
                kind = exc.kind if isinstance(exc, NodeCallFailed) else "error"
                if not isinstance(exc, NodeCallFailed):
                    logger.warning("routing to %s failed unexpectedly", choice.name, exc_info=exc)
                outcome = kind if kind in ("timeout", "busy", "cancelled", "unreachable") else "failed"
                _settle(choice, manifest_cid, outcome=outcome)
                failures.append(f"{choice.name}: {exc}")
                if spare and time.time() < deadline:
                    spare -= 1
                    if start():
                        routing_observe(node=pending[list(pending)[-1]][0].name, outcome="retried")
                continue
            if not keep_in_flight:
                _in_flight_add(choice.node.node_id, -1)
            _settle(choice, manifest_cid, outcome="ok", latency_ms=latency_ms)
            answers.append(Answer(choice=choice, value=value, latency_ms=latency_ms, call=call))
        if refused is not None or len(answers) >= want:
            break
    if hedged:
        _hedge_give_back()
    late = time.time() >= deadline
    for choice, call in pending.values():
        call.cancel()
        _in_flight_add(choice.node.node_id, -1)
        _settle(choice, manifest_cid, outcome="timeout" if late else "cancelled")
    if answers:
        return answers
    if refused is not None:
        error = DomainError(refused.message, code=refused.code or "invalid")
        error.status_code = refused.status
        error.error_type = "invalid_request_error"
        raise error
    if late:
        raise InferenceTimeout(
            "No serving node answered before the request's deadline"
            + (f" ({'; '.join(failures)})." if failures else "."),
            code="timeout",
        )
    raise NodeFailed(
        "The serving node(s) this request went to failed and so did the retry: " + "; ".join(failures or ["none"]),
        headers={"Retry-After": "2"},
    )


def _no_node(manifest_cid: str, label: str):
    """None in hybrid (the local workers take it); NoNodeAvailable in federated."""
    if mode() == HYBRID:
        routing_observe(node="local", outcome="fallback")
        return None
    routing_observe(node="none", outcome="no_node")
    raise NoNodeAvailable(
        f"No serving node in the rotation has {label} and room in its queue (INFERENCE_ROUTING=federated); "
        "retry shortly.",
        code="no_node_available",
        headers={"Retry-After": "2"},
    )


# --- embeddings --------------------------------------------------------------------------------


@dataclass
class RoutedEmbedding:
    vectors: np.ndarray
    tokens: int
    model: str
    node: str
    latency_ms: float
    voters: list[str] = field(default_factory=list)


def _embed_work(texts: list[str], label: str):
    def work(call: NodeCall) -> tuple[np.ndarray, int, str]:
        body = call.post_json("/embed", {"texts": texts, "model": label})
        try:
            vectors = np.asarray(body["embeddings"], dtype=np.float32)
            if vectors.shape[0] != len(texts):
                raise ValueError("wrong count")
            return vectors, int(body.get("tokens", 0)), str(body.get("model", label))
        except (KeyError, TypeError, ValueError) as exc:
            raise NodeCallFailed(f"the node's /embed answer is malformed ({exc})") from exc

    return work


def embed(*, manifest, label: str, texts: list[str], deadline: float, redundancy: int = 1) -> RoutedEmbedding | None:
    cid = manifest.manifest_cid
    choices = ranked(cid)
    if not choices:
        return _no_node(cid, label)
    k = max(1, min(redundancy, settings.INFERENCE_ROUTING_MAX_REDUNDANCY))
    try:
        answers = _race(choices, cid, _embed_work(texts, label), deadline=deadline, launch=k, want=k, hedge=k == 1)
    except _NoneTaken:
        return _no_node(cid, label)
    winner = answers[0]
    if len(answers) > 1:
        index, agree = weighted_majority(
            [a.value[0] for a in answers],
            [a.choice.fitness for a in answers],
            min_cosine=settings.INFERENCE_SPOT_CHECK_MIN_COSINE,
        )
        winner = answers[index]
        for answer, agrees in zip(answers, agree, strict=True):
            if not agrees:
                routing_observe(node=answer.choice.name, outcome="outvoted")
            records.observe(answer.choice.node.node_id, cid, good=agrees, spot_check=agrees)
    elif random.random() < settings.INFERENCE_SPOT_CHECK_SHARE:
        _spot_check_submit(
            checked=winner.choice,
            others=[c for c in choices if c.node.node_id != winner.choice.node.node_id],
            manifest=manifest,
            label=label,
            texts=texts,
            vectors=winner.value[0],
        )
    vectors, tokens, model = winner.value
    return RoutedEmbedding(
        vectors=vectors,
        tokens=tokens,
        model=model,
        node=winner.choice.name,
        latency_ms=winner.latency_ms,
        voters=[a.choice.name for a in answers],
    )


# --- spot checks -------------------------------------------------------------------------------

_spot_pending = 0
_spot_lock = threading.Lock()


def _spot_check_submit(*, checked: Choice, others: list[Choice], manifest, label, texts, vectors) -> None:
    """Queue a spot check off the request path; skipped when INFERENCE_SPOT_CHECK_MAX_PENDING are waiting."""
    global _spot_pending
    reference = settings.INFERENCE_SPOT_CHECK_REFERENCE
    if reference == "auto":
        reference = "local" if coordination().heartbeats() else "node"
    if reference == "node" and not others:
        return
    with _spot_lock:
        if _spot_pending >= settings.INFERENCE_SPOT_CHECK_MAX_PENDING:
            routing_observe(node=checked.name, outcome="spot_skipped")
            return
        _spot_pending += 1

    def run() -> None:
        global _spot_pending
        try:
            spot_check_run(
                checked=checked,
                references=others[:SPOT_CHECK_REFERENCES] if reference == "node" else None,
                manifest_id=manifest.pk,
                manifest_cid=manifest.manifest_cid,
                label=label,
                texts=texts,
                vectors=vectors,
            )
        except Exception:  # noqa: BLE001 - a check that could not run judges nobody
            logger.warning("spot check of %s could not run", checked.name, exc_info=True)
        finally:
            with _spot_lock:
                _spot_pending -= 1

    _executor("spot-check", 2).submit(run)


def spot_check_run(
    *,
    checked: Choice,
    references: list[Choice] | None,
    manifest_id: int,
    manifest_cid: str,
    label: str,
    texts: list[str],
    vectors: np.ndarray,
) -> bool | None:
    """Compute `texts` again and judge `checked` by it: True agrees, False disagrees, None when no reference answered.

    references None: a local worker computes the reference (trusted). Nodes
    as references: the fittest others answer too, and the fitness-weighted
    majority of all answers decides who is wrong (a lone dishonest reference
    cannot sink an honest node); a reference that dissents loses fitness too.
    """
    min_cosine = settings.INFERENCE_SPOT_CHECK_MIN_COSINE
    if references is None:
        from inference.serving.web import _embed_on_worker

        message = _embed_on_worker(
            manifest_id=manifest_id, texts=texts, deadline=time.time() + SPOT_CHECK_TIMEOUT_SECONDS, limit=0
        )
        agrees = cosine_min(vectors, np.asarray(message["vectors"])) >= min_cosine
        _spot_record(checked, manifest_cid, agrees)
        return agrees
    answers, weights, judged = [vectors], [checked.fitness], [checked]
    for reference in references:
        call = NodeCall(reference.node.url, reference.node.secret, timeout=SPOT_CHECK_TIMEOUT_SECONDS)
        try:
            answers.append(_embed_work(texts, label)(call)[0])
        except (NodeCallFailed, NodeRefused):
            continue
        weights.append(reference.fitness)
        judged.append(reference)
    if len(answers) < 2:
        return None
    _, agree = weighted_majority(answers, weights, min_cosine=min_cosine)
    for choice, agrees in zip(judged, agree, strict=True):
        _spot_record(choice, manifest_cid, agrees)
    return agree[0]


def _spot_record(choice: Choice, manifest_cid: str, agrees: bool) -> None:
    routing_observe(node=choice.name, outcome="spot_agreed" if agrees else "spot_disagreed")
    records.observe(choice.node.node_id, manifest_cid, good=agrees, spot_check=agrees)


# --- generation --------------------------------------------------------------------------------

# The node's words for how a generation ended, back to the platform's (OpenAI's stop|length lose
# the difference between an end token and a stop sequence).
_FINISH_FROM_OPENAI = {"stop": "eos_token", "length": "max_tokens"}


def _message_from_event(event, *, chat: bool) -> dict | None:
    """One node SSE event as the platform's internal generation message (`text`, `done`, `error`), or None."""
    if event == "[DONE]" or not isinstance(event, dict):
        return None
    if "error" in event:
        error = event["error"] if isinstance(event["error"], dict) else {}
        code = error.get("code") or "node_error"
        return {
            "t": "error",
            "status": 504 if code == "timeout" else 503,
            "code": code,
            "message": error.get("message") or "The node reported an error.",
        }
    if not chat:
        if "stop_reason" in event:
            return {
                "t": "done",
                "finish_reason": event["stop_reason"],
                "prompt_tokens": int(event.get("prompt_tokens") or 0),
                "completion_tokens": int(event.get("tokens_generated") or 0),
                "model": event.get("model"),
            }
        return {"t": "text", "d": event["text"]} if event.get("text") else None
    choice = (event.get("choices") or [{}])[0]
    if choice.get("finish_reason"):
        usage = event.get("usage") or {}
        timings = event.get("timings") or {}
        return {
            "t": "done",
            "finish_reason": _FINISH_FROM_OPENAI.get(choice["finish_reason"], "eos_token"),
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            "model": event.get("model"),
            "ttft_ms": timings.get("time_to_first_token_ms"),
            "inference_ms": timings.get("inference_ms"),
        }
    content = (choice.get("delta") or {}).get("content")
    return {"t": "text", "d": content} if content else None


@dataclass
class _Opened:
    events: object  # the rest of the node's SSE iterator
    first: list[dict]


def _generation_work(path: str, body: dict, *, chat: bool):
    def work(call: NodeCall) -> _Opened:
        events = call.stream(path, body)
        for event in events:
            message = _message_from_event(event, chat=chat)
            if message is not None:
                return _Opened(events=events, first=[message])
        raise NodeCallFailed("the node's stream ended without an answer")

    return work


class NodeGeneration:
    """A generation running on a node, with the interface of `inference.serving.web.Generation`.

    The winner of the race streams; a failure before anything reached the
    client (or, for a non-streamed request, before the end) is retried once
    on another node within the deadline.
    """

    def __init__(self, *, request, manifest, label: str, max_tokens: int, started: float, deadline: float):
        self.request = request
        self.manifest_id = manifest.pk
        self.manifest_cid = manifest.manifest_cid
        self.model = label
        self.started = started
        self.deadline = deadline
        self.chat = request.mode == "chat"
        self.path = "/v1/chat/completions" if self.chat else "/generate"
        body = {
            "model": label,
            "max_tokens": max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": request.stop,
            "logit_bias": request.logit_bias,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
            "stream": True,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if self.chat:
            body["messages"] = request.messages
        else:
            body["prompt"] = request.prompt
        self.body = body
        self.budget_taken = False
        self.answer: Answer | None = None
        self.done: dict | None = None
        self.error: DomainError | None = None
        self.texts: list[str] = []
        self.status, self.outcome = 200, "ok"
        self.closed = False
        self.retried = False
        self.emitted = False
        self.tried: list[int] = []

    @property
    def node(self) -> str:
        return self.answer.choice.name if self.answer else ""

    def start(self, choices: list[Choice], *, redundancy: int) -> None:
        k = max(1, min(redundancy, settings.INFERENCE_ROUTING_MAX_REDUNDANCY))
        self.tried += [c.node.node_id for c in choices[:k]]
        answers = _race(
            choices,
            self.manifest_cid,
            _generation_work(self.path, self.body, chat=self.chat),
            deadline=self.deadline,
            launch=k,
            want=1,
            hedge=k == 1,
            keep_in_flight=True,
        )
        self.answer = answers[0]
        for extra in answers[1:]:
            extra.call.cancel()
            _in_flight_add(extra.choice.node.node_id, -1)

    def _release(self) -> None:
        if self.answer is not None:
            self.answer.call.cancel()
            _in_flight_add(self.answer.choice.node.node_id, -1)

    def _retry(self) -> bool:
        """Once, on another node, if the deadline leaves time; False when not possible."""
        if self.retried or time.time() >= self.deadline:
            return False
        self.retried = True
        choices = ranked(self.manifest_cid, exclude=tuple(self.tried))
        if not choices:
            return False
        routing_observe(node=choices[0].name, outcome="retried")
        self.answer = None
        self.texts = []
        try:
            self.start(choices, redundancy=1)
        except _NoneTaken:
            return False
        return True

    def events(self):
        while True:
            answer = self.answer
            try:
                yield from self._follow(answer)
                return
            except NodeCallFailed as exc:
                outcome = exc.kind if exc.kind in ("timeout", "unreachable") else "failed"
                _settle(answer.choice, self.manifest_cid, outcome=outcome)
                self._release()
                failure = f"{answer.choice.name}: {exc}"
            if not self.emitted:
                try:
                    if self._retry():
                        continue
                except DomainError as exc:
                    failure = f"{failure}; retry: {exc.message}"
            self.answer = None
            self.status, self.outcome = 503, "node_failed"
            self.error = NodeFailed(f"The serving node failed during the generation ({failure}).")
            yield {"t": "error", "status": 503, "code": "node_failed", "message": self.error.message}
            return

    def _follow(self, answer: Answer):
        pending = list(answer.value.first)
        stream = answer.value.events
        while True:
            if pending:
                message = pending.pop(0)
            else:
                if time.time() >= self.deadline + 1.0:
                    raise NodeCallFailed("the generation passed its deadline", kind="timeout")
                event = next(stream, None)
                if event is None:
                    return
                message = _message_from_event(event, chat=self.chat)
                if message is None:
                    continue
            if message["t"] == "text":
                self.texts.append(message["d"])
                if self.request.stream:
                    self.emitted = True
            elif message["t"] == "done":
                self.done = message
                self.outcome = message["finish_reason"]
            elif message["t"] == "error":
                self.status, self.outcome = message["status"], message["code"]
                if message["code"] == "timeout":
                    self.error = InferenceTimeout(message["message"], code="timeout")
                else:
                    self.error = NodeFailed(message["message"], code=message["code"])
            if self.request.stream:
                self.emitted = True
            yield message
            if message["t"] in ("done", "error"):
                return

    def result(self):
        from inference.serving.web import GenerationResult

        for _ in self.events():
            pass
        if self.error is not None:
            raise self.error
        if self.done is None:
            raise InferenceTimeout("The node's generation ended without its summary.", code="timeout")
        return GenerationResult(
            text="".join(self.texts),
            model=self.done.get("model") or self.model,
            prompt_tokens=self.done["prompt_tokens"],
            completion_tokens=self.done["completion_tokens"],
            finish_reason=self.done["finish_reason"],
            latency_ms=(time.perf_counter() - self.started) * 1000,
            queue_ms=None,
            time_to_first_token_ms=self.done.get("ttft_ms"),
        )

    def close(self, *, error: DomainError | None = None) -> None:
        from inference.serving import web

        if self.closed:
            return
        self.closed = True
        if error is not None:
            self.status, self.outcome = error.status_code, error.code
        if self.answer is not None:
            if self.done is None and self.status < 400:
                self.status, self.outcome = 499, "cancelled"
            self._release()
        if self.budget_taken:
            self.budget_taken = False
            web.web_thread_budget.give_back()
        done = self.done or {}
        web.sample_record(
            web._sample(
                endpoint=self.request.endpoint,
                status=self.status,
                outcome=self.outcome,
                e2e_ms=(time.perf_counter() - self.started) * 1000,
                model=self.model,
                manifest_id=self.manifest_id,
                inference_ms=done.get("inference_ms"),
                time_to_first_token_ms=done.get("ttft_ms"),
                prompt_tokens=done.get("prompt_tokens", 0),
                completion_tokens=done.get("completion_tokens", 0),
                worker=f"node:{self.node}" if self.node else "",
            )
        )


def generation_open(
    *, request, manifest, label: str, max_tokens: int, started: float, deadline: float, redundancy: int = 1
) -> NodeGeneration | None:
    """A generation started on the best node (its first answer in hand), or None for the local workers (hybrid)."""
    choices = ranked(manifest.manifest_cid)
    if not choices:
        return _no_node(manifest.manifest_cid, label)
    generation = NodeGeneration(
        request=request, manifest=manifest, label=label, max_tokens=max_tokens, started=started, deadline=deadline
    )
    try:
        generation.start(choices, redundancy=redundancy)
    except _NoneTaken:
        return _no_node(manifest.manifest_cid, label)
    return generation
