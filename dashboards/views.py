"""Dashboard pages (HTMX): each page renders its panel once, and the panel refreshes itself.

Every panel has its own URL returning the fragment it polls (`hx-get`,
`hx-trigger="every Ns"`), and names the metrics API URL that holds the same
numbers (`data-api-url`), so what the page shows can be checked against
the JSON.
"""

import json
from urllib.parse import urlencode

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.selectors import user_by_username
from conclave_node.sketch import RELATIVE_ACCURACY
from core.errors import NotFound
from dashboards import charts
from dashboards.forms import METRIC_CHOICES, NodeLatencyForm, OverviewForm
from dashboards.selectors.adoptions import adoption_history
from dashboards.selectors.fleet import fleet_nodes, fleet_overview, serving_status
from dashboards.selectors.governance import governance_overview
from dashboards.selectors.home import approved_set_summary, open_proposals
from dashboards.selectors.latency import DEFAULT_WINDOW, WINDOWS, node_latency, overview, window_bounds
from dashboards.selectors.manifests import manifest_ids_by_label, manifest_page


def _common(request: HttpRequest) -> dict:
    return {"refresh_seconds": settings.DASHBOARDS_REFRESH_SECONDS}


def _overview_context(request: HttpRequest) -> tuple[dict, int]:
    form = OverviewForm(request.GET or None)
    valid = form.is_valid() if form.is_bound else True
    data = form.cleaned_data if form.is_bound and valid else {}
    window = data.get("window") or DEFAULT_WINDOW
    metric = data.get("metric") or "e2e"
    end = data.get("end")
    result = overview(window=window, end=end)
    labels = {entry["model"] for entry in result["models"]}
    manifest_ids = manifest_ids_by_label(labels)
    models = [
        {
            **entry,
            "manifest_id": manifest_ids.get(entry["model"]),
            "chart_json": json.dumps(
                charts.percentile_chart(entry, metric=metric, step_seconds=result["step_seconds"])
            ),
        }
        for entry in result["models"]
    ]
    # The API URL pins the same end, so the JSON holds exactly the numbers shown.
    pinned = {"window": window, "end": result["end"].isoformat()}
    query = {"window": window, "metric": metric}
    if end:
        query["end"] = end.isoformat()
    context = {
        **_common(request),
        "form": form if form.is_bound else OverviewForm(initial={"window": window, "metric": metric}),
        "result": result,
        "models": models,
        "window": WINDOWS[window],
        "windows": list(WINDOWS.values()),
        "metric": metric,
        "metric_label": dict(METRIC_CHOICES)[metric],
        "metric_choices": METRIC_CHOICES,
        "api_url": f"{reverse('api-metrics-overview')}?{urlencode(pinned)}",
        "panel_url": f"{reverse('dashboards:overview-panel')}?{urlencode(query)}",
    }
    return context, 200 if valid else 400


# --- Home page and status card ---------------------------------------------------------------


@require_GET
def home_view(request: HttpRequest) -> HttpResponse:
    """`/`: what Conclave is, the approved set, open proposals, live serving status, and where to go next."""
    now = timezone.now()
    context = {
        **_common(request),
        "approved": approved_set_summary(),
        "proposals": open_proposals(now=now),
        "status": serving_status(),
        "now": now,
    }
    return render(request, "dashboards/home.html", context)


