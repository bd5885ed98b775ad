from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Role
from accounts.services import user_grant_role
from core.errors import DomainError
from core.ipfs import PinError
from registry.models import PinStatus
from registry.packs import PACKS, PackMissing, pack_declared_sha256, pack_source_info, pack_sources, pack_version
from registry.services import approved_set_pin, genesis_adopt, manifest_pin, manifest_register
from signing.services import signed_set_refresh

GENESIS_REASON = (
    "Genesis adoption: the default embedding and generative models that ship with Conclave, "
    "approved by the operator at bootstrap so the network can serve before its first vote."
)


class Command(BaseCommand):
    help = (
        "Migrate, register and pin the model packs installed from PyPI, and approve the two "
        "default models as the recorded genesis adoption. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--operator", default="operator", help="operator account the genesis adoption is recorded under")
        parser.add_argument("--skip-migrate", action="store_true")

    def handle(self, *args, operator: str, skip_migrate: bool, **options):
        if not skip_migrate:
            call_command("migrate", interactive=False, verbosity=0)
        actor = user_grant_role(username=operator, role=Role.OPERATOR)
        defaults = []
        for pack in PACKS:
            try:
                sources = pack_sources(pack)
            except PackMissing as exc:
                level = self.style.ERROR if pack.default else self.style.WARNING
                self.stdout.write(level(f"skip {pack.model_name}: {exc}"))
                if pack.default:
                    raise CommandError(f"default model pack {pack.distribution} is missing: {exc}") from exc
                continue
            try:
                manifest, created = manifest_register(
                    model_name=pack.model_name,
                    version=pack_version(pack),
                    kind=pack.kind,
                    fmt=pack.fmt,
                    quantization=pack.quantization,
                    license=pack.license,
                    files=sources,
                    source=pack_source_info(pack),
                    actor=actor,
                    pin="none",
                    expected_sha256=pack_declared_sha256(pack),
                )
                if manifest.pin_status != PinStatus.PINNED:
                    manifest = manifest_pin(manifest=manifest)
            except (DomainError, PinError) as exc:
                raise CommandError(f"{pack.model_name}: {exc}") from exc
            verb = "registered" if created else "already registered"
            self.stdout.write(f"{verb} {manifest} ({manifest.kind}, {manifest.size_bytes:,} B) cid {manifest.ipfs_cid}")
            if pack.default:
                defaults.append(manifest)
        approved_set = genesis_adopt(manifests=defaults, actor=actor, reason=GENESIS_REASON)
        if approved_set is not None:
            # No worker runs inside this command: pin the new documents here.
            for manifest in defaults:
                manifest_pin(manifest=manifest)
            approved_set_pin(approved_set=approved_set)
            self.stdout.write(self.style.SUCCESS(f"genesis adoption recorded: approved set v{approved_set.version} cid {approved_set.cid}"))
        else:
            self.stdout.write("genesis adoption already recorded")
        # Sign (or re-sign, near expiry) the current set so nodes can pull at once.
        signed = signed_set_refresh()
        if signed is not None:
            self.stdout.write(f"signed approved set v{signed.version}, expires {signed.expires:%Y-%m-%d %H:%M}Z")
