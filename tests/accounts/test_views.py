"""Browser sign-in and sign-out: Django's auth views with CSRF enforced."""

import re

import pytest
from django.test import Client

from tests.governance.factories import person

pytestmark = pytest.mark.django_db


def token_from(page) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)


@pytest.fixture
def carol():
    user = person("carol")
    user.set_password("a long enough passphrase")
    user.save()
    return user


def test_sign_in_and_out_with_csrf(carol):
    client = Client(enforce_csrf_checks=True)
    credentials = {"username": "carol", "password": "a long enough passphrase"}
    assert client.post("/accounts/login/", credentials).status_code == 403  # no CSRF token
    page = client.get("/accounts/login/?next=/governance/")
    assert page.status_code == 200 and 'name="password"' in page.content.decode()
    response = client.post("/accounts/login/", {**credentials, "next": "/governance/", "csrfmiddlewaretoken": token_from(page)})
    assert response.status_code == 302 and response["Location"] == "/governance/"

    home = client.get("/governance/")
    assert "carol" in home.content.decode() and "Sign out" in home.content.decode()
    assert client.get("/accounts/logout/").status_code == 405  # sign-out is never a GET
    assert client.post("/accounts/logout/").status_code == 403  # nor a POST without the token
    response = client.post("/accounts/logout/", {"csrfmiddlewaretoken": token_from(home)})
    assert response.status_code == 302
    assert "Sign in" in client.get("/governance/").content.decode()


def test_wrong_password_is_shown_on_the_form(carol):
    client = Client()
    response = client.post("/accounts/login/", {"username": "carol", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_account_page_shows_roles(carol):
    client = Client()
    assert client.get("/accounts/").status_code == 302
    client.force_login(carol)
    html = client.get("/accounts/").content.decode()
    assert "contributor" in html
