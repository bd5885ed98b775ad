"""Serving models through the workers, by side of the request.

- `web`: the web process's side: validates against the governed limits,
  coalesces embedding requests, sends work to the `inference` queue and
  waits for the reply (generation streams token by token), records latency.
- `worker`: the Celery worker's side: runs a request on a loaded model and
  answers on the request's reply channel.
- `shared_state`: what both sides share through Redis (or memory when
  embedded): reply channels, cancel flags, load reports, latency samples.
- `model_loading`: turning a manifest's pinned files into a runtime
  (`conclave_node.runtimes`), with the memory checks before a load.
- `model_cache`: the models a worker holds, and the sync loop that keeps
  them equal to the approved set.
- `batching`: the worker's embedding batcher.
"""
