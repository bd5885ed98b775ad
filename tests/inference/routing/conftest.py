"""The routing tests start real nodes: the node tests' fixtures (keys, a node home initialised from the platform)."""

from tests.node.conftest import _isolated_signing, make_node, node_home, trust_root_file  # noqa: F401 - fixtures
