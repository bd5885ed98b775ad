from django.core.management.base import BaseCommand, CommandError

from accounts.models import Role
from accounts.services import token_issue
from core.errors import DomainError


class Command(BaseCommand):
    help = "Create USERNAME if needed, give it a role, and print its API token."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Role.values)

    def handle(self, *args, username, role, **options):
        try:
            token = token_issue(username=username, role=role)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(token.key)
