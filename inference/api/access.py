"""Who may call the inference endpoints.

Open by default on a local run, token-only when INFERENCE_REQUIRE_AUTH is
on (the default in production). Tokens are the platform's API tokens; the
OpenAI client sends them as `Authorization: Bearer <token>`, nodes may send
`Token <token>`. The endpoints are JSON APIs: no session, so no CSRF.
When they are open, a client's Authorization header is not even read (the
OpenAI client always sends one, often a placeholder).
"""

from django.conf import settings
from rest_framework.authentication import TokenAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView


class BearerTokenAuthentication(TokenAuthentication):
    keyword = "Bearer"


class InferenceApiView(APIView):
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    def get_authenticators(self):
        if not settings.INFERENCE_REQUIRE_AUTH:
            return []
        return [BearerTokenAuthentication(), TokenAuthentication()]

    def get_permissions(self):
        if not settings.INFERENCE_REQUIRE_AUTH:
            return [AllowAny()]
        return [IsAuthenticated()]
