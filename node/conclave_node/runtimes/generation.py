"""Text generation with llama-cpp-python: plain completion and chat, token by token.

The loop runs on `Llama.generate` directly so that, between any two tokens,
it can check a stop flag (a deadline passed, the client went away) and
really stop, count tokens exactly, and hand each piece of text to a
callback for streaming. Chat prompts are rendered with the GGUF file's own
chat template, the same Jinja2 formatter `Llama.create_chat_completion`
builds from the file's metadata.

Every llama.cpp computation runs on a thread that ends with it
(`_on_own_thread`). llama.cpp's CPU backend is built with OpenMP, and
libgomp keeps a team of worker threads for each thread that ever started a
parallel region, for as long as that thread lives. Once the process holds
more team threads than CPUs, libgomp stops spinning and parks its workers
on a futex between operations, and every token pays the wake-ups: on a
2-CPU machine, two long-lived threads taking turns generated 36 tokens/s
against 85 on the main thread alone (bench/generation_threads.py). Celery's
pool threads and the model loader are such threads.
Short-lived threads take their teams with them.

Generations running at once share the runtime's threads (`ThreadShare`):
each computes the next token with `threads // running` of them, so the
process never asks for more llama.cpp threads than it was given. Two
generations (or a benchmark beside a generation) on 2 threads each, on 2
CPUs, leave OpenMP's workers spinning at every barrier for a partner that
is not running: on a busy 2-CPU machine the slower of two concurrent
60-token generations took 7.7-11.9 s on 2 threads each against 5.6-5.7 s on
one each. The same spinning makes 2 threads 10-20 times slower than one
when other processes keep the CPUs busy (60 tokens: 28-63 s against 2-3 s);
that is the machine's to avoid (INFERENCE_THREADS=1, or
OMP_WAIT_POLICY=PASSIVE: 4.5-5.2 s), see inference/README.md.
"""

import codecs
import random
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from conclave_node.runtimes.gguf import gguf_metadata

CHAT_ROLES = ("system", "user", "assistant")


class ContextLengthExceeded(ValueError):
    pass


class ChatUnsupported(ValueError):
    pass


class LogitBiasOutOfRange(ValueError):
    """A logit_bias key is not a token id of this model's vocabulary."""

    def __init__(self, token_ids: list[int], n_vocab: int):
        self.token_ids = token_ids
        self.n_vocab = n_vocab
        shown = ", ".join(str(i) for i in token_ids[:5])
        super().__init__(
            f"logit_bias names token ids outside this model's vocabulary of {n_vocab} tokens "
            f"(0 to {n_vocab - 1}): {shown}."
        )


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


@dataclass
class GenerationOutcome:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # eos_token | stop_sequence | max_tokens | timeout | cancelled (the
    # roadmap's stop_reason; the OpenAI endpoints map them to stop | length)
    finish_reason: str = "max_tokens"
    time_to_first_token: float | None = None
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    # CPU time of the thread that ran the model (prompt and tokens), in seconds.
    cpu_seconds: float = 0.0
    token_times: list[float] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float | None:
        if self.completion_tokens < 2 or self.time_to_first_token is None:
            return None
        decode = self.generation_seconds - self.time_to_first_token
        return (self.completion_tokens - 1) / decode if decode > 0 else None


