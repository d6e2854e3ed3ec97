"""What runs ``scripts.demo``'s stage list: commands as a user types them, stage by stage, each stage skipped
once it has finished.

A pipeline is a list of :class:`Stage`; a stage, the steps it runs in order: a :class:`Cmd` is printed
(``$ ...``, exactly as a user would type it) and run, a server among them (``... &``) is started, waited for
and stopped when its stage ends; a :class:`Call` is a step done in Python, shown as a ``#`` comment. A stage
that finished writes ``OUT/stages/NAME.json`` (its seconds and each command's) and is skipped on the next run.

    Stage("simulate",
          server(py("model.serve", model="smollm2", role="gpt", port=8000)),
          py("data.simulate", simulator=..., teacher_base_url="http://127.0.0.1:8000/v1", ..., out=...))

prints and runs ``python -m model.serve --model smollm2 --role gpt --port 8000 &`` and then the simulation;
``dataclasses.replace(cmd, stdout=FILE)`` sends a command's output to a file (``... > FILE``).
"""
from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from core.conversation import atomic_write

PY = sys.executable


@dataclass(frozen=True)
class Cmd:
    """``[VAR=value ...] ARGV [> STDOUT]``; with ``ready`` a server, ``... &``, ready once
    ``GET http://127.0.0.1:PORT<ready>`` answers 200."""
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    stdout: Path | None = None
    port: int | None = None
    ready: str | None = None

    def __str__(self) -> str:
        settings = "".join(f"{k}={shlex.quote(v)} " for k, v in self.env)
        line = settings + shlex.join("python" if a == PY else a for a in self.argv)
        return line + (f" > {shlex.quote(str(self.stdout))}" if self.stdout else "") + (" &" if self.ready else "")

    @property
    def label(self) -> str:
        """A short name for the timing table: the module and its sub-command, or the program."""
        if self.argv[:2] == (PY, "-m"):
            sub = self.argv[3] if len(self.argv) > 3 and not self.argv[3].startswith("-") else ""
            return f"{self.argv[2]} {sub}".rstrip()
        return " ".join(self.argv[:2]) if self.argv[0] == "bash" else self.argv[0]


@dataclass(frozen=True)
class Call:
    """A step done in Python, shown as ``# WHAT`` (without ``fn``: only a note)."""
    what: str
    fn: Callable[[], None] | None = None


class StageFailed(Exception):
    """A stage's command failed, or its server did not come up; the stages that finished are kept."""


class ServerDown(RuntimeError):
    """A server exited, or did not answer in time."""


class Stage:
    """A named list of steps run in order; a step given as None (what this scale leaves out) is dropped."""

    def __init__(self, name: str, *steps: Cmd | Call | None):
        self.name, self.steps = name, [s for s in steps if s is not None]


def flags(**options) -> list[str]:
    """``--name value`` per keyword, in order (``max_length=384`` is ``--max-length 384``): True is a bare flag,
    None or False leaves the flag out, a list or tuple gives its values after the one flag."""
    out: list[str] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        out.append("--" + name.replace("_", "-"))
        if value is not True:
            out += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return out


def py(module: str, *args, **options) -> Cmd:
    """``python -m MODULE [SUB-COMMAND] ARGS --flag value ...`` (``module`` may name the sub-command:
    ``"data.prepare clean"``; options as :func:`flags`)."""
    return Cmd((PY, "-m", *module.split(), *map(str, args), *flags(**options)))


def sh(*argv, stdout: Path | None = None, **env) -> Cmd:
    """Any other program, with ``VAR=value`` settings (keywords) and ``> stdout``."""
    return Cmd(tuple(map(str, argv)), tuple((k, str(v)) for k, v in env.items()), stdout)


def server(cmd: Cmd, ready: str = "/health") -> Cmd:
    """``cmd &``: started in the background, waited for until ``ready`` on its ``--port`` answers, stopped when
    its stage ends."""
    return replace(cmd, port=int(cmd.argv[cmd.argv.index("--port") + 1]), ready=ready)


def run_stages(stages: list[Stage], out: Path, dry_run: bool, env: dict) -> None:
    """Each stage in order unless it finished before (its marker exists); a dry run prints every stage's
    commands and runs nothing. StageFailed names the stage and the command that failed."""
    for stage in stages:
        marker = out / "stages" / f"{stage.name}.json"
        if marker.exists() and not dry_run:
            print(f"\n== {stage.name}: done earlier ({marker}), skipped", flush=True)
            continue
        print(f"\n== {stage.name}", flush=True)
        start, steps = time.time(), []
        try:
            with ExitStack() as servers:
                for step in stage.steps:
                    seconds = run_step(step, servers, dry_run, env)
                    if isinstance(step, Cmd):
                        steps.append({"command": step.label, "seconds": seconds})
        except subprocess.CalledProcessError as err:
            raise StageFailed(f"stage {stage.name}: `{Cmd(tuple(err.cmd))}` exited with code {err.returncode}") from err
        except ServerDown as err:
            raise StageFailed(f"stage {stage.name}: {err}") from err
        if not dry_run:
            record = {"seconds": round(time.time() - start, 1), "steps": steps}
            atomic_write(marker, lambda f: json.dump(record, f, indent=1))
            print(f"-- {stage.name}: {record['seconds']} s", flush=True)


def run_step(step: Cmd | Call, servers: ExitStack, dry_run: bool, env: dict) -> float:
    """Print the step, then (unless a dry run) run it; returns its seconds (a server's: until it was ready)."""
    print(f"# {step.what}" if isinstance(step, Call) else f"$ {step}", flush=True)
    start = time.time()
    if dry_run:
        return 0.0
    if isinstance(step, Call):
        if step.fn:
            step.fn()
    elif step.ready:
        servers.enter_context(local_server(step.argv, step.port, step.ready, env={**env, **dict(step.env)}))
    else:
        with open(step.stdout, "w") if step.stdout else nullcontext() as f:
            subprocess.run(step.argv, check=True, env={**env, **dict(step.env)}, stdout=f)
    return round(time.time() - start, 1)


def show(cmd, suffix: str = "") -> list[str]:
    """Print a command as a user would type it (``python`` for this interpreter); returns it as strings."""
    cmd = [str(c) for c in cmd]
    print("$ " + str(Cmd(tuple(cmd))) + suffix, flush=True)
    return cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_server(cmd, port: int, ready_path: str = "/health", **popen):
    """A local OpenAI-compatible server for the block: started, waited for, stopped; yields its URL."""
    proc = subprocess.Popen([str(c) for c in cmd], **popen)
    try:
        wait_healthy(port, proc, ready_path)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_healthy(port: int, proc: subprocess.Popen, path: str = "/health", timeout: float = 300) -> None:
    """Until ``GET path`` answers 200; ServerDown if the server exits or takes longer than ``timeout``."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ServerDown(f"the server `{Cmd(tuple(map(str, proc.args)))}` exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ServerDown(f"the server on port {port} did not become healthy within {timeout:.0f} s")