@require_GET
def home_proposals_panel_view(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    context = {**_common(request), "proposals": open_proposals(now=now), "now": now}
    return render(request, "dashboards/_home_proposals.html", context)


@require_GET
def status_card_view(request: HttpRequest) -> HttpResponse:
    """The serving status card (online / degraded / offline), polled by the pages that show it."""
    return render(request, "dashboards/_status_card.html", {**_common(request), "status": serving_status()})


@require_GET
def overview_view(request: HttpRequest) -> HttpResponse:
    context, status = _overview_context(request)
    context["status"] = serving_status()
    return render(request, "dashboards/overview.html", context, status=status)


@require_GET
def overview_panel_view(request: HttpRequest) -> HttpResponse:
    context, status = _overview_context(request)
    return render(request, "dashboards/_overview_panel.html", context, status=status)


def _adoptions_context(request: HttpRequest) -> dict:
    return {
        **_common(request),
        "entries": adoption_history(limit=50),
        "api_url": f"{reverse('api-metrics-adoptions')}?limit=50",
    }


@require_GET
def adoptions_view(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboards/adoptions.html", _adoptions_context(request))


@require_GET
def adoptions_panel_view(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboards/_adoptions_panel.html", _adoptions_context(request))


def _governance_context(request: HttpRequest) -> dict:
    data = governance_overview()
    return {
        **_common(request),
        "data": data,
        "participation_chart": json.dumps(charts.participation_chart(data)),
        "votes_chart": json.dumps(charts.votes_per_day_chart(data)),
        "api_url": reverse("api-metrics-governance"),
    }


@require_GET
def governance_view(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboards/governance.html", _governance_context(request))


@require_GET
def governance_panel_view(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboards/_governance_panel.html", _governance_context(request))


def _fleet_context(request: HttpRequest) -> dict:
    return {**_common(request), "data": fleet_overview(), "api_url": reverse("api-metrics-fleet")}


NODE_LATENCY_WINDOW = "24h"  # the API's default


def _node_latency_context(request: HttpRequest, nodes: list[dict]) -> tuple[dict, int]:
    """The node latency panel: one model's latency as one node or every node reported it.

    The choices are the models and nodes of each node's latest report (the
    fleet's node table); the numbers are `node_latency`'s, and the API URL
    pins the same window end, so the JSON holds exactly what is shown.
    """
    models = sorted({entry["model"] for node in nodes for entry in node["models"]})
    names = [node["node"] for node in nodes]
    form = NodeLatencyForm(request.GET or None, models=models, nodes=names)
    valid = form.is_valid() if form.is_bound else True
    data = form.cleaned_data if form.is_bound and valid else {}
    model = data.get("model") or (models[0] if models else None)
    node = data.get("node") or None
    window = data.get("window") or NODE_LATENCY_WINDOW
    result = api_url = None
    start, end = window_bounds(WINDOWS[window], data.get("end") or timezone.now())
    if model:
        account = user_by_username(node) if node else None
        result = node_latency(model=model, start=start, end=end, node=account)
        pinned = {"model": model, **({"node": node} if node else {}), "window": window, "end": end.isoformat()}
        api_url = f"{reverse('api-metrics-node-latency')}?{urlencode(pinned)}"
    query = {key: value for key, value in (("model", model), ("node", node), ("window", window)) if value}
    if data.get("end"):
        query["end"] = data["end"].isoformat()
    context = {
        "errors": form.errors if form.is_bound else {},
        "model": model,
        "node": node,
        "models": models,
        "nodes": names,
        "window": WINDOWS[window],
        "windows": list(WINDOWS.values()),
        "start": start,
        "end": end,
        "result": result,
        "relative_accuracy": RELATIVE_ACCURACY,
        "api_url": api_url,
        "panel_url": f"{reverse('dashboards:node-latency-panel')}?{urlencode(query)}",
    }
    return context, 200 if valid else 400


@require_GET
def fleet_view(request: HttpRequest) -> HttpResponse:
    context = _fleet_context(request)
    node_latency_context, status = _node_latency_context(request, context["data"]["nodes"])
    context["node_latency"] = node_latency_context
    return render(request, "dashboards/fleet.html", context, status=status)


@require_GET
def node_latency_panel_view(request: HttpRequest) -> HttpResponse:
    node_latency_context, status = _node_latency_context(request, fleet_nodes())
    context = {**_common(request), "node_latency": node_latency_context}
    return render(request, "dashboards/_node_latency_panel.html", context, status=status)


@require_GET
def fleet_panel_view(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboards/_fleet_panel.html", _fleet_context(request))


def _model_context(request: HttpRequest, pk: int) -> dict:
    try:
        data = manifest_page(manifest_id=pk, now=timezone.now())
    except NotFound as exc:
        raise Http404(exc.message) from exc
    return {
        **_common(request),
        "data": data,
        "manifest": data["manifest"],
        "benchmark_chart": json.dumps(charts.benchmark_chart(data)),
        "api_url": reverse("api-metrics-model", args=[pk]),
    }


@require_GET
def model_view(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, "dashboards/model.html", _model_context(request, pk))


@require_GET
def model_panel_view(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, "dashboards/_model_panel.html", _model_context(request, pk))
