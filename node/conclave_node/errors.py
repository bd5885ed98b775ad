"""Every way a pull, a report or a status check can fail, each with its own exit status.

Scripts branch on the exit status; people read the message, which says what
was refused and why. Verification failures (10-23) mean something refused
bytes or metadata as untrustworthy: nothing was installed and the previous
set stays in place.
"""


class NodeError(Exception):
    exit_code = 1
    kind = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotInitialized(NodeError):
    """No `init` yet, or its files are unreadable."""

    exit_code = 3
    kind = "not_initialized"


class ConfigError(NodeError):
    """A bad argument or trust-root file."""

    exit_code = 3
    kind = "config"


class ServerUnreachable(NodeError):
    exit_code = 4
    kind = "unreachable"


class ServerError(NodeError):
    """The server answered with a status the agent cannot use."""

    exit_code = 5
    kind = "server_error"


class NothingInstalled(NodeError):
    exit_code = 6
    kind = "nothing_installed"


class SignatureError(NodeError):
    """Fewer valid signatures than the threshold: wrong, revoked or missing keys, or altered content."""

    exit_code = 10
    kind = "bad_signature"


class ExpiredMetadata(NodeError):
    """The signed set (or the root) is past its expiry: a frozen mirror or a stalled platform."""

    exit_code = 11
    kind = "expired"


class RollbackAttack(NodeError):
    """A version lower than one already trusted, or the same version with other content."""

    exit_code = 12
    kind = "rollback"


class RootRotationError(NodeError):
    """A new root that the previous root's keys did not sign, or one out of sequence."""

    exit_code = 13
    kind = "root_rotation"


class MetadataFormatError(NodeError):
    exit_code = 14
    kind = "bad_metadata"


class HistoryFork(NodeError):
    """The audit history behind a new set does not extend the one this node witnessed (rewritten)."""

    exit_code = 15
    kind = "history_fork"

    def __init__(self, message: str, *, first_diverging_seq: int | None = None):
        super().__init__(message)
        self.first_diverging_seq = first_diverging_seq


class TamperedArtifact(NodeError):
    """Downloaded bytes whose sha256 or CID is not the signed one."""

    exit_code = 20
    kind = "tampered"


class EndlessData(NodeError):
    """A source announced or sent more bytes than the signed size."""

    exit_code = 21
    kind = "endless_data"


class DownloadFailed(NodeError):
    """No source delivered a file (network errors on every source, after resuming)."""

    exit_code = 22
    kind = "download_failed"


class InstallError(NodeError):
    exit_code = 23
    kind = "install_failed"


class TelemetryRejected(NodeError):
    exit_code = 30
    kind = "telemetry_rejected"


class TelemetryRateLimited(NodeError):
    exit_code = 31
    kind = "rate_limited"


class ModelLoadFailed(NodeError):
    """An installed set's models could not be started (unreadable, over the memory limit, or failing a probe)."""

    exit_code = 24
    kind = "load_failed"
