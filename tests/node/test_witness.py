"""Nodes witness the audit history: each pull checks that the new head extends the one seen last.

A real platform over HTTP (live_server), real signatures and a real audit
chain; the rewrite is what a dishonest server would do to its own
database: events, hashes, head, checkpoint rows and a re-signed set.
"""

import pytest

from audit.checkpoints import audit_checkpoint_create
from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from conclave_node import cli
from conclave_node.errors import HistoryFork
from signing.services import signed_set_refresh
from tests.audit.rewrite import chain_rewrite
from tests.node.conftest import approve

pytestmark = pytest.mark.django_db(transaction=True)


def head() -> AuditEvent:
    """The head a signed set carries: the newest event before the signing's own `signing.set_signed` event."""
    return AuditEvent.objects.exclude(event_type="signing.set_signed").order_by("-seq").first()


def test_first_pull_witnesses_the_head_from_genesis_and_status_shows_it(
    live_server, two_models, make_node, node_home, capsys
):
    audit_checkpoint_create()
    agent = make_node(live_server.url)
    agent.pull()
    state = node_home.load_state()
    latest = head()
    assert state.witness["seq"] == latest.seq and state.witness["hash"] == latest.hash
    assert state.witness["checkpoint_cid"]
    assert node_home.witness_hashes_path.stat().st_size == 32 * latest.seq
    assert node_home.witnessed_hash(1, first_seq=1) == AuditEvent.objects.get(seq=1).hash

    assert cli.main(["--home", str(node_home.path), "status"]) == 0
    assert f"witnessed: audit event #{latest.seq} {latest.hash}" in capsys.readouterr().out


def test_a_new_head_that_extends_the_witnessed_one_is_accepted(live_server, two_models, make_node, node_home):
    agent = make_node(live_server.url)
    agent.pull()
    first = node_home.load_state().witness
    approve("third-model", kind="generative", fmt="gguf", size=50_000)
    result = agent.pull()
    assert result.outcome == "installed"
    witness = node_home.load_state().witness
    assert witness["seq"] > first["seq"]
    assert witness["hash"] == head().hash
    assert node_home.witnessed_hash(first["seq"], first_seq=1) == first["hash"]


def test_a_consistently_rewritten_history_is_refused_as_a_fork(live_server, two_models, make_node, node_home, capsys):
    audit_checkpoint_create()
    agent = make_node(live_server.url)
    installed = agent.pull()
    witnessed = node_home.load_state().witness
    approve("third-model", kind="generative", fmt="gguf", size=50_000)
    audit_checkpoint_create()

    # The server rewrites event #3 and everything after it, checkpoints included, and re-signs.
    first_changed = chain_rewrite(lambda e: e.seq == 3 and _relabel(e))
    assert first_changed == 3
    assert audit_chain_verify().ok  # the server's own check passes
    signed_set_refresh(force=True)

    with pytest.raises(HistoryFork) as excinfo:
        agent.pull()
    assert excinfo.value.first_diverging_seq == 3
    assert "event #3" in excinfo.value.message
    # Nothing moved: the node keeps running what it had, and still witnesses the old head.
    state = node_home.load_state()
    assert state.witness == witnessed
    assert state.installed.path == installed.installed_path
    assert cli.main(["--home", str(node_home.path), "--quiet", "pull"]) == HistoryFork.exit_code
    assert "history_fork" in capsys.readouterr().err


def test_a_rewrite_after_the_witnessed_head_is_not_a_fork(live_server, two_models, make_node, node_home):
    agent = make_node(live_server.url)
    agent.pull()
    witnessed = node_home.load_state().witness
    approve("third-model", kind="generative", fmt="gguf", size=50_000)
    chain_rewrite(lambda e: e.seq == witnessed["seq"] + 1 and _relabel(e))
    signed_set_refresh(force=True)
    assert agent.pull().outcome == "installed"


def _relabel(event: AuditEvent) -> bool:
    event.actor_label = "mallory"
    return True
