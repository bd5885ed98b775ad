"""A real subprocess for the tests, its combined output collected as it runs (read by a thread, so it never blocks)."""

import signal
import subprocess
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class CapturedProcess:
    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path = REPO_ROOT):
        self.process = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
