"""Admin for node reports and serving nodes: read-only, since every row is sent by a node."""

from django.contrib import admin

from nodes.models import NodeReport, ServingNode
from nodes.selectors import serving_node_in_rotation


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


@admin.register(ServingNode)
class ServingNodeAdmin(admin.ModelAdmin):
    """Read-only: nodes write these rows by joining and beating. The secret is never shown."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    list_display = [
        "account",
        "url",
        "in_rotation",
        "model_count",
        "running",
        "waiting",
        "queue_capacity",
        "signed_set_version",
        "last_heartbeat_at",
    ]
    fields = [
        "account",
        "url",
        "models",
        "hardware",
        "signed_set_version",
        "running",
        "waiting",
        "queue_capacity",
        "joined_at",
        "last_heartbeat_at",
    ]
    search_fields = ["account__username", "url"]
    list_select_related = ["account"]

    @admin.display(boolean=True, description="in rotation")
    def in_rotation(self, obj: ServingNode) -> bool:
        return serving_node_in_rotation(obj)

    @admin.display(description="models")
    def model_count(self, obj: ServingNode) -> int:
        return len(obj.models or [])
