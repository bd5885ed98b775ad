"""Builders for governance tests: people with roles, rules, proposals at a fixed clock."""

import datetime as dt

from accounts.services import user_grant_role
from governance.models import ProposalType
from governance.services import proposal_create, rules_update

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def person(username: str, role: str = "contributor"):
    return user_grant_role(username=username, role=role)


def operator(username: str = "olive"):
    return person(username, "operator")


def set_rules(proposal_type: str = ProposalType.PARAMETER_CHANGE, **changes):
    """Change a type's rules as an operator would (audited like any change)."""
    return rules_update(proposal_type=proposal_type, actor=operator("rules-operator"), changes=changes)


def parameter_proposal(
    *,
    author=None,
    parameter: str = "queue_size",
    value: int = 8,
    now: dt.datetime | None = T0,
    title: str | None = None,
):
    author = author or person("author")
    return proposal_create(
        author=author,
        proposal_type=ProposalType.PARAMETER_CHANGE,
        title=title or f"Set {parameter} to {value}",
        payload={"parameter": parameter, "value": value, "reason": "load test showed it helps"},
        now=now,
    )
