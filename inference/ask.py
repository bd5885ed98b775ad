"""/api/v1/ask: the degradation tree, from the semantic cache down to an explicit "LLM unavailable"."""

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from core.errors import DomainError, ValidationFailed
from inference.metrics import answer_cache_observe
from inference.models import AnswerCacheEntry, vector_to_bytes
from inference.selectors import answer_cache_lookup, knowledge_search, limits_current
from inference.serving import web as dispatch

ASK_SYSTEM_PROMPT = "You are a concise assistant. Answer in at most three sentences."


@dataclass
class AskAnswer:
    answer: str
    path: str  # cache | knowledge | generated | unavailable
    search: str = "none"  # hybrid | keyword | none
    similarity: float | None = None
    documents: list[dict] = field(default_factory=list)
    model: str = ""
    reason: str = ""
    steps: list[dict] = field(default_factory=list)
    latency_ms: float = 0.0


def ask_answer(*, query: str) -> AskAnswer:
    """Answer a query by the cheapest path that works, saying which one did.

    1. semantic cache: a past answered query whose embedding is close enough;
    2. knowledge store: hybrid keyword + embedding search, keyword search
       alone when the embedding model is down;
    3. generation under a deadline, then cached;
    4. an explicit "LLM unavailable" answer with the reason.
    """
    query = query.strip()
    if not query:
        raise ValidationFailed("Ask something.", fields={"query": ["Required."]})
    started = time.perf_counter()
    steps: list[dict] = []

    def finish(answer: AskAnswer) -> AskAnswer:
        answer.steps = steps
        answer.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        return answer

    vector, embedding_model = None, ""
    try:
        embedded = dispatch.embeddings_create(
            texts=[query], model=None, endpoint="ask", timeout=settings.INFERENCE_ASK_TIMEOUT_SECONDS
        )
        vector, embedding_model = embedded.vectors[0], embedded.model
        steps.append({"step": "embed", "ok": True, "model": embedding_model})
    except DomainError as exc:
        steps.append({"step": "embed", "ok": False, "reason": exc.message})

    if vector is not None:
        lookup_started = time.perf_counter()
        cached = answer_cache_lookup(
            vector, embedding_model=embedding_model, threshold=settings.INFERENCE_ASK_CACHE_THRESHOLD
        )
        answer_cache_observe(hit=cached is not None)
        dispatch.answer_cache_sample_record(
            model=embedding_model, hit=cached is not None, lookup_ms=(time.perf_counter() - lookup_started) * 1000
        )
        if cached is not None:
            entry, similarity = cached
            AnswerCacheEntry.objects.filter(pk=entry.pk).update(hits=entry.hits + 1, last_hit_at=timezone.now())
            steps.append({"step": "cache", "ok": True, "similarity": round(similarity, 4)})
            return finish(
                AskAnswer(answer=entry.answer, path="cache", similarity=round(similarity, 4), model=entry.model)
            )
        steps.append({"step": "cache", "ok": False})

    hits = knowledge_search(query, query_vector=vector, embedding_model=embedding_model or None)
    search = "hybrid" if vector is not None else "keyword"
    documents = [
        {"id": h.document.pk, "title": h.document.title, "source": h.document.source, "score": round(h.score, 4)}
        for h in hits
    ]
    if hits and hits[0].score >= settings.INFERENCE_ASK_KNOWLEDGE_THRESHOLD:
        best = hits[0]
        steps.append({"step": "knowledge", "ok": True, "search": search, "score": round(best.score, 4)})
        return finish(
            AskAnswer(
                answer=best.document.content,
                path="knowledge",
                search=search,
                similarity=round(best.score, 4),
                documents=documents,
            )
        )
    steps.append(
        {"step": "knowledge", "ok": False, "search": search, "best_score": round(hits[0].score, 4) if hits else None}
    )

    messages = [{"role": "system", "content": ASK_SYSTEM_PROMPT}]
    context = "\n\n".join(f"{h.document.title}: {h.document.content[:600]}" for h in hits[:2])
    if context:
        messages[0]["content"] += f"\nThese notes may help:\n{context}"
    messages.append({"role": "user", "content": query})
    try:
        generated = dispatch.generation_run(
            dispatch.GenerationRequest(
                mode="chat",
                endpoint="ask",
                messages=messages,
                max_tokens=min(settings.INFERENCE_ASK_MAX_TOKENS, limits_current()["max_tokens_per_request"]),
                temperature=0.2,
                timeout=settings.INFERENCE_ASK_TIMEOUT_SECONDS,
            )
        )
    except DomainError as exc:
        steps.append({"step": "generate", "ok": False, "reason": exc.message})
        return finish(
            AskAnswer(
                answer=f"LLM unavailable: {exc.message}",
                path="unavailable",
                search=search,
                documents=documents,
                reason=exc.message,
            )
        )
    steps.append({"step": "generate", "ok": True, "model": generated.model, "finish_reason": generated.finish_reason})
    if vector is not None and generated.text.strip():
        AnswerCacheEntry.objects.create(
            query=query,
            query_embedding=vector_to_bytes(vector),
            embedding_model=embedding_model,
            answer=generated.text.strip(),
            model=generated.model,
        )
    return finish(
        AskAnswer(
            answer=generated.text.strip(), path="generated", search=search, documents=documents, model=generated.model
        )
    )
