"""Admin for node reports: read-only, since every row is sent by a node."""

from django.contrib import admin

from nodes.models import NodeReport


@admin.register(NodeReport)
class NodeReportAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    list_display = ["node", "received_at", "approved_set_version", "signed_set_version", "models"]
    list_filter = ["approved_set_version"]
    search_fields = ["node__username"]
    list_select_related = ["node"]
    date_hierarchy = "received_at"
