"""POST /api/v1/nodes/join/ and /api/v1/nodes/heartbeat/: nodes announce where they serve and beat their load."""

import datetime as dt
import secrets

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from nodes.models import ServingNode
from nodes.selectors import serving_nodes_routable

pytestmark = pytest.mark.django_db

JOIN = "/api/v1/nodes/join/"
HEARTBEAT = "/api/v1/nodes/heartbeat/"
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


@pytest.fixture(autouse=True)
def _public_urls_only(settings):
    settings.NODES_ALLOW_PRIVATE_URLS = False
    settings.NODES_HEARTBEAT_SECONDS = 2
    settings.NODES_HEARTBEAT_TIMEOUT_SECONDS = 6


def join_body(**overrides) -> dict:
    body = {
        "url": "https://node-a.example.org:8100/",
        "secret": secrets.token_urlsafe(32),
        "models": [CID],
        "hardware": {"cores": 8, "memory_mb": 16_000, "gpu": False},
        "signed_set_version": 3,
    }
    body.update(overrides)
    return body


def test_a_node_joins_and_is_in_the_rotation_with_what_it_announced(client_as):
    body = join_body(queue_capacity=12)
    response = client_as("node", "node-a").post(JOIN, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "node": "node-a",
        "url": "https://node-a.example.org:8100",
        "heartbeat_seconds": 2,
        "heartbeat_timeout_seconds": 6,
    }
    (routable,) = serving_nodes_routable(manifest_cid=CID)
    assert (routable.name, routable.url, routable.secret) == (
        "node-a",
        "https://node-a.example.org:8100",
        body["secret"],
    )
    assert routable.models == (CID,) and routable.queue_capacity == 12 and routable.has_room
    assert routable.hardware == {"cores": 8, "memory_mb": 16_000, "gpu": False}
    assert ServingNode.objects.get().signed_set_version == 3
    assert serving_nodes_routable(manifest_cid="bafkreiother") == []


def test_joining_again_replaces_the_announcement_and_keeps_one_row(client_as):
    node = client_as("node", "node-a")
    assert node.post(JOIN, join_body(), format="json").status_code == 200
    other = "bafkreiaaaa"
    second = join_body(url="https://node-a.example.org:9000", models=[other, other])
    assert node.post(JOIN, second, format="json").status_code == 200
    assert node.post(JOIN, second, format="json").status_code == 200
    serving = ServingNode.objects.get()
    assert (serving.url, serving.models, serving.secret) == (
        "https://node-a.example.org:9000",
        [other],
        second["secret"],
    )


def test_join_and_heartbeat_need_a_node_token(client_as):
    for url, body in ((JOIN, join_body()), (HEARTBEAT, {"running": 0, "waiting": 0, "queue_capacity": 4})):
        anonymous = client_as(None).post(url, body, format="json")
        assert anonymous.status_code == 401, anonymous.content
        user = client_as("contributor").post(url, body, format="json")
        assert user.status_code == 403, user.content
    assert not ServingNode.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8100",
        "http://localhost:8100",
        "http://10.1.2.3",
        "http://192.168.0.5:8100",
        "http://[::1]:8100",
        "http://169.254.169.254/latest",
        "http://0.0.0.0:8100",
    ],
)
def test_a_loopback_or_private_url_is_refused_unless_allowed(client_as, settings, url):
    node = client_as("node", "node-a")
    response = node.post(JOIN, join_body(url=url), format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert "url" in error["fields"] and "NODES_ALLOW_PRIVATE_URLS" in error["fields"]["url"][0]
    assert not ServingNode.objects.exists()

    settings.NODES_ALLOW_PRIVATE_URLS = True
    assert node.post(JOIN, join_body(url=url), format="json").status_code == 200


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://user:pass@node.example.org", "credentials"),
        ("https://user@node.example.org", "credentials"),
        ("ftp://node.example.org", "scheme"),
        ("node.example.org:8100", "scheme"),
        ("https://node.example.org/?x=1", "query"),
        ("https://node.example.org:99999", "valid URL"),
        ("https://", "host"),
    ],
)
def test_a_bad_url_is_a_400_on_the_url_field_saying_what_to_fix(client_as, settings, url, says):
    settings.NODES_ALLOW_PRIVATE_URLS = True
    response = client_as("node").post(JOIN, join_body(url=url), format="json")
    assert response.status_code == 400, response.content
    assert says in response.json()["error"]["fields"]["url"][0]


