"""The node agent against a live platform over real HTTP: it installs, updates, and refuses attacks.

Every attack from TUF's list is played by a real HTTP server (`HostileMirror`)
standing between the agent and the live platform; the platform's signatures
are real Ed25519 signatures from 2-of-3 key sets. Nothing is mocked.
"""

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command

from conclave_node import cli
from conclave_node.errors import (
    DownloadFailed,
    EndlessData,
    ExpiredMetadata,
    RollbackAttack,
    RootRotationError,
    SignatureError,
    TamperedArtifact,
)
from conclave_node.metadata import canonical, sign_envelope
from registry.models import ManifestFile
from registry.selectors import approved_set_current
from registry.services import manifest_retire
from signing.keys import key_create
from signing.services import signed_set_publish_for
from tests.node.conftest import approve
from tests.node.mirror import HostileMirror

pytestmark = pytest.mark.django_db(transaction=True)

SIGNED = "/api/v1/approved/signed/"


def signed_envelope(server: str) -> dict:
    response = httpx.get(server + SIGNED)
    assert response.status_code == 200
    return response.json()


def encode(envelope: dict) -> bytes:
    return canonical(envelope)


def installed_files(node_home) -> dict[str, str]:
    current = node_home.path / "models" / "current"
    return {
        str(path.relative_to(current)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(current.rglob("*"))
        if path.is_file() and path.name != "approved_set.json"
    }


def expected_files(*manifests) -> dict[str, str]:
    return {f"{m.model_name}/{m.version}/{f.path}": f.sha256 for m in manifests for f in m.files.all()}


def weights_of(manifest) -> ManifestFile:
    return manifest.files.get(role="weights")


@pytest.fixture
def mirror(live_server):
    with HostileMirror(live_server.url) as hostile:
        yield hostile


# --- Working as intended ------------------------------------------------------------


def test_pull_installs_every_file_verified_and_status_says_so(
    live_server, platform_keys, two_models, make_node, node_home, capsys
):
    agent = make_node(live_server.url)
    result = agent.pull()
    assert result.outcome == "installed"
    assert result.downloaded_files == 3
    assert installed_files(node_home) == expected_files(*two_models)
    assert sorted(result.models) == sorted(str(m) for m in two_models)

    assert cli.main(["--home", str(node_home.path), "status"]) == 0
    assert "approved set v2" in capsys.readouterr().out


def test_second_pull_gets_304_and_downloads_nothing(live_server, two_models, make_node, mirror):
    agent = make_node(mirror.url)
    agent.pull()
    again = agent.pull()
    assert again.outcome == "up_to_date"
    assert again.not_modified is True
    assert again.downloaded_bytes == 0
    assert (SIGNED, 304) in mirror.statuses


def test_new_set_installs_beside_the_previous_one_and_reuses_unchanged_files(
    live_server, two_models, make_node, node_home
):
    agent = make_node(live_server.url)
    first = agent.pull()
    third = approve("third-model", kind="generative", fmt="gguf", size=50_000)
    second = agent.pull()
    assert second.outcome == "installed"
    assert second.approved_set_version == first.approved_set_version + 1
    assert second.reused_files == 3
    assert second.downloaded_files == 1
    assert installed_files(node_home) == expected_files(*two_models, third)
    models = node_home.path / "models"
    assert (models / "previous").resolve() == Path(first.installed_path)

    assert cli.main(["--home", str(node_home.path), "rollback"]) == 0
    assert (models / "current").resolve() == Path(first.installed_path)
    assert installed_files(node_home) == expected_files(*two_models)


# --- Tampered artifacts and endless data ---------------------------------------------------


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def test_tampered_artifact_is_refused_and_nothing_is_installed(live_server, two_models, make_node, mirror, node_home):
    weights = weights_of(two_models[1])
    mirror.rule(f"/ipfs/{weights.cid}", transform=_flip_last_byte)
    agent = make_node(mirror.url)
    with pytest.raises(TamperedArtifact, match="sha256"):
        agent.pull()
    assert not (node_home.path / "models" / "current").exists()
    assert not (node_home.downloads_dir / f"{weights.sha256}.part").exists()
    assert cli.main(["--home", str(node_home.path), "--quiet", "pull"]) == TamperedArtifact.exit_code


def test_tampered_bytes_from_a_gateway_fall_back_to_the_next_source(
    live_server, two_models, make_node, mirror, node_home
):
    weights = weights_of(two_models[0])
    mirror.rule(f"/ipfs/{weights.cid}", transform=_flip_last_byte)
    agent = make_node(live_server.url, gateways=[mirror.url])
    result = agent.pull()
    assert result.outcome == "installed"
    assert any("sha256" in refusal for refusal in result.refusals)
    assert installed_files(node_home) == expected_files(*two_models)


def test_endless_data_is_cut_at_the_signed_size(live_server, two_models, make_node, mirror, node_home):
    weights = weights_of(two_models[1])
    # The right bytes, then garbage forever (no Content-Length): the agent stops reading at the signed size.
    mirror.rule(f"/ipfs/{weights.cid}", transform=lambda data: data, endless=b"\x00" * 65536)
    agent = make_node(mirror.url)
    result = agent.pull()
    assert result.outcome == "installed"
    assert installed_files(node_home) == expected_files(*two_models)


def test_endless_garbage_is_refused_without_growing_past_the_signed_size(
    live_server, two_models, make_node, mirror, node_home
):
    weights = weights_of(two_models[1])
    mirror.rule(f"/ipfs/{weights.cid}", body=b"", endless=b"\x00" * 65536)
    agent = make_node(mirror.url, attempts=1)
    with pytest.raises(TamperedArtifact):
        agent.pull()
    assert not (node_home.path / "models" / "current").exists()


def test_a_source_announcing_more_than_the_signed_size_is_refused_unread(live_server, two_models, make_node, mirror):
    weights = weights_of(two_models[1])
    mirror.rule(f"/ipfs/{weights.cid}", transform=lambda data: data, announce_length=weights.size_bytes * 1000)
    agent = make_node(mirror.url)
    with pytest.raises(EndlessData, match="announced"):
        agent.pull()


def test_oversized_metadata_is_refused(live_server, two_models, make_node, mirror, monkeypatch):
    from conclave_node import agent as agent_module

    monkeypatch.setattr(agent_module, "MAX_METADATA_BYTES", 1024)
    agent = make_node(mirror.url)
    mirror.rule(SIGNED, body=b"", endless=b" " * 4096)
    with pytest.raises(EndlessData, match="signed approved set"):
        agent.pull()


# --- Interrupted downloads ----------------------------------------------------------------


def test_interrupted_download_resumes_where_it_stopped(live_server, two_models, make_node, mirror, node_home):
    weights = weights_of(two_models[1])
    half = weights.size_bytes // 2
    path = f"/ipfs/{weights.cid}"
    mirror.rule(path, transform=lambda data: data, cut_after=half, times=1)
    agent = make_node(live_server.url, gateways=[mirror.url], use_platform_gateway=False, attempts=1)

    with pytest.raises(DownloadFailed, match="no source delivered"):
        agent.pull()
    part = node_home.downloads_dir / f"{weights.sha256}.part"
    assert part.stat().st_size == half

    result = agent.pull()
    assert result.outcome == "installed"
    assert mirror.requests_for(path)[-1]["Range"] == f"bytes={half}-"
    assert result.resumed_bytes == half
    assert installed_files(node_home) == expected_files(*two_models)
    assert not part.exists()


def test_a_dropped_connection_is_resumed_within_the_same_pull(live_server, two_models, make_node, mirror, node_home):
    weights = weights_of(two_models[0])
    path = f"/ipfs/{weights.cid}"
    mirror.rule(path, transform=lambda data: data, cut_after=1000, times=1)
    agent = make_node(live_server.url, gateways=[mirror.url], use_platform_gateway=False, attempts=2)
    result = agent.pull()
    assert result.outcome == "installed"
    assert mirror.requests_for(path)[-1]["Range"] == "bytes=1000-"
    assert installed_files(node_home) == expected_files(*two_models)


def test_a_trickling_mirror_is_abandoned_for_the_next_source_which_resumes_after_it(
    live_server, two_models, make_node, mirror, node_home
):
    """Slow retrieval (TUF): under the minimum rate over a window, the next source takes over."""
    weights = weights_of(two_models[1])
    path = f"/ipfs/{weights.cid}"
    # About 5 KB/s, far under the 64 KiB/s asked for, on any host (a slow one only trickles slower).
    mirror.rule(path, transform=lambda data: data, trickle=(256, 0.05))
    agent = make_node(live_server.url, gateways=[mirror.url], min_rate_bytes_per_second=65536, rate_window_seconds=0.5)
    result = agent.pull()
    assert result.outcome == "installed"
    assert len(mirror.requests_for(path)) == 1  # abandoned, not retried
    # The platform's gateway continued from the true bytes the trickle had sent.
    assert 0 < result.resumed_bytes < weights.size_bytes
    assert installed_files(node_home) == expected_files(*two_models)


def test_a_trickling_only_source_fails_the_pull_saying_why(live_server, two_models, make_node, mirror, node_home):
    weights = weights_of(two_models[0])
    mirror.rule(f"/ipfs/{weights.cid}", transform=lambda data: data, trickle=(256, 0.05))
    agent = make_node(
        live_server.url,
        gateways=[mirror.url],
        use_platform_gateway=False,
        min_rate_bytes_per_second=65536,
        rate_window_seconds=0.5,
    )
    with pytest.raises(DownloadFailed, match="under the minimum of 65,536 bytes/s"):
        agent.pull()
    assert agent.home.load_state().installed is None


def test_a_source_that_ignores_range_restarts_the_file_from_zero(live_server, two_models, make_node, mirror, node_home):
    weights = weights_of(two_models[1])
    path = f"/ipfs/{weights.cid}"
    mirror.rule(path, transform=lambda data: data, cut_after=4096, times=1)
    agent = make_node(live_server.url, gateways=[mirror.url], use_platform_gateway=False, attempts=1)
    with pytest.raises(DownloadFailed):
        agent.pull()
    mirror.rule(path, transform=lambda data: data, ignore_range=True)
    result = agent.pull()
    assert mirror.requests_for(path)[-1]["Range"] == "bytes=4096-"
    assert (path, 200) in mirror.statuses
    assert result.resumed_bytes == 0
    assert installed_files(node_home) == expected_files(*two_models)


# --- Rollback, freeze, mix-and-match ---------------------------------------------------------


def test_rollback_to_an_older_set_is_refused(live_server, platform_keys, two_models, make_node, mirror, node_home):
    agent = make_node(mirror.url)
    old = signed_envelope(live_server.url)
    agent.pull()
    newer = approve("newer-model", size=10_000)
    latest = agent.pull()
    assert latest.approved_set_version == approved_set_current().version

    mirror.replace(SIGNED, encode(old))
    with pytest.raises(RollbackAttack, match="older"):
        agent.pull()
    assert cli.main(["--home", str(node_home.path), "--quiet", "pull"]) == RollbackAttack.exit_code
    assert installed_files(node_home) == expected_files(*two_models, newer)


def test_a_frozen_expired_set_is_refused(live_server, platform_keys, two_models, make_node, mirror, node_home):
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    expired = signed_set_publish_for(approved_set_current(), now=long_ago, force=True)
    mirror.replace(SIGNED, bytes(expired.document))
    agent = make_node(mirror.url)
    with pytest.raises(ExpiredMetadata, match="expired"):
        agent.pull()
    assert cli.main(["--home", str(node_home.path), "--quiet", "pull"]) == ExpiredMetadata.exit_code
    assert not (node_home.path / "models" / "current").exists()


def test_a_cached_set_answered_with_304_still_expires(live_server, settings, two_models, make_node, mirror):
    agent = make_node(mirror.url)
    agent.pull()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=settings.SIGNING_SET_LIFETIME_SECONDS + 60)
    agent.clock = lambda: later
    with pytest.raises(ExpiredMetadata):
        agent.pull()
    assert mirror.statuses[-1] == (SIGNED, 304)


