"""How much memory a model takes: the estimate checked against memory_limit_mb before loading, and this process's RSS.

One estimate for the platform's workers and the nodes, so governance's
memory limit means the same on both.
"""

from pathlib import Path

from conclave_node.runtimes.gguf import gguf_metadata, kv_cache_bytes

MB = 1024 * 1024
# onnxruntime keeps optimised copies of the weights (int8 graphs get float
# copies) plus an activation arena: measured 0.23 GB for MiniLM int8 (23 MB).
ONNX_WEIGHTS_FACTOR = 4
ONNX_OVERHEAD_BYTES = 128 * MB
# llama.cpp's compute buffers beside the weights and the key/value caches.
GGUF_OVERHEAD_BYTES = 48 * MB


def model_memory_estimate_bytes(
    *, model_format: str, weights: Path, total_bytes: int, n_ctx: int, contexts: int = 1, sessions: int = 1
) -> int:
    """What loading takes, before loading (conservative): weights, and for GGUF one key/value cache per context;
    an ONNX model loaded as `sessions` side-by-side sessions takes that many times one.

    Raises GGUFError, OSError or ValueError when a GGUF header cannot be read.
    """
    if model_format == "gguf":
        return total_bytes + contexts * kv_cache_bytes(gguf_metadata(weights), n_ctx) + GGUF_OVERHEAD_BYTES
    return sessions * (total_bytes * ONNX_WEIGHTS_FACTOR + ONNX_OVERHEAD_BYTES)


def process_rss_mb() -> float:
    """This process's resident memory now (Linux /proc; elsewhere its peak, the closest the OS offers)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return process_peak_rss_mb()


def process_peak_rss_mb() -> float:
    import resource  # Unix only: imported when asked, so the package still imports elsewhere

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
