"""Rollups of latency samples: what the dashboards read instead of raw samples."""

from django.db import models

from conclave_node.sketch import LatencySketch


def sketch_empty() -> dict:
    return LatencySketch().as_dict()


class Resolution(models.IntegerChoices):
    MINUTE = 60, "Minute"
    HOUR = 3600, "Hour"


class LatencyRollup(models.Model):
    """Everything the panels need about one model's requests on one endpoint in one period.

    Minute rows are computed from `inference.LatencySample`; hour rows by
    merging that hour's minute rows. `e2e`, `queue` and `ttft` are latency
    sketches in the JSON form of `conclave_node.sketch` (1 % relative error),
    over the requests that were not rejected; `cpu` is a sketch of the same
    kind over the CPU milliseconds each request cost the worker. Counts: `ok` (status < 400),
    `rejections` (refused before running: 4xx other than 499, and 503),
    `errors` (other 5xx: timeouts, failures) and `cancelled` (499, the client
    went away); `outcomes` has the count of every outcome, so rejections by
    reason are `outcomes` restricted to rejected ones (`rejection_reasons`).
    """

    period_start = models.DateTimeField()
    resolution = models.PositiveIntegerField(choices=Resolution.choices)
    model = models.CharField(max_length=200)
    endpoint = models.CharField(max_length=32)

    requests = models.PositiveIntegerField()
    ok = models.PositiveIntegerField()
    errors = models.PositiveIntegerField()
    rejections = models.PositiveIntegerField()
    cancelled = models.PositiveIntegerField()
    rejection_reasons = models.JSONField(default=dict)
    outcomes = models.JSONField(default=dict)
    prompt_tokens = models.BigIntegerField()
    completion_tokens = models.BigIntegerField()

    e2e = models.JSONField()
    queue = models.JSONField()
    ttft = models.JSONField()
    cpu = models.JSONField(default=sketch_empty)

    class Meta:
        ordering = ["resolution", "period_start", "model", "endpoint"]
        constraints = [
            models.UniqueConstraint(
                fields=["resolution", "period_start", "model", "endpoint"], name="latency_rollup_unique_period"
            ),
            models.CheckConstraint(
                condition=models.Q(
                    requests=models.F("ok") + models.F("errors") + models.F("rejections") + models.F("cancelled")
                ),
                name="latency_rollup_counts_add_up",
            ),
        ]
        indexes = [models.Index(fields=["resolution", "model", "period_start"], name="latency_rollup_model_time")]

    def __str__(self) -> str:
        return f"{self.model} {self.endpoint} {self.period_start:%Y-%m-%d %H:%M} ({self.get_resolution_display()})"


class RollupCursor(models.Model):
    """How far rollups of one resolution are final: every period before `through` is rolled up."""

    resolution = models.PositiveIntegerField(choices=Resolution.choices, primary_key=True)
    through = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.get_resolution_display()} rollups through {self.through:%Y-%m-%d %H:%M}"