def test_mix_and_match_of_manifests_from_two_sets_is_refused(live_server, platform_keys, make_node, mirror):
    first = approve("model-a", version="1", size=20_000)
    approve("model-b", size=20_000)
    old = signed_envelope(live_server.url)
    replacement = approve("model-a", version="2", size=20_000)
    manifest_retire(manifest=first, actor=None, reason="replaced by v2")
    new = signed_envelope(live_server.url)
    assert {m["version"] for m in new["signed"]["manifests"] if m["model_name"] == "model-a"} == {replacement.version}

    old_a = next(m for m in old["signed"]["manifests"] if m["model_name"] == "model-a")
    mixed = json.loads(json.dumps(new))
    mixed["signed"]["manifests"] = [old_a if m["model_name"] == "model-a" else m for m in mixed["signed"]["manifests"]]
    mirror.replace(SIGNED, encode(mixed))
    agent = make_node(mirror.url)
    with pytest.raises(SignatureError, match="0 valid signature"):
        agent.pull()

    # Old content under the new set's signatures fails the same way.
    spliced = {"signed": old["signed"], "signatures": new["signatures"]}
    mirror.replace(SIGNED, encode(spliced))
    with pytest.raises(SignatureError):
        agent.pull()


# --- Signatures: threshold, wrong keys, revoked keys, root rotation ----------------------------------


