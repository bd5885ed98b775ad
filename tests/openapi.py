"""Checking real responses against the OpenAPI schema the API generates (drf-spectacular, OpenAPI 3.0).

OpenAPI 3.0 writes "may be null" as `nullable: true`, which JSON Schema does
not know: `response_check` turns it into JSON Schema's own form, then
validates with jsonschema (Draft 4, the dialect OpenAPI 3.0 extends).
"""

import copy
import json

import jsonschema
from django.test import Client


def schema_generated() -> dict:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return json.loads(response.content)


def _nullable_as_json_schema(node):
    if isinstance(node, list):
        return [_nullable_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable_as_json_schema(value) for key, value in node.items()}
    if node.pop("nullable", False):
        if "type" in node and not any(k in node for k in ("oneOf", "anyOf", "allOf", "$ref")):
            node["type"] = [node["type"], "null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
        else:
            return {"anyOf": [node, {"type": "null"}]}
    return node


def response_check(schema: dict, *, path: str, method: str, response) -> None:
    """Validate `response`'s JSON body against what `schema` documents for `path`, `method` and its status."""
    documented = schema["paths"][path][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method} {path} answered {status}, not documented ({sorted(documented)})"
    body_schema = documented[status]["content"]["application/json"]["schema"]
    root = {**copy.deepcopy(body_schema), "components": _nullable_as_json_schema(schema["components"])}
    jsonschema.Draft4Validator(root).validate(response.json())
