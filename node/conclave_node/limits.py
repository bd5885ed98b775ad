"""The governed limits a serving node enforces, read from the signed approved set.

The platform signs the live values of its governed parameters into every
signed set (`parameters`); a node enforces exactly those. A set signed
before parameters were part of the document falls back to the governance
defaults below (the same values `governance.models.PARAMETER_DEFINITIONS`
starts from; a test keeps the two equal).
"""

from dataclasses import asdict, dataclass

from conclave_node.errors import MetadataFormatError


@dataclass(frozen=True)
class Limits:
    max_tokens_per_request: int = 512
    max_concurrent_requests: int = 2
    request_timeout_seconds: int = 30
    memory_limit_mb: int = 2048
    queue_size: int = 5
    # True when the values came from the signed set, False for the defaults.
    signed: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


# The lowest values that still let a node serve (governance's own minimums).
_MINIMUMS = {
    "max_tokens_per_request": 1,
    "max_concurrent_requests": 1,
    "request_timeout_seconds": 1,
    "memory_limit_mb": 1,
    "queue_size": 0,
}


def limits_from(parameters: dict[str, int] | None) -> Limits:
    """The limits of a signed set's `parameters`; names the node does not know are ignored."""
    if parameters is None:
        return Limits()
    values = {}
    for name, minimum in _MINIMUMS.items():
        if name not in parameters:
            continue
        value = parameters[name]
        if value < minimum:
            raise MetadataFormatError(
                f"signed parameter {name}={value} is below {minimum}: a node cannot serve with it"
            )
        values[name] = value
    return Limits(**values, signed=True)
