"""Every page loads its scripts and stylesheets from this site: nothing from a CDN or another origin."""

from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse

from tests.dashboards.conftest import story_build

pytestmark = pytest.mark.django_db


class _Assets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.urls.append(attrs["src"])
        elif (
            tag == "link"
            and attrs.get("href")
            and {"stylesheet", "icon", "preload", "modulepreload"} & set((attrs.get("rel") or "").split())
        ):
            self.urls.append(attrs["href"])


def _assets(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


def _external(url: str) -> bool:
    return url.startswith(("http:", "https:", "//")) or ":" in url.split("/")[0]


def test_no_page_references_an_external_script_or_stylesheet():
    story = story_build()
    client = Client()
    client.force_login(story.voters[0])
    pages = [
        "/",
        reverse("governance:proposal-list"),
        reverse("governance:proposal-detail", args=[story.adoption.pk]),
        reverse("governance:proposal-new"),
        reverse("governance:parameters"),
        reverse("audit:event-list"),
        reverse("audit:verify"),
        reverse("dashboards:overview"),
        reverse("dashboards:adoptions"),
        reverse("dashboards:governance"),
        reverse("dashboards:fleet"),
        reverse("dashboards:model", args=[story.successor.pk]),
        reverse("swagger-ui"),
        reverse("account"),
    ]
    anonymous = ["/admin/login/", reverse("login")]
    seen: dict[str, list[str]] = {}
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        seen[path] = _assets(response.content.decode())
    for path in anonymous:
        response = Client().get(path)
        assert response.status_code == 200, path
        seen[path] = _assets(response.content.decode())

    external = {path: [url for url in urls if _external(url)] for path, urls in seen.items()}
    assert not any(external.values()), external
    # Swagger UI comes from the install (drf-spectacular-sidecar), and every asset is really served.
    assert any("swagger-ui-bundle" in url for url in seen[reverse("swagger-ui")])
    for url in sorted({url for urls in seen.values() for url in urls}):
        assert Client().get(url).status_code == 200, url
