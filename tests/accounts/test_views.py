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
    response = client.post(
        "/accounts/login/", {**credentials, "next": "/governance/", "csrfmiddlewaretoken": token_from(page)}
    )
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


# --- Sign-in lockout (django-axes) ------------------------------------------------------------


@pytest.fixture
def lockouts_forgotten():
    from axes.utils import reset

    reset()
    yield
    reset()


def _staff(username: str):
    user = person(username, "operator")
    user.is_staff = True
    user.set_password("the right passphrase")
    user.save()
    return user


def test_thirty_wrong_passwords_lock_the_account_and_then_the_right_one_is_refused(lockouts_forgotten, settings):
    _staff("sam")
    client = Client(REMOTE_ADDR="10.9.0.1")
    statuses = [
        client.post("/accounts/login/", {"username": "sam", "password": f"guess {i}"}).status_code for i in range(30)
    ]
    limit = settings.AXES_FAILURE_LIMIT
    assert statuses == [200] * (limit - 1) + [429] * (30 - limit + 1)
    right = client.post("/accounts/login/", {"username": "sam", "password": "the right passphrase"})
    assert right.status_code == 429
    assert int(right["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    error = right.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "login_locked")
    assert "_auth_user_id" not in client.session
    # The admin's sign-in is locked too, from another address as well (the account is locked).
    admin = Client(REMOTE_ADDR="10.9.0.2").post(
        "/admin/login/", {"username": "sam", "password": "the right passphrase"}
    )
    assert admin.status_code == 429


def test_a_lockout_is_per_account_and_per_address(lockouts_forgotten, settings):
    _staff("sam")
    _staff("tess")
    attacker = Client(REMOTE_ADDR="10.9.0.3")
    for i in range(settings.AXES_FAILURE_LIMIT):
        attacker.post("/accounts/login/", {"username": "sam", "password": f"guess {i}"})
    # Another account from another address signs in as usual.
    tess = Client(REMOTE_ADDR="10.9.0.4")
    assert tess.post("/accounts/login/", {"username": "tess", "password": "the right passphrase"}).status_code == 302
    # The locked-out address cannot sign in to any account.
    assert (
        attacker.post("/accounts/login/", {"username": "tess", "password": "the right passphrase"}).status_code == 429
    )


def test_a_successful_sign_in_forgets_earlier_failures(lockouts_forgotten, settings):
    _staff("sam")
    client = Client(REMOTE_ADDR="10.9.0.5")
    for round_ in range(3):
        for i in range(settings.AXES_FAILURE_LIMIT - 1):
            assert (
                client.post("/accounts/login/", {"username": "sam", "password": f"guess {round_}.{i}"}).status_code
                == 200
            )
        assert (
            client.post("/accounts/login/", {"username": "sam", "password": "the right passphrase"}).status_code == 302
        )
        client.logout()
