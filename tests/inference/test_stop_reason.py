"""The roadmap's `stop_reason` on /generate, and OpenAI's `finish_reason` on the /v1 endpoints.

Each ending is forced with `logit_bias` (an end token made certain or
impossible, a comma made certain), so the tests hold whatever the model
would otherwise say.
"""

import functools
import json

import llama_cpp
import pytest
from rest_framework.test import APIClient

from tests.inference.test_runtimes import SMOLLM

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = {"prompt": "Once upon a time", "temperature": 0}


@functools.cache
def _vocabulary() -> tuple[list[int], int]:
    """SmolLM2's end-of-generation tokens and its token for ",", read from the GGUF (no weights loaded)."""
    llm = llama_cpp.Llama(model_path=str(SMOLLM), vocab_only=True, verbose=False)
    try:
        vocab = llm._model.vocab
        ends = [t for t in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        (comma,) = llm.tokenize(b",", add_bos=False, special=False)
        return ends, comma
    finally:
        llm.close()


def _bias(end: float, **extra: float) -> dict[str, float]:
    ends, _ = _vocabulary()
    return {**{str(token): end for token in ends}, **extra}


def post(path: str, body: dict):
    return APIClient().post(path, body, format="json")


def test_generate_stop_reason_is_eos_token_max_tokens_or_stop_sequence(served):
    _, comma = _vocabulary()
    ended = post("/generate", {**PROMPT, "max_tokens": 8, "logit_bias": _bias(100)}).json()
    capped = post("/generate", {**PROMPT, "max_tokens": 3, "logit_bias": _bias(-100)}).json()
    cut = post(
        "/generate", {**PROMPT, "max_tokens": 8, "stop": [","], "logit_bias": _bias(-100, **{str(comma): 100})}
    ).json()

    assert (ended["stop_reason"], ended["tokens_generated"]) == ("eos_token", 0)
    assert (capped["stop_reason"], capped["tokens_generated"]) == ("max_tokens", 3)
    assert (cut["stop_reason"], cut["text"]) == ("stop_sequence", "")


def test_a_streamed_generate_ends_with_the_same_stop_reason(served):
    response = post("/generate", {**PROMPT, "max_tokens": 2, "stream": True, "logit_bias": _bias(-100)})
    events = b"".join(response.streaming_content).decode().split("\n\n")[:-1]
    summary = json.loads(events[-2][len("data: ") :])
    assert summary["stop_reason"] == "max_tokens" and summary["tokens_generated"] == 2


def test_openai_endpoints_keep_openais_finish_reasons(served):
    chat = post(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0, "logit_bias": _bias(100)},
    ).json()
    completion = post("/v1/completions", {**PROMPT, "max_tokens": 2, "logit_bias": _bias(-100)}).json()
    assert chat["choices"][0]["finish_reason"] == "stop"
    assert completion["choices"][0]["finish_reason"] == "length"
