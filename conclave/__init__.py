"""The project package: settings, URLs, the Celery app.

The Celery app is created when Django starts (`ConclaveConfig.ready`), not
on import, so that importing the node agent (`conclave.node`) does not
import Celery and Django: a serving node runs without either.
"""


def __getattr__(name: str):
    if name == "celery_app":
        from conclave.celery import app

        return app
    raise AttributeError(f"module 'conclave' has no attribute {name!r}")
