import hashlib
import json

import pytest
from aleph_cid import compute_cid
from django.core.files.uploadedfile import SimpleUploadedFile

from registry.models import ApprovedSet, Manifest
from registry.services import manifest_approve, manifest_retire
from tests.registry.factories import TOKENIZER_JSON, onnx_model_bytes, register_test_manifest

pytestmark = pytest.mark.django_db

ROLES = [None, "contributor", "operator", "node"]


def _upload(name="uploaded", version="1", weights=None, **overrides):
    data = {
        "model_name": name,
        "version": version,
        "kind": "embedding",
        "format": "onnx",
        "license": "MIT",
        "quantization": "int8",
        "files": [
            SimpleUploadedFile("model.onnx", onnx_model_bytes(name) if weights is None else weights),
            SimpleUploadedFile("tokenizer.json", TOKENIZER_JSON),
        ],
    }
    data.update(overrides)
    return data


def test_list_filters_and_paginates(api_client):
    register_test_manifest(name="e1", kind="embedding")
    register_test_manifest(name="g1", kind="generative", fmt="gguf")
    response = api_client.get("/api/v1/manifests/")
    assert response.status_code == 200
    assert response.json()["count"] == 2
    only_generative = api_client.get("/api/v1/manifests/", {"kind": "generative"}).json()
    assert [m["model_name"] for m in only_generative["results"]] == ["g1"]
    assert api_client.get("/api/v1/manifests/", {"format": "onnx"}).json()["count"] == 1
    assert api_client.get("/api/v1/manifests/", {"model_name": "e1"}).json()["count"] == 1
    assert api_client.get("/api/v1/manifests/", {"status": "approved"}).json()["count"] == 0


