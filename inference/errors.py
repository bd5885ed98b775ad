"""Errors of the serving path; the API's one exception handler renders them."""

from core.errors import DomainError, NotFound, ServiceUnavailable, ValidationFailed


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class LimitExceeded(ValidationFailed):
    """A request asks for more than a governed limit allows."""

    default_code = "limit_exceeded"


class ContextLengthExceeded(ValidationFailed):
    default_code = "context_length_exceeded"


class QueueFull(ServiceUnavailable):
    default_code = "queue_full"


class ModelUnavailable(ServiceUnavailable):
    """The model exists and is approved but no worker can serve it now (loading, refused, stopped)."""

    default_code = "model_unavailable"


class WorkerUnavailable(ServiceUnavailable):
    default_code = "worker_unavailable"


class NoNodeAvailable(ServiceUnavailable):
    """INFERENCE_ROUTING=federated and no serving node has the model, room and a closed breaker."""

    default_code = "no_node_available"


class NodeFailed(ServiceUnavailable):
    """The node(s) a routed request went to failed, and so did the retry."""

    default_code = "node_failed"


class WorkerLost(ServiceUnavailable):
    """The worker running the request stopped (its liveness heartbeat did)."""

    default_code = "worker_lost"


class InferenceTimeout(DomainError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "timeout"


class ModelLoadRefused(Exception):
    """Loading a model would break the governed memory limit, or its bytes do not verify."""
