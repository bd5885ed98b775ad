from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework.authtoken.models import Token

from accounts.models import Role
from core.errors import ValidationFailed


@transaction.atomic
def user_grant_role(*, username: str, role: str) -> "get_user_model()":
    """Create the user if needed and put it in the role's group.

    Operators also get `is_staff` so they can use the admin.
    """
    if role not in Role.values:
        raise ValidationFailed(
            f"Unknown role {role!r}; choose one of {', '.join(Role.values)}.",
            fields={"role": [f"Choose one of {', '.join(Role.values)}."]},
        )
    if not username or len(username) > 150:
        raise ValidationFailed("A username of 1 to 150 characters is required.", fields={"username": ["Required."]})
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
    group, _ = Group.objects.get_or_create(name=role)
    user.groups.add(group)
    if role == Role.OPERATOR and not user.is_staff:
        user.is_staff = True
    user.save()
    return user


@transaction.atomic
def token_issue(*, username: str, role: str) -> Token:
    """Return the user's API token, creating user, role and token as needed."""
    user = user_grant_role(username=username, role=role)
    token, _ = Token.objects.get_or_create(user=user)
    return token
