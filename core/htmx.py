"""The one place that knows how HTMX marks its requests."""

from django.http import HttpRequest


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def htmx_partial(request: HttpRequest) -> bool:
    """True when the response should be a fragment, not a whole page.

    A boosted request (hx-boost) swaps the whole body, so it gets the page.
    """
    return is_htmx(request) and request.headers.get("HX-Boosted") != "true"
