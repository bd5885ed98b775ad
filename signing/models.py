"""Signed metadata the platform publishes: root (its keys) and signed approved sets.

Both keep the exact canonical bytes that were signed and pinned, so what the
API serves and what IPFS holds never drift apart.
"""

from django.db import models

from registry.models import ApprovedSet, PinStatus


class RootMetadata(models.Model):
    """One version of root: the public keys and thresholds nodes trust, signed by the root keys.

    Version N+1 carries signatures from a threshold of version N's root keys,
    so a node can walk the chain from the root it was given at `init`.
    """

    version = models.PositiveIntegerField(unique=True)
    document = models.BinaryField()
    cid = models.CharField(max_length=128)
    expires = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    pin_status = models.CharField(max_length=16, choices=PinStatus.choices, default=PinStatus.PENDING)

    class Meta:
        db_table = "registry_rootmetadata"
        ordering = ["-version"]
        verbose_name = "root metadata"
        verbose_name_plural = "root metadata"

    def __str__(self) -> str:
        return f"root v{self.version}"


class SignedApprovedSet(models.Model):
    """One signing of an approved set: a new row (and version) each time, re-signs included.

    `version` is the signed document's own counter, monotonic across re-signs
    that only move `expires`; `approved_set` is what it carries.
    """

    version = models.PositiveIntegerField(unique=True)
    approved_set = models.ForeignKey(ApprovedSet, on_delete=models.PROTECT, related_name="signings")
    root_version = models.PositiveIntegerField()
    document = models.BinaryField()
    cid = models.CharField(max_length=128)
    signed_at = models.DateTimeField()
    expires = models.DateTimeField(db_index=True)
    pin_status = models.CharField(max_length=16, choices=PinStatus.choices, default=PinStatus.PENDING)

    class Meta:
        db_table = "registry_signedapprovedset"
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"signed set v{self.version} (approved set v{self.approved_set.version})"
