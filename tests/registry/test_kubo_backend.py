"""The `kubo` pinning backend against an in-process fake of Kubo's RPC API.

No Kubo daemon can run on this machine (no container engine, no network to
fetch Kubo), so `FakeKubo` stands in for one behind `httpx.MockTransport`.
It implements just enough of the RPC to exercise the client honestly:
`add` parses the real multipart body and computes real CIDs with aleph-cid
(`compute_cid` per file, `hash_folder(..., cid_version=0)` for
wrap-with-directory, CIDv1 raw leaves when a request leaves the node's
default on a node configured for CIDv1), `pin/ls`, `files/stat`, `ls`,
`cat` with offset/length, `version`, Kubo's JSON error body, 405 on GET,
and a read without `offline=true` of a CID the node lacks hangs (times out)
the way a real node searching the network would.

What these tests cover: the shape of every request (POST, endpoint,
parameters, multipart parts and their file names), parsing of Kubo's
NDJSON and JSON responses, CID verification of every file and of the
wrapping directory, the mapping of Kubo errors, HTTP errors and transport
errors onto PinError / ObjectNotFound, streaming uploads from disk, and
streamed, ranged, closable reads.

What they do not cover: a real daemon's behaviour (its actual response
bytes, HTTP/1.1 full-duplex handling of a streamed add, trailers), the real
network (latency, resets mid-transfer beyond the simulated short body), or
differences between Kubo versions. The one real-socket test is the
connection-refused one. Run the backend against a real node before relying
on it (IPFS_BACKEND=kubo with a daemon on IPFS_API_URL).
"""

import json
import re
import socket
import tempfile
from pathlib import Path
from urllib.parse import unquote_plus

import httpx
import pytest
from aleph_cid import CidHasher, compute_cid, hash_folder

from core.ipfs.base import ObjectNotFound, PinError, StagedFile
from core.ipfs.embedded import EmbeddedStore
from core.ipfs.kubo import KuboBackend

API = "http://kubo.test:5001"


class KuboError(Exception):
    """Raised inside the fake; becomes Kubo's JSON error body with status 500."""


class ClosingStream(httpx.SyncByteStream):
    """A response body sent in fixed chunks that remembers whether it was closed."""

    def __init__(self, data: bytes, chunk: int = 100_000):
        self.data = data
        self.chunk = chunk
        self.closed = False

    def __iter__(self):
        for offset in range(0, len(self.data), self.chunk):
            yield self.data[offset : offset + self.chunk]

    def close(self) -> None:
        self.closed = True


class RecordingTransport(httpx.MockTransport):
    """MockTransport that first notes the sizes of the request body's chunks as sent."""

    def __init__(self, fake: "FakeKubo"):
        super().__init__(fake.handle)
        self.fake = fake

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.fake.upload_chunk_sizes.append([len(chunk) for chunk in request.stream])
        return super().handle_request(request)