def test_signatures_below_the_threshold_are_refused(
    live_server, platform_keys, two_models, make_node, mirror, node_home
):
    envelope = signed_envelope(live_server.url)
    assert len(envelope["signatures"]) == 3
    one = {"signed": envelope["signed"], "signatures": envelope["signatures"][:1]}
    mirror.replace(SIGNED, encode(one))
    agent = make_node(mirror.url)
    with pytest.raises(SignatureError, match="1 valid signature.*2 required"):
        agent.pull()

    # The same signature repeated counts once.
    repeated = {"signed": envelope["signed"], "signatures": envelope["signatures"][:1] * 3}
    mirror.replace(SIGNED, encode(repeated))
    with pytest.raises(SignatureError, match="1 valid signature"):
        agent.pull()
    assert cli.main(["--home", str(node_home.path), "--quiet", "pull"]) == SignatureError.exit_code

    mirror.clear()
    assert agent.pull().outcome == "installed"


def _forge(envelope: dict, keys, **changes) -> bytes:
    signed = {**envelope["signed"], **changes}
    return encode(sign_envelope(signed, [key.private for key in keys]))


def test_a_set_signed_by_keys_root_does_not_list_is_refused(
    live_server, platform_keys, two_models, make_node, mirror, tmp_path
):
    attacker = [key_create(tmp_path / f"attacker-{i}.pem") for i in range(3)]
    envelope = signed_envelope(live_server.url)
    mirror.replace(SIGNED, _forge(envelope, attacker, version=envelope["signed"]["version"] + 1))
    agent = make_node(mirror.url)
    with pytest.raises(SignatureError, match="does not trust"):
        agent.pull()


