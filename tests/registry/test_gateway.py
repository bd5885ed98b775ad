import hashlib

import pytest
from aleph_cid import CidHasher
from django.test import Client

from tests.registry.factories import register_test_manifest

pytestmark = pytest.mark.django_db

HELLO_CID = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
# `ipfs cid base32 QmT78zSu...`: the same dag-pb sha2-256 multihash as a CIDv1.
HELLO_CID_V1 = "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby"


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.fixture
def hello_manifest():
    return register_test_manifest(name="hello", kind="generative", fmt="gguf", content=b"hello world\n")


def test_served_bytes_verify_against_cid_and_sha256():
    content = bytes(range(256)) * 4000  # ~1 MB: several UnixFS chunks
    manifest = register_test_manifest(name="big", kind="generative", fmt="gguf", content=content)
    response = Client().get(f"/ipfs/{manifest.ipfs_cid}")
    assert response.status_code == 200
    served = _body(response)
    assert hashlib.sha256(served).hexdigest() == manifest.sha256
    hasher = CidHasher.for_expected(manifest.ipfs_cid)
    hasher.update(served)
    assert hasher.finalize() == manifest.ipfs_cid
    assert response["Content-Length"] == str(len(content))
    assert response["ETag"] == f'"{manifest.ipfs_cid}"'
    assert response["Accept-Ranges"] == "bytes"


def test_known_vector_served_under_kubo_cid(hello_manifest):
    assert hello_manifest.ipfs_cid == HELLO_CID
    assert _body(Client().get(f"/ipfs/{HELLO_CID}")) == b"hello world\n"


def test_directory_paths_resolve_to_files():
    manifest = register_test_manifest(name="dir", content=b"weights")
    client = Client()
    listing = client.get(f"/ipfs/{manifest.ipfs_cid}").json()
    assert {entry["name"] for entry in listing["entries"]} == {"model.onnx", "tokenizer.json"}
    weights = _body(client.get(f"/ipfs/{manifest.ipfs_cid}/model.onnx"))
    assert weights == b"weights"
    tokenizer = client.get(f"/ipfs/{manifest.ipfs_cid}/tokenizer.json")
    assert tokenizer["Content-Type"] == "application/json"
    assert client.get(f"/ipfs/{manifest.ipfs_cid}/missing.bin").status_code == 404


@pytest.mark.parametrize(
    ("header", "status", "expected", "content_range"),
    [
        ("bytes=0-4", 206, b"hello", "bytes 0-4/12"),
        ("bytes=6-", 206, b"world\n", "bytes 6-11/12"),
        ("bytes=-6", 206, b"world\n", "bytes 6-11/12"),
        ("bytes=6-100", 206, b"world\n", "bytes 6-11/12"),
        ("bytes=0-1,4-5", 200, b"hello world\n", None),
    ],
)
def test_range_requests_resume_downloads(hello_manifest, header, status, expected, content_range):
    response = Client().get(f"/ipfs/{HELLO_CID}", HTTP_RANGE=header)
    assert response.status_code == status
    assert _body(response) == expected
    assert response["Content-Length"] == str(len(expected))
    if content_range:
        assert response["Content-Range"] == content_range


@pytest.mark.parametrize("header", ["bytes=5-2", "bytes=11-0"])
def test_an_invalid_range_is_ignored_and_the_whole_file_sent(hello_manifest, header):
    # RFC 9110 14.1.1: last-pos below first-pos makes the range-spec invalid; 14.2: ignore it.
    response = Client().get(f"/ipfs/{HELLO_CID}", HTTP_RANGE=header)
    assert response.status_code == 200
    assert _body(response) == b"hello world\n"
    assert not response.has_header("Content-Range")


def test_the_cidv1_of_a_pinned_cidv0_serves_the_same_bytes(hello_manifest):
    response = Client().get(f"/ipfs/{HELLO_CID_V1}")
    assert response.status_code == 200
    assert _body(response) == b"hello world\n"