class FakeKubo:
    """Just enough of the Kubo RPC API, in process, with real CIDs."""

    def __init__(self, *, default_cid_version: int = 0):
        self.default_cid_version = default_cid_version
        self.blobs: dict[str, bytes] = {}
        self.dirs: dict[str, dict[str, str]] = {}
        self.pins: set[str] = set()
        self.requests: list[httpx.Request] = []
        self.received_files: list[tuple[str, bytes]] = []
        self.upload_chunk_sizes: list[list[int]] = []
        self.cat_streams: list[ClosingStream] = []
        self.fail_next: httpx.Response | None = None
        self.cut_cat_after: int | None = None

    def backend(self, url: str = API) -> KuboBackend:
        return KuboBackend(url, timeout=5, transport=RecordingTransport(self))

    # -- dispatch --------------------------------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method != "POST":
            return httpx.Response(405, text="405 - Method Not Allowed")
        command = request.url.path.removeprefix("/api/v0/")
        handler = {
            "add": self._add,
            "pin/ls": self._pin_ls,
            "files/stat": self._files_stat,
            "ls": self._ls,
            "cat": self._cat,
            "version": self._version,
        }.get(command)
        if handler is None:
            return httpx.Response(404, text="404 page not found")
        if self.fail_next is not None:
            response, self.fail_next = self.fail_next, None
            return response
        try:
            return handler(request)
        except KuboError as exc:
            return httpx.Response(500, json={"Message": str(exc), "Code": 0, "Type": "error"})

    def params(self, request: httpx.Request) -> httpx.QueryParams:
        return request.url.params

    # -- add -------------------------------------------------------------------
    def _add(self, request: httpx.Request) -> httpx.Response:
        params = self.params(request)
        parts = _multipart_files(request)
        self.received_files.extend(parts)
        version = int(params.get("cid-version", self.default_cid_version))
        raw_leaves = params.get("raw-leaves", "true" if version == 1 else "false") == "true"
        pin = params.get("pin", "true") == "true"
        events = []
        for name, data in parts:
            cid = _file_cid(data, version=version, raw_leaves=raw_leaves)
            self.blobs[cid] = data
            events.append({"Name": name, "Hash": cid, "Size": str(len(data))})
        if params.get("wrap-with-directory") == "true":
            if version == 0 and raw_leaves:
                raise KuboError("fake Kubo cannot build CIDv0 directories over raw leaves")
            with tempfile.TemporaryDirectory() as tmp:
                for name, data in parts:
                    (Path(tmp) / name).write_bytes(data)
                root = hash_folder(tmp, cid_version=version, follow_symlinks=False)
            self.dirs[root] = {event["Name"]: event["Hash"] for event in events}
            events.append({"Name": "", "Hash": root, "Size": "0"})
            if pin:
                self.pins.add(root)
        elif pin:
            self.pins.update(event["Hash"] for event in events)
        body = "".join(json.dumps(event) + "\n" for event in events)
        return httpx.Response(
            200, content=body.encode(), headers={"Content-Type": "application/json", "X-Chunked-Output": "1"}
        )

    # -- reads -----------------------------------------------------------------
    def _resolve(self, request: httpx.Request) -> tuple[str, str]:
        """Return (cid, "file"|"directory") for `arg`, the way an offline node would."""
        arg = self.params(request)["arg"].removeprefix("/ipfs/")
        cid, _, subpath = arg.partition("/")
        held = cid in self.blobs or cid in self.dirs
        if not held and self.params(request).get("offline") != "true":
            raise httpx.ReadTimeout("the node went looking for the CID on the network", request=request)
        if not held:
            raise KuboError(f"block was not found locally (offline): ipld: could not find {cid}")
        if subpath:
            entries = self.dirs.get(cid)
            if entries is None or subpath not in entries:
                raise KuboError(f'no link named "{subpath}" under {cid}')
            cid = entries[subpath]
        return cid, "directory" if cid in self.dirs else "file"

    def _pin_ls(self, request: httpx.Request) -> httpx.Response:
        arg = self.params(request)["arg"]
        if self.params(request).get("type") not in ("recursive", "all") or arg not in self.pins:
            raise KuboError(f"path '{arg}' is not pinned")
        return httpx.Response(200, json={"Keys": {arg: {"Type": "recursive", "Name": ""}}})

    def _files_stat(self, request: httpx.Request) -> httpx.Response:
        cid, kind = self._resolve(request)
        if kind == "directory":
            body = {"Hash": cid, "Size": 0, "CumulativeSize": 0, "Blocks": len(self.dirs[cid]), "Type": kind}
        else:
            size = len(self.blobs[cid])
            body = {"Hash": cid, "Size": size, "CumulativeSize": size + 14, "Blocks": 0, "Type": kind}
        return httpx.Response(200, json=body)

    def _ls(self, request: httpx.Request) -> httpx.Response:
        cid, kind = self._resolve(request)
        links = []
        if kind == "directory":
            links = [
                {"Name": name, "Hash": file_cid, "Size": len(self.blobs[file_cid]), "Target": "", "Type": 2}
                for name, file_cid in self.dirs[cid].items()
            ]
        return httpx.Response(200, json={"Objects": [{"Hash": cid, "Links": links}]})

    def _cat(self, request: httpx.Request) -> httpx.Response:
        cid, kind = self._resolve(request)
        if kind == "directory":
            raise KuboError("this dag node is a directory")
        data = self.blobs[cid]
        offset = int(self.params(request).get("offset", 0))
        length = self.params(request).get("length")
        body = data[offset:] if length is None else data[offset : offset + int(length)]
        headers = {"Content-Type": "text/plain", "X-Content-Length": str(len(body))}
        if self.cut_cat_after is not None:
            body = body[: self.cut_cat_after]
        stream = ClosingStream(body)
        self.cat_streams.append(stream)
        return httpx.Response(200, stream=stream, headers=headers)

    def _version(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"Version": "0.39.0", "Commit": "", "Repo": "18", "System": "amd64/linux"})


