"""``make gpu-check`` on a machine without CUDA: the plan is printed and checked, nothing runs."""
from __future__ import annotations

import subprocess

from tests.conftest import PYTHON, ROOT, env_offline


def test_gpu_check_dry_run_prints_and_checks_the_plan(tmp_path):
    out = tmp_path / "gpu_check"
    proc = subprocess.run([PYTHON, "-m", "scripts.gpu_check", "--dry-run", "--out", str(out), "--sessions", "8"],
                          cwd=ROOT, env=env_offline(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "1B-shaped Llama, 1.10B parameters" in text  # TinyLlama's shape, counted on the meta device
    commands = [line for line in text.splitlines() if line.startswith("$ ")]
    assert [c.split()[3] for c in commands[:3]] == ["model.sft_platolm.train", "model.sft_socratic.train",
                                                    "data.simulate"]
    assert "--engine vllm" in commands[2] and "--num-sessions 8" in commands[2]
    assert commands[3] == "$ python -m pytest -q -m gpu tests"
    assert not (out / "results.json").exists()  # nothing ran, nothing was recorded
