import tempfile
from pathlib import Path

from aleph_cid import compute_cid, write_folder_car
from django.core.management.base import BaseCommand, CommandError

from audit.checkpoints import audit_checkpoint_create, checkpoint_document
from audit.export import audit_log_pages
from audit.models import AuditCheckpoint, AuditEvent
from core.errors import DomainError
from core.ipfs import PinError


class Command(BaseCommand):
    help = (
        "Export the audit log to the IPFS store as content-addressed pages (RFC 8785 JSON, each linking to "
        "the one before) and pin a checkpoint naming the newest page. With --car, also write one CAR file "
        "(checkpoint.json, every checkpoint, every page, root metadata and signed sets) for offline "
        "`conclave-verify --car` or `ipfs dag import`."
    )

    def add_arguments(self, parser):
        parser.add_argument("--car", type=Path, help="write the exported history to this CAR file")

    def handle(self, *args, car: Path | None = None, **options):
        try:
            created = audit_checkpoint_create()
        except (DomainError, PinError) as exc:
            raise CommandError(str(exc)) from exc
        checkpoint = created or AuditCheckpoint.objects.exclude(log_cid="").order_by("-seq", "-pk").first()
        if checkpoint is None:
            raise CommandError("the audit log is empty: nothing to export")
        verb = "pinned" if created else "already pinned"
        self.stdout.write(
            f"checkpoint {checkpoint.cid} {verb}: event #{checkpoint.seq}, newest page {checkpoint.log_cid}"
        )
        if car is not None:
            root = write_history_car(checkpoint, car)
            self.stdout.write(f"{car} root {root}; verify offline with: conclave-verify --car {car}")


def write_history_car(checkpoint: AuditCheckpoint, car: Path) -> str:
    """Pack the history anchored by `checkpoint` into a CARv1 (CIDv0 files, as pinned) and return its root."""
    from signing.models import RootMetadata, SignedApprovedSet

    car.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=car.parent) as tmp:
        folder = Path(tmp) / "history"
        for sub in ("checkpoints", "pages", "keys", "signed"):
            (folder / sub).mkdir(parents=True)
        events = AuditEvent.objects.in_bulk(
            list(AuditCheckpoint.objects.filter(seq__lte=checkpoint.seq).values_list("seq", flat=True)),
            field_name="seq",
        )
        for row in AuditCheckpoint.objects.filter(seq__lte=checkpoint.seq).order_by("seq", "pk"):
            data = checkpoint_document(events[row.seq], log_cid=row.log_cid)
            if compute_cid(data) != row.cid:
                raise CommandError(f"checkpoint {row.cid} (#{row.seq}) no longer matches the log; run audit_verify")
            (folder / "checkpoints" / f"{row.seq:012d}-{row.pk}.json").write_bytes(data)
            if row.pk == checkpoint.pk:
                (folder / "checkpoint.json").write_bytes(data)
        newest = None
        for page in audit_log_pages(upto_seq=checkpoint.seq):
            (folder / "pages" / f"{page.first_seq:012d}-{page.last_seq:012d}.json").write_bytes(page.data)
            newest = page.cid
        if newest != checkpoint.log_cid:
            raise CommandError(f"the log's newest page is {newest}, the checkpoint names {checkpoint.log_cid}")
        for version, document in RootMetadata.objects.order_by("version").values_list("version", "document"):
            (folder / "keys" / f"{version}.root.json").write_bytes(bytes(document))
        for version, document in SignedApprovedSet.objects.order_by("version").values_list("version", "document"):
            (folder / "signed" / f"{version}.json").write_bytes(bytes(document))
        return write_folder_car(folder, car, cid_version=0, follow_symlinks=False)
