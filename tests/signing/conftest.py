"""The signing fixtures of the node tests: isolated keys per test, platform keys, approved models, a serial worker."""

from tests.node.conftest import (  # noqa: F401  (pytest finds fixtures by name in a conftest)
    _isolated_signing,
    make_node,
    node_home,
    platform_keys,
    serial_worker,
    trust_root_file,
    two_models,
)
