from django.apps import AppConfig


class SigningConfig(AppConfig):
    name = "signing"
    verbose_name = "Signed approved set"

    def ready(self) -> None:
        from registry.signals import approved_set_published
        from signing.receivers import signed_set_publish_on_approved_set

        approved_set_published.connect(signed_set_publish_on_approved_set, dispatch_uid="signing-approved-set-published")