def _file_cid(data: bytes, *, version: int, raw_leaves: bool) -> str:
    if version == 0 and not raw_leaves:
        return compute_cid(data)
    if version == 1 and raw_leaves:
        hasher = CidHasher.for_ipfs_v1_raw_leaves()
        hasher.update(data)
        return hasher.finalize()
    raise KuboError(f"fake Kubo does not import cid-version={version} raw-leaves={raw_leaves}")


def _multipart_files(request: httpx.Request) -> list[tuple[str, bytes]]:
    """The (unescaped filename, bytes) of each part, as Kubo's multipart reader sees them."""
    match = re.search(r"boundary=\"?([^\";]+)\"?", request.headers["Content-Type"])
    assert match, "add must be multipart/form-data"
    delimiter = b"--" + match.group(1).encode()
    files = []
    for raw in request.content.split(delimiter)[1:-1]:
        head, _, data = raw.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        name = re.search(rb'filename="([^"]*)"', head)
        assert name, "every part must carry a filename"
        files.append((unquote_plus(name.group(1).decode()), data.removesuffix(b"\r\n")))
    return files


@pytest.fixture
def fake() -> FakeKubo:
    return FakeKubo()


@pytest.fixture
def kubo(fake: FakeKubo) -> KuboBackend:
    backend = fake.backend()
    yield backend
    backend.close()


def _stage(folder: Path, files: dict[str, bytes]) -> list[StagedFile]:
    folder.mkdir(parents=True, exist_ok=True)
    staged = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        staged.append(StagedFile(name=name, path=folder / name, cid=compute_cid(data), size=len(data)))
    return staged


MODEL = bytes(range(256)) * 1200  # 300 KiB: more than one 256 KiB chunk, more than one upload chunk
FILES = {"model.onnx": MODEL, "tokenizer.json": b'{"vocab": {"hello": 1}}\n', "LICENSE name.txt": b"Apache-2.0\n"}


def _staged_folder(tmp_path: Path) -> tuple[list[StagedFile], str]:
    staged = _stage(tmp_path / "staging", FILES)
    return staged, hash_folder(tmp_path / "staging", cid_version=0, follow_symlinks=False)


# -- pinning ---------------------------------------------------------------------


def test_pin_directory_then_stat_and_ranged_read(kubo, fake, tmp_path):
    staged, root = _staged_folder(tmp_path)

    kubo.pin_files(staged, root_cid=root)

    assert kubo.is_pinned(root)
    info = kubo.stat(root)
    assert info.is_directory
    assert info.entries == tuple(sorted((f.name, f.cid, f.size) for f in staged))
    assert info.size == sum(len(data) for data in FILES.values())
    model = kubo.stat(root, "model.onnx")
    assert (model.cid, model.size, model.is_directory) == (compute_cid(MODEL), len(MODEL), False)
    assert b"".join(kubo.read(model.cid)) == MODEL
    assert b"".join(kubo.read(model.cid, start=1000, length=70_000)) == MODEL[1000:71_000]
    assert b"".join(kubo.read(model.cid, start=len(MODEL) - 5)) == MODEL[-5:]


