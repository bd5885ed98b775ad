"""The metrics API: every dashboard panel's data as JSON, readable by anyone (transparency).

Each view validates its query, calls one selector and renders it with an
output serializer.
"""

from django.contrib.auth import get_user_model
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import NotFound
from dashboards.api.serializers import (
    MetricsAdoptionHistorySerializer,
    MetricsFleetSerializer,
    MetricsGovernanceSerializer,
    MetricsLimitInputSerializer,
    MetricsModelPageSerializer,
    MetricsNodeLatencyInputSerializer,
    MetricsNodeLatencySerializer,
    MetricsOverviewSerializer,
    MetricsWindowInputSerializer,
)
from dashboards.selectors.adoptions import adoption_history
from dashboards.selectors.fleet import fleet_overview
from dashboards.selectors.governance import governance_overview
from dashboards.selectors.latency import node_latency, window_bounds, window_get
from dashboards.selectors.latency import overview as overview_select
from dashboards.selectors.manifests import manifest_page


class _MetricsApi(APIView):
    permission_classes = [AllowAny]


class MetricsOverviewApi(_MetricsApi):
    @extend_schema(
        parameters=[MetricsWindowInputSerializer],
        responses=MetricsOverviewSerializer,
        summary="Request rate, error and rejection rates, p50/p95/p99 latencies and tokens/s per model",
    )
    def get(self, request):
        query = MetricsWindowInputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = overview_select(**query.validated_data)
        return Response(MetricsOverviewSerializer(data).data)


class MetricsAdoptionsApi(_MetricsApi):
    @extend_schema(
        parameters=[MetricsLimitInputSerializer],
        responses=MetricsAdoptionHistorySerializer,
        summary="Every adoption, retirement and parameter change, with proposal, tally, manifest and CIDs",
    )
    def get(self, request):
        query = MetricsLimitInputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        entries = adoption_history(limit=query.validated_data["limit"])
        return Response(MetricsAdoptionHistorySerializer({"entries": entries}).data)


class MetricsGovernanceApi(_MetricsApi):
    @extend_schema(responses=MetricsGovernanceSerializer, summary="Open proposals with live tallies; participation")
    def get(self, request):
        return Response(MetricsGovernanceSerializer(governance_overview()).data)


class MetricsFleetApi(_MetricsApi):
    @extend_schema(responses=MetricsFleetSerializer, summary="Workers, running benchmarks and reporting nodes")
    def get(self, request):
        return Response(MetricsFleetSerializer(fleet_overview()).data)


class MetricsModelApi(_MetricsApi):
    @extend_schema(
        responses=MetricsModelPageSerializer,
        summary="A manifest's files, hashes, CIDs, license, benchmark runs, adoption record and served latency",
    )
    def get(self, request, manifest_id: int):
        return Response(MetricsModelPageSerializer(manifest_page(manifest_id=manifest_id)).data)


class MetricsNodeLatencyApi(_MetricsApi):
    @extend_schema(
        parameters=[MetricsNodeLatencyInputSerializer],
        responses=MetricsNodeLatencySerializer,
        summary="A model's latency as nodes reported it: one node, or the whole network merged",
    )
    def get(self, request):
        query = MetricsNodeLatencyInputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        node = None
        if data.get("node"):
            node = get_user_model().objects.filter(username=data["node"]).first()
            if node is None:
                raise NotFound(f"No node called {data['node']!r}.")
        start, end = window_bounds(window_get(data["window"]), data.get("end") or timezone.now())
        result = node_latency(model=data["model"], start=start, end=end, node=node)
        return Response(
            MetricsNodeLatencySerializer(
                {**result, "node": data.get("node"), "window": data["window"], "start": start, "end": end}
            ).data
        )
