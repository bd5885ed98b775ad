from django.contrib import admin, messages

from inference import knowledge, services
from inference.models import AnswerCacheEntry, BenchmarkRun, KnowledgeDocument, LatencySample


@admin.register(LatencySample)
class LatencySampleAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "endpoint",
        "model",
        "status",
        "outcome",
        "e2e_ms",
        "queue_ms",
        "inference_ms",
        "completion_tokens",
    ]
    list_filter = ["endpoint", "status", "outcome", "model"]
    search_fields = ["model", "worker"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(BenchmarkRun)
class BenchmarkRunAdmin(admin.ModelAdmin):
    list_display = ["id", "manifest", "status", "progress", "stage", "worker", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["manifest__model_name", "manifest__version"]
    readonly_fields = [f.name for f in BenchmarkRun._meta.fields]
    actions = ["benchmark_again"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Benchmark these manifests again")
    def benchmark_again(self, request, queryset):
        for run in queryset.select_related("manifest"):
            services.benchmark_request(manifest=run.manifest, actor=request.user)
        messages.success(request, f"Queued {queryset.count()} benchmark(s).")


@admin.register(KnowledgeDocument)
class KnowledgeDocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "source", "embedding_model", "updated_at"]
    search_fields = ["title", "content", "source"]
    readonly_fields = ["embedding_model", "created_by", "created_at", "updated_at"]
    fields = ["title", "content", "source", "embedding_model", "created_by", "created_at", "updated_at"]
    actions = ["embed_missing"]

    def save_model(self, request, obj, form, change):
        # Through the services, so the document gets its embedding.
        if change:
            knowledge.knowledge_document_update(
                document=obj, actor=request.user, title=obj.title, content=obj.content, source=obj.source
            )
        else:
            created = knowledge.knowledge_document_create(
                title=obj.title, content=obj.content, source=obj.source, actor=request.user
            )
            obj.pk = created.pk

    def delete_model(self, request, obj):
        knowledge.knowledge_document_delete(document=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for document in queryset:
            knowledge.knowledge_document_delete(document=document, actor=request.user)

    @admin.action(description="Embed documents that have no embedding yet")
    def embed_missing(self, request, queryset):
        done = knowledge.knowledge_documents_embed_missing()
        messages.info(request, f"Embedded {done} document(s).")


@admin.register(AnswerCacheEntry)
class AnswerCacheEntryAdmin(admin.ModelAdmin):
    list_display = ["query", "model", "hits", "created_at", "last_hit_at"]
    search_fields = ["query", "answer"]
    readonly_fields = ["query", "embedding_model", "model", "hits", "created_at", "last_hit_at"]
    exclude = ["query_embedding"]