def test_add_request_shape(kubo, fake, tmp_path):
    staged, root = _staged_folder(tmp_path)

    kubo.pin_files(staged, root_cid=root)

    (add,) = [r for r in fake.requests if r.url.path == "/api/v0/add"]
    params = add.url.params
    assert add.method == "POST"
    assert params["pin"] == "true"
    assert params["cid-version"] == "0"
    assert params["raw-leaves"] == "false"
    assert params["wrap-with-directory"] == "true"
    assert params["progress"] == "false"
    assert add.headers["Content-Type"].startswith("multipart/form-data")
    # The name with a space reached Kubo intact through the escaped filename.
    assert fake.received_files == list(FILES.items())


def test_every_rpc_call_is_a_post(kubo, fake, tmp_path):
    staged, root = _staged_folder(tmp_path)
    kubo.pin_files(staged, root_cid=root)
    kubo.is_pinned(root)
    kubo.stat(root)
    b"".join(kubo.read(staged[0].cid))
    kubo.version()

    assert {r.method for r in fake.requests} == {"POST"}
    assert {r.url.path for r in fake.requests} == {
        "/api/v0/add",
        "/api/v0/pin/ls",
        "/api/v0/files/stat",
        "/api/v0/ls",
        "/api/v0/cat",
        "/api/v0/version",
    }


def test_files_are_streamed_from_disk_not_loaded_whole(kubo, fake, tmp_path):
    """The upload arrives in pieces smaller than the file: httpx read it from a file object as it sent it."""
    staged = _stage(tmp_path / "staging", {"model.onnx": MODEL})

    kubo.pin_files(staged, root_cid=None)

    assert fake.received_files == [("model.onnx", MODEL)]
    (add_chunks,) = [
        sizes for r, sizes in zip(fake.requests, fake.upload_chunk_sizes, strict=True) if r.url.path == "/api/v0/add"
    ]
    assert sum(add_chunks) > len(MODEL)
    assert max(add_chunks) < len(MODEL)


def test_single_files_without_root_are_each_pinned(kubo, fake, tmp_path):
    staged = _stage(tmp_path / "staging", {"a.bin": b"alpha", "b.bin": b"beta"})

    kubo.pin_files(staged, root_cid=None)

    (add,) = [r for r in fake.requests if r.url.path == "/api/v0/add"]
    assert "wrap-with-directory" not in add.url.params
    assert all(kubo.is_pinned(f.cid) for f in staged)


def test_files_inside_a_pinned_directory_are_not_pinned_on_their_own(kubo, tmp_path):
    staged, root = _staged_folder(tmp_path)
    kubo.pin_files(staged, root_cid=root)

    assert kubo.is_pinned(root)
    assert not kubo.is_pinned(staged[0].cid)


def test_node_defaulting_to_cidv1_still_yields_our_cidv0(tmp_path):
    fake = FakeKubo(default_cid_version=1)
    staged, root = _staged_folder(tmp_path)

    fake.backend().pin_files(staged, root_cid=root)

    assert root in fake.pins


def test_pin_bytes_checks_the_cid(kubo, fake):
    document = b'{"name":"minilm","version":"1.0.0"}'

    kubo.pin_bytes(document, cid=compute_cid(document))

    assert kubo.is_pinned(compute_cid(document))
    assert b"".join(kubo.read(compute_cid(document))) == document
    with pytest.raises(PinError, match="document CID mismatch"):
        kubo.pin_bytes(document + b" ", cid=compute_cid(document))


def test_changed_staged_bytes_raise_pin_error(kubo, tmp_path):
    staged = _stage(tmp_path / "staging", {"model.onnx": MODEL})
    staged[0].path.write_bytes(MODEL[:-1] + b"\x00")

    with pytest.raises(PinError, match=rf"model.onnx: Kubo computed \S+, expected {staged[0].cid}"):
        kubo.pin_files(staged, root_cid=None)


