"""The Celery application shared by the web process and every worker."""

import os

from celery import Celery
from celery.app.amqp import AMQP
from kombu import Connection

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "conclave.settings")


class BrokerConnection(Connection):
    """A broker connection that retries a lost broker at most `interval_max` seconds apart.

    A worker reconnects with kombu's own waits (2 s, then 2 s longer each
    time, up to 30 s), whatever the transport options say: after a long
    outage it came back up to 30 s after the broker did. Here every wait is
    capped by `broker_transport_options["interval_max"]`, the bound the web
    side's publishing uses too.
    """

    def _ensure_connection(
        self, errback=None, max_retries=None, interval_start=2, interval_step=2, interval_max=30, **kwargs
    ):
        bound = (self.transport_options or {}).get("interval_max")
        if bound is not None:
            interval_start, interval_step, interval_max = (
                min(v, bound) for v in (interval_start, interval_step, interval_max)
            )
        return super()._ensure_connection(errback, max_retries, interval_start, interval_step, interval_max, **kwargs)


class BrokerAMQP(AMQP):
    Connection = BrokerConnection


app = Celery("conclave", amqp=BrokerAMQP)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
