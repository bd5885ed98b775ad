"""Response shapes of the OpenAI-compatible endpoints and of server-sent events.

Every response carries `usage`; streams end with `data: [DONE]`, and their
last chunk (the one with `finish_reason`) carries `usage` and `timings` too,
as llama.cpp's server does.
"""

import base64
import json
import time
import uuid

import numpy as np

from inference.serving.web import Generation, GenerationResult

# OpenAI's finish reasons are stop | length, from the native stop_reason
# (eos_token | stop_sequence | max_tokens); a deadline or a cancel ends the
# stream with an error event instead.
FINISH_REASONS = {"eos_token": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def sse_event(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"data: {data}\n\n".encode()


SSE_DONE = sse_event("[DONE]")


class ClosingStream:
    """A response body that closes its generation even if it is closed before its first chunk.

    Django closes a streaming body when the response ends or the client
    goes away; a plain generator that never started would skip its
    `finally`, leaving a slot taken and a generation running.
    """

    def __init__(self, chunks, generation: Generation):
        self._chunks = chunks
        self._generation = generation

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        try:
            self._chunks.close()
        finally:
            self._generation.close()


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def timings(result_or_done) -> dict:
    if isinstance(result_or_done, GenerationResult):
        return {
            "latency_ms": round(result_or_done.latency_ms, 3),
            "queue_ms": None if result_or_done.queue_ms is None else round(result_or_done.queue_ms, 3),
            "time_to_first_token_ms": None
            if result_or_done.time_to_first_token_ms is None
            else round(result_or_done.time_to_first_token_ms, 3),
        }
    return {
        "inference_ms": round(result_or_done.get("inference_ms") or 0.0, 3),
        "time_to_first_token_ms": result_or_done.get("ttft_ms"),
    }


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def models_list(manifests) -> dict:
    return {
        "object": "list",
        "data": [
            {
                "id": manifest.model_name,
                "object": "model",
                "created": int(manifest.created_at.timestamp()),
                "owned_by": "conclave",
                "kind": manifest.kind,
                "version": manifest.version,
                "format": manifest.format,
                "sha256": manifest.sha256,
                "license": manifest.license,
            }
            for manifest in manifests
        ],
    }


def embeddings_body(result, *, encoding_format: str) -> dict:
    data = []
    for index, vector in enumerate(result.vectors):
        if encoding_format == "base64":
            embedding = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        else:
            embedding = vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": result.model,
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    }


def chat_body(result: GenerationResult) -> dict:
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(result.finish_reason, "stop"),
            }
        ],
        "usage": usage(result.prompt_tokens, result.completion_tokens),
        "timings": timings(result),
    }


def completion_body(result: GenerationResult) -> dict:
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": result.model,
        "choices": [
            {
                "index": 0,
                "text": result.text,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(result.finish_reason, "stop"),
            }
        ],
        "usage": usage(result.prompt_tokens, result.completion_tokens),
        "timings": timings(result),
    }


def _error_event(message: dict) -> bytes:
    error_type = {503: "unavailable_error", 504: "timeout_error"}.get(message.get("status"), "server_error")
    return sse_event({"error": {"message": message["message"], "type": error_type, "code": message.get("code")}})


def chat_stream(generation: Generation):
    """SSE chunks of a chat completion; closing the iterator (client gone) cancels the generation."""
    chunk_id, created, model = new_id("chatcmpl"), int(time.time()), generation.model

    def chunk(delta: dict, finish_reason=None, **extra) -> bytes:
        body = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        body.update(extra)
        return sse_event(body)

    try:
        yield chunk({"role": "assistant", "content": ""})
        for message in generation.events():
            if message["t"] == "text":
                yield chunk({"content": message["d"]})
            elif message["t"] == "done":
                if message["finish_reason"] in FINISH_REASONS:
                    yield chunk(
                        {},
                        FINISH_REASONS[message["finish_reason"]],
                        usage=usage(message["prompt_tokens"], message["completion_tokens"]),
                        timings=timings(message),
                    )
                else:
                    yield _error_event(
                        {
                            "status": 504,
                            "code": "timeout",
                            "message": "The generation passed its deadline and was stopped.",
                        }
                    )
            elif message["t"] == "error":
                yield _error_event(message)
        yield SSE_DONE
    finally:
        generation.close()


def completion_stream(generation: Generation):
    chunk_id, created, model = new_id("cmpl"), int(time.time()), generation.model

    def chunk(text: str, finish_reason=None, **extra) -> bytes:
        body = {
            "id": chunk_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
        }
        body.update(extra)
        return sse_event(body)

    try:
        for message in generation.events():
            if message["t"] == "text":
                yield chunk(message["d"])
            elif message["t"] == "done":
                if message["finish_reason"] in FINISH_REASONS:
                    yield chunk(
                        "",
                        FINISH_REASONS[message["finish_reason"]],
                        usage=usage(message["prompt_tokens"], message["completion_tokens"]),
                        timings=timings(message),
                    )
                else:
                    yield _error_event(
                        {
                            "status": 504,
                            "code": "timeout",
                            "message": "The generation passed its deadline and was stopped.",
                        }
                    )
            elif message["t"] == "error":
                yield _error_event(message)
        yield SSE_DONE
    finally:
        generation.close()


def native_stream(generation: Generation):
    """SSE of POST /generate with stream=true: `{"text": ...}` pieces, then the summary."""
    try:
        for message in generation.events():
            if message["t"] == "text":
                yield sse_event({"text": message["d"]})
            elif message["t"] == "done":
                yield sse_event(
                    {
                        "text": "",
                        "model": generation.model,
                        "tokens_generated": message["completion_tokens"],
                        "prompt_tokens": message["prompt_tokens"],
                        "stop_reason": message["finish_reason"],
                        "latency_ms": round((time.perf_counter() - generation.started) * 1000, 3),
                    }
                )
            elif message["t"] == "error":
                yield _error_event(message)
        yield SSE_DONE
    finally:
        generation.close()
