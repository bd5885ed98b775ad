"""Signing's answers to what the registry announces (connected in `SigningConfig.ready`)."""


def signed_set_publish_on_approved_set(sender, *, approved_set_id: int, **kwargs) -> None:
    """A new approved set committed: queue its signing."""
    from signing.tasks import signed_set_publish_task

    signed_set_publish_task.delay(approved_set_id)


def signed_set_refresh_on_parameters_changed(sender, **kwargs) -> None:
    """An executed parameter change committed: sign the set anew with the new limits."""
    from signing.tasks import signing_refresh_task

    signing_refresh_task.delay()
