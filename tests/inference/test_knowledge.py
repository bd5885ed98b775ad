"""The knowledge store /ask answers from: only its author or an operator changes a document, and every change is
audited."""

import pytest

from audit.models import AuditEvent, EventType
from audit.selectors import audit_chain_verify
from inference.models import KnowledgeDocument

pytestmark = pytest.mark.django_db

URL = "/api/v1/knowledge/"


def _document(client, title="Node checks") -> dict:
    response = client.post(
        URL, {"title": title, "content": "Nodes check each file's sha256.", "source": "a.md"}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def _events(document_id: int) -> list[tuple[str, str]]:
    rows = AuditEvent.objects.filter(object_type="knowledge_document", object_id=str(document_id)).order_by("seq")
    return [(row.event_type, row.actor_label) for row in rows]


def test_another_contributor_can_neither_change_nor_delete_a_document(client_as):
    document = _document(client_as("contributor", "alice"))
    mallory = client_as("contributor", "mallory")
    changed = mallory.put(
        f"{URL}{document['id']}/", {"title": "Ignore the checks", "content": "Skip sha256."}, format="json"
    )
    assert changed.status_code == 403
    assert changed.json()["error"]["type"] == "permission_error"
    assert mallory.delete(f"{URL}{document['id']}/").status_code == 403
    stored = KnowledgeDocument.objects.get(pk=document["id"])
    assert (stored.title, stored.content) == ("Node checks", "Nodes check each file's sha256.")
    assert _events(document["id"]) == [(EventType.KNOWLEDGE_CREATED, "alice")]


def test_the_author_changes_and_deletes_and_each_step_is_audited(client_as):
    alice = client_as("contributor", "alice")
    document = _document(alice)
    changed = alice.put(
        f"{URL}{document['id']}/", {"title": "Node checks v2", "content": "Nodes check sha256 and CID."}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["title"] == "Node checks v2"
    assert alice.delete(f"{URL}{document['id']}/").status_code == 204
    assert not KnowledgeDocument.objects.filter(pk=document["id"]).exists()
    assert _events(document["id"]) == [
        (EventType.KNOWLEDGE_CREATED, "alice"),
        (EventType.KNOWLEDGE_CHANGED, "alice"),
        (EventType.KNOWLEDGE_DELETED, "alice"),
    ]
    change = AuditEvent.objects.get(event_type=EventType.KNOWLEDGE_CHANGED)
    assert change.payload["before"]["title"] == "Node checks"
    assert change.payload["title"] == "Node checks v2"
    assert audit_chain_verify().ok


def test_an_operator_may_change_and_delete_anyones_document(client_as):
    document = _document(client_as("contributor", "alice"))
    olive = client_as("operator", "olive")
    assert (
        olive.put(f"{URL}{document['id']}/", {"title": "Fixed", "content": "Corrected."}, format="json").status_code
        == 200
    )
    assert olive.delete(f"{URL}{document['id']}/").status_code == 204
    assert _events(document["id"])[1:] == [
        (EventType.KNOWLEDGE_CHANGED, "olive"),
        (EventType.KNOWLEDGE_DELETED, "olive"),
    ]


def test_anonymous_readers_cannot_write(client_as):
    document = _document(client_as("contributor", "alice"))
    anonymous = client_as(None)
    assert anonymous.get(f"{URL}{document['id']}/").status_code == 200
    assert anonymous.delete(f"{URL}{document['id']}/").status_code in (401, 403)
    assert KnowledgeDocument.objects.filter(pk=document["id"]).exists()
