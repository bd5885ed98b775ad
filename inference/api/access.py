"""Who may call the inference endpoints.

Open by default on a local run, token-only when INFERENCE_REQUIRE_AUTH is
on (the default in production). Tokens are the platform's API tokens; the
OpenAI client sends them as `Authorization: Bearer <token>`, nodes may send
`Token <token>`. The endpoints are JSON APIs: no session, so no CSRF.
When they are open, a client's Authorization header is not even read (the
OpenAI client always sends one, often a placeholder).
"""

import orjson
from django.conf import settings
from django.http import HttpResponse
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import APIException
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from core.api.exception_handler import domain_error_body
from core.api.parsers import JsonBodyParser, json_body_load
from core.api.throttles import InferenceAnonThrottle, InferenceUserThrottle
from core.errors import DomainError, ValidationFailed
from inference.routing import requested_redundancy

REDUNDANCY_HEADER = "X-Conclave-Redundancy"


def _redundancy(request) -> int:
    """The nodes a request asks for (routing only): 1 unless the header says more, at most the setting."""
    raw = request.headers.get(REDUNDANCY_HEADER)
    if raw is None:
        return 1
    limit = settings.INFERENCE_ROUTING_MAX_REDUNDANCY
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= limit:
        raise ValidationFailed(
            f"{REDUNDANCY_HEADER} must be a whole number from 1 to {limit} (INFERENCE_ROUTING_MAX_REDUNDANCY).",
            code="invalid_redundancy",
            fields={REDUNDANCY_HEADER: [f"1 to {limit}."]},
        )
    return value


class BearerTokenAuthentication(TokenAuthentication):
    keyword = "Bearer"


def json_response(body: dict, *, status: int = 200) -> HttpResponse:
    # orjson writes numpy arrays (embeddings) directly, ~10x faster than json + tolist().
    return HttpResponse(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=_tolist),
        status=status,
        content_type="application/json",
    )


def _tolist(value):
    # What OPT_SERIALIZE_NUMPY leaves out: arrays that are not C-contiguous, numpy scalars.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class InferenceApiView(APIView):
    """The inference endpoints' DRF view, with a lean path for the hot POSTs.

    A view that defines `post_json(data) -> dict` has its well-formed POSTs
    answered without DRF's request wrapping, content negotiation and
    renderer: on /embed they cost more CPU than everything else the web
    process does for the request, and under load that CPU is taken from the
    model (bench/inference_overhead.py). Anything unusual (another content
    type, JSON that does not parse, input the fast checks do not accept, a
    token that does not authenticate) goes through the full DRF path, which
    gives the exact same errors as before. The DRF `post` stays the
    documented (OpenAPI) interface.
    """

    parser_classes = [JsonBodyParser]
    renderer_classes = [JSONRenderer]
    throttle_classes = [InferenceAnonThrottle, InferenceUserThrottle]

    def dispatch(self, request, *args, **kwargs):
        try:
            token = requested_redundancy.set(_redundancy(request))
        except DomainError as exc:
            return json_response(domain_error_body(exc), status=exc.status_code)
        try:
            post_json = getattr(self, "post_json", None)
            if post_json is not None and request.method == "POST":
                response = self._lean_post(request, post_json)
                if response is not None:
                    return response
            return super().dispatch(request, *args, **kwargs)
        finally:
            requested_redundancy.reset(token)

    def _lean_post(self, request, post_json) -> HttpResponse | None:
        """The answer, or None to let DRF handle the request."""
        if request.content_type != "application/json":
            return None
        if settings.INFERENCE_REQUIRE_AUTH:
            user = _token_user(request)
            if user is None:
                return None
            request.user = user
        if not self._lean_throttles_allow(request):
            return None  # DRF's path checks again (nothing was counted) and answers 429
        try:
            try:
                data = json_body_load(request.body)
            except ValueError:
                return None  # not JSON: DRF's parser reports it
            return json_response(post_json(data))
        except DomainError as exc:
            response = json_response(domain_error_body(exc), status=exc.status_code)
            for name, value in exc.headers.items():
                response[name] = value
            return response
        except APIException:
            # Input validation failed before any work was done: DRF reports it.
            return None

    def _lean_throttles_allow(self, request) -> bool:
        if not all(throttle.allow_request(request, self) for throttle in self.get_throttles()):
            return False
        # Counted once: should DRF take the request over after all, it does not count it again.
        request._conclave_throttled = True
        return True

    def check_throttles(self, request):
        if getattr(request._request, "_conclave_throttled", False):
            return
        super().check_throttles(request)

    def get_authenticators(self):
        if not settings.INFERENCE_REQUIRE_AUTH:
            return []
        return [BearerTokenAuthentication(), TokenAuthentication()]

    def get_permissions(self):
        if not settings.INFERENCE_REQUIRE_AUTH:
            return [AllowAny()]
        return [IsAuthenticated()]


def _token_user(request):
    """The active user an `Authorization: Bearer|Token <key>` header names, else None."""
    keyword, _, key = request.headers.get("Authorization", "").partition(" ")
    if keyword not in (BearerTokenAuthentication.keyword, TokenAuthentication.keyword) or not key.strip():
        return None
    try:
        user, _ = TokenAuthentication().authenticate_credentials(key.strip())
    except APIException:
        return None
    return user
