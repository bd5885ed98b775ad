"""Which nodes the router considers for a model: every CID the model's document has had counts."""

import secrets

import pytest
from django.contrib.auth import get_user_model

from inference.routing import router
from nodes.services import serving_node_join
from registry.services import manifest_metrics_record
from tests.registry.factories import register_test_manifest

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rotation(settings):
    settings.NODES_ALLOW_PRIVATE_URLS = True
    router.routable_clear()
    yield
    router.routable_clear()


def _node(name: str, models: list[str]):
    from accounts.services import token_issue

    token_issue(username=name, role="node")
    account = get_user_model().objects.get(username=name)
    return serving_node_join(
        node=account, url=f"http://127.0.0.1:9/{name}", secret=secrets.token_urlsafe(32), models=models
    )


def test_a_node_announcing_the_document_cid_before_a_benchmark_still_serves_the_model():
    manifest = register_test_manifest(name="routed-model")
    announced = manifest.manifest_cid
    _node("node-before", [announced])
    _node("node-other", [register_test_manifest(name="other-model").manifest_cid])

    updated = manifest_metrics_record(manifest=manifest, metrics={"avg_tokens_per_sec": 9.0})

    assert updated.manifest_cid != announced  # the registry's CID moved on; the node's signed set has the old one
    assert [node.name for node in router._routable(updated.manifest_cid)] == ["node-before"]
