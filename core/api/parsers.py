"""Reading JSON request bodies: one loader for the lean inference paths and DRF's parser.

Two kinds of hostile JSON are refused with a 400 in the API's error shape
before they reach code that cannot cope with them:

- nesting deeper than JSON_MAX_DEPTH, found by a cheap iterative scan of the
  bytes before any recursive parser runs (Python's `json` raises
  RecursionError near 1,000 levels, and serializers recurse further);
- strings holding a lone UTF-16 surrogate (`"\\ud800"`): valid JSON text,
  but no Unicode character, so encoding it again (for the model, Redis or
  the database) fails. The error names the field that holds it.
"""

import json
import re

import numpy as np
import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from core.errors import ValidationFailed

# A whole JSON string, escapes included (the unrolled form, linear in C).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# Everything but the four structural brackets, for bytes.translate to drop.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class JsonTooDeep(ValidationFailed):
    default_code = "json_too_deep"


class JsonInvalidText(ValidationFailed):
    default_code = "invalid_unicode"


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether the arrays and objects in `body` nest more than `limit` deep (no recursion, no Python loop)."""
    # Nesting can't be deeper than the number of openers, which C counts fast.
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    # Drop strings (their brackets don't count), then everything but brackets;
    # the depth after each bracket is a running sum of +1 and -1.
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), np.int8(1), np.int8(-1))
    return bool(steps.size) and int(np.cumsum(steps, dtype=np.int32).max()) > limit


def _depth_check(body: bytes) -> None:
    limit = settings.JSON_MAX_DEPTH
    if json_depth_exceeds(body, limit):
        raise JsonTooDeep(
            f"The JSON body nests arrays and objects more than {limit} levels deep (JSON_MAX_DEPTH).",
            fields={"non_field_errors": [f"At most {limit} levels of nesting."]},
        )


def _surrogate_path(value, path: str = "") -> str | None:
    """The dotted path of the first string (or key) holding a lone surrogate, iteratively."""
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where or "non_field_errors"
        elif isinstance(item, dict):
            for key, inner in item.items():
                inner_path = f"{where}.{key}" if where else str(key)
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return where or "non_field_errors"
                stack.append((inner_path, inner))
        elif isinstance(item, list):
            stack.extend((f"{where}.{index}" if where else str(index), inner) for index, inner in enumerate(item))
    return None


def json_body_load(body: bytes):
    """The JSON document in `body`, refusing deep nesting and lone surrogates with a 400.

    Raises ValidationFailed (a DomainError) for those, json.JSONDecodeError
    for a body that is not JSON at all.
    """
    _depth_check(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses lone surrogates (and NaN, which the stdlib's strict
    # constant hook refuses below): parse again to say which field it was.
    data = json.loads(body, parse_constant=_refuse_constant)
    field = _surrogate_path(data)
    if field is not None:
        raise JsonInvalidText(
            f"{field}: the text holds a lone UTF-16 surrogate (such as \\ud800), which is not a Unicode character.",
            fields={field: ["Holds a lone surrogate (\\ud800-\\udfff); send valid Unicode text."]},
        )
    return data


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class JsonBodyParser(JSONParser):
    """DRF's JSON parser through `json_body_load` (depth and text checks first)."""

    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read() if stream is not None else b""
        try:
            return json_body_load(body)
        except ValueError as exc:  # not JSON, or not UTF-8
            raise ParseError(f"JSON parse error - {exc}") from exc
