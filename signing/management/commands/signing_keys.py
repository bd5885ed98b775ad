"""Manage the signing keys and root metadata nodes trust.

signing_keys init                  create embedded keys if needed, publish root v1, sign the current set
signing_keys show                  root versions, roles and key ids, the latest signed set
signing_keys export-root [-o FILE] [--version N]   the trust root a node's `init --trust-root` needs
signing_keys generate PATH         a new Ed25519 key file (0600); prints its key id
signing_keys rotate [--previous-root-key FILE ...] [--root-key FILE ...]
                                   publish the next root from the configured keys (a key left
                                   out of SIGNING_ONLINE_KEYS is revoked), then re-sign the set
signing_keys sign                  sign the current approved set now
"""

import json
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from conclave_node.metadata import ROOT_ROLE, SET_ROLE, parse_root
from core.errors import DomainError
from signing.keys import key_create, key_load
from signing.selectors import root_current, root_get, signed_set_current
from signing.services import root_ensure, signed_set_refresh


class Command(BaseCommand):
    help = "Manage the platform's signing keys and the root metadata nodes trust."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("init", help="create embedded keys if needed, publish root v1, sign the current set")
        sub.add_parser("show", help="show root versions, roles, key ids and the latest signed set")
        export = sub.add_parser("export-root", help="write root metadata for `conclave-node init --trust-root`")
        export.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
        export.add_argument("--version", type=int, help="root version (default: current)")
        generate = sub.add_parser("generate", help="create a new Ed25519 key file (mode 0600)")
        generate.add_argument("path", type=Path)
        rotate = sub.add_parser("rotate", help="publish the next root version from the configured keys")
        rotate.add_argument(
            "--previous-root-key",
            action="append",
            type=Path,
            default=[],
            help="key file of the previous root's root role, when it is no longer configured (repeatable)",
        )
        rotate.add_argument(
            "--root-key",
            action="append",
            type=Path,
            default=[],
            help="offline root key file to sign with when SIGNING_ROOT_KEYS is unset (repeatable)",
        )
        sub.add_parser("sign", help="sign the current approved set now")

    def handle(self, *args, action: str, **options):
        try:
            getattr(self, f"handle_{action.replace('-', '_')}")(**options)
        except (DomainError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from exc

    def handle_init(self, **options):
        root = root_ensure(strict=True)
        signed = signed_set_refresh()
        self.stdout.write(self.style.SUCCESS(f"root v{root.version} (cid {root.cid})"))
        self.stdout.write(
            f"signed set v{signed.version} (cid {signed.cid})" if signed else "no approved set to sign yet"
        )

    def handle_show(self, **options):
        row = root_current()
        if row is None:
            self.stdout.write("no root published yet: run `manage.py signing_keys init`")
            return
        root = parse_root(json.loads(bytes(row.document)))
        self.stdout.write(f"root v{root.version}, expires {row.expires.isoformat()}, cid {row.cid}")
        for name in (ROOT_ROLE, SET_ROLE):
            role = root.role(name)
            self.stdout.write(f"  {name}: {role.threshold} of {len(role.keyids)}")
            for keyid in sorted(role.keyids):
                self.stdout.write(f"    {keyid}")
        signed = signed_set_current()
        if signed is not None:
            self.stdout.write(
                f"signed set v{signed.version}: approved set v{signed.approved_set.version}, "
                f"expires {signed.expires.isoformat()}, cid {signed.cid}, pin {signed.pin_status}"
            )

    def handle_export_root(self, *, output: Path | None, version: int | None, **options):
        row = root_get(version) if version else (root_current() or root_ensure(strict=True))
        data = bytes(row.document)
        if output:
            output.write_bytes(data)
            self.stdout.write(self.style.SUCCESS(f"wrote root v{row.version} to {output}"))
        else:
            self.stdout.write(data.decode())

    def handle_generate(self, *, path: Path, **options):
        try:
            key = key_create(path)
        except FileExistsError as exc:
            raise CommandError(f"{path} exists; refusing to overwrite a key") from exc
        self.stdout.write(f"{key.keyid}  {path}  (public {key.public_document['keyval']['public']})")

    def handle_rotate(self, *, previous_root_key: list[Path], root_key: list[Path], **options):
        signers = [key_load(path) for path in [*previous_root_key, *root_key]]
        before = root_current()
        root = root_ensure(signer_keys=signers, force=True, strict=True)
        self.stdout.write(
            self.style.SUCCESS(
                f"published root v{root.version} (was v{before.version if before else 'none'}), cid {root.cid}"
            )
        )
        signed = signed_set_refresh(force=True)
        if signed is not None:
            self.stdout.write(f"re-signed: signed set v{signed.version} under root v{signed.root_version}")

    def handle_sign(self, **options):
        signed = signed_set_refresh(force=True)
        if signed is None:
            raise CommandError("no approved set has been published yet")
        self.stdout.write(
            self.style.SUCCESS(f"signed set v{signed.version} (cid {signed.cid}, expires {signed.expires})")
        )
