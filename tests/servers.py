"""Real local servers for the tests, on 127.0.0.1: a subprocess whose output goes to a log file and that is
stopped by its own pid; tests/fault_teacher.py (scriptable, deterministic answers) and ``model.serve`` with a
local model. Session-scoped ones are fixtures in tests/conftest.py."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import PYTHON, ROOT, env_offline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess whose output goes to a log file; stopped by its own pid."""

    def __init__(self, cmd: list[str], log: Path, env: dict | None = None):
        self.log = log
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env or env_offline(), stdout=open(log, "wb"),
                                     stderr=subprocess.STDOUT)
        self.url = ""

    def wait_ready(self, url: str, timeout: float = 180) -> "Server":
        """Poll ``url/models`` until it answers (the server's own readiness event), failing with its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited early:\n{self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code in (200, 401):
                    self.url = url
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stats(self) -> dict:
        return httpx.get(self.url.replace("/v1", "/stats")).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def fault_server(tmp: Path, name: str, *args: str, env: dict | None = None) -> Server:
    """tests/fault_teacher.py with ``args``; ready once it has written its port file."""
    port_file = tmp / f"{name}.port"
    srv = Server([PYTHON, "-m", "tests.fault_teacher", "--port-file", str(port_file), *args],
                 tmp / f"{name}.log", env)
    deadline = time.monotonic() + 60
    while not port_file.exists():
        assert srv.proc.poll() is None and time.monotonic() < deadline, srv.log.read_text()
        time.sleep(0.05)
    return srv.wait_ready(f"http://127.0.0.1:{port_file.read_text()}/v1")


def fault_server_while(tmp_path_factory, name: str, *args: str):
    """A fixture's body: ``fault_server`` in a folder of its own, yielded, stopped after the fixture's scope."""
    srv = fault_server(tmp_path_factory.mktemp(name), name, *args)
    yield srv
    srv.stop()


def serve_simulator(tmp: Path, model_path, name: str, *args: str) -> Server:
    """``model.serve`` playing the user (``--role human``) with a local model on the CPU."""
    port = free_port()
    srv = Server([PYTHON, "-m", "model.serve", "--model-path", str(model_path), "--role", "human",
                  "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", *args], tmp / f"{name}.log")
    return srv.wait_ready(f"http://127.0.0.1:{port}/v1")
