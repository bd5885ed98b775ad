"""Admin for governance: rules are editable (through the audited service); the record is read-only."""

from django.contrib import admin, messages

from core.errors import DomainError
from governance.models import (
    RULE_FIELDS,
    GovernedParameter,
    ParameterChange,
    Proposal,
    ProposalRules,
    Vote,
    VoteHistory,
)
from governance.selectors import proposals_with_tally
from governance.services import rules_update


class ReadOnlyAdmin(admin.ModelAdmin):
    """The record of decisions is changed only by services, never by hand."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ProposalRules)
class ProposalRulesAdmin(admin.ModelAdmin):
    list_display = ["proposal_type", *RULE_FIELDS, "updated_at"]
    readonly_fields = ["proposal_type", "updated_at"]
    fields = ["proposal_type", *RULE_FIELDS, "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        # Through the service, so the change is audited like one made over the API.
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in RULE_FIELDS}
        try:
            rules_update(proposal_type=obj.proposal_type, actor=request.user, changes=changes)
        except DomainError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)


@admin.register(Proposal)
class ProposalAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "title",
        "proposal_type",
        "state",
        "author",
        "votes_for",
        "votes_against",
        "votes_abstain",
        "created_at",
        "voting_ends_at",
    ]
    list_filter = ["proposal_type", "outcome"]
    search_fields = ["title", "subject", "author__username"]
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        return proposals_with_tally()

    @admin.display(description="state")
    def state(self, proposal):
        return proposal.state

    @admin.display(description="for")
    def votes_for(self, proposal):
        return proposal.votes_for

    @admin.display(description="against")
    def votes_against(self, proposal):
        return proposal.votes_against

    @admin.display(description="abstain")
    def votes_abstain(self, proposal):
        return proposal.votes_abstain


@admin.register(Vote)
class VoteAdmin(ReadOnlyAdmin):
    list_display = ["proposal", "voter", "choice", "cast_at", "changes"]
    list_filter = ["choice"]
    search_fields = ["voter__username", "proposal__title"]
    list_select_related = ["proposal", "voter"]


@admin.register(VoteHistory)
class VoteHistoryAdmin(ReadOnlyAdmin):
    list_display = ["proposal", "voter", "choice", "previous_choice", "cast_at"]
    list_filter = ["choice"]
    search_fields = ["voter__username", "proposal__title"]
    list_select_related = ["proposal", "voter"]


class ParameterChangeInline(admin.TabularInline):
    model = ParameterChange
    fields = ["changed_at", "old_value", "new_value", "proposal"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(GovernedParameter)
class GovernedParameterAdmin(ReadOnlyAdmin):
    list_display = ["name", "value", "minimum", "maximum", "unit", "updated_at"]
    search_fields = ["name"]
    inlines = [ParameterChangeInline]
