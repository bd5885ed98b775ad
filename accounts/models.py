"""Roles are Django groups, so operators manage them in the admin."""

from django.db import models


class Role(models.TextChoices):
    CONTRIBUTOR = "contributor", "Contributor"
    OPERATOR = "operator", "Operator"
    NODE = "node", "Node"
