from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.errors import DomainError
from core.ipfs import PinError
from registry.models import ModelFormat, ModelKind
from registry.services import file_role_for, manifest_register
from registry.staging import FileSource


class Command(BaseCommand):
    help = "Register local model files (or the files of a folder) as a candidate manifest, and pin them."

    def create_parser(self, prog_name, subcommand, **kwargs):
        # The model's --version replaces Django's own --version flag here.
        kwargs.setdefault("conflict_handler", "resolve")
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="files, or one folder holding the model's files")
        parser.add_argument("--name", required=True)
        parser.add_argument("--version", dest="model_version", required=True)
        parser.add_argument("--kind", required=True, choices=ModelKind.values)
        parser.add_argument("--format", dest="fmt", required=True, choices=ModelFormat.values)
        parser.add_argument("--license", required=True)
        parser.add_argument("--quantization", default="")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, paths, name, model_version, kind, fmt, license, quantization, no_progress, **options):
        files = self._collect(paths)
        sources = [FileSource.single(p.name, file_role_for(p.name, fmt), p) for p in files]
        total = sum(p.stat().st_size for p in files)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="hashing", disable=no_progress, file=self.stderr)
        try:
            manifest, created = manifest_register(
                model_name=name,
                version=model_version,
                kind=kind,
                fmt=fmt,
                license=license,
                quantization=quantization,
                files=sources,
                source={"type": "local", "paths": [str(p) for p in files]},
                progress=bar.update,
                pin="sync",
            )
        except (DomainError, PinError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        verb = "registered" if created else "already registered (identical bytes)"
        self.stdout.write(f"{verb} {manifest} id={manifest.pk} cid={manifest.ipfs_cid} sha256={manifest.sha256}")
        self.stdout.write(f"pin status: {manifest.pin_status}; manifest cid: {manifest.manifest_cid}")

    def _collect(self, paths: list[str]) -> list[Path]:
        resolved = [Path(p) for p in paths]
        if len(resolved) == 1 and resolved[0].is_dir():
            files = sorted(p for p in resolved[0].iterdir() if p.is_file() and not p.name.startswith("."))
            if not files:
                raise CommandError(f"{resolved[0]} holds no files")
            return files
        missing = [str(p) for p in resolved if not p.is_file()]
        if missing:
            raise CommandError(f"not a file: {', '.join(missing)} (give files, or a single folder)")
        return resolved