class ThreadShare:
    """How many llama.cpp computations run at once in this process, and each one's share of threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.running = 0

    @contextmanager
    def computing(self):
        with self._lock:
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1

    def share(self, threads: int) -> int:
        return max(1, threads // max(1, self.running))


thread_share = ThreadShare()


def _threads_apply(llm: llama_cpp.Llama, threads: int) -> None:
    """Compute the next token (or prompt) with `threads` threads, when that is not already so."""
    if llama_cpp.llama_n_threads(llm._ctx.ctx) != threads:
        llm._ctx.set_n_threads(threads, threads)


class GenerationRuntime:
    """A GGUF model with a small pool of llama.cpp contexts, one per concurrent generation.

    Every context maps the same weights file (the OS shares its pages); each
    adds its own key/value cache. Contexts are created on demand, up to the
    number of generations that run at once.
    """

    def __init__(self, *, model_path: Path, n_ctx: int = 2048, threads: int = 1, n_gpu_layers: int = 0):
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.threads = max(1, threads)
        self.n_gpu_layers = n_gpu_layers if gpu_offload_supported() else 0
        self.metadata = gguf_metadata(self.model_path)
        self._idle: list[llama_cpp.Llama] = []
        self._lock = threading.Lock()
        self.contexts = 0
        first = self._new_context()
        self._idle.append(first)
        self.eos_token_id = first.token_eos()
        self.bos_token_id = first.token_bos()
        self.end_of_generation_token_ids = end_of_generation_token_ids(first)
        self.chat_formatter = self._chat_formatter(first)

    def _new_context(self) -> llama_cpp.Llama:
        llm = _on_own_thread(self._context_create)
        with self._lock:
            self.contexts += 1
        return llm

    def _context_create(self) -> llama_cpp.Llama:
        llm = llama_cpp.Llama(
            model_path=str(self.model_path),
            n_ctx=self.n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            n_gpu_layers=self.n_gpu_layers,
            verbose=False,
        )
        # The first evaluation on a new context is slow (buffer allocation):
        # pay it here rather than in a request's time to first token.
        for _ in llm.generate(llm.tokenize(b"Hi"), temp=0.0):
            break
        return llm

    def _chat_formatter(self, llm: llama_cpp.Llama) -> Jinja2ChatFormatter | None:
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None

        def token_text(token_id: int) -> str:
            return llm._model.token_get_text(token_id) if token_id != -1 else ""

        return Jinja2ChatFormatter(
            template=template,
            eos_token=token_text(self.eos_token_id),
            bos_token=token_text(self.bos_token_id),
            stop_token_ids=[self.eos_token_id],
        )

    @property
    def has_chat_template(self) -> bool:
        return self.chat_formatter is not None

    @contextmanager
    def context(self):
        """Borrow a llama.cpp context for one generation (a new one when all are busy)."""
        with self._lock:
            llm = self._idle.pop() if self._idle else None
        if llm is None:
            llm = self._new_context()
        try:
            yield llm
        finally:
            with self._lock:
                self._idle.append(llm)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for llm in idle:
            llm.close()

    # --- prompts -------------------------------------------------------------
    def completion_prompt(self, llm: llama_cpp.Llama, prompt: str) -> tuple[list[int], list[str]]:
        """Tokens of a plain prompt, as `Llama.create_completion` tokenizes it."""
        if prompt == "":
            return [self.bos_token_id], []
        return llm.tokenize(prompt.encode("utf-8"), special=True), []

    def render_chat(self, messages: list[dict]) -> tuple[str, list[str], bool]:
        if self.chat_formatter is None:
            raise ChatUnsupported(f"{self.model_path.name} has no chat template; use a completion instead")
        result = self.chat_formatter(messages=messages)
        stops = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return result.prompt, stops, result.added_special

    def chat_prompt(self, llm: llama_cpp.Llama, messages: list[dict]) -> tuple[list[int], list[str]]:
        """Tokens of a chat rendered with the model's template, as `create_chat_completion` does."""
        prompt, stops, added_special = self.render_chat(messages)
        return llm.tokenize(prompt.encode("utf-8"), add_bos=not added_special, special=True), stops

    # --- generation ------------------------------------------------------------
    def generate(self, llm: llama_cpp.Llama, **options) -> GenerationOutcome:
        """Generate up to `max_tokens` tokens after `prompt_tokens` (see `_generate` for the options).

        The callbacks run on the generation's own thread (see the module docstring).
        """
        with thread_share.computing():
            return _on_own_thread(self._generate, llm, **options)

    def _generate(
        self,
        llm: llama_cpp.Llama,
        *,
        prompt_tokens: list[int],
        max_tokens: int,
        temperature: float = 0.8,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        logit_bias: dict[int, float] | None = None,
        should_stop: Callable[[], str | None] | None = None,
        on_text: Callable[[str], None] | None = None,
        record_token_times: bool = False,
    ) -> GenerationOutcome:
        """Generate up to `max_tokens` tokens after `prompt_tokens`.

        `should_stop` is called between tokens; a non-empty answer ends the
        generation at once with that finish reason. `on_text` receives each
        piece of text as soon as it is safe to show (never part of a stop
        sequence, never half a UTF-8 character).
        """
        if len(prompt_tokens) + max_tokens > self.n_ctx:
            raise ContextLengthExceeded(
                f"The prompt has {len(prompt_tokens)} tokens; with max_tokens={max_tokens} it needs "
                f"{len(prompt_tokens) + max_tokens}, more than this model's context of {self.n_ctx} tokens."
            )
        if logit_bias:
            n_vocab = llm.n_vocab()
            outside = sorted(token for token in logit_bias if not 0 <= token < n_vocab)
            if outside:
                raise LogitBiasOutOfRange(outside, n_vocab)
        outcome = GenerationOutcome(prompt_tokens=len(prompt_tokens))
        started = time.perf_counter()
        _threads_apply(llm, thread_share.share(self.threads))
        cpu_started = time.thread_time()
        if should_stop is not None and (reason := should_stop()):
            outcome.finish_reason = reason
            return outcome
        llm.set_seed(seed if seed is not None else random.getrandbits(32))
        stops = [s for s in (stop or []) if s]
        holdback = max((len(s) for s in stops), default=0)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text = ""
        emitted = 0
        vocab = llm._model.vocab
        processors = _logit_bias_processor(logit_bias) if logit_bias else None
        finish = "max_tokens"
        cut_at_stop = False

        for token in llm.generate(
            prompt_tokens,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            temp=temperature,
            repeat_penalty=repeat_penalty,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            logits_processor=processors,
        ):
            now = time.perf_counter()
            if outcome.time_to_first_token is None:
                outcome.time_to_first_token = now - started
                outcome.prompt_seconds = outcome.time_to_first_token
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "eos_token"
                break
            outcome.completion_tokens += 1
            if record_token_times:
                outcome.token_times.append(now - started)
            text += decoder.decode(llm.detokenize([token]))
            if stops:
                cut = _first_stop(text, stops, start=max(0, emitted - holdback))
                if cut is not None:
                    text = text[:cut]
                    finish = "stop_sequence"
                    cut_at_stop = True
                    break
                safe = len(text) - _partial_stop_suffix(text, stops)
            else:
                safe = len(text)
            if safe > emitted:
                if on_text is not None:
                    on_text(text[emitted:safe])
                emitted = safe
            if outcome.completion_tokens >= max_tokens:
                finish = "max_tokens"
                break
            # The next token's share: generations may have started or ended meanwhile.
            _threads_apply(llm, thread_share.share(self.threads))
            if should_stop is not None and (reason := should_stop()):
                finish = reason
                break

        if not cut_at_stop:
            text += decoder.decode(b"", final=True)
        if len(text) > emitted and on_text is not None:
            on_text(text[emitted:])
        outcome.text = text
        outcome.finish_reason = finish
        outcome.generation_seconds = time.perf_counter() - started
        outcome.cpu_seconds = time.thread_time() - cpu_started
        return outcome


def end_of_generation_token_ids(llm: llama_cpp.Llama) -> list[int]:
    """Every token that ends a generation in this vocabulary, not only the EOS token.

    SmolLM2's vocabulary has three (`<|endoftext|>`, `<|im_end|>`,
    `<reponame>`): banning only the EOS token leaves the model free to stop.
    """
    vocab = llm._model.vocab
    return [t for t in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, t)]


def _on_own_thread(function, /, *args, **kwargs):
    """Call `function` on a new thread and wait for it: its OpenMP team ends with the thread."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"{threading.current_thread().name}-llama", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _first_stop(text: str, stops: list[str], *, start: int) -> int | None:
    found = [index for s in stops if (index := text.find(s, start)) != -1]
    return min(found) if found else None


def _partial_stop_suffix(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop sequence."""
    longest = 0
    for s in stops:
        for size in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:size]):
                longest = size
                break
    return longest


def _logit_bias_processor(bias: dict[int, float]):
    ids = list(bias)
    values = [float(bias[i]) for i in ids]

    def apply(input_ids, scores):
        scores[ids] += values
        return scores

    return llama_cpp.LogitsProcessorList([apply])
