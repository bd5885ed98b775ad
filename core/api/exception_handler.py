"""The single mapping from exceptions to the API's JSON error shape."""

import logging

import redis.exceptions
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from kombu.exceptions import OperationalError as BrokerOperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import DomainError, ServiceUnavailable

logger = logging.getLogger(__name__)

# The Celery broker (kombu) or the shared serving state (redis-py) cannot be reached.
BROKER_UNREACHABLE = (BrokerOperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
BROKER_RETRY_AFTER_SECONDS = 5

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    406: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "unavailable_error",
}


def error_body(message: str, *, error_type: str, code: str, fields: dict | None = None) -> dict:
    error: dict = {"message": message, "type": error_type, "code": code}
    if fields:
        error["fields"] = fields
    return {"error": error}


def domain_error_body(exc: DomainError) -> dict:
    return error_body(exc.message, error_type=exc.error_type, code=exc.code, fields=exc.fields)


def _flatten(detail) -> dict[str, list[str]]:
    """DRF nests errors; the API reports dotted field paths with string lists."""
    out: dict[str, list[str]] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, list):
            if all(not isinstance(item, (dict, list)) for item in value):
                out.setdefault(prefix or "non_field_errors", []).extend(str(v) for v in value)
            else:
                for index, inner in enumerate(value):
                    walk(f"{prefix}.{index}" if prefix else str(index), inner)
        else:
            out.setdefault(prefix or "non_field_errors", []).append(str(value))

    walk("", detail)
    return out


def _summary(fields: dict[str, list[str]]) -> str:
    parts = [f"{name}: {messages[0]}" for name, messages in fields.items()]
    return "Invalid input. " + "; ".join(parts)


def broker_unavailable(exc: BaseException) -> ServiceUnavailable | None:
    """A broker or shared-state outage as the API's 503 (with Retry-After); None for anything else."""
    if not isinstance(exc, BROKER_UNREACHABLE):
        return None
    logger.warning("broker or shared state unreachable: %s: %s", type(exc).__name__, exc)
    return ServiceUnavailable(
        "The message broker or shared state (Redis) is unreachable; retry shortly.",
        code="broker_unavailable",
        headers={"Retry-After": str(BROKER_RETRY_AFTER_SECONDS)},
    )


class BrokerUnavailableMiddleware:
    """Answers a broker outage raised by any view (DRF's or not) with the JSON 503, not Django's 500 page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        error = broker_unavailable(exception)
        if error is None:
            return None
        response = JsonResponse(domain_error_body(error), status=error.status_code)
        for name, value in error.headers.items():
            response[name] = value
        return response


def api_exception_handler(exc, context):
    exc = broker_unavailable(exc) or exc
    if isinstance(exc, DomainError):
        response = Response(domain_error_body(exc), status=exc.status_code)
        for name, value in exc.headers.items():
            response[name] = value
        return response
    if isinstance(exc, DjangoValidationError):
        fields = _flatten(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
        return Response(
            error_body(_summary(fields), error_type="invalid_request_error", code="invalid", fields=fields),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = status.HTTP_400_BAD_REQUEST if response.status_code == 400 else response.status_code
    error_type = _TYPES.get(code, "api_error")
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        response.data = error_body(_summary(fields), error_type=error_type, code="invalid", fields=fields)
    else:
        detail = getattr(exc, "detail", str(exc))
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        response.data = error_body(
            str(detail), error_type=error_type, code=codes if isinstance(codes, str) else "error"
        )
    return response


def json_not_found(request, exception=None):
    return JsonResponse(
        error_body(f"No route for {request.path}.", error_type="not_found_error", code="not_found"),
        status=404,
    )


def json_server_error(request):
    return JsonResponse(
        error_body(
            "The server failed to handle this request; it has been logged.",
            error_type="server_error",
            code="internal_error",
        ),
        status=500,
    )
