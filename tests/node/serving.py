"""A real `conclave-node serve` process for the tests, and the node it serves from.

The node is initialised from the live platform's real signed set (root and
online keys of the test), pulls the real model packs (MiniLM int8 ONNX,
SmolLM2 GGUF) through the platform's gateway, and `serve` runs as a child
process on 127.0.0.1, as an operator would run it.
"""

import os
import subprocess
import sys
import threading
import time

import httpx

from tests.inference.conftest import defaults_adopt, parameter_set


class ServeProcess:
    def __init__(self, home, *, extra: list[str] | None = None, importtime: bool = False, threads: int = 1):
        self.home = home
        command = [sys.executable]
        if importtime:
            command += ["-X", "importtime"]
        command += [
            "-m",
            "conclave_node",
            "--home",
            str(home.path),
            "serve",
            "--port",
            "0",
            "--threads",
            str(threads),
            "--reload-interval",
            "0.2",
            *(extra or []),
        ]
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if "listening on http://" in line and not self.url:
                self.url = line.split("listening on ", 1)[1].split()[0]
                self._listening.set()

    def wait_ready(self, timeout: float = 120.0) -> "ServeProcess":
        """Until it listens and has finished loading the current set (healthy, or refusing it)."""
        if not wait_until(lambda: self._listening.is_set() or self.process.poll() is not None, timeout=timeout):
            self.stop()
            raise AssertionError("serve did not start listening:\n" + "\n".join(self.log()[-40:]))
        if not self._listening.is_set():
            self._reader.join(10)
            raise AssertionError(f"serve exited with {self.process.returncode}:\n" + "\n".join(self.log()[-40:]))
        with self.client() as client:
            if not wait_until(lambda: client.get("/health").json()["status"] != "loading", timeout=timeout):
                self.stop()
                raise AssertionError("serve did not finish loading:\n" + "\n".join(self.log()[-40:]))
        return self

    def log(self) -> list[str]:
        return [line for line in self.lines if not line.startswith("import time:")]

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 120.0), **kwargs)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)
        return self.process.returncode


def wait_until(condition, *, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None


def installed_node(live_server, make_node, parameters: dict | None = None, **init_options):
    """The default models adopted on the platform (with these governed parameters); a node initialised from its signed
    set (`init_options` go to `init`: a token), pulled."""
    manifests = defaults_adopt()
    for name, value in (parameters or {}).items():
        parameter_set(name, value)
    agent = make_node(live_server.url, **init_options)
    result = agent.pull()
    assert result.outcome == "installed"
    return agent, manifests
