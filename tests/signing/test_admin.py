"""The admin lists signed metadata and node reports, read-only."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from nodes.services import node_report_record
from signing.services import signed_set_refresh
from tests.node.conftest import approve

pytestmark = pytest.mark.django_db


def test_changelists_show_rows_and_offer_no_edits():
    approve("admin-model", size=1000)
    signed = signed_set_refresh()
    node = get_user_model().objects.create_user("node-admin")
    node_report_record(node=node, models=[])
    admin = get_user_model().objects.create_superuser("root-admin", password="x")
    client = Client()
    client.force_login(admin)
    for name in ("signing/rootmetadata", "signing/signedapprovedset", "nodes/nodereport"):
        response = client.get(f"/admin/{name}/")
        assert response.status_code == 200, name
        assert f"/admin/{name}/add/" not in response.content.decode()
    assert signed.cid in client.get("/admin/signing/signedapprovedset/").content.decode()
    assert client.get("/admin/signing/signedapprovedset/add/").status_code == 403
