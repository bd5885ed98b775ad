"""Settings of the governance app and the audit trail, read from the environment.

Imported by conclave.settings. The rule values are only the defaults a
proposal type starts with: the live rules are rows operators edit (API,
admin), and each proposal freezes the rules it was created under.
"""

from conclave.env import env_bool, env_float, env_int, env_list

_DAY = 24 * 3600

# Defaults for every proposal type's rules (governance.models.ProposalRules).
GOVERNANCE_VOTING_DELAY_SECONDS = env_int("GOVERNANCE_VOTING_DELAY_SECONDS", 0)
GOVERNANCE_VOTING_PERIOD_SECONDS = env_int("GOVERNANCE_VOTING_PERIOD_SECONDS", 7 * _DAY)
# Fraction of eligible voters whose for + abstain votes must be cast.
GOVERNANCE_QUORUM = env_float("GOVERNANCE_QUORUM", 0.2)
# Fraction of for / (for + against) that must be exceeded (0.5: more for than against).
GOVERNANCE_APPROVAL_THRESHOLD = env_float("GOVERNANCE_APPROVAL_THRESHOLD", 0.5)
GOVERNANCE_TIMELOCK_SECONDS = env_int("GOVERNANCE_TIMELOCK_SECONDS", _DAY)
GOVERNANCE_GRACE_PERIOD_SECONDS = env_int("GOVERNANCE_GRACE_PERIOD_SECONDS", 7 * _DAY)

# Content checks on a model-adoption proposal before voting opens.
GOVERNANCE_ALLOWED_LICENSES = env_list(
    "GOVERNANCE_ALLOWED_LICENSES",
    ["Apache-2.0", "MIT", "BSD-2-Clause", "BSD-3-Clause", "ISC", "MPL-2.0", "Zlib", "0BSD", "Unlicense"],
)
# Sizes must stay below these (the roadmap: embedding < 100 MB, generative < 1.5 GB).
GOVERNANCE_MAX_EMBEDDING_BYTES = env_int("GOVERNANCE_MAX_EMBEDDING_BYTES", 100 * 1000**2)
GOVERNANCE_MAX_GENERATIVE_BYTES = env_int("GOVERNANCE_MAX_GENERATIVE_BYTES", 1500 * 1000**2)

# Queue a benchmark of the candidate when a model-adoption proposal is created
# (unless it has one), so voters see its numbers beside the approved model's.
GOVERNANCE_BENCHMARK_CANDIDATES = env_bool("GOVERNANCE_BENCHMARK_CANDIDATES", True)

# How often the beat moves proposals on (open, close, queue, execute, expire).
GOVERNANCE_ADVANCE_INTERVAL_SECONDS = env_float("GOVERNANCE_ADVANCE_INTERVAL_SECONDS", 30.0)
# How often the audit chain's head is pinned to IPFS as a checkpoint.
AUDIT_CHECKPOINT_INTERVAL_SECONDS = env_float("AUDIT_CHECKPOINT_INTERVAL_SECONDS", 3600.0)
# Each checkpoint first exports the log to IPFS as pages of this many events.
AUDIT_EXPORT_PAGE_EVENTS = env_int("AUDIT_EXPORT_PAGE_EVENTS", 1000)
if AUDIT_EXPORT_PAGE_EVENTS < 1:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"AUDIT_EXPORT_PAGE_EVENTS must be at least 1, got {AUDIT_EXPORT_PAGE_EVENTS}")

BEAT_SCHEDULE: dict = {
    "governance-proposals-advance": {
        "task": "governance.tasks.proposals_advance",
        "schedule": GOVERNANCE_ADVANCE_INTERVAL_SECONDS,
    },
    "audit-checkpoint-pin": {
        "task": "audit.tasks.audit_checkpoint_pin",
        "schedule": AUDIT_CHECKPOINT_INTERVAL_SECONDS,
    },
}
