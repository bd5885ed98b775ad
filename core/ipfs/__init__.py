"""Pinning backends: `embedded` (a local content-addressed store) or `kubo`."""

from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.ipfs.base import ObjectInfo, ObjectNotFound, PinError, PinningBackend, StagedFile

__all__ = ["ObjectInfo", "ObjectNotFound", "PinError", "PinningBackend", "StagedFile", "pinning_backend"]


@lru_cache(maxsize=4)
def _backend(name: str, store_dir: str, api_url: str, timeout: float) -> PinningBackend:
    if name == "embedded":
        from core.ipfs.embedded import EmbeddedStore

        return EmbeddedStore(store_dir)
    if name == "kubo":
        from core.ipfs.kubo import KuboBackend

        return KuboBackend(api_url, timeout=timeout)
    raise ImproperlyConfigured(f"IPFS_BACKEND must be 'embedded' or 'kubo', got {name!r}")


def pinning_backend() -> PinningBackend:
    return _backend(
        settings.IPFS_BACKEND,
        str(settings.IPFS_STORE_DIR),
        settings.IPFS_API_URL,
        settings.IPFS_API_TIMEOUT_SECONDS,
    )
