from django.apps import AppConfig


class ConclaveConfig(AppConfig):
    """The project package as an app, so its management commands (`up`, `bootstrap`) load."""

    name = "conclave"
    verbose_name = "Conclave"
