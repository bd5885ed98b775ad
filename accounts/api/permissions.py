from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.models import Role
from accounts.selectors import user_has_role


class _RolePermission(BasePermission):
    roles: tuple[str, ...] = ()
    message = "This action needs one of these roles: {roles}."

    def has_permission(self, request, view) -> bool:
        allowed = user_has_role(request.user, *self.roles)
        if not allowed:
            self.message = f"This action needs the {' or '.join(self.roles)} role."
        return allowed


class IsOperator(_RolePermission):
    roles = (Role.OPERATOR,)


class IsContributor(_RolePermission):
    roles = (Role.CONTRIBUTOR, Role.OPERATOR)


class IsNode(_RolePermission):
    roles = (Role.NODE,)


class ReadOnlyOrOperator(BasePermission):
    """Anyone reads (transparency); only operators write."""

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return IsOperator().has_permission(request, view)
