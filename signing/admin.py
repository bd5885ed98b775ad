"""Admin for signed metadata: read-only, since every row is signed."""

from django.contrib import admin

from signing.models import RootMetadata, SignedApprovedSet
from signing.services import signed_metadata_pin_request


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
        count = signed_metadata_pin_request(kind="root", pks=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Queued {count} pin(s).")


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
        count = signed_metadata_pin_request(kind="set", pks=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Queued {count} pin(s).")
