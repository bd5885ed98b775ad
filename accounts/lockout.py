"""The answer to a sign-in while its account or address is locked out (django-axes calls it)."""

import math

from axes.helpers import get_cool_off
from django.http import HttpRequest, JsonResponse

from core.api.exception_handler import error_body


def login_lockout_response(request: HttpRequest, original_response=None, credentials=None) -> JsonResponse:
    cool_off = get_cool_off(request)
    seconds = max(1, math.ceil(cool_off.total_seconds())) if cool_off else 1
    response = JsonResponse(
        error_body(
            f"Too many failed sign-ins for this account or from this address; try again in {seconds} s "
            "(LOGIN_FAILURE_LIMIT, LOGIN_COOLOFF_SECONDS).",
            error_type="rate_limit_error",
            code="login_locked",
        ),
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response
