from django.apps import AppConfig


class SigningConfig(AppConfig):
    name = "signing"
    verbose_name = "Signed approved set"

    def ready(self) -> None:
        from governance.signals import runtime_parameters_changed
        from registry.signals import approved_set_published
        from signing.receivers import signed_set_publish_on_approved_set, signed_set_refresh_on_parameters_changed

        approved_set_published.connect(
            signed_set_publish_on_approved_set, dispatch_uid="signing-approved-set-published"
        )
        runtime_parameters_changed.connect(
            signed_set_refresh_on_parameters_changed, dispatch_uid="signing-runtime-parameters-changed"
        )
