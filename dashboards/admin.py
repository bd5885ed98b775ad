from django.contrib import admin

from dashboards.models import LatencyRollup, RollupCursor


@admin.register(LatencyRollup)
class LatencyRollupAdmin(admin.ModelAdmin):
    """Read-only: rollups are computed from samples, never edited."""

    list_display = ["period_start", "resolution", "model", "endpoint", "requests", "errors", "rejections"]
    list_filter = ["resolution", "endpoint", "model"]
    date_hierarchy = "period_start"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(RollupCursor)
class RollupCursorAdmin(admin.ModelAdmin):
    list_display = ["resolution", "through", "updated_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
