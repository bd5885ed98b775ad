from django.contrib import admin, messages

from registry.models import ApprovedSet, Manifest, ManifestFile
from registry.services import manifest_pin_request, manifest_retire


class ManifestFileInline(admin.TabularInline):
    model = ManifestFile
    extra = 0
    can_delete = False
    fields = ["path", "role", "size_bytes", "sha256", "cid"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Manifest)
class ManifestAdmin(admin.ModelAdmin):
    list_display = ["model_name", "version", "kind", "format", "status", "pin_status", "size_bytes", "adoption_date"]
    list_filter = ["status", "kind", "format", "pin_status", "approved_by_governance", "license"]
    search_fields = ["model_name", "version", "sha256", "ipfs_cid", "manifest_cid"]
    inlines = [ManifestFileInline]
    actions = ["repin", "retire"]
    # Integrity fields are never edited by hand: they come from hashing the bytes.
    readonly_fields = [
        "model_name",
        "version",
        "kind",
        "format",
        "quantization",
        "size_bytes",
        "sha256",
        "ipfs_cid",
        "license",
        "source",
        "status",
        "approved_by_governance",
        "adoption_date",
        "retired_at",
        "metrics",
        "pin_status",
        "pin_error",
        "pinned_at",
        "manifest_cid",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Re-pin selected manifests")
    def repin(self, request, queryset):
        count = manifest_pin_request(manifest_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Queued a pin for {count} manifest(s).", messages.SUCCESS)

    @admin.action(description="Retire selected manifests")
    def retire(self, request, queryset):
        for manifest in queryset:
            manifest_retire(manifest=manifest, actor=request.user, reason=f"retired in the admin by {request.user}")
        self.message_user(request, f"Retired {queryset.count()} manifest(s).", messages.SUCCESS)


@admin.register(ApprovedSet)
class ApprovedSetAdmin(admin.ModelAdmin):
    list_display = ["version", "generated_at", "cid", "pin_status"]
    readonly_fields = ["version", "generated_at", "cid", "pin_status", "document_text"]
    exclude = ["document"]

    @admin.display(description="document")
    def document_text(self, obj):
        return bytes(obj.document).decode()

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False
