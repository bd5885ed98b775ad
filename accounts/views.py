"""The signed-in person's own page (sign-in and sign-out are Django's auth views)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.selectors import user_roles


@login_required
@require_GET
def account_view(request: HttpRequest) -> HttpResponse:
    return render(request, "registration/account.html", {"roles": sorted(user_roles(request.user))})
