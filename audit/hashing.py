"""The canonical form of an audit row and its hash.

The one implementation lives in `conclave_node.auditchain` (no Django), so
the platform appends with exactly the code nodes and `conclave-verify`
recompute with.
"""

from conclave_node.auditchain import GENESIS_HASH, canonical_timestamp, event_hash

__all__ = ["GENESIS_HASH", "canonical_timestamp", "event_hash"]
