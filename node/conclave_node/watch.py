"""`conclave-node watch`: follow the platform's signed set, start each new one, roll back the ones that fail.

On start and then every `interval` seconds: pull (verify, download, install
the new set beside the current one and make it current, keeping the old one
as `previous`), then start the new set's models in a separate process
(`conclave-node probe`: the loader `serve` uses, and one real request to
each model). A set whose models fail to load, crash the probe or fail its
request is rolled back at once (`current` points at the previous set
again) and remembered in `<home>/watch.json`, so it is not installed again;
a newer approved set is tried as usual. A running `serve` follows
`current`, and never swaps to a set it cannot load either.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conclave_node.agent import NodeAgent
from conclave_node.errors import NodeError
from conclave_node.loading import RuntimeOptions
from conclave_node.metadata import SignedSet
from conclave_node.state import write_atomic

PROBE_TIMEOUT_SECONDS = 300.0


def _log(message: str) -> None:
    print(f"conclave-node watch: {message}", file=sys.stderr, flush=True)


class Watcher:
    def __init__(
        self,
        agent: NodeAgent,
        *,
        options: RuntimeOptions,
        confirm: Callable[[SignedSet], bool] | None = None,
        probe_timeout: float = PROBE_TIMEOUT_SECONDS,
    ):
        self.agent = agent
        self.home = agent.home
        self.options = options
        self.confirm = confirm
        self.probe_timeout = probe_timeout
        self.stopped = threading.Event()

    @property
    def state_path(self) -> Path:
        return self.home.path / "watch.json"

    def _refused(self) -> dict:
        try:
            return json.loads(self.state_path.read_text()).get("refused", {})
        except (OSError, ValueError):
            return {}

    def _refuse(self, approved_set_version: int, reason: str) -> None:
        refused = self._refused()
        refused[str(approved_set_version)] = {
            "reason": reason[:2000],
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_atomic(self.state_path, json.dumps({"refused": refused}, indent=2).encode())

    def _accept(self, signed_set: SignedSet) -> bool:
        refused = self._refused().get(str(signed_set.approved_set_version))
        if refused is not None:
            _log(
                f"approved set v{signed_set.approved_set_version} failed to start here before "
                f"({refused['reason']}); staying on the current set"
            )
            return False
        if self.confirm is not None and not self.confirm(signed_set):
            _log(f"approved set v{signed_set.approved_set_version} declined")
            return False
        return True

    def check(self) -> dict:
        """One round: pull; if a set was installed, probe it and roll back on failure."""
        result = self.agent.pull(accept=self._accept)
        report = {
            "outcome": result.outcome,
            "approved_set_version": result.approved_set_version,
            "signed_version": result.signed_version,
        }
        if result.outcome != "installed":
            return report
        _log(f"installed approved set v{result.approved_set_version} at {result.installed_path}; starting its models")
        ok, detail = probe_set(
            self.home.path, Path(result.installed_path), options=self.options, timeout=self.probe_timeout
        )
        if ok:
            _log(f"approved set v{result.approved_set_version} started and answered: {detail}")
            report["probe"] = "passed"
            return report
        rolled = self.agent.rollback()
        self._refuse(result.approved_set_version, detail)
        _log(
            f"approved set v{result.approved_set_version} failed to start ({detail}); rolled back to "
            f"{rolled['current']['path']}"
        )
        report.update(outcome="rolled_back", probe="failed", reason=detail, current=rolled["current"]["path"])
        return report

    def run(self, *, interval: float, once: bool = False) -> int:
        def stop(signum, frame):
            self.stopped.set()

        signal.signal(signal.SIGTERM, stop)
        status = 0
        while True:
            try:
                report = self.check()
                status = 24 if report["outcome"] == "rolled_back" else 0
                print(json.dumps(report), flush=True)
            except NodeError as exc:
                status = exc.exit_code
                _log(f"{exc.kind}: {exc.message}")
            if once:
                return status
            try:
                if self.stopped.wait(interval):
                    return 0
            except KeyboardInterrupt:
                return 0


def probe_set(home: Path, path: Path, *, options: RuntimeOptions, timeout: float) -> tuple[bool, str]:
    """Load `path` in a child process (a crash there cannot take the watcher down) and ask each model once."""
    command = [
        sys.executable,
        "-m",
        "conclave_node",
        "--home",
        str(home),
        "--json",
        "probe",
        str(path),
        "--threads",
        str(options.threads),
        "--n-ctx",
        str(options.n_ctx),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return False, f"the models did not start within {timeout:.0f} s"
    if done.returncode == 0:
        try:
            models = json.loads(done.stdout)["models"]
            return True, ", ".join(f"{m['label']} ({m['load_seconds']:.2f} s)" for m in models)
        except (ValueError, KeyError, TypeError):
            return True, "ok"
    try:
        message = json.loads(done.stdout)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        tail = (done.stderr or done.stdout or "").strip().splitlines()[-3:]
        if done.returncode < 0:
            message = f"the probe process died of signal {-done.returncode}"
        else:
            message = f"the probe exited with status {done.returncode}"
        if tail:
            message += ": " + " | ".join(tail)
    return False, message
