from django.apps import AppConfig


class ConclaveConfig(AppConfig):
    """The project package as an app, so its management commands (`up`) load."""

    name = "conclave"
    verbose_name = "Conclave"

    def ready(self) -> None:
        # Django's Celery recipe imports the app in the project's __init__;
        # here, so that `shared_task`s bind to it in every Django process.
        import conclave.celery  # noqa: F401
