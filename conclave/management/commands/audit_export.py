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
        "(checkpoint.json, every checkpoint, every page, root metadata and signed sets, the adopted manifests' "
        "documents, the benchmark evidence of each adoption and its evaluation sets) for offline "
        "`conclave-verify --car` or `ipfs dag import`. With --files, the adopted models' files too "
        "(large; without them conclave-verify reports the files as not checked)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--car", type=Path, help="write the exported history to this CAR file")
        parser.add_argument("--files", action="store_true", help="with --car: include the adopted models' files")

    def handle(self, *args, car: Path | None = None, files: bool = False, **options):
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
            root = write_history_car(checkpoint, car, files=files)
            self.stdout.write(f"{car} root {root}; verify offline with: conclave-verify --car {car}")


def write_history_car(checkpoint: AuditCheckpoint, car: Path, *, files: bool = False) -> str:
    """Pack the history anchored by `checkpoint` into a CARv1 (CIDv0 files, as pinned) and return its root."""
    from signing.models import RootMetadata, SignedApprovedSet

    car.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=car.parent) as tmp:
        folder = Path(tmp) / "history"
        for sub in ("checkpoints", "pages", "keys", "signed", "manifests", "evidence", "evalsets", "files"):
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
        _adoption_documents(folder, upto_seq=checkpoint.seq, files=files)
        return write_folder_car(folder, car, cid_version=0, follow_symlinks=False)


def _pinned(cid: str) -> bytes | None:
    """The bytes the store holds for `cid`, or None (the CAR then lacks them, and conclave-verify says so)."""
    from core.ipfs import ObjectNotFound, pinning_backend

    try:
        return b"".join(pinning_backend().read(cid))
    except (ObjectNotFound, OSError):
        return None


def _adoption_documents(folder: Path, *, upto_seq: int, files: bool) -> None:
    """What conclave-verify re-checks each adoption with, as the history names it (each file named by its CID)."""
    import json

    from conclave_node.benchmarks import EvidenceFormatError, evidence_parse

    events = AuditEvent.objects.filter(seq__lte=upto_seq)
    for payload in events.filter(event_type="manifest.approved").values_list("payload", flat=True).iterator():
        cid = payload.get("manifest_cid")
        data = _pinned(cid) if cid else None
        if data is None:
            continue
        (folder / "manifests" / cid).write_bytes(data)
        if files:
            for item in json.loads(data)["files"]:
                content = _pinned(item["cid"])
                if content is not None:
                    (folder / "files" / item["cid"]).write_bytes(content)
    for payload in events.filter(event_type="proposal.executed").values_list("payload", flat=True).iterator():
        for cid in (payload.get("result") or {}).get("evidence") or []:
            data = _pinned(cid)
            if data is None:
                continue
            (folder / "evidence" / cid).write_bytes(data)
            try:
                evalset = evidence_parse(data)["evaluation_set"]["cid"]
            except EvidenceFormatError:
                continue
            content = _pinned(evalset)
            if content is not None:
                (folder / "evalsets" / evalset).write_bytes(content)
