"""Routing serving requests to the network's nodes (INFERENCE_ROUTING=federated|hybrid).

`policy` holds the rules as pure functions, `records` what the platform
learns about each node (in the shared state), `node_client` the HTTP to a
node and `router` the orchestration `inference.serving.web` calls.
"""

from contextvars import ContextVar

# Nodes a request asks for (X-Conclave-Redundancy), set by the inference views for the request's thread.
requested_redundancy: ContextVar[int] = ContextVar("conclave_requested_redundancy", default=1)