def test_a_revoked_online_key_is_refused_after_rotation(
    live_server, settings, platform_keys, two_models, make_node, mirror, node_home
):
    agent = make_node(mirror.url)
    agent.pull()
    revoked = platform_keys.online[:2]
    fresh = [platform_keys.new_key("online-4"), platform_keys.new_key("online-5")]
    settings.SIGNING_ONLINE_KEYS = [str(k.path) for k in [platform_keys.online[2], *fresh]]
    call_command("signing_keys", "rotate")

    # An attacker holding the two revoked keys signs a "newer" set: root v2 no longer lists them.
    envelope = signed_envelope(live_server.url)
    mirror.replace(SIGNED, _forge(envelope, revoked, version=envelope["signed"]["version"] + 100))
    with pytest.raises(SignatureError, match="does not trust"):
        agent.pull()
    assert json.loads(node_home.trusted_root_path.read_bytes())["signed"]["version"] == 2

    mirror.clear()
    assert agent.pull().root_version == 2


def test_root_rotation_signed_only_by_new_keys_is_refused(
    live_server, platform_keys, two_models, make_node, mirror, tmp_path
):
    agent = make_node(mirror.url)
    current = httpx.get(live_server.url + "/api/v1/keys/").json()
    attacker = [key_create(tmp_path / f"attacker-root-{i}.pem") for i in range(2)]
    forged = json.loads(json.dumps(current["signed"]))
    forged["version"] = 2
    forged["keys"].update({k.keyid: k.public_document for k in attacker})
    forged["roles"]["root"] = {"keyids": sorted(k.keyid for k in attacker), "threshold": 2}
    mirror.replace("/api/v1/keys/2.root.json", encode(sign_envelope(forged, [k.private for k in attacker])))
    with pytest.raises(RootRotationError, match="by root v1"):
        agent.pull()


def test_a_legitimate_root_key_rotation_is_followed(live_server, settings, platform_keys, two_models, make_node):
    agent = make_node(live_server.url)
    agent.pull()
    old_root = platform_keys.root
    new_root = [platform_keys.new_key(f"root-new-{i}") for i in range(2)]
    settings.SIGNING_ROOT_KEYS = [str(k.path) for k in new_root]
    call_command(
        "signing_keys",
        "rotate",
        "--previous-root-key",
        str(old_root[0].path),
        "--previous-root-key",
        str(old_root[1].path),
    )
    approve("after-rotation", size=5_000)
    result = agent.pull()
    assert result.root_version == 2
    assert result.outcome == "installed"


# --- Telemetry through the CLI --------------------------------------------------------------


