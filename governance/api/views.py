"""Governance API: one view per resource; input serializer → service → output serializer.

Reading is open to anyone (transparency); proposing and voting need the
contributor (or operator) role; canceling and changing rules need operator.
"""

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.permissions import IsContributor, IsOperator
from governance.api.serializers import (
    CancelInputSerializer,
    ParameterOutputSerializer,
    ProposalCreateInputSerializer,
    ProposalFilterSerializer,
    ProposalOutputSerializer,
    RulesOutputSerializer,
    RulesUpdateInputSerializer,
    VoteHistoryOutputSerializer,
    VoteInputSerializer,
    VoteOutputSerializer,
    VoteReceiptOutputSerializer,
)
from governance.selectors import (
    parameter_get,
    parameter_history,
    parameters_current,
    proposal_find,
    proposal_get,
    proposal_list,
    proposal_tally,
    proposal_vote_history,
    proposal_votes,
    rules_all,
    rules_for,
)
from governance.services import proposal_cancel, proposal_create, rules_update, vote_cast

PARAMETER_HISTORY_IN_LIST = 10


def _proposal_response(proposal_id: int, *, status_code: int = status.HTTP_200_OK) -> Response:
    now = timezone.now()
    proposal = proposal_get(proposal_id, now=now)
    return Response(ProposalOutputSerializer(proposal, context={"now": now}).data, status=status_code)


class _WritePermissionMixin:
    """GET for anyone; other methods need `write_permission`."""

    write_permission: type = IsContributor

    def get_permissions(self):
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            return [AllowAny()]
        return [self.write_permission()]


class ProposalListCreateApi(_WritePermissionMixin, generics.ListAPIView):
    """List proposals with their state and tally; create one (contributors)."""

    serializer_class = ProposalOutputSerializer

    def get_queryset(self):
        filters = ProposalFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        return proposal_list(
            proposal_type=data.get("type"), state=data.get("state"), author=data.get("author"), now=self._now
        )

    def initial(self, request, *args, **kwargs):
        # One clock reading per request, so every row's state is derived at the same instant.
        self._now = timezone.now()
        super().initial(request, *args, **kwargs)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "now": self._now}

    @extend_schema(parameters=[ProposalFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=ProposalCreateInputSerializer, responses={201: ProposalOutputSerializer})
    def post(self, request):
        payload = ProposalCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        proposal = proposal_create(
            author=request.user,
            proposal_type=data["type"],
            title=data["title"],
            description=data["description"],
            payload=data["payload"],
        )
        return _proposal_response(proposal.pk, status_code=status.HTTP_201_CREATED)


class ProposalDetailApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses=ProposalOutputSerializer)
    def get(self, request, proposal_id: int):
        return _proposal_response(proposal_id)


class ProposalCancelApi(APIView):
    """Cancel a proposal that is not over yet (operators; the reason is audited)."""

    permission_classes = [IsOperator]

    @extend_schema(request=CancelInputSerializer, responses=ProposalOutputSerializer)
    def post(self, request, proposal_id: int):
        payload = CancelInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        proposal = proposal_find(proposal_id)
        proposal_cancel(proposal=proposal, actor=request.user, reason=payload.validated_data["reason"])
        return _proposal_response(proposal_id)


class ProposalVotesApi(_WritePermissionMixin, generics.ListAPIView):
    """The counted votes (one per voter); cast or replace yours while the proposal is active."""

    serializer_class = VoteOutputSerializer

    def get_queryset(self):
        return proposal_votes(proposal_find(self.kwargs["proposal_id"]))

    @extend_schema(
        request=VoteInputSerializer,
        responses={
            201: VoteReceiptOutputSerializer,
            200: OpenApiResponse(VoteReceiptOutputSerializer, description="An earlier vote was replaced or repeated."),
            409: OpenApiResponse(description="The proposal is not open for voting; the message names the window."),
        },
    )
    def post(self, request, proposal_id: int):
        payload = VoteInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        proposal = proposal_find(proposal_id)
        receipt = vote_cast(
            proposal=proposal,
            voter=request.user,
            choice=payload.validated_data["choice"],
            reason=payload.validated_data["reason"],
        )
        body = {
            "vote": receipt.vote,
            "created": receipt.created,
            "changed": receipt.changed,
            "tally": proposal_tally(proposal).as_dict(),
        }
        return Response(
            VoteReceiptOutputSerializer(body).data,
            status=status.HTTP_201_CREATED if receipt.created else status.HTTP_200_OK,
        )


class ProposalVoteHistoryApi(generics.ListAPIView):
    """Every vote cast on the proposal, including replaced ones, newest first."""

    permission_classes = [AllowAny]
    serializer_class = VoteHistoryOutputSerializer

    def get_queryset(self):
        return proposal_vote_history(proposal_find(self.kwargs["proposal_id"]))


class ParameterListApi(APIView):
    """The governed runtime limits: current values, bounds and recent changes."""

    permission_classes = [AllowAny]

    @extend_schema(responses=ParameterOutputSerializer(many=True))
    def get(self, request):
        parameters = parameters_current()
        history: dict[str, list] = {}
        for change in parameter_history():
            changes = history.setdefault(change.parameter.name, [])
            if len(changes) < PARAMETER_HISTORY_IN_LIST:
                changes.append(change)
        return Response(ParameterOutputSerializer(parameters, many=True, context={"history": history}).data)


class ParameterDetailApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses=ParameterOutputSerializer)
    def get(self, request, name: str):
        parameter = parameter_get(name)
        history = {name: list(parameter_history(names=[name]))}
        return Response(ParameterOutputSerializer(parameter, context={"history": history}).data)


class RulesListApi(APIView):
    """The rules each proposal type runs under (proposals keep the copy they were created with)."""

    permission_classes = [AllowAny]

    @extend_schema(responses=RulesOutputSerializer(many=True))
    def get(self, request):
        return Response(RulesOutputSerializer(rules_all(), many=True).data)


class RulesDetailApi(_WritePermissionMixin, APIView):
    write_permission = IsOperator

    @extend_schema(responses=RulesOutputSerializer)
    def get(self, request, proposal_type: str):
        return Response(RulesOutputSerializer(rules_for(proposal_type)).data)

    @extend_schema(request=RulesUpdateInputSerializer, responses=RulesOutputSerializer)
    def patch(self, request, proposal_type: str):
        payload = RulesUpdateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        rules = rules_update(proposal_type=proposal_type, actor=request.user, changes=payload.validated_data)
        return Response(RulesOutputSerializer(rules).data)
