"""Admin for signed metadata and node reports: read-only, since every row is signed or sent by a node."""

from django.contrib import admin

from registry.models_nodes import NodeReport
from registry.models_signing import RootMetadata, SignedApprovedSet
from registry.signing_tasks import signed_metadata_pin_task


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RootMetadata)
class RootMetadataAdmin(_ReadOnlyAdmin):
    list_display = ["version", "expires", "pin_status", "cid", "created_at"]
    list_filter = ["pin_status"]
    search_fields = ["cid"]
    exclude = ["document"]
    actions = ["repin"]

    @admin.action(description="Re-pin the selected root documents")
    def repin(self, request, queryset):
        for pk in queryset.values_list("pk", flat=True):
            signed_metadata_pin_task.delay("root", pk)
        self.message_user(request, f"Queued {queryset.count()} pin(s).")


@admin.register(SignedApprovedSet)
class SignedApprovedSetAdmin(_ReadOnlyAdmin):
    list_display = ["version", "approved_set", "root_version", "signed_at", "expires", "pin_status", "cid"]
    list_filter = ["pin_status", "root_version"]
    search_fields = ["cid"]
    list_select_related = ["approved_set"]
    exclude = ["document"]
    actions = ["repin"]

    @admin.action(description="Re-pin the selected signed sets")
    def repin(self, request, queryset):
        for pk in queryset.values_list("pk", flat=True):
            signed_metadata_pin_task.delay("set", pk)
        self.message_user(request, f"Queued {queryset.count()} pin(s).")


@admin.register(NodeReport)
class NodeReportAdmin(_ReadOnlyAdmin):
    list_display = ["node", "received_at", "approved_set_version", "signed_set_version", "models"]
    list_filter = ["approved_set_version"]
    search_fields = ["node__username"]
    list_select_related = ["node"]
    date_hierarchy = "received_at"
