"""The site's pages run under a strict Content-Security-Policy without breaking, and pinned pages never run."""

import pytest
from django.utils import timezone
from playwright.sync_api import Error as PlaywrightError

from governance.models import ProposalType
from governance.services import proposal_create
from registry.models import FileRole
from registry.services import manifest_register
from registry.staging import FileSource
from tests.browser.conftest import wait_for_js
from tests.governance.factories import person
from tests.registry.factories import model_files

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPTED_PAGE = (
    b"<html><body><script>document.title = 'ran as the platform'; window.__ran = true;</script></body></html>"
)


def test_every_page_loads_under_the_policy_with_no_violation(page, settings):
    proposal = proposal_create(
        author=person("alice"),
        proposal_type=ProposalType.PARAMETER_CHANGE,
        title="Raise the queue to 8",
        payload={"parameter": "queue_size", "value": 8, "reason": "bursts"},
        now=timezone.now(),
    )
    for path in (
        "/accounts/login/",
        "/governance/",
        f"/governance/proposals/{proposal.pk}/",
        "/governance/parameters/",
        "/audit/",
        "/dashboards/",
        "/dashboards/governance/",
    ):
        response = page.goto(page.base_url + path)
        assert response.status == 200, path
        assert response.headers["content-security-policy"] == settings.CONTENT_SECURITY_POLICY, path
        page.wait_for_load_state("networkidle")
    assert page.js_errors == []


def test_an_inline_script_is_refused_and_reported_as_an_error(page):
    page.goto(page.base_url + "/governance/")
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = true'; "
        "document.body.append(s); }"
    )
    wait_for_js(page, "window.__ran === undefined")
    page.wait_for_timeout(0)
    assert page.evaluate("window.__ran") is None
    assert any(error.startswith("CSP violation: script-src") for error in page.js_errors), page.js_errors


def test_a_pinned_html_page_is_downloaded_not_run_on_the_platforms_origin(page, tmp_path):
    files = model_files(fmt="onnx", content=b"weights")
    extra = tmp_path / "x.html"
    extra.write_bytes(SCRIPTED_PAGE)
    manifest, _ = manifest_register(
        model_name="with-page",
        version="1",
        kind="embedding",
        fmt="onnx",
        license="MIT",
        files=[*files, FileSource.single("x.html", FileRole.AUXILIARY, extra)],
        source={},
        pin="sync",
        formats_check=False,  # placeholder weights: the page is what is under test
    )
    url = f"{page.base_url}/ipfs/{manifest.ipfs_cid}/x.html"
    with page.expect_download() as download:
        try:
            page.goto(url)
        except PlaywrightError:
            pass  # Chromium aborts a navigation that turns into a download
    assert download.value.suggested_filename == "x.html"
    assert page.evaluate("window.__ran") is None
