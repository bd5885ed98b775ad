from django.urls import path

from audit import views

app_name = "audit"

urlpatterns = [
    path("", views.event_list_view, name="event-list"),
    path("verify/", views.verify_view, name="verify"),
]
