"""Sentence embeddings with onnxruntime and a Hugging Face `tokenizers` tokenizer.

A sentence's embedding is the attention-masked mean of the model's token
states, L2-normalized (the sentence-transformers recipe for MiniLM-style
models). Texts longer than `max_tokens` tokens are truncated.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

TOKEN_STATE_OUTPUT = "last_hidden_state"


def onnx_providers(preferred: list[str] | None = None) -> list[str]:
    """Execution providers to use: the preferred ones that exist, else CUDA when present, then CPU."""
    available = ort.get_available_providers()
    if preferred:
        chosen = [name for name in preferred if name in available]
        if chosen:
            return chosen
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass(frozen=True)
class EmbeddingBatch:
    vectors: np.ndarray  # (n, dimensions) float32, unit length
    token_counts: list[int]


class EmbeddingRuntime:
    """One ONNX embedding model and its tokenizer, ready to embed batches of texts.

    `embed` may be called from several threads at once (onnxruntime sessions
    and `tokenizers` tokenizers are thread-safe); the worker still funnels
    requests through one batching thread so they share onnxruntime calls.
    """

    def __init__(
        self,
        *,
        model_path: Path,
        tokenizer_path: Path,
        threads: int = 1,
        providers: list[str] | None = None,
        max_tokens: int = 256,
        spinning: bool = False,
    ):
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.providers = onnx_providers(providers)
        self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=self.providers)
        self.input_names = {item.name for item in self.session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self.input_names
        if missing:
            raise ValueError(f"{model_path.name} lacks the inputs {sorted(missing)} a BERT-style embedding model has")
        self.output_name, self.pooled = _choose_output(self.session)
        self.dimensions = _output_width(self.session, self.output_name)
        self.max_tokens = max_tokens
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        padding = self.tokenizer.padding or {}
        # Pad to the longest text of each batch, not to a fixed length.
        self.tokenizer.enable_padding(pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]"))

    def warm_up(self) -> None:
        """One small call, so the first request does not pay onnxruntime's first-run allocations."""
        self.embed(["warm up"])

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return ids, mask, types

    def embed(self, texts: list[str]) -> EmbeddingBatch:
        if not texts:
            return EmbeddingBatch(vectors=np.zeros((0, self.dimensions), dtype=np.float32), token_counts=[])
        ids, mask, types = self.tokenize(texts)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = types
        (states,) = self.session.run([self.output_name], feed)
        if self.pooled:
            pooled = states.astype(np.float32, copy=False)
        else:
            weights = mask[..., None].astype(np.float32)
            pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)
        return EmbeddingBatch(vectors=vectors, token_counts=[int(n) for n in mask.sum(axis=1)])


def _choose_output(session: ort.InferenceSession) -> tuple[str, bool]:
    """The token-state output to mean-pool; a pooled (batch, width) output as a fallback."""
    outputs = session.get_outputs()
    for output in outputs:
        if output.name == TOKEN_STATE_OUTPUT:
            return output.name, False
    for output in outputs:
        if len(output.shape) == 3 and "float" in output.type:
            return output.name, False
    for output in outputs:
        if len(output.shape) == 2 and "float" in output.type:
            return output.name, True
    raise ValueError("the ONNX model has no float token-state or pooled output to embed with")


def _output_width(session: ort.InferenceSession, name: str) -> int:
    shape = next(o.shape for o in session.get_outputs() if o.name == name)
    width = shape[-1]
    return width if isinstance(width, int) else 0