def test_wrong_root_cid_raises_pin_error(kubo, tmp_path):
    staged, _root = _staged_folder(tmp_path)
    wrong_root = compute_cid(b"some other directory")

    with pytest.raises(PinError, match="directory CID mismatch"):
        kubo.pin_files(staged, root_cid=wrong_root)


def test_missing_staged_file_raises_before_any_request(kubo, fake, tmp_path):
    staged = _stage(tmp_path / "staging", {"model.onnx": MODEL})
    staged[0].path.unlink()

    with pytest.raises(PinError, match="staged bytes for model.onnx"):
        kubo.pin_files(staged, root_cid=None)
    assert fake.requests == []


def test_nested_file_names_are_refused(kubo, tmp_path):
    staged = _stage(tmp_path / "staging", {"model.onnx": MODEL})
    nested = [StagedFile(name="sub/model.onnx", path=staged[0].path, cid=staged[0].cid, size=staged[0].size)]

    with pytest.raises(PinError, match="not a plain file name"):
        kubo.pin_files(nested, root_cid=None)


def test_kubo_error_json_becomes_pin_error_with_its_message(kubo, fake, tmp_path):
    staged = _stage(tmp_path / "staging", {"model.onnx": MODEL})
    fake.fail_next = httpx.Response(
        500, json={"Message": "write /data/ipfs/blocks: no space left on device", "Code": 0, "Type": "error"}
    )

    with pytest.raises(PinError, match="no space left on device"):
        kubo.pin_files(staged, root_cid=None)


def test_error_event_inside_the_add_stream_becomes_pin_error(kubo, fake, tmp_path):
    staged = _stage(tmp_path / "staging", {"model.onnx": MODEL})
    fake.fail_next = httpx.Response(
        200,
        content=b'{"Message":"context canceled","Code":0,"Type":"error"}\n',
        headers={"X-Chunked-Output": "1"},
    )

    with pytest.raises(PinError, match="context canceled"):
        kubo.pin_files(staged, root_cid=None)


def test_add_stream_without_the_file_raises_pin_error(kubo, fake, tmp_path):
    staged = _stage(tmp_path / "staging", {"model.onnx": MODEL})
    fake.fail_next = httpx.Response(200, content=b"", headers={"X-Chunked-Output": "1"})

    with pytest.raises(PinError, match="did not report a CID for model.onnx"):
        kubo.pin_files(staged, root_cid=None)


def test_non_kubo_http_error_becomes_pin_error(kubo, fake, tmp_path):
    """A proxy or a refused credential answers without Kubo's JSON: still a PinError, never ObjectNotFound."""
    document = b"{}"
    fake.fail_next = httpx.Response(403, text="403 - Forbidden")
    with pytest.raises(PinError, match="HTTP 403"):
        kubo.pin_bytes(document, cid=compute_cid(document))

    fake.fail_next = httpx.Response(404, text="404 page not found")
    with pytest.raises(PinError, match="HTTP 404"):
        kubo.stat(compute_cid(document))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_becomes_pin_error():
    """A real httpx client against a closed localhost port: no mock involved."""
    backend = KuboBackend(f"http://127.0.0.1:{_closed_port()}", timeout=2)
    document = b"{}"
    try:
        with pytest.raises(PinError, match="cannot reach Kubo"):
            backend.is_pinned(compute_cid(document))
        with pytest.raises(PinError, match="cannot reach Kubo"):
            backend.pin_bytes(document, cid=compute_cid(document))
        with pytest.raises(PinError, match="cannot reach Kubo"):
            backend.read(compute_cid(document))
    finally:
        backend.close()


def test_credentials_in_the_url_are_sent_but_never_echoed(fake):
    backend = fake.backend("http://registry:s3cret@kubo.test:5001")
    assert backend.version() == "0.39.0"
    assert fake.requests[-1].headers["Authorization"].startswith("Basic ")

    refused = KuboBackend(f"http://registry:s3cret@127.0.0.1:{_closed_port()}", timeout=2)
    with pytest.raises(PinError) as caught:
        refused.version()
    refused.close()
    assert "s3cret" not in str(caught.value)


