"""Domain errors raised by services and mapped to HTTP in one place.

Services raise these; `core.api.exception_handler` turns them into the
one JSON error shape `{"error": {"message", "type", "code", "fields"?}}`.
"""


class DomainError(Exception):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        fields: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.fields = fields
        self.headers = headers or {}


class ValidationFailed(DomainError):
    default_code = "invalid"


class Forbidden(DomainError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFound(DomainError):
    status_code = 404
    error_type = "not_found_error"
    default_code = "not_found"


class Conflict(DomainError):
    status_code = 409
    error_type = "conflict_error"
    default_code = "conflict"


class PayloadTooLarge(DomainError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class ServiceUnavailable(DomainError):
    status_code = 503
    error_type = "unavailable_error"
    default_code = "unavailable"


class RateLimited(DomainError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limited"
