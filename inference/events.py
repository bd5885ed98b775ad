"""Typed audit events for the inference app: one helper per event type.

Each is called by the service that made the change, inside its transaction.
The payload keeps what /ask can answer with (title, source, a hash of the
content), so the trail shows who changed what a document says.
"""

import hashlib

from audit.models import EventType
from audit.services import audit_append
from inference.models import KnowledgeDocument


def _knowledge_event(event_type: str, document: KnowledgeDocument, *, document_id: int, actor, **payload):
    return audit_append(
        event_type=event_type,
        actor=actor,
        object_type="knowledge_document",
        object_id=document_id,
        payload={
            "title": document.title,
            "source": document.source,
            "content_sha256": hashlib.sha256(document.content.encode()).hexdigest(),
            "content_chars": len(document.content),
            **payload,
        },
    )


def knowledge_document_created_event(*, document: KnowledgeDocument, actor):
    return _knowledge_event(EventType.KNOWLEDGE_CREATED, document, document_id=document.pk, actor=actor)


def knowledge_document_changed_event(*, document: KnowledgeDocument, actor, before: dict):
    return _knowledge_event(EventType.KNOWLEDGE_CHANGED, document, document_id=document.pk, actor=actor, before=before)


def knowledge_document_deleted_event(*, document: KnowledgeDocument, document_id: int, actor):
    return _knowledge_event(EventType.KNOWLEDGE_DELETED, document, document_id=document_id, actor=actor)
