"""Per-client request rates (DRF throttles on the Django cache: shared by every process when it is Redis).

A client is its account when it authenticated, else its address. Anonymous
and authenticated clients have separate rates, and inference (which spends
model time) has its own pair. Rates are read from `settings.THROTTLE_RATES`
on every request ("120/min"; None switches a scope off); over a rate the
answer is 429 `rate_limit_error` with `Retry-After`.
"""

import logging

import redis
from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)

# The cache's server cannot be reached (Django's Redis cache raises redis-py's errors).
CACHE_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class _ClientRateThrottle(SimpleRateThrottle):
    authenticated: bool

    def get_rate(self):
        return settings.THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view):
        # A rate that cannot be counted lets the request through: a cache
        # outage must not turn every answer (/health's own included) into an
        # error; the outage is reported where it matters (/health, the broker).
        try:
            return super().allow_request(request, view)
        except CACHE_UNREACHABLE as exc:
            logger.warning("rate limit %s not applied: the cache is unreachable (%s)", self.scope, exc)
            return True

    def get_cache_key(self, request, view):
        user = getattr(request, "user", None)
        is_authenticated = bool(user is not None and user.is_authenticated)
        if is_authenticated != self.authenticated:
            return None  # the other throttle of the pair counts this client
        ident = f"user-{user.pk}" if is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class ApiAnonThrottle(_ClientRateThrottle):
    scope = "api_anon"
    authenticated = False


class ApiUserThrottle(_ClientRateThrottle):
    scope = "api_user"
    authenticated = True


class InferenceAnonThrottle(_ClientRateThrottle):
    scope = "inference_anon"
    authenticated = False


class InferenceUserThrottle(_ClientRateThrottle):
    scope = "inference_user"
    authenticated = True
