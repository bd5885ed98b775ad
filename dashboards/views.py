"""Dashboard pages (HTMX): each page renders its panel once, and the panel refreshes itself.

Every panel has its own URL returning the fragment it polls (`hx-get`,
`hx-trigger="every Ns"`), and names the metrics API URL that holds the same
numbers (`data-api-url`), so what the page shows can be checked against
the JSON.
"""

import json
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from conclave.errors import NotFound
from dashboards import charts
from dashboards.selectors.adoptions import adoption_history
from dashboards.selectors.fleet import fleet_overview
from dashboards.selectors.governance import governance_overview
from dashboards.selectors.latency import DEFAULT_WINDOW, WINDOWS, overview
from dashboards.selectors.manifests import manifest_page
from registry.models import Manifest

METRIC_CHOICES = [("e2e", "End to end"), ("queue", "Queue time"), ("ttft", "Time to first token")]


class OverviewForm(forms.Form):
    window = forms.ChoiceField(choices=[(w.name, w.label) for w in WINDOWS.values()], required=False, label="Window")
    metric = forms.ChoiceField(choices=METRIC_CHOICES, required=False, label="Chart")
    end = forms.DateTimeField(required=False, widget=forms.HiddenInput)


def _common(request: HttpRequest) -> dict:
    return {"refresh_seconds": settings.DASHBOARDS_REFRESH_SECONDS}


def _manifest_ids_by_label(labels) -> dict[str, int]:
    ids = {}
    for manifest_id, name, version in Manifest.objects.values_list("id", "model_name", "version"):
        label = f"{name}@{version}"
        if label in labels:
            ids[label] = manifest_id
    return ids


def _overview_context(request: HttpRequest) -> tuple[dict, int]:
    form = OverviewForm(request.GET or None)
    valid = form.is_valid() if form.is_bound else True
    data = form.cleaned_data if form.is_bound and valid else {}
    window = data.get("window") or DEFAULT_WINDOW
    metric = data.get("metric") or "e2e"
    end = data.get("end")
    result = overview(window=window, end=end)
    labels = {entry["model"] for entry in result["models"]}
    manifest_ids = _manifest_ids_by_label(labels)
    models = [
        {
            **entry,
            "manifest_id": manifest_ids.get(entry["model"]),
            "chart_json": json.dumps(charts.percentile_chart(entry, metric=metric, step_seconds=result["step_seconds"])),
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


@require_GET
def overview_view(request: HttpRequest) -> HttpResponse:
    context, status = _overview_context(request)
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


@require_GET
def fleet_view(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboards/fleet.html", _fleet_context(request))


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
