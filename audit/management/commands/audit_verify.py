from django.core.management.base import BaseCommand, CommandError

from audit.checkpoints import audit_checkpoints_verify
from audit.selectors import audit_chain_verify


class Command(BaseCommand):
    help = (
        "Recompute the audit chain and compare it with the pinned checkpoints. "
        "Exits 1 and names the first broken link if anything was changed, deleted or inserted."
    )

    def handle(self, *args, **options):
        chain = audit_chain_verify()
        if not chain.ok:
            raise CommandError(
                f"audit chain BROKEN at event #{chain.first_broken_seq}: {chain.reason} "
                f"({chain.events_checked} events verified before it)"
            )
        checkpoints = audit_checkpoints_verify()
        if not checkpoints.ok:
            raise CommandError("audit checkpoints do not match the log: " + "; ".join(checkpoints.problems))
        self.stdout.write(
            f"audit chain OK: {chain.events_checked} events, head #{chain.head_seq} {chain.head_hash}; "
            f"{checkpoints.checked} checkpoint(s) match"
        )
