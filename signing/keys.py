"""Loading and creating the platform's Ed25519 signing keys.

Keys are PEM (PKCS#8) files named in the environment: `SIGNING_ROOT_KEYS`
(the keys that sign root metadata, i.e. the list of trusted keys; they can
stay offline once root is published) and `SIGNING_ONLINE_KEYS` (the keys
that sign each approved set), with `SIGNING_ROOT_THRESHOLD` and
`SIGNING_ONLINE_THRESHOLD`. With neither list set, embedded runs create as
many keys as each threshold needs under `<DATA_DIR>/keys/` (mode 0600) on
first use; production refuses to guess.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from conclave_node.metadata import key_id, public_key_document

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SigningKey:
    path: Path
    private: Ed25519PrivateKey

    @property
    def public_document(self) -> dict:
        return public_key_document(self.private.public_key())

    @property
    def keyid(self) -> str:
        return key_id(self.public_document)


@dataclass(frozen=True)
class KeyConfig:
    root_keys: tuple[SigningKey, ...]
    root_threshold: int
    online_keys: tuple[SigningKey, ...]
    online_threshold: int
    embedded: bool


def key_create(path: Path) -> SigningKey:
    """Write a new Ed25519 private key to `path` (0600, never overwriting)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return SigningKey(path=path, private=private)


def key_load(path: Path) -> SigningKey:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot read signing key {path}: {exc.strerror}") from exc
    try:
        private = load_pem_private_key(data, password=None)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise ImproperlyConfigured(f"{path} holds a {type(private).__name__}; signing keys must be Ed25519")
    if path.stat().st_mode & 0o077:
        logger.warning("signing key %s is readable by group or others; chmod 600 it", path)
    return SigningKey(path=path, private=private)


def keys_dir() -> Path:
    return Path(settings.SIGNING_KEYS_DIR or Path(settings.DATA_DIR) / "keys")


def _embedded_keys(prefix: str, count: int) -> tuple[SigningKey, ...]:
    folder = keys_dir()
    keys = []
    for index in range(1, count + 1):
        path = folder / f"{prefix}-{index}.pem"
        if path.exists():
            keys.append(key_load(path))
        else:
            try:
                keys.append(key_create(path))
                logger.info("created signing key %s", path)
            except FileExistsError:
                # Another process created it between the check and the create.
                keys.append(key_load(path))
    return tuple(keys)


def _check_threshold(name: str, threshold: int, keys: tuple[SigningKey, ...]) -> None:
    if threshold < 1:
        raise ImproperlyConfigured(f"{name} must be at least 1, got {threshold}")
    if keys and threshold > len(keys):
        raise ImproperlyConfigured(f"{name}={threshold} but only {len(keys)} key file(s) are configured")
    if len({k.keyid for k in keys}) != len(keys):
        raise ImproperlyConfigured(f"the same key is listed twice for {name.removesuffix('_THRESHOLD')}")


def key_config() -> KeyConfig:
    """The keys this process may sign with, from settings (loaded from disk on every call).

    Root keys may be absent (kept offline): then only an existing root can
    be used, and rotating it needs `manage.py signing_keys rotate` with them.
    """
    root_paths = list(settings.SIGNING_ROOT_KEYS)
    online_paths = list(settings.SIGNING_ONLINE_KEYS)
    root_threshold = int(settings.SIGNING_ROOT_THRESHOLD)
    online_threshold = int(settings.SIGNING_ONLINE_THRESHOLD)
    embedded = not root_paths and not online_paths
    if embedded:
        if settings.PRODUCTION:
            raise ImproperlyConfigured(
                "SIGNING_ONLINE_KEYS (and SIGNING_ROOT_KEYS to publish root) must name key files when "
                "CONCLAVE_ENV=production; create them with `manage.py signing_keys generate PATH`"
            )
        root_keys = _embedded_keys("root", max(root_threshold, 1))
        online_keys = _embedded_keys("online", max(online_threshold, 1))
    else:
        if not online_paths:
            raise ImproperlyConfigured("SIGNING_ONLINE_KEYS must name the key files that sign approved sets")
        root_keys = tuple(key_load(Path(p)) for p in root_paths)
        online_keys = tuple(key_load(Path(p)) for p in online_paths)
    _check_threshold("SIGNING_ROOT_THRESHOLD", root_threshold, root_keys)
    _check_threshold("SIGNING_ONLINE_THRESHOLD", online_threshold, online_keys)
    return KeyConfig(
        root_keys=root_keys,
        root_threshold=root_threshold,
        online_keys=online_keys,
        online_threshold=online_threshold,
        embedded=embedded,
    )
