"""Browser sign-in with Django's auth views (sessions, CSRF on every form)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from accounts.views import account_view

urlpatterns = [
    path("", account_view, name="account"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    # Logout is a POST (a form with a CSRF token), never a link a page could trigger.
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
