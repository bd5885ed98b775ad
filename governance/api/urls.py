from django.urls import path

from governance.api import views

urlpatterns = [
    path("proposals/", views.ProposalListCreateApi.as_view(), name="api-proposals"),
    path("proposals/<int:proposal_id>/", views.ProposalDetailApi.as_view(), name="api-proposal-detail"),
    path("proposals/<int:proposal_id>/votes/", views.ProposalVotesApi.as_view(), name="api-proposal-votes"),
    path(
        "proposals/<int:proposal_id>/votes/history/",
        views.ProposalVoteHistoryApi.as_view(),
        name="api-proposal-vote-history",
    ),
    path("proposals/<int:proposal_id>/cancel/", views.ProposalCancelApi.as_view(), name="api-proposal-cancel"),
    path("parameters/", views.ParameterListApi.as_view(), name="api-parameters"),
    path("parameters/<slug:name>/", views.ParameterDetailApi.as_view(), name="api-parameter-detail"),
    path("rules/", views.RulesListApi.as_view(), name="api-rules"),
    path("rules/<slug:proposal_type>/", views.RulesDetailApi.as_view(), name="api-rules-detail"),
]
