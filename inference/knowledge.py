"""The knowledge store's writes: documents, stored with their embedding when an embedding model answers."""

import logging

from django.db import transaction

from core.errors import DomainError
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
        title=title.strip(), content=content.strip(), source=source.strip(), created_by=actor if getattr(actor, "pk", None) else None
    )
    document.full_clean(exclude=["embedding", "embedding_model"])
    embedding, model = _embed_best_effort(_knowledge_text(document))
    document.embedding, document.embedding_model = embedding, model
    with transaction.atomic():
        document.save()
    return document


def knowledge_document_update(*, document: KnowledgeDocument, title: str, content: str, source: str) -> KnowledgeDocument:
    document.title, document.content, document.source = title.strip(), content.strip(), source.strip()
    document.full_clean(exclude=["embedding", "embedding_model", "created_by"])
    embedding, model = _embed_best_effort(_knowledge_text(document))
    document.embedding, document.embedding_model = embedding, model
    with transaction.atomic():
        document.save()
    return document


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
