"""Installing a verified set into the models folder, atomically, keeping the previous one.

A set is assembled in a hidden staging folder beside its final place, fsynced,
renamed into `sets/v<N>` (a single rename) and then made current by
replacing the `current` symlink (another single rename). A crash at any point
leaves `current` on a complete set: the old one or the new one. The set that
was current becomes `previous`, which `conclave-node rollback` switches back to;
older sets are removed.
"""

import os
import shutil
import tempfile
from pathlib import Path

from conclave_node.errors import InstallError, NothingInstalled
from conclave_node.metadata import SignedSet
from conclave_node.state import InstalledSet, fsync_dir, write_atomic

SET_METADATA = "approved_set.json"


def set_folder_name(approved_set_version: int) -> str:
    return f"v{approved_set_version}"


def install_set(
    *,
    models_dir: Path,
    signed_set: SignedSet,
    envelope: bytes,
    files: dict[tuple[str, str], Path],
    reused: set[tuple[str, str]],
) -> InstalledSet:
    """Place every file of `signed_set` under `sets/v<N>` (not yet current: see `switch_current`).

    `files` maps (manifest key, file path) to a verified copy: downloaded
    part files are moved in; files in `reused` (already in an installed set)
    are hard-linked, or copied where links are impossible.
    """
    sets_dir = models_dir / "sets"
    sets_dir.mkdir(parents=True, exist_ok=True)
    name = set_folder_name(signed_set.approved_set_version)
    final = sets_dir / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=sets_dir))
    try:
        placed: dict[Path, Path] = {}
        for manifest in signed_set.manifests:
            folder = staging / manifest.model_name / manifest.version
            folder.mkdir(parents=True, exist_ok=True)
            for file in manifest.files:
                source = files[(manifest.key, file.path)]
                target = folder / file.path
                if source in placed:
                    _link_or_copy(placed[source], target)
                elif (manifest.key, file.path) in reused:
                    _link_or_copy(source, target)
                else:
                    os.replace(source, target)
                placed[source] = target
                os.chmod(target, 0o444)
            fsync_dir(folder)
        write_atomic(staging / SET_METADATA, envelope)
        fsync_dir(staging)
        if final.exists():
            _remove_tree(final, sets_dir)
        os.rename(staging, final)
        fsync_dir(sets_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InstallError(
            f"cannot install approved set v{signed_set.approved_set_version} into {sets_dir}: {exc}"
        ) from exc
    return InstalledSet(
        approved_set_version=signed_set.approved_set_version, signed_version=signed_set.version, path=str(final)
    )


def switch_current(*, models_dir: Path, installed: InstalledSet, previous: InstalledSet | None) -> None:
    """Make `installed` current and `previous` the rollback target; prune every other set."""
    _point(models_dir / "current", Path("sets") / Path(installed.path).name)
    keep = {Path(installed.path).name}
    if previous is not None and Path(previous.path).exists():
        _point(models_dir / "previous", Path("sets") / Path(previous.path).name)
        keep.add(Path(previous.path).name)
    else:
        (models_dir / "previous").unlink(missing_ok=True)
    sets_dir = models_dir / "sets"
    for entry in sets_dir.iterdir():
        if entry.name not in keep and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def rollback(
    *, models_dir: Path, installed: InstalledSet | None, previous: InstalledSet | None
) -> tuple[InstalledSet, InstalledSet]:
    if installed is None:
        raise NothingInstalled("no approved set is installed yet")
    if previous is None or not Path(previous.path).exists():
        raise NothingInstalled("there is no previous set to roll back to")
    switch_current(models_dir=models_dir, installed=previous, previous=installed)
    return previous, installed


def refresh_metadata(installed: InstalledSet, envelope: bytes) -> None:
    """Replace the installed set's signed document with a newer signing of the same set."""
    write_atomic(Path(installed.path) / SET_METADATA, envelope)


def _point(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _remove_tree(path: Path, parent: Path) -> None:
    trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=parent))
    os.rename(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)
