"""Model manifests, their files, and the versioned approved set nodes pull."""

from django.db import models


class ModelKind(models.TextChoices):
    EMBEDDING = "embedding", "Embedding"
    GENERATIVE = "generative", "Generative"


class ModelFormat(models.TextChoices):
    ONNX = "onnx", "ONNX"
    GGUF = "gguf", "GGUF"


class ManifestStatus(models.TextChoices):
    CANDIDATE = "candidate", "Candidate"
    APPROVED = "approved", "Approved"
    RETIRED = "retired", "Retired"


class PinStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PINNED = "pinned", "Pinned"
    FAILED = "failed", "Failed"


def empty_metrics() -> dict:
    return {
        "avg_tokens_per_sec": None,
        "memory_usage_mb": None,
        "quality_score": None,
        "latency_ms": {"p50": None, "p95": None, "p99": None},
    }


# Fields that define what a manifest *is*. They never change after
# registration: different bytes are a new version.
IDENTITY_FIELDS = (
    "model_name",
    "version",
    "kind",
    "format",
    "quantization",
    "size_bytes",
    "sha256",
    "ipfs_cid",
    "license",
)


class Manifest(models.Model):
    """One version of one model: what it is, where its bytes are, and its standing.

    `sha256` is the weights file's; `ipfs_cid` is the weights file's CID for a
    one-file model and the UnixFS directory CID of all files otherwise.
    `manifest_cid` is the CID of the canonical (RFC 8785) JSON document.
    """

    model_name = models.CharField(max_length=128)
    version = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=ModelKind.choices)
    format = models.CharField(max_length=8, choices=ModelFormat.choices)
    quantization = models.CharField(max_length=32, blank=True)
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    ipfs_cid = models.CharField(max_length=128, db_index=True)
    license = models.CharField(max_length=64)
    source = models.JSONField(default=dict, blank=True)

    status = models.CharField(
        max_length=16, choices=ManifestStatus.choices, default=ManifestStatus.CANDIDATE, db_index=True
    )
    approved_by_governance = models.BooleanField(default=False)
    adoption_date = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=empty_metrics)

    pin_status = models.CharField(max_length=16, choices=PinStatus.choices, default=PinStatus.PENDING)
    pin_error = models.TextField(blank=True)
    pinned_at = models.DateTimeField(null=True, blank=True)
    manifest_cid = models.CharField(max_length=128, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_name", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["model_name", "version"], name="manifest_unique_name_version"),
            models.CheckConstraint(condition=models.Q(size_bytes__gte=0), name="manifest_size_nonnegative"),
        ]

    def __str__(self) -> str:
        return f"{self.model_name}@{self.version}"

    @property
    def weights_file(self) -> "ManifestFile":
        return self.files.get(sha256=self.sha256, role=FileRole.WEIGHTS)


class FileRole(models.TextChoices):
    WEIGHTS = "weights", "Weights"
    TOKENIZER = "tokenizer", "Tokenizer"
    AUXILIARY = "auxiliary", "Auxiliary"


class ManifestFile(models.Model):
    """One file of a model, with the hashes a node checks after download."""

    manifest = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=255)
    role = models.CharField(max_length=16, choices=FileRole.choices)
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    cid = models.CharField(max_length=128, db_index=True)

    class Meta:
        ordering = ["manifest_id", "path"]
        constraints = [
            models.UniqueConstraint(fields=["manifest", "path"], name="manifest_file_unique_path"),
        ]

    def __str__(self) -> str:
        return f"{self.manifest}:{self.path}"


class ApprovedSet(models.Model):
    """One published version of the approved set; a new row on every change.

    `document` is the canonical JSON that was pinned under `cid`; the API
    serves it verbatim so its bytes and ETag never drift from the pinned copy.
    """

    version = models.PositiveIntegerField(unique=True)
    generated_at = models.DateTimeField()
    document = models.BinaryField()
    cid = models.CharField(max_length=128)
    pin_status = models.CharField(max_length=16, choices=PinStatus.choices, default=PinStatus.PENDING)

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"approved set v{self.version}"