def test_a_cidv1_of_another_codec_is_not_taken_for_the_cidv0(hello_manifest):
    # Raw leaves (codec 0x55) of the same bytes: another object, not pinned here.
    response = Client().get("/ipfs/bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4")
    assert response.status_code == 404


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_writes_to_the_gateway_are_a_json_405(hello_manifest, method):
    client = Client(enforce_csrf_checks=True)
    response = getattr(client, method)(f"/ipfs/{HELLO_CID}", b"x", content_type="application/octet-stream")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert set(response["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_unsatisfiable_range_is_416(hello_manifest):
    response = Client().get(f"/ipfs/{HELLO_CID}", HTTP_RANGE="bytes=50-60")
    assert response.status_code == 416
    assert response["Content-Range"] == "bytes */12"


def test_if_range_with_another_etag_gets_the_whole_file(hello_manifest):
    response = Client().get(f"/ipfs/{HELLO_CID}", HTTP_RANGE="bytes=0-4", HTTP_IF_RANGE='"QmOther"')
    assert response.status_code == 200
    assert _body(response) == b"hello world\n"


def test_if_none_match_is_304(hello_manifest):
    response = Client().get(f"/ipfs/{HELLO_CID}", HTTP_IF_NONE_MATCH=f'"{HELLO_CID}"')
    assert response.status_code == 304


def test_head_sends_headers_only(hello_manifest):
    response = Client().head(f"/ipfs/{HELLO_CID}")
    assert response.status_code == 200
    assert response["Content-Length"] == "12"
    assert response.content == b""


@pytest.mark.parametrize("bad", ["hello", "Qm123", "bafyNOTBASE32!", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5O0"])
def test_malformed_cid_is_400(bad):
    response = Client().get(f"/ipfs/{bad}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cid"


def test_unknown_cid_is_404():
    response = Client().get(f"/ipfs/{HELLO_CID}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_pinned_files_are_sandboxed_and_active_types_are_downloads(tmp_path):
    from registry.models import FileRole
    from registry.services import manifest_register
    from registry.staging import FileSource
    from tests.registry.factories import model_files

    page = tmp_path / "x.html"
    page.write_bytes(b"<script>alert(document.cookie)</script>")
    svg = tmp_path / "x.svg"
    svg.write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    files = model_files(fmt="onnx", content=b"weights")
    manifest, _ = manifest_register(
        model_name="pages",
        version="1",
        kind="embedding",
        fmt="onnx",
        license="MIT",
        files=[
            *files,
            FileSource.single("x.html", FileRole.AUXILIARY, page),
            FileSource.single("x.svg", FileRole.AUXILIARY, svg),
        ],
        source={},
        pin="sync",
        formats_check=False,
    )
    client = Client()
    for name in ("x.html", "x.svg", "model.onnx"):
        for response in (
            client.get(f"/ipfs/{manifest.ipfs_cid}/{name}"),
            client.head(f"/ipfs/{manifest.ipfs_cid}/{name}"),
        ):
            assert response["Content-Type"] == "application/octet-stream", name
            assert response["Content-Disposition"] == f'attachment; filename="{name}"'
            assert response["Content-Security-Policy"].startswith("sandbox")
            assert response["X-Content-Type-Options"] == "nosniff"
    tokenizer = client.get(f"/ipfs/{manifest.ipfs_cid}/tokenizer.json")
    assert tokenizer["Content-Type"] == "application/json"
    assert tokenizer["Content-Security-Policy"].startswith("sandbox")
    assert not tokenizer.has_header("Content-Disposition")


def test_html_pages_carry_the_content_security_policy(settings):
    client = Client()
    for path in ("/accounts/login/", "/governance/", "/audit/", "/dashboards/"):
        response = client.get(path)
        assert response["Content-Security-Policy"] == settings.CONTENT_SECURITY_POLICY, path
    assert "'unsafe-inline'" not in settings.CONTENT_SECURITY_POLICY
