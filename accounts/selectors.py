from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from accounts.models import Role


def user_roles(user: AbstractBaseUser | AnonymousUser) -> set[str]:
    if not user or not user.is_authenticated:
        return set()
    cached = getattr(user, "_conclave_roles", None)
    if cached is None:
        cached = set(user.groups.filter(name__in=Role.values).values_list("name", flat=True))
        if user.is_superuser:
            cached.add(Role.OPERATOR)
        user._conclave_roles = cached
    return cached


def user_has_role(user, *roles: str) -> bool:
    return bool(user_roles(user) & set(roles))


def user_by_username(username: str):
    """The account named `username`, or None."""
    return get_user_model().objects.filter(username=username).first()
