"""Seed one rules row per proposal type and the roadmap's governed parameters.

The values are copied here (not imported) so this migration keeps meaning
what it meant when it was written. The services create missing rows on
demand too, so a flushed test database works without it.
"""

from decimal import Decimal

from django.conf import settings
from django.db import migrations

PROPOSAL_TYPES = ("model-adoption", "model-retirement", "parameter-change")

PARAMETERS = (
    ("max_tokens_per_request", 512, 1, 8192, "tokens", "Most tokens one request may generate."),
    ("max_concurrent_requests", 2, 1, 64, "requests", "Requests a worker serves at once."),
    ("request_timeout_seconds", 30, 1, 600, "seconds", "Server-side deadline of one request."),
    ("memory_limit_mb", 2048, 256, 65536, "MB", "Memory a node gives its loaded models."),
    ("queue_size", 5, 0, 1000, "requests", "Requests that may wait for a worker before 503."),
)


def seed(apps, schema_editor):
    rules_model = apps.get_model("governance", "ProposalRules")
    parameter_model = apps.get_model("governance", "GovernedParameter")
    for proposal_type in PROPOSAL_TYPES:
        rules_model.objects.get_or_create(
            proposal_type=proposal_type,
            defaults={
                "voting_delay_seconds": settings.GOVERNANCE_VOTING_DELAY_SECONDS,
                "voting_period_seconds": settings.GOVERNANCE_VOTING_PERIOD_SECONDS,
                "quorum": Decimal(str(settings.GOVERNANCE_QUORUM)),
                "approval_threshold": Decimal(str(settings.GOVERNANCE_APPROVAL_THRESHOLD)),
                "timelock_seconds": settings.GOVERNANCE_TIMELOCK_SECONDS,
                "grace_period_seconds": settings.GOVERNANCE_GRACE_PERIOD_SECONDS,
            },
        )
    for name, default, minimum, maximum, unit, description in PARAMETERS:
        parameter_model.objects.get_or_create(
            name=name,
            defaults={
                "value": default,
                "minimum": minimum,
                "maximum": maximum,
                "unit": unit,
                "description": description,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("governance", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
