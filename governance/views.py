"""Browser pages for governance (HTMX-enhanced; every form also works as a plain POST).

Views only gather input and call selectors and services; `core.htmx`
decides whether a request gets a fragment or a whole page.
"""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import Role
from accounts.selectors import user_has_role
from core.errors import DomainError, NotFound
from core.htmx import htmx_partial, is_htmx
from governance.forms import PROPOSAL_FORMS, CancelForm, ProposalFilterForm, VoteForm
from governance.models import TERMINAL_STATES, ProposalState, ProposalType
from governance.selectors import (
    parameter_history,
    parameters_current,
    proposal_checks,
    proposal_get,
    proposal_list,
    proposal_tally,
    proposal_vote_history,
    proposal_votes,
    rules_all,
    time_left,
    vote_of,
)
from governance.services import proposal_cancel, proposal_create, vote_cast

PAGE_SIZE = 25
HISTORY_ON_PAGE = 100


def _may_vote(user) -> bool:
    return user_has_role(user, Role.CONTRIBUTOR, Role.OPERATOR)


def _proposal_or_404(pk: int, now):
    try:
        return proposal_get(pk, now=now)
    except NotFound as exc:
        raise Http404(exc.message) from exc


def _voting_context(request: HttpRequest, proposal, now, *, vote_form: VoteForm | None = None) -> dict:
    state = ProposalState(proposal.state)
    my_vote = vote_of(proposal=proposal, user=request.user)
    if vote_form is None:
        vote_form = VoteForm(initial={"choice": my_vote.choice, "reason": my_vote.reason} if my_vote else None)
    return {
        "proposal": proposal,
        "state": state,
        "terminal": state in TERMINAL_STATES,
        "tally": proposal_tally(proposal),
        "time_left": time_left(proposal, state=state, now=now),
        "now": now,
        "may_vote": _may_vote(request.user) and state == ProposalState.ACTIVE,
        "my_vote": my_vote,
        "vote_form": vote_form,
    }


@require_GET
def proposal_list_view(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    filters = ProposalFilterForm(request.GET or None)
    data = filters.cleaned_data if filters.is_valid() else {}
    proposals = proposal_list(proposal_type=data.get("type") or None, state=data.get("state") or None, now=now)
    page = Paginator(proposals, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "filters": filters if filters.is_bound else ProposalFilterForm(),
        "page": page,
        "rows": [(p, proposal_tally(p)) for p in page.object_list],
        "now": now,
        "may_propose": _may_vote(request.user),
        "query": _query_without_page(request),
    }
    template = "governance/_proposal_rows.html" if htmx_partial(request) else "governance/proposal_list.html"
    return render(request, template, context)


def _query_without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


@require_GET
def proposal_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    now = timezone.now()
    proposal = _proposal_or_404(pk, now)
    return _render_detail(request, proposal, now)


def _render_detail(request, proposal, now, *, vote_form=None, cancel_form=None, status=200) -> HttpResponse:
    context = _voting_context(request, proposal, now, vote_form=vote_form)
    context.update(
        {
            "checks": proposal_checks(proposal),
            "votes": proposal_votes(proposal),
            "history": proposal_vote_history(proposal)[:HISTORY_ON_PAGE],
            "may_cancel": user_has_role(request.user, Role.OPERATOR) and not context["terminal"],
            "cancel_form": cancel_form or CancelForm(),
            "payload_json": json.dumps(proposal.payload, indent=2, sort_keys=True),
        }
    )
    return render(request, "governance/proposal_detail.html", context, status=status)


@require_GET
def proposal_tally_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The live tally fragment the proposal page polls."""
    now = timezone.now()
    proposal = _proposal_or_404(pk, now)
    return render(request, "governance/_tally.html", _voting_context(request, proposal, now))


@login_required
@require_POST
def proposal_vote_view(request: HttpRequest, pk: int) -> HttpResponse:
    if not _may_vote(request.user):
        raise PermissionDenied("Voting needs the contributor or operator role.")
    now = timezone.now()
    proposal = _proposal_or_404(pk, now)
    form = VoteForm(request.POST)
    status = 400
    if form.is_valid():
        try:
            receipt = vote_cast(
                proposal=proposal,
                voter=request.user,
                choice=form.cleaned_data["choice"],
                reason=form.cleaned_data["reason"],
            )
        except DomainError as exc:
            form.show_domain_error(exc)
            status = exc.status_code
        else:
            verb = "recorded" if receipt.created else ("changed" if receipt.changed else "unchanged")
            messages.success(request, f"Your vote ({receipt.vote.choice}) is {verb}.")
            if not is_htmx(request):
                return redirect("governance:proposal-detail", pk=pk)
            proposal = _proposal_or_404(pk, timezone.now())
            form = None
    if is_htmx(request):
        # HTMX swaps only 2xx answers; the errors travel inside the fragment.
        return render(request, "governance/_voting.html", _voting_context(request, proposal, now, vote_form=form))
    return _render_detail(request, proposal, now, vote_form=form, status=status)


@login_required
@require_POST
def proposal_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    if not user_has_role(request.user, Role.OPERATOR):
        raise PermissionDenied("Canceling a proposal needs the operator role.")
    now = timezone.now()
    proposal = _proposal_or_404(pk, now)
    form = CancelForm(request.POST)
    status = 400
    if form.is_valid():
        try:
            proposal_cancel(proposal=proposal, actor=request.user, reason=form.cleaned_data["reason"])
        except DomainError as exc:
            form.show_domain_error(exc)
            status = exc.status_code
        else:
            messages.success(request, f"Proposal #{pk} was canceled.")
            return redirect("governance:proposal-detail", pk=pk)
    return _render_detail(request, proposal, now, cancel_form=form, status=status)


@login_required
@require_GET
def proposal_new_view(request: HttpRequest) -> HttpResponse:
    if not _may_vote(request.user):
        raise PermissionDenied("Proposing needs the contributor or operator role.")
    return render(request, "governance/proposal_new.html", {"types": ProposalType.choices})


@login_required
@require_http_methods(["GET", "POST"])
def proposal_create_view(request: HttpRequest, proposal_type: str) -> HttpResponse:
    if proposal_type not in PROPOSAL_FORMS:
        raise Http404(f"No proposal type {proposal_type!r}.")
    if not _may_vote(request.user):
        raise PermissionDenied("Proposing needs the contributor or operator role.")
    form_class = PROPOSAL_FORMS[proposal_type]
    form = form_class(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                proposal = proposal_create(
                    author=request.user,
                    proposal_type=proposal_type,
                    title=form.cleaned_data["title"],
                    description=form.cleaned_data["description"],
                    payload=form.payload(),
                )
            except DomainError as exc:
                form.show_domain_error(exc)
                status = exc.status_code
            else:
                messages.success(request, f"Proposal #{proposal.pk} was created.")
                url = reverse("governance:proposal-detail", args=[proposal.pk])
                if is_htmx(request):
                    response = HttpResponse(status=204)
                    response["HX-Redirect"] = url
                    return response
                return redirect(url)
    context = {
        "form": form,
        "proposal_type": ProposalType(proposal_type),
        "failed_checks": getattr(form, "failed_checks", []),
    }
    if htmx_partial(request):
        return render(request, "governance/_proposal_form.html", context)
    return render(request, "governance/proposal_form.html", context, status=status)


@require_GET
def parameters_view(request: HttpRequest) -> HttpResponse:
    parameters = parameters_current()
    history = list(parameter_history()[:HISTORY_ON_PAGE])
    return render(
        request, "governance/parameters.html", {"parameters": parameters, "history": history, "rules": rules_all()}
    )
