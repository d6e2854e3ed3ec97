"""Both chat CLIs as real subprocesses driven through stdin, with the tiny model and SmolLM2."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import PYTHON, ROOT, env_offline

PLATOLM, SOCRATIC = "model.sft_platolm.cli", "model.sft_socratic.cli"


def run_cli(module: str, model: str, stdin: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI's output decoded here: text mode would read a generated "\\r" as a newline, unlike the saved turn."""
    p = subprocess.run([PYTHON, "-m", module, "--model", model, "--device", "cpu", *args],
                       input=stdin.encode(), capture_output=True, cwd=ROOT, env=env_offline(), timeout=300)
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(), p.stderr.decode())


def streamed(turns: list[tuple[str, str]], role: str) -> str:
    """What the CLI's stdout holds for piped input: each of the model's turns after its label, one line each."""
    label = {"human": "Human: ", "gpt": "Assistant: "}[role]
    return "".join(f"{label}{text}\n" for who, text in turns if who == role)


def saved(path) -> list[tuple[str, str]]:
    records = json.loads(path.read_text())
    assert len(records) == 1
    return [(t["from"], t["value"]) for t in records[0]["conversations"]]


def test_platolm_cli_multiline_save_exit(tiny_dir, tmp_path):
    out = tmp_path / "chat.json"
    stdin = ("What is the capital of France?\n"
             "line one \\\nline two\n"
             '"""\nblock a\n\nblock b\n"""\n'
             "\n"  # a blank line is not a message
             f"/save {out}\n/exit\nnever read\n")
    r = run_cli(PLATOLM, str(tiny_dir), stdin, "--max-new-tokens", "6")
    assert r.returncode == 0, r.stderr
    turns = saved(out)
    assert [role for role, _ in turns] == ["human", "gpt"] * 3
    assert [text for role, text in turns if role == "human"] == [
        "What is the capital of France?", "line one \nline two", "block a\n\nblock b"]
    assert r.stdout == streamed(turns, "gpt")  # what was streamed is what was kept
    assert f"saved 6 turns to {out}" in r.stderr


def test_socratic_cli_model_asks_first_and_reset(tiny_dir, tmp_path):
    out = tmp_path / "chat.json"
    r = run_cli(SOCRATIC, str(tiny_dir), f"I am fine.\n/reset\nOk\n/save {out}\n", "--max-new-tokens", "5",
                "--system", "Ask me anything.\n\n")
    assert r.returncode == 0, r.stderr  # ends cleanly at the end of piped input
    assert r.stdout.startswith("Human: ")
    assert r.stdout.count("Human: ") == 4  # asks, (answer), asks; reset; asks, (answer), asks
    assert "new conversation" in r.stderr
    data = json.loads(out.read_text())[0]["conversations"]
    assert data[0] == {"from": "system", "value": "Ask me anything.\n\n"}  # the override is kept
    assert [t["from"] for t in data[1:]] == ["human", "gpt", "human"]
    assert data[2]["value"] == "Ok"


def test_cli_context_full_is_a_message_not_a_crash(tiny_dir, tmp_path):
    out = tmp_path / "chat.json"
    stdin = "hi\n" + "word " * 200 + f"\n/save {out}\n"
    r = run_cli(PLATOLM, str(tiny_dir), stdin, "--max-context", "300", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    assert "no longer fits the context" in r.stderr and "Traceback" not in r.stderr
    assert [role for role, _ in saved(out)] == ["human", "gpt"]  # the long message was not added


@pytest.mark.parametrize("module,template,first", [(PLATOLM, "dyadic", "human"), (SOCRATIC, "chat", "gpt")])
def test_cli_with_smollm2(smollm2_dir, tmp_path, module, template, first):
    out = tmp_path / "chat.json"
    message = "What is the capital of France?" if first == "human" else "Paris is the capital of France."
    r = run_cli(module, "smollm2", f"{message}\n/save {out}\n/exit\n", "--template", template,
                "--temperature", "0", "--max-new-tokens", "12")
    assert r.returncode == 0, r.stderr
    turns = saved(out)
    roles = ["human", "gpt"] if first == "human" else ["human", "gpt", "human"]
    assert [role for role, _ in turns] == roles
    assert (first, message) in turns
    assert r.stdout == streamed(turns, "gpt" if first == "human" else "human")
