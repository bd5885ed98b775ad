"""The `kubo` pinning backend: a Kubo node driven through its RPC API over HTTP.

The RPC API (port 5001) is admin-level: whoever reaches it can rewrite the
node's config and delete its data. Keep it bound to localhost or a private
network, protect it with Kubo's `API.Authorizations` (credentials ride in
IPFS_API_URL: `http://user:password@host:5001`), and never expose or proxy it
publicly; nodes and browsers read content through the registry's API or an
IPFS gateway instead.

Every call is a POST: Kubo answers GET on /api/v0 with 405. Adds spell out
Kubo's long-standing import defaults (CIDv0, no raw leaves, 256 KiB chunks,
sha2-256) so a node whose `Import.*` config differs still produces the CIDs
aleph-cid computed at registration, and every CID Kubo reports is checked.
Reads pass `offline=true`: a CID the node does not hold fails at once instead
of being searched for on the network.
"""

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import quote

import httpx

from core.ipfs.base import ObjectInfo, ObjectNotFound, PinError, StagedFile

CHUNK = 256 * 1024

_ADD_PARAMS = {
    "pin": "true",
    "cid-version": "0",
    "raw-leaves": "false",
    "chunker": "size-262144",
    "hash": "sha2-256",
    "progress": "false",
}


class KuboBackend:
    """Pins into, and reads from, one Kubo node; one connection pool per instance."""

    name = "kubo"

    def __init__(self, api_url: str, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None):
        url = api_url.rstrip("/")
        if url.endswith("/api/v0"):
            url = url[: -len("/api/v0")]
        # Messages name the node without the credentials its URL may carry.
        self.api_url = str(httpx.URL(url).copy_with(username=None, password=None))
        self._client = httpx.Client(base_url=url, timeout=httpx.Timeout(timeout), transport=transport)

    def close(self) -> None:
        self._client.close()

    # -- writing -------------------------------------------------------------
    def pin_files(self, files: list[StagedFile], *, root_cid: str | None) -> None:
        if not files:
            if root_cid is not None:
                raise PinError(f"cannot pin directory {root_cid}: no files given")
            return
        names = [staged.name for staged in files]
        for name in names:
            if not name or "/" in name or name in {".", ".."}:
                raise PinError(f"{name!r} is not a plain file name; manifests hold flat folders")
        if len(set(names)) != len(names):
            raise PinError("two staged files share a name")
        params = dict(_ADD_PARAMS)
        if root_cid is not None:
            params["wrap-with-directory"] = "true"
        with ExitStack() as stack:
            parts = []
            for staged in files:
                try:
                    handle = stack.enter_context(open(staged.path, "rb"))
                except FileNotFoundError as exc:
                    raise PinError(f"staged bytes for {staged.name} ({staged.cid}) are missing") from exc
                # Kubo URL-unescapes part filenames; escaping keeps any name intact.
                parts.append(("file", (quote(staged.name, safe=""), handle, "application/octet-stream")))
            added = self._add(params, parts)
        for staged in files:
            reported = added.get(staged.name)
            if reported is None:
                raise PinError(f"Kubo did not report a CID for {staged.name}; the add was cut short")
            if reported != staged.cid:
                raise PinError(
                    f"{staged.name}: Kubo computed {reported}, expected {staged.cid} "
                    "(the staged bytes changed, or the node imports with other settings)"
                )
        if root_cid is not None:
            reported = added.get("")
            if reported != root_cid:
                raise PinError(f"directory CID mismatch: Kubo computed {reported}, expected {root_cid}")

    def pin_bytes(self, data: bytes, *, cid: str) -> None:
        added = self._add(dict(_ADD_PARAMS), [("file", (cid, data, "application/octet-stream"))])
        reported = added.get(cid)
        if reported != cid:
            raise PinError(f"document CID mismatch: expected {cid}, Kubo computed {reported}")

    def _add(self, params: dict[str, str], parts: list) -> dict[str, str]:
        """POST /api/v0/add and return {name: CID} from its NDJSON events."""
        added: dict[str, str] = {}
        try:
            with self._client.stream("POST", "/api/v0/add", params=params, files=parts) as response:
                if response.status_code != 200:
                    response.read()
                    raise PinError(f"Kubo refused the add: {_kubo_message(response)}")
                for line in response.iter_lines():
                    event = _parse_line(line)
                    if event is None:
                        continue
                    if event.get("Type") == "error":
                        raise PinError(f"Kubo failed during the add: {event.get('Message', event)}")
                    if "Hash" in event:
                        added[event.get("Name", "")] = event["Hash"]
        except httpx.HTTPError as exc:
            raise self._unreachable("add", exc) from exc
        return added

    # -- reading -------------------------------------------------------------
    def is_pinned(self, cid: str) -> bool:
        response = self._post("pin/ls", {"arg": cid, "type": "recursive", "offline": "true"})
        if response.status_code == 200:
            keys = _parse_json(response).get("Keys") or {}
            return any(entry.get("Type") == "recursive" for entry in keys.values())
        message = _kubo_message(response)
        if "not pinned" in message:
            return False
        raise PinError(f"Kubo could not list the pin of {cid}: {message}")

    def stat(self, cid: str, subpath: str = "") -> ObjectInfo:
        target = f"{cid}/{subpath}" if subpath else cid
        body = self._read_json("files/stat", {"arg": f"/ipfs/{target}", "offline": "true"}, target)
        resolved = body.get("Hash", cid) if subpath else cid
        if body.get("Type") == "directory":
            entries = self._entries(resolved)
            return ObjectInfo(cid=resolved, size=sum(e[2] for e in entries), is_directory=True, entries=entries)
        return ObjectInfo(cid=resolved, size=int(body.get("Size", 0)), is_directory=False)

    def _entries(self, cid: str) -> tuple[tuple[str, str, int], ...]:
        body = self._read_json("ls", {"arg": f"/ipfs/{cid}", "offline": "true", "size": "true"}, cid)
        links = [link for obj in body.get("Objects") or [] for link in obj.get("Links") or []]
        return tuple(sorted((link["Name"], link["Hash"], int(link.get("Size", 0))) for link in links))

    def read(self, cid: str, *, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream `cid`'s bytes from `start`, at most `length` of them.

        Errors that Kubo reports before sending bytes raise here; the returned
        generator holds the HTTP stream open until it is exhausted or closed.
        """
        if start < 0 or (length is not None and length < 0):
            raise ValueError("start and length must not be negative")
        params = {"arg": f"/ipfs/{cid}", "offset": str(start), "offline": "true", "progress": "false"}
        if length is not None:
            params["length"] = str(length)
        request = self._client.build_request("POST", "/api/v0/cat", params=params)
        try:
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unreachable("cat", exc) from exc
        if response.status_code != 200:
            try:
                response.read()
                raise self._read_failure(response, cid)
            finally:
                response.close()
        chunks = self._stream(response, cid)
        # Step inside the generator's try block, so that closing it, or its
        # garbage collection, releases the connection even before the first chunk.
        next(chunks)
        return chunks

    def _stream(self, response: httpx.Response, cid: str) -> Iterator[bytes]:
        expected = response.headers.get("X-Content-Length")
        received = 0
        try:
            yield b""
            for chunk in response.iter_bytes(CHUNK):
                received += len(chunk)
                yield chunk
        except httpx.HTTPError as exc:
            raise PinError(f"reading {cid} from Kubo broke off after {received} bytes: {exc}") from exc
        finally:
            response.close()
        # Kubo reports an error after the first byte only in a trailer, which
        # the client never sees; a short body is the visible symptom.
        if expected is not None and expected.isdigit() and received < int(expected):
            raise PinError(f"reading {cid} from Kubo stopped at {received} of {expected} bytes")

    def version(self) -> str:
        response = self._post("version", {})
        if response.status_code != 200:
            raise PinError(f"Kubo version call failed: {_kubo_message(response)}")
        return str(_parse_json(response).get("Version", ""))

    # -- transport -----------------------------------------------------------
    def _post(self, command: str, params: dict[str, str]) -> httpx.Response:
        try:
            return self._client.post(f"/api/v0/{command}", params=params)
        except httpx.HTTPError as exc:
            raise self._unreachable(command, exc) from exc

    def _read_json(self, command: str, params: dict[str, str], target: str) -> dict[str, Any]:
        response = self._post(command, params)
        if response.status_code != 200:
            raise self._read_failure(response, target)
        return _parse_json(response)

    def _read_failure(self, response: httpx.Response, target: str) -> Exception:
        """Kubo's own error (offline: not held, no such entry, not a file) → ObjectNotFound.

        Anything else (no Kubo error body: a proxy, a missing endpoint, a
        refused credential) is a fault of the link to the node → PinError.
        """
        message = _kubo_message(response)
        if _kubo_error(response) is not None:
            return ObjectNotFound(f"{target}: {message}")
        return PinError(f"Kubo at {self.api_url} answered {message}")

    def _unreachable(self, command: str, exc: httpx.HTTPError) -> PinError:
        return PinError(f"cannot reach Kubo at {self.api_url} ({command}): {exc or type(exc).__name__}")


def _parse_line(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise PinError(f"Kubo sent a line that is not JSON: {line[:200]!r}") from exc
    return value if isinstance(value, dict) else None


def _parse_json(response: httpx.Response) -> dict[str, Any]:
    """One JSON object, or the merge of an NDJSON stream of them."""
    merged: dict[str, Any] = {}
    for line in response.text.splitlines():
        value = _parse_line(line)
        if value is None:
            continue
        for key, item in value.items():
            if isinstance(item, list) and isinstance(merged.get(key), list):
                merged[key].extend(item)
            elif isinstance(item, dict) and isinstance(merged.get(key), dict):
                merged[key].update(item)
            else:
                merged[key] = item
    return merged


def _kubo_error(response: httpx.Response) -> dict[str, Any] | None:
    """Kubo's error body `{"Message", "Code", "Type": "error"}`, if that is what came back."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("Type") == "error" and isinstance(body.get("Message"), str):
        return body
    return None


def _kubo_message(response: httpx.Response) -> str:
    error = _kubo_error(response)
    if error is not None:
        return error["Message"]
    snippet = response.text[:200].strip()
    return f"HTTP {response.status_code}" + (f": {snippet}" if snippet else "")
