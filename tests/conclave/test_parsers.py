"""JSON bodies: deep nesting and lone surrogates get a 400 in the error shape on every JSON endpoint."""

import pytest
from rest_framework.test import APIClient

from core.api.parsers import json_body_load, json_depth_exceeds
from core.errors import ValidationFailed

pytestmark = pytest.mark.django_db

LONE_SURROGATE = b'"\\ud800"'


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- The depth scan ----------------------------------------------------------------------------


def test_depth_counts_arrays_and_objects_but_not_brackets_inside_strings():
    assert not json_depth_exceeds(nested(3), 3)
    assert json_depth_exceeds(nested(4), 3)
    assert json_depth_exceeds(b'{"a": {"b": [{"c": 1}]}}', 3)
    assert not json_depth_exceeds(b'{"a": "[[[[{{{{", "b": ["]]]]"]}', 2)
    # An escaped quote does not end the string; its brackets still don't count.
    assert not json_depth_exceeds(b'{"a": "x\\"[[[[[", "b": "\\\\"}', 1)
    # Many brackets side by side are not deep.
    assert not json_depth_exceeds(b"[" + b"[],{}," * 10_000 + b"[]]", 2)


def test_depth_of_ten_thousand_levels_is_scanned_without_recursion():
    assert json_depth_exceeds(nested(10_000), 64)
    assert json_depth_exceeds(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 64)


def test_loading_refuses_depth_over_the_setting(settings):
    settings.JSON_MAX_DEPTH = 5
    assert json_body_load(nested(5)) == [[[[[]]]]]
    with pytest.raises(ValidationFailed) as refused:
        json_body_load(nested(6))
    assert refused.value.code == "json_too_deep"


def test_loading_names_the_field_holding_a_lone_surrogate():
    with pytest.raises(ValidationFailed) as refused:
        json_body_load(b'{"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "a\\udc00b"}]}')
    assert refused.value.code == "invalid_unicode"
    assert list(refused.value.fields) == ["messages.1.content"]


def test_loading_keeps_escaped_surrogate_pairs_and_other_unicode():
    assert json_body_load(b'{"text": "\\ud83d\\ude00 caf\\u00e9"}') == {"text": "\U0001f600 café"}


# --- Every JSON endpoint ---------------------------------------------------------------------------


def _client(client_as, role):
    return client_as(role) if role else APIClient()


ENDPOINTS = [
    ("/embed", None, b'{"text": %s}'),
    ("/generate", None, b'{"prompt": %s}'),
    ("/v1/embeddings", None, b'{"input": %s}'),
    ("/v1/chat/completions", None, b'{"messages": [{"role": "user", "content": %s}]}'),
    ("/v1/completions", None, b'{"prompt": %s}'),
    ("/api/v1/ask", None, b'{"query": %s}'),
    ("/api/v1/proposals/", "contributor", b'{"title": %s}'),
    ("/api/v1/telemetry/", "node", b'{"node": %s, "models": []}'),
    ("/api/v1/knowledge/", "contributor", b'{"title": %s, "content": "x"}'),
]
FIELDS = {
    "/embed": "text",
    "/generate": "prompt",
    "/v1/embeddings": "input",
    "/v1/chat/completions": "messages.0.content",
    "/v1/completions": "prompt",
    "/api/v1/ask": "query",
    "/api/v1/proposals/": "title",
    "/api/v1/telemetry/": "node",
    "/api/v1/knowledge/": "title",
}


@pytest.mark.parametrize(("path", "role", "template"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_a_lone_surrogate_is_a_400_naming_the_field(client_as, path, role, template):
    response = _client(client_as, role).post(path, template % LONE_SURROGATE, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_unicode"
    assert list(error["fields"]) == [FIELDS[path]]


@pytest.mark.parametrize(("path", "role", "template"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_json_nested_a_thousand_deep_is_a_400(client_as, path, role, template):
    response = _client(client_as, role).post(path, template % nested(1000), content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "json_too_deep"
    assert "JSON_MAX_DEPTH" in error["message"]


def test_the_depth_limit_is_a_setting(client_as, settings):
    settings.JSON_MAX_DEPTH = 3
    body = b'{"title": "t", "description": {"a": {"b": {"c": 1}}}}'
    response = client_as("contributor").post("/api/v1/proposals/", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "json_too_deep"


def test_a_body_that_is_not_json_is_still_a_parse_error():
    response = APIClient().post("/embed", b'{"text": ', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
