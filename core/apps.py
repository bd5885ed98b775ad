from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Infrastructure every app uses: domain errors and the API's one error shape, locks, HTMX, IPFS."""

    name = "core"
    verbose_name = "Core"