# -- reading ---------------------------------------------------------------------


def test_not_pinned_is_false(kubo):
    assert kubo.is_pinned(compute_cid(b"never added")) is False


def test_unknown_cid_is_object_not_found(kubo, fake, tmp_path):
    staged, root = _staged_folder(tmp_path)
    kubo.pin_files(staged, root_cid=root)
    unknown = compute_cid(b"never added")

    with pytest.raises(ObjectNotFound, match="could not find"):
        kubo.stat(unknown)
    with pytest.raises(ObjectNotFound, match="no link named"):
        kubo.stat(root, "missing.bin")
    with pytest.raises(ObjectNotFound):
        kubo.read(unknown)
    with pytest.raises(ObjectNotFound, match="is a directory"):
        kubo.read(root)
    stat_calls = [r for r in fake.requests if r.url.path in ("/api/v0/files/stat", "/api/v0/cat")]
    assert all(r.url.params["offline"] == "true" for r in stat_calls)


def test_read_streams_in_chunks_and_closes_the_response(kubo, fake):
    kubo.pin_bytes(MODEL, cid=compute_cid(MODEL))

    chunks = list(kubo.read(compute_cid(MODEL)))

    assert len(chunks) > 1
    assert b"".join(chunks) == MODEL
    assert fake.cat_streams[-1].closed


def test_abandoned_read_closes_the_response(kubo, fake):
    kubo.pin_bytes(MODEL, cid=compute_cid(MODEL))

    reader = kubo.read(compute_cid(MODEL), start=10)
    first = next(reader)
    reader.close()

    assert first == MODEL[10 : 10 + len(first)]
    assert fake.cat_streams[-1].closed


def test_read_closed_before_its_first_chunk_closes_the_response(kubo, fake):
    kubo.pin_bytes(MODEL, cid=compute_cid(MODEL))

    kubo.read(compute_cid(MODEL)).close()

    assert fake.cat_streams[-1].closed


def test_read_cut_short_raises_pin_error(kubo, fake):
    kubo.pin_bytes(MODEL, cid=compute_cid(MODEL))
    fake.cut_cat_after = 1000

    with pytest.raises(PinError, match=f"stopped at 1000 of {len(MODEL)} bytes"):
        b"".join(kubo.read(compute_cid(MODEL)))


def test_negative_range_is_refused(kubo):
    with pytest.raises(ValueError):
        kubo.read(compute_cid(b"x"), start=-1)


def test_stat_matches_the_embedded_store(kubo, tmp_path):
    """Both backends describe the same pinned folder identically."""
    staged, root = _staged_folder(tmp_path)
    embedded = EmbeddedStore(tmp_path / "store")
    embedded.pin_files(staged, root_cid=root)
    kubo.pin_files(staged, root_cid=root)

    assert kubo.stat(root) == embedded.stat(root)
    assert kubo.stat(root, "tokenizer.json") == embedded.stat(root, "tokenizer.json")
    ranged = {"start": 123, "length": 4567}
    assert b"".join(kubo.read(staged[0].cid, **ranged)) == b"".join(embedded.read(staged[0].cid, **ranged))


def test_api_url_may_name_the_api_path(fake):
    backend = fake.backend(API + "/api/v0/")
    assert backend.version() == "0.39.0"
    assert fake.requests[-1].url.path == "/api/v0/version"


def test_factory_builds_the_kubo_backend(settings):
    from core.ipfs import pinning_backend

    settings.IPFS_BACKEND = "kubo"
    settings.IPFS_API_URL = "http://127.0.0.1:5001"
    backend = pinning_backend()

    assert isinstance(backend, KuboBackend)
    assert backend.name == "kubo"


def test_unparseable_stream_line_is_a_pin_error(kubo, fake, tmp_path):
    staged = _stage(tmp_path / "staging", {"a.bin": b"alpha"})
    fake.fail_next = httpx.Response(200, content=b"<html>proxy</html>\n")

    with pytest.raises(PinError, match="not JSON"):
        kubo.pin_files(staged, root_cid=None)
