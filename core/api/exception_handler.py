"""The single mapping from exceptions to the API's JSON error shape."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import DomainError

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


def api_exception_handler(exc, context):
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