@pytest.mark.parametrize(
    "change",
    [
        {"secret": "short"},
        {"secret": "x" * 129},
        {"secret": "has a space in it and is long enough to pass"},
        {"secret": 10**40},
        {"url": 12345},
        {"models": "bafkrei"},
        {"models": [1, 2]},
        {"models": ["x" * 129]},
        {"models": [CID] * 65},
        {"hardware": {"cores": "8", "memory_mb": 1, "gpu": False}},
        {"hardware": {"cores": 8, "memory_mb": 1, "gpu": "yes"}},
        {"hardware": {"cores": 8, "memory_mb": 1, "gpu": 1}},
        {"hardware": {"cores": 0, "memory_mb": 1, "gpu": False}},
        {"hardware": {"cores": 8, "memory_mb": -1, "gpu": False}},
        {"hardware": {"cores": 8}},
        {"hardware": None},
        {"signed_set_version": "3"},
        {"signed_set_version": -1},
        {"queue_capacity": True},
    ],
)
def test_join_is_strict_about_types_and_bounds(client_as, change):
    response = client_as("node").post(JOIN, join_body(**change), format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["fields"]
    assert not ServingNode.objects.exists()


def test_an_oversized_body_is_refused_before_parsing(client_as, settings):
    settings.NODES_JOIN_MAX_BYTES = 1024
    response = client_as("node").post(JOIN, join_body(models=["b" * 100] * 20), format="json")
    assert response.status_code == 413
    assert "NODES_JOIN_MAX_BYTES" in response.json()["error"]["message"]


def test_a_node_that_never_joined_gets_409_not_joined_on_heartbeat(client_as):
    response = client_as("node").post(HEARTBEAT, {"running": 0, "waiting": 0, "queue_capacity": 4}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_joined"
    assert not ServingNode.objects.exists()


def test_a_heartbeat_records_the_load_and_keeps_the_node_in_the_rotation(client_as):
    node = client_as("node", "node-a")
    assert node.post(JOIN, join_body(), format="json").status_code == 200
    later = timezone.now() + dt.timedelta(seconds=5)
    assert serving_nodes_routable(now=later + dt.timedelta(seconds=5)) == []

    beat = node.post(
        HEARTBEAT,
        {"running": 2, "waiting": 1, "queue_capacity": 3, "models": ["bafkreinew"], "signed_set_version": 4},
        format="json",
    )
    assert beat.status_code == 200, beat.content
    assert beat.json()["node"] == "node-a"
    (routable,) = serving_nodes_routable(manifest_cid="bafkreinew")
    assert (routable.running, routable.waiting, routable.queue_capacity) == (2, 1, 3)
    assert not routable.has_room
    assert ServingNode.objects.get().signed_set_version == 4


def test_a_node_that_stops_beating_leaves_the_rotation_and_a_beat_brings_it_back(client_as):
    node = client_as("node", "node-a")
    assert node.post(JOIN, join_body(), format="json").status_code == 200
    ServingNode.objects.update(last_heartbeat_at=timezone.now() - dt.timedelta(seconds=7))
    assert serving_nodes_routable() == []
    assert node.post(HEARTBEAT, {"running": 0, "waiting": 0, "queue_capacity": 4}, format="json").status_code == 200
    assert [n.name for n in serving_nodes_routable()] == ["node-a"]


@pytest.mark.parametrize(
    "body",
    [
        {"running": "1", "waiting": 0, "queue_capacity": 4},
        {"running": -1, "waiting": 0, "queue_capacity": 4},
        {"running": 0, "waiting": 1.5, "queue_capacity": 4},
        {"running": 0, "waiting": 0},
        {"running": 0, "waiting": 0, "queue_capacity": None},
        {"running": 0, "waiting": 0, "queue_capacity": 4, "models": [None]},
        [],
    ],
)
def test_heartbeat_is_strict_about_types(client_as, body):
    node = client_as("node", "node-a")
    assert node.post(JOIN, join_body(), format="json").status_code == 200
    response = node.post(HEARTBEAT, body, format="json")
    assert response.status_code == 400, response.content


def test_the_admin_lists_serving_nodes_without_their_secret():
    from nodes.services import serving_node_join

    node = get_user_model().objects.create_user("node-admin")
    secret = secrets.token_urlsafe(32)
    serving_node_join(node=node, url="https://node.example.org", secret=secret, models=[CID], queue_capacity=4)
    admin = get_user_model().objects.create_superuser("root-admin", password="x")
    client = Client()
    client.force_login(admin)
    listing = client.get("/admin/nodes/servingnode/")
    assert listing.status_code == 200
    page = listing.content.decode()
    assert "node-admin" in page and "https://node.example.org" in page and secret not in page
    assert "/admin/nodes/servingnode/add/" not in page
    detail = client.get(f"/admin/nodes/servingnode/{ServingNode.objects.get().pk}/change/")
    assert detail.status_code == 200 and secret not in detail.content.decode()
