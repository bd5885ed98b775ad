from django.urls import path

from governance import views

app_name = "governance"

urlpatterns = [
    path("", views.proposal_list_view, name="proposal-list"),
    path("proposals/new/", views.proposal_new_view, name="proposal-new"),
    path("proposals/new/<slug:proposal_type>/", views.proposal_create_view, name="proposal-create"),
    path("proposals/<int:pk>/", views.proposal_detail_view, name="proposal-detail"),
    path("proposals/<int:pk>/tally/", views.proposal_tally_view, name="proposal-tally"),
    path("proposals/<int:pk>/vote/", views.proposal_vote_view, name="proposal-vote"),
    path("proposals/<int:pk>/cancel/", views.proposal_cancel_view, name="proposal-cancel"),
    path("parameters/", views.parameters_view, name="parameters"),
]
