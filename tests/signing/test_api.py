"""The signing API: root metadata at /api/v1/keys/, the signed set with ETag/304, its history."""

import datetime as dt
import json

import pytest
from aleph_cid import compute_cid
from django.test import Client
from django.utils import timezone

from conclave_node.metadata import parse_root, verify_new_root
from signing.models import SignedApprovedSet
from signing.services import SigningUnavailable, root_ensure, signed_set_refresh
from tests.node.conftest import approve

pytestmark = pytest.mark.django_db

SIGNED = "/api/v1/approved/signed/"


def test_keys_publishes_root_with_etag_and_304(platform_keys):
    client = Client()
    response = client.get("/api/v1/keys/")
    assert response.status_code == 200
    root = parse_root(response.json())
    assert root.role("approved_set").keyids == {k.keyid for k in platform_keys.online}
    assert response["ETag"] == f'"{compute_cid(response.content)}"'
    assert response["X-Ipfs-Cid"] == compute_cid(response.content)
    assert client.get("/api/v1/keys/", HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304


def test_every_root_version_stays_available_for_the_chain(settings, platform_keys):
    client = Client()
    v1 = client.get("/api/v1/keys/1.root.json").json()
    settings.SIGNING_ONLINE_KEYS = settings.SIGNING_ONLINE_KEYS[:2]
    root_ensure()
    v2 = client.get("/api/v1/keys/2.root.json").json()
    assert verify_new_root(parse_root(v1), v2).version == 2
    assert client.get("/api/v1/keys/").json() == v2
    missing = client.get("/api/v1/keys/3.root.json")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "root_not_found"


def test_signed_set_is_404_until_a_set_is_published():
    response = Client().get(SIGNED)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "no_approved_set"


def test_signed_set_serves_its_pinned_bytes_with_etag_304_and_changes_with_the_set():
    approve("served", size=1000)
    client = Client()
    first = client.get(SIGNED)
    assert first.status_code == 200
    assert first["ETag"] == f'"{compute_cid(first.content)}"'
    assert json.loads(first.content)["signed"]["approved_set"]["version"] == 1
    not_modified = client.get(SIGNED, HTTP_IF_NONE_MATCH=first["ETag"])
    assert not_modified.status_code == 304
    assert not_modified.content == b""

    approve("second", size=1000)
    changed = client.get(SIGNED, HTTP_IF_NONE_MATCH=first["ETag"])
    assert changed.status_code == 200
    assert changed["ETag"] != first["ETag"]
    assert json.loads(changed.content)["signed"]["version"] == 2

    history = client.get("/api/v1/approved/signed/history/").json()
    assert [(row["version"], row["approved_set_version"], row["cid"]) for row in history["results"]] == [
        (2, 2, compute_cid(changed.content)),
        (1, 1, compute_cid(first.content)),
    ]


def test_unsignable_sets_keep_the_last_valid_signing_served_and_503_once_it_expires(settings, platform_keys):
    approve("guarded", size=1000)
    served = Client().get(SIGNED)
    assert served.status_code == 200
    # Root keys offline, and an online key swapped in that root never listed: nothing new can be signed.
    settings.SIGNING_ROOT_KEYS = []
    settings.SIGNING_ONLINE_KEYS = [str(platform_keys.new_key("rogue").path), *settings.SIGNING_ONLINE_KEYS[1:]]
    approve("needs-a-new-signing", size=1000)
    with pytest.raises(SigningUnavailable, match="previous root keys"):
        signed_set_refresh()
    still = Client().get(SIGNED)
    assert still.status_code == 200
    assert still.content == served.content

    SignedApprovedSet.objects.update(expires=timezone.now() - dt.timedelta(seconds=1))
    response = Client().get(SIGNED)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "signing_root_unsigned"
    assert "previous root keys" in response.json()["error"]["message"]
