from django.core.management.base import BaseCommand

from governance.services import proposals_advance


class Command(BaseCommand):
    help = (
        "Record every due proposal transition (open, close, queue, expire) and execute due proposals now; "
        "the same work the scheduler's beat does every GOVERNANCE_ADVANCE_INTERVAL_SECONDS."
    )

    def handle(self, *args, **options):
        report = proposals_advance()
        if not report:
            self.stdout.write("nothing due")
        for proposal_id, done in sorted(report.items()):
            self.stdout.write(f"proposal #{proposal_id}: {', '.join(done)}")
