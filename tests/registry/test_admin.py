import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from registry.models import ManifestStatus
from tests.registry.factories import register_test_manifest

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client():
    from accounts.services import user_grant_role

    user = user_grant_role(username="admin-op", role="operator")
    user.is_superuser = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


def test_manifest_changelist_searches_and_filters(operator_client):
    register_test_manifest(name="findme")
    register_test_manifest(name="other", kind="generative", fmt="gguf")
    page = operator_client.get("/admin/registry/manifest/", {"q": "findme"})
    assert page.status_code == 200
    assert b"findme" in page.content and b"other" not in page.content
    filtered = operator_client.get("/admin/registry/manifest/", {"kind__exact": "generative"})
    assert b"other" in filtered.content and b"findme" not in filtered.content


def test_integrity_fields_are_read_only_in_the_admin(operator_client):
    manifest = register_test_manifest(name="ro")
    page = operator_client.get(f"/admin/registry/manifest/{manifest.pk}/change/")
    assert page.status_code == 200
    assert b'name="sha256"' not in page.content
    assert manifest.sha256.encode() in page.content
    operator_client.post(f"/admin/registry/manifest/{manifest.pk}/change/", {"sha256": "0" * 64})
    manifest.refresh_from_db()
    assert manifest.sha256 != "0" * 64


def test_retire_action_retires_through_the_service(operator_client):
    from audit.models import AuditEvent, EventType

    manifest = register_test_manifest(name="old")
    response = operator_client.post(
        "/admin/registry/manifest/", {"action": "retire", "_selected_action": [manifest.pk]}, follow=True
    )
    assert response.status_code == 200
    manifest.refresh_from_db()
    assert manifest.status == ManifestStatus.RETIRED
    event = AuditEvent.objects.get(event_type=EventType.MANIFEST_RETIRED)
    assert event.actor_label == "admin-op"


def test_repin_action_queues_pins(operator_client):
    manifest = register_test_manifest(name="again")
    response = operator_client.post(
        "/admin/registry/manifest/", {"action": "repin", "_selected_action": [manifest.pk]}, follow=True
    )
    assert b"Queued a pin for 1 manifest" in response.content


def test_non_staff_cannot_open_the_admin():
    user = get_user_model().objects.create_user("plain", password="pw-123456789")
    client = Client()
    client.force_login(user)
    assert client.get("/admin/registry/manifest/").status_code == 302
