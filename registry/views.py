"""The IPFS gateway: pinned bytes by CID, with ETag and byte ranges."""

import mimetypes
import re

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views import View

from core.api.conditional import etag_matches
from core.api.exception_handler import error_body
from core.ipfs import ObjectNotFound, PinError, pinning_backend
from core.ipfs.cid import InvalidCid, validate_cid

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_IMMUTABLE = "public, max-age=29030400, immutable"


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
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


class IpfsGatewayView(View):
    http_method_names = ["get", "head", "options"]

    def get(self, request, cid: str, subpath: str = ""):
        try:
            validate_cid(cid)
        except InvalidCid as exc:
            return _error(400, f"{cid!r} is not a valid CID: {exc}.", "invalid_cid", "invalid_request_error")
        subpath = subpath.strip("/")
        backend = pinning_backend()
        try:
            info = backend.stat(cid, subpath)
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
            response = _error(416, f"The range is outside the file's {info.size} bytes.", "range_not_satisfiable", "invalid_request_error")
            response["Content-Range"] = f"bytes */{info.size}"
            return response
        start, end = byte_range if byte_range else (0, info.size - 1)
        length = max(end - start + 1, 0)
        content_type = mimetypes.guess_type(subpath)[0] if subpath else None
        if request.method == "HEAD":
            response = HttpResponse(status=206 if byte_range else 200, content_type=content_type or "application/octet-stream")
        else:
            response = StreamingHttpResponse(
                backend.read(info.cid, start=start, length=length),
                status=206 if byte_range else 200,
                content_type=content_type or "application/octet-stream",
            )
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
