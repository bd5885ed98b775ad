"""The knowledge store's writes: documents, stored with their embedding when an embedding model answers."""

import hashlib
import logging

from django.db import transaction

from accounts.models import Role
from accounts.selectors import user_has_role
from core.errors import DomainError, Forbidden, NotFound
from inference import events
from inference.models import KnowledgeDocument, vector_to_bytes
from inference.serving import web as dispatch

logger = logging.getLogger(__name__)

KNOWLEDGE_EMBED_TIMEOUT_SECONDS = 5.0


def _embed_best_effort(text: str) -> tuple[bytes | None, str]:
    try:
        result = dispatch.embeddings_create(
            texts=[text], model=None, endpoint="knowledge", timeout=KNOWLEDGE_EMBED_TIMEOUT_SECONDS
        )
    except DomainError as exc:
        logger.info("knowledge document stored without an embedding: %s", exc)
        return None, ""
    return vector_to_bytes(result.vectors[0]), result.model


def _knowledge_text(document: KnowledgeDocument) -> str:
    return f"{document.title}\n{document.content}"


def knowledge_document_create(*, title: str, content: str, source: str = "", actor=None) -> KnowledgeDocument:
    """Store a document and, when an embedding model answers, its embedding (else keyword search only)."""
    document = KnowledgeDocument(
        title=title.strip(),
        content=content.strip(),
        source=source.strip(),
        created_by=actor if getattr(actor, "pk", None) else None,
    )
    document.full_clean(exclude=["embedding", "embedding_model"])
    embedding, model = _embed_best_effort(_knowledge_text(document))
    document.embedding, document.embedding_model = embedding, model
    with transaction.atomic():
        document.save()
        events.knowledge_document_created_event(document=document, actor=actor)
    return document


def _require_author_or_operator(document: KnowledgeDocument, actor, *, action: str) -> None:
    is_author = document.created_by_id is not None and document.created_by_id == getattr(actor, "pk", None)
    if not (is_author or user_has_role(actor, Role.OPERATOR)):
        raise Forbidden(f"{action} knowledge document {document.pk} is for its author or an operator.")


def _locked_document(document: KnowledgeDocument) -> KnowledgeDocument:
    try:
        return KnowledgeDocument.objects.select_for_update().get(pk=document.pk)
    except KnowledgeDocument.DoesNotExist as exc:
        raise NotFound(f"Knowledge document {document.pk} does not exist.") from exc


def knowledge_document_update(
    *, document: KnowledgeDocument, actor, title: str, content: str, source: str
) -> KnowledgeDocument:
    """Change a document (its author or an operator); audited with what it said before."""
    _require_author_or_operator(document, actor, action="Changing")
    changed = KnowledgeDocument(title=title.strip(), content=content.strip(), source=source.strip())
    changed.full_clean(exclude=["embedding", "embedding_model", "created_by"])
    embedding, model = _embed_best_effort(_knowledge_text(changed))
    with transaction.atomic():
        locked = _locked_document(document)
        _require_author_or_operator(locked, actor, action="Changing")
        before = {
            "title": locked.title,
            "source": locked.source,
            "content_sha256": hashlib.sha256(locked.content.encode()).hexdigest(),
        }
        locked.title, locked.content, locked.source = changed.title, changed.content, changed.source
        locked.embedding, locked.embedding_model = embedding, model
        locked.save()
        events.knowledge_document_changed_event(document=locked, actor=actor, before=before)
    return locked


def knowledge_document_delete(*, document: KnowledgeDocument, actor) -> None:
    """Delete a document (its author or an operator); audited."""
    _require_author_or_operator(document, actor, action="Deleting")
    with transaction.atomic():
        locked = _locked_document(document)
        _require_author_or_operator(locked, actor, action="Deleting")
        document_id = locked.pk
        locked.delete()
        events.knowledge_document_deleted_event(document=locked, document_id=document_id, actor=actor)


def knowledge_documents_embed_missing(*, limit: int = 200) -> int:
    """Embed documents stored while no embedding model answered; returns how many were embedded."""
    done = 0
    for document in KnowledgeDocument.objects.filter(embedding__isnull=True)[:limit]:
        embedding, model = _embed_best_effort(_knowledge_text(document))
        if embedding is None:
            break
        KnowledgeDocument.objects.filter(pk=document.pk).update(embedding=embedding, embedding_model=model)
        done += 1
    return done
