from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.ipfs import pinning_backend
from core.ipfs.base import ObjectNotFound
from core.ipfs.car import car_export
from core.ipfs.cid import InvalidCid, validate_cid
from core.ipfs.embedded import EmbeddedStore


class Command(BaseCommand):
    help = (
        "Write CAR files of the embedded IPFS store (every pinned root, or the CIDs given) so a Kubo "
        "node imports them unchanged with `ipfs dag import`."
    )

    def add_arguments(self, parser):
        parser.add_argument("cids", nargs="*")
        parser.add_argument("--out", required=True, help="folder to write <cid>.car files into")

    def handle(self, *args, cids: list[str], out: str, **options):
        store = pinning_backend()
        if not isinstance(store, EmbeddedStore):
            raise CommandError(
                "ipfs_export reads the embedded store; with IPFS_BACKEND=kubo the node already holds the data"
            )
        for cid in cids:
            try:
                validate_cid(cid)
            except InvalidCid as exc:
                raise CommandError(f"{cid}: {exc}") from exc
        targets = cids or store.pinned_roots()
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        for cid in targets:
            try:
                root = car_export(store, cid, folder / f"{cid}.car")
            except ObjectNotFound as exc:
                raise CommandError(f"{cid} is not in the embedded store") from exc
            self.stdout.write(f"{folder / f'{cid}.car'} root {root}")
        self.stdout.write(f"{len(targets)} CAR file(s); import each with: ipfs dag import <file>.car")
