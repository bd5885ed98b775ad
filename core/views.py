"""Site-wide error pages: JSON under the API and gateway, HTML elsewhere."""

from django.views.defaults import page_not_found, server_error

from core.api.exception_handler import json_not_found, json_server_error

_JSON_PREFIXES = ("/api/", "/ipfs/", "/v1/")


def handler404(request, exception=None):
    if request.path.startswith(_JSON_PREFIXES):
        return json_not_found(request, exception)
    return page_not_found(request, exception)


def handler500(request):
    if request.path.startswith(_JSON_PREFIXES):
        return json_server_error(request)
    return server_error(request)
