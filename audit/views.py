"""The audit log in the browser: filterable by object and actor, and verifiable."""

from django import forms
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from audit.browse import audit_checkpoint_list, audit_event_list
from audit.checkpoints import audit_checkpoints_verify
from audit.models import EventType
from audit.selectors import audit_chain_verify
from core.htmx import htmx_partial

PAGE_SIZE = 50


class AuditFilterForm(forms.Form):
    object_type = forms.CharField(required=False, max_length=64, label="Object type")
    object_id = forms.CharField(required=False, max_length=64, label="Object id")
    actor = forms.CharField(required=False, max_length=150)
    event_type = forms.ChoiceField(choices=[("", "Any event"), *EventType.choices], required=False, label="Event")


@require_GET
def event_list_view(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    filters = {k: v for k, v in form.cleaned_data.items() if v} if form.is_valid() else {}
    events = audit_event_list(**filters, newest_first=True)
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form if form.is_bound else AuditFilterForm(), "page": page, "query": query.urlencode()}
    template = "audit/_event_rows.html" if htmx_partial(request) else "audit/event_list.html"
    return render(request, template, context)


@require_GET
def verify_view(request: HttpRequest) -> HttpResponse:
    chain = audit_chain_verify()
    checkpoints = audit_checkpoints_verify()
    context = {"chain": chain, "checkpoints": checkpoints, "recent_checkpoints": audit_checkpoint_list()[:20]}
    return render(request, "audit/verify.html", context, status=200 if chain.ok and checkpoints.ok else 409)
