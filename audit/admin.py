"""The audit trail in the admin: read-only, as everywhere."""

from django.contrib import admin

from audit.models import AuditCheckpoint, AuditEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["seq", "event_type", "actor_label", "object_type", "object_id", "created_at"]
    list_filter = ["event_type", "object_type"]
    search_fields = ["object_id", "actor_label"]
    ordering = ["-seq"]


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin):
    list_display = ["seq", "cid", "hash", "created_at"]
    ordering = ["-seq"]