def test_bad_filter_is_a_400_naming_the_field(api_client):
    response = api_client.get("/api/v1/manifests/", {"kind": "vision"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert "kind" in body["error"]["fields"]


def test_detail_has_the_manifest_format(api_client):
    manifest = register_test_manifest(name="detail")
    body = api_client.get(f"/api/v1/manifests/{manifest.pk}/").json()
    for field in (
        "model_name",
        "version",
        "kind",
        "format",
        "quantization",
        "size_bytes",
        "sha256",
        "ipfs_cid",
        "license",
        "approved_by_governance",
        "adoption_date",
        "metrics",
        "files",
        "status",
        "source",
        "pin_status",
        "manifest_cid",
    ):
        assert field in body
    assert body["metrics"] == {
        "avg_tokens_per_sec": None,
        "memory_usage_mb": None,
        "quality_score": None,
        "latency_ms": {"p50": None, "p95": None, "p99": None},
    }
    assert {f["path"] for f in body["files"]} == {"model.onnx", "tokenizer.json"}
    missing = api_client.get("/api/v1/manifests/999999/")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_operator_upload_registers_and_a_worker_pins_it(client_as, celery_worker):
    weights = onnx_model_bytes(doc=b"real-weights" * 5000)
    response = client_as("operator").post("/api/v1/manifests/", _upload(weights=weights), format="multipart")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["sha256"] == hashlib.sha256(weights).hexdigest()
    assert {f["cid"] for f in body["files"]} >= {compute_cid(weights)}
    manifest = Manifest.objects.get(pk=body["id"])
    _wait_for(lambda: Manifest.objects.get(pk=manifest.pk).pin_status == "pinned")
    # Same bytes again: idempotent, 200 with the same manifest.
    again = client_as("operator").post("/api/v1/manifests/", _upload(weights=weights), format="multipart")
    assert again.status_code == 200
    assert again.json()["id"] == body["id"]


def _wait_for(condition, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


def test_upload_with_changed_bytes_under_same_version_is_409(client_as):
    operator = client_as("operator")
    assert (
        operator.post("/api/v1/manifests/", _upload(weights=onnx_model_bytes("a")), format="multipart").status_code
        == 201
    )
    response = operator.post("/api/v1/manifests/", _upload(weights=onnx_model_bytes("b")), format="multipart")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "manifest_identity_immutable"
    assert Manifest.objects.count() == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kind": "vision"}, "kind"),
        ({"format": "pt"}, "format"),
        ({"files": []}, "files"),
        ({"model_name": "has spaces"}, "model_name"),
        ({"files": [SimpleUploadedFile("model.onnx", b"x")]}, "files"),
    ],
)
def test_bad_upload_is_a_400_with_field_errors_and_writes_nothing(client_as, overrides, field):
    response = client_as("operator").post("/api/v1/manifests/", _upload(**overrides), format="multipart")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert Manifest.objects.count() == 0


def test_oversized_upload_is_a_413(client_as, settings):
    settings.REGISTRY_UPLOAD_MAX_BYTES = 1000
    response = client_as("operator").post("/api/v1/manifests/", _upload(weights=b"x" * 5000), format="multipart")
    assert response.status_code == 413
    assert "REGISTRY_UPLOAD_MAX_BYTES" in response.json()["error"]["message"]
    assert Manifest.objects.count() == 0


@pytest.mark.parametrize("role", ROLES)
def test_permission_matrix_for_upload(client_as, role):
    response = client_as(role).post("/api/v1/manifests/", _upload(name=f"perm-{role}"), format="multipart")
    expected = {None: 401, "contributor": 403, "operator": 201, "node": 403}[role]
    assert response.status_code == expected, response.content
    if expected != 201:
        assert response.json()["error"]["type"] in {"authentication_error", "permission_error"}
        assert Manifest.objects.count() == 0


@pytest.mark.parametrize("role", ROLES)
def test_permission_matrix_for_repin(client_as, role):
    manifest = register_test_manifest(name="repin")
    response = client_as(role).post(f"/api/v1/manifests/{manifest.pk}/pin/")
    expected = {None: 401, "contributor": 403, "operator": 202, "node": 403}[role]
    assert response.status_code == expected


@pytest.mark.parametrize("role", ROLES)
def test_reads_need_no_credentials(client_as, role):
    manifest = register_test_manifest(name="read")
    client = client_as(role)
    assert client.get("/api/v1/manifests/").status_code == 200
    assert client.get(f"/api/v1/manifests/{manifest.pk}/").status_code == 200
    assert client.get("/api/v1/approved/").status_code == 200


def test_approved_set_etag_304_and_version_bump(api_client):
    empty = api_client.get("/api/v1/approved/")
    assert empty.json() == {"version": 0, "generated_at": None, "cid": None, "manifests": []}

    manifest = register_test_manifest(name="adopted")
    manifest_approve(manifest=manifest, actor=None, reason="test")
    first = api_client.get("/api/v1/approved/")
    assert first.status_code == 200
    body = first.json()
    assert body["version"] == 1
    assert [m["model_name"] for m in body["manifests"]] == ["adopted"]
    assert first["ETag"] == f'"{body["cid"]}"'
    # The body's document is exactly the pinned bytes: its CID checks out.
    stored = ApprovedSet.objects.get(version=1)
    assert compute_cid(bytes(stored.document)) == body["cid"]
    assert {k: v for k, v in body.items() if k != "cid"} == json.loads(bytes(stored.document))

    not_modified = api_client.get("/api/v1/approved/", HTTP_IF_NONE_MATCH=first["ETag"])
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified["ETag"] == first["ETag"]

    manifest_retire(manifest=manifest, actor=None, reason="test")
    changed = api_client.get("/api/v1/approved/", HTTP_IF_NONE_MATCH=first["ETag"])
    assert changed.status_code == 200
    assert changed.json()["version"] == 2
    assert changed["ETag"] != first["ETag"]


def test_error_shape_for_unknown_api_route(api_client):
    response = api_client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_openapi_schema_lists_registry_endpoints(api_client):
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for route in ("/api/v1/manifests/", "/api/v1/manifests/{manifest_id}/", "/api/v1/approved/"):
        assert route in paths
