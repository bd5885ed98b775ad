"""Celery tasks of the dashboards app (scheduled in conclave.config.dashboards)."""

from celery import shared_task

from dashboards import services


@shared_task(name="dashboards.tasks.metrics_rollup", ignore_result=False)
def metrics_rollup() -> dict:
    return services.metrics_rollup().as_dict()
