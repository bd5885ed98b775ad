"""Conditional requests (RFC 9110 section 13) shared by the API and the gateway."""


def etag_matches(if_none_match: str, etag: str) -> bool:
    """True when an If-None-Match header names `etag` (or is `*`): answer 304."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return etag in {tag.strip() for tag in if_none_match.split(",")}