def test_report_sends_latency_under_the_nodes_own_account(
    live_server, two_models, make_node, node_home, token_for, capsys
):
    from nodes.models import NodeReport

    agent = make_node(live_server.url, token=token_for("node-7", "node"))
    agent.pull()
    node_home.record_latency(model_name="mini-embed", version="1", values_ms=[3.0, 4.5, 12.0])
    assert cli.main(["--home", str(node_home.path), "report"]) == 0
    report = NodeReport.objects.get()
    assert report.node.username == "node-7"
    assert report.models == ["mini-embed@1"]
    sent = report.summary["mini-embed@1"]
    assert (sent["kind"], sent["count"], sent["min"], sent["max"]) == ("ddsketch", 3, 3.0, 12.0)
    assert report.approved_set_version == approved_set_current().version
    assert "accepted" in capsys.readouterr().out
    assert not node_home.telemetry_path.exists()


def test_a_report_whose_answer_was_lost_is_sent_again_unchanged_and_stored_once(
    live_server, two_models, make_node, node_home, token_for
):
    from nodes.models import NodeReport

    agent = make_node(live_server.url, token=token_for("node-9", "node"))
    agent.pull()
    node_home.record_latency(model_name="mini-embed", version="1", values_ms=[3.0, 4.5, 12.0])
    assert cli.main(["--home", str(node_home.path), "report"]) == 0
    # The platform stored it but the node never heard back: the sealed summary is still there.
    sent = node_home.telemetry_sealed_path.with_name(node_home.telemetry_sealed_path.name + ".sent")
    os.replace(sent, node_home.telemetry_sealed_path)
    node_home.record_latency(model_name="mini-embed", version="1", values_ms=[7.0, 8.0])

    assert cli.main(["--home", str(node_home.path), "report"]) == 0  # the resend: answered with the stored one
    assert NodeReport.objects.count() == 1
    assert cli.main(["--home", str(node_home.path), "report"]) == 0  # then the newer observations, a new period

    reports = list(NodeReport.objects.order_by("period_start"))
    assert [r.summary["mini-embed@1"]["count"] for r in reports] == [3, 2]
    assert reports[0].period_end <= reports[1].period_start


def test_report_carries_the_client_librarys_circuit_breaker_to_the_fleet_dashboard(
    live_server, two_models, make_node, node_home, token_for, client
):
    from conclave_node.client import CircuitBreaker, ConclaveClient, ConclaveUnavailable
    from nodes.models import NodeReport

    agent = make_node(live_server.url, token=token_for("node-8", "node"))
    agent.pull()
    # The node's client library loses its server (nothing listens on port 9): its breaker opens.
    with ConclaveClient(
        "http://127.0.0.1:9", retries=0, breaker=CircuitBreaker(failure_threshold=1), timeout=2
    ) as lost:
        with pytest.raises(ConclaveUnavailable):
            lost.embed("hello")
        node_home.record_client(lost.metrics())
    node_home.record_latency(model_name="mini-embed", version="1", values_ms=[3.0])
    assert cli.main(["--home", str(node_home.path), "report"]) == 0

    report = NodeReport.objects.get()
    assert report.circuit_breaker == "open"
    assert (report.client["calls"], report.client["failures"], report.client["success_rate"]) == (1, 1, 0.0)
    fleet = client.get("/dashboards/fleet/").content.decode()
    assert 'data-circuit-breaker="open"' in fleet
    nodes = client.get("/api/v1/metrics/fleet/").json()["nodes"]
    assert (nodes[0]["node"], nodes[0]["circuit_breaker"], nodes[0]["client_success_rate"]) == ("node-8", "open", 0.0)


def test_status_exit_codes_tell_scripts_what_is_wrong(live_server, two_models, make_node, node_home, tmp_path):
    assert cli.main(["--home", str(tmp_path / "nowhere"), "status"]) == 3
    make_node(live_server.url)
    assert cli.main(["--home", str(node_home.path), "status"]) == 6
    assert cli.main(["--home", str(node_home.path), "--quiet", "pull"]) == 0
    assert cli.main(["--home", str(node_home.path), "status"]) == 0


def test_the_console_script_runs_init_pull_and_status_as_a_separate_process(
    live_server, two_models, trust_root_file, tmp_path
):
    home = tmp_path / "subprocess-node"

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "conclave_node", "--home", str(home), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("init", "--server", live_server.url, "--trust-root", str(trust_root_file())).returncode == 0
    pulled = run("--json", "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["outcome"] == "installed"
    status = run("status")
    assert status.returncode == 0
    assert "valid" in status.stdout
    refused = run("init", "--server", live_server.url, "--trust-root", str(tmp_path / "missing.json"), "--force")
    assert refused.returncode == 3
    assert "cannot read the trust root" in refused.stderr
