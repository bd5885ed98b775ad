"""The IPFS gateway: pinned bytes by CID, with ETag and byte ranges.

Served on the platform's own origin, so every file goes out sandboxed
(`Content-Security-Policy: sandbox`, `nosniff`) and, unless it is JSON or
plain text, as an `attachment` of type octet-stream: an uploaded page can
never run in a signed-in user's session.
"""

import mimetypes
import re

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from core.api.conditional import etag_matches
from core.api.exception_handler import error_body
from core.ipfs import ObjectNotFound, PinError, pinning_backend
from core.ipfs.cid import InvalidCid, cid_v0_equivalent, validate_cid

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_IMMUTABLE = "public, max-age=29030400, immutable"
# Pinned bytes are whatever someone uploaded: a browser must never run them
# as a page of this origin. Only these types are named as such (with the
# sandbox below and nosniff); anything else is a download of octet-stream.
_INLINE_TYPES = {"application/json", "text/plain"}
_SANDBOX = "sandbox; default-src 'none'"


def _error(status: int, message: str, code: str, error_type: str) -> JsonResponse:
    return JsonResponse(error_body(message, error_type=error_type, code=code), status=status)


def _parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """Return (start, end_inclusive), None to serve the whole file, or "unsatisfiable"."""
    if not header:
        return None
    match = _RANGE_RE.match(header.strip())
    if match is None:
        return None  # multiple or malformed ranges: RFC 9110 lets us send the whole file
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        return max(size - suffix, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if end < start:
        return None  # an invalid range-spec (bytes=5-2): RFC 9110 14.2 says ignore the header
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _stat(backend, cid: str, subpath: str):
    """`cid` (or `cid/subpath`) as held; a base32 CIDv1 also finds the object pinned under its CIDv0."""
    try:
        return backend.stat(cid, subpath)
    except ObjectNotFound:
        v0 = cid_v0_equivalent(cid)
        if v0 is None:
            raise
        return backend.stat(v0, subpath)


# Read-only: no state changes, so no CSRF check (which would answer a POST
# with Django's HTML 403 page instead of the 405 below).
@method_decorator(csrf_exempt, name="dispatch")
class IpfsGatewayView(View):
    http_method_names = ["get", "head", "options"]

    def http_method_not_allowed(self, request, *args, **kwargs):
        allowed = ", ".join(m.upper() for m in self._allowed_methods())
        response = _error(
            405,
            f"{request.method} is not allowed on the gateway; it serves GET and HEAD.",
            "method_not_allowed",
            "invalid_request_error",
        )
        response["Allow"] = allowed
        return response

    def get(self, request, cid: str, subpath: str = ""):
        try:
            validate_cid(cid)
        except InvalidCid as exc:
            return _error(400, f"{cid!r} is not a valid CID: {exc}.", "invalid_cid", "invalid_request_error")
        subpath = subpath.strip("/")
        backend = pinning_backend()
        try:
            info = _stat(backend, cid, subpath)
        except ObjectNotFound:
            target = f"{cid}/{subpath}" if subpath else cid
            return _error(404, f"{target} is not pinned here.", "not_found", "not_found_error")
        except PinError as exc:
            return _error(502, f"The IPFS backend failed: {exc}", "ipfs_backend_error", "upstream_error")
        etag = f'"{info.cid}"'
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            response = HttpResponse(status=304)
            response["ETag"] = etag
            return response
        if info.is_directory:
            response = JsonResponse(
                {"cid": info.cid, "entries": [{"name": n, "cid": c, "size": s} for n, c, s in info.entries]}
            )
            response["ETag"] = etag
            response["Cache-Control"] = _IMMUTABLE
            return response

        byte_range = _parse_range(request.headers.get("Range", ""), info.size)
        if request.headers.get("If-Range") and request.headers["If-Range"] != etag:
            byte_range = None
        if byte_range == "unsatisfiable":
            response = _error(
                416,
                f"The range is outside the file's {info.size} bytes.",
                "range_not_satisfiable",
                "invalid_request_error",
            )
            response["Content-Range"] = f"bytes */{info.size}"
            return response
        start, end = byte_range if byte_range else (0, info.size - 1)
        length = max(end - start + 1, 0)
        guessed = mimetypes.guess_type(subpath)[0] if subpath else None
        content_type = guessed if guessed in _INLINE_TYPES else "application/octet-stream"
        if request.method == "HEAD":
            response = HttpResponse(status=206 if byte_range else 200, content_type=content_type)
        else:
            response = StreamingHttpResponse(
                backend.read(info.cid, start=start, length=length),
                status=206 if byte_range else 200,
                content_type=content_type,
            )
        response["Content-Security-Policy"] = _SANDBOX
        response["X-Content-Type-Options"] = "nosniff"
        if content_type not in _INLINE_TYPES:
            name = (subpath.rsplit("/", 1)[-1] if subpath else cid).replace('"', "")
            response["Content-Disposition"] = f'attachment; filename="{name}"'

        response["Content-Length"] = str(length)
        response["Accept-Ranges"] = "bytes"
        response["ETag"] = etag
        response["Cache-Control"] = _IMMUTABLE
        response["X-Ipfs-Path"] = f"/ipfs/{cid}/{subpath}" if subpath else f"/ipfs/{cid}"
        if byte_range:
            response["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        return response

    def head(self, request, *args, **kwargs):
        return self.get(request, *args, **kwargs)
