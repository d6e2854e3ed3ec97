"""What only a GPU can show, in one script (``make gpu-check``; under 8 minutes on one H100):

1. trainer throughput and MFU: a 1B-shaped Llama (TinyLlama-1.1B's shape, random weights) trained on real
   ShareGPT with packing, bf16 and flash-attention 2 (SDPA where flash_attn is not installed);
2. ``vllm serve`` of a freshly trained small Socratic (``--template chat``: SmolLM2's own template, which its
   trainer saved wrapped to open the *user's* turn) with no template given to vLLM, driving a 64-session ``data.simulate`` run against a local teacher;
3. the ``gpu``-marked tests, among them vLLM vs HF ``generate`` equality on greedy decoding.

Every stage is one of the project's commands, printed before it runs. The figures go to
``runs/gpu_check/results.json`` and to the "GPU check" section of ``bench/README.md``. Without CUDA (or
with ``--dry-run``) the script prints the plan, checks that it can be built (the 1B shape is counted on
the meta device) and runs nothing.

Usage::

    python -m scripts.gpu_check [--dry-run] [--out runs/gpu_check] [--steps 30] [--sessions 64]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from core.runner import command
from scripts.pipeline import PY, free_port, local_server, show
from scripts.take_sharegpt import take_sharegpt

ROOT = Path(__file__).resolve().parent.parent
# TinyLlama-1.1B's shape: the smallest widely used Llama-2 architecture
SHAPE_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
MARKER = "<!-- gpu-check -->"


def run(cmd: list, dry: bool, **kwargs) -> None:
    """Run a project command; a dry run prints it and, for the trainer, checks that its flags parse."""
    cmd = show(cmd)
    if not dry:
        subprocess.run(cmd, check=True, cwd=ROOT, **kwargs)
    elif cmd[1:3] == ["-m", "data.simulate"]:
        from data.simulate import build_parser, check_args

        parser = build_parser()
        check_args(parser, parser.parse_args(cmd[3:]))
    elif cmd[1:3] == ["-m", "model.sft_platolm.train"] or cmd[1:3] == ["-m", "model.sft_socratic.train"]:
        from model.train import parse_args

        gpu_only = {"--bf16": 1, "--tf32": 2}  # TrainingArguments refuses these without a GPU
        flags, i = [], 3
        while i < len(cmd):
            skip = gpu_only.get(cmd[i], 0)
            flags += [] if skip else [cmd[i]]
            i += skip or 1
        parse_args(flags)


def build_1b(out: Path, dry: bool) -> int:
    """Save a random 1B-shaped Llama with SmolLM2's tokenizer (vocabulary resized); returns its parameter count."""
    import torch
    from accelerate import init_empty_weights
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.assets import load_tokenizer

    config = LlamaConfig(**SHAPE_1B, torch_dtype="bfloat16")
    if dry:
        with init_empty_weights():
            return LlamaForCausalLM(config).num_parameters()
    tokenizer = load_tokenizer("smollm2")
    config.vocab_size = len(tokenizer)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model.num_parameters()


def throughput(out: Path, params: int, steps: int, dry: bool) -> dict:
    """Stage 1: trainer tokens/s and MFU (6 N flops per token; attention flops not counted: a lower bound)."""
    import importlib.util

    attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    model_dir, run_dir = out / "llama-1b", out / "train-1b"
    print(f"building a random 1B-shaped Llama in {model_dir}", flush=True)
    if not dry:
        build_1b(model_dir, dry=False)
    run([PY, "-m", "model.sft_platolm.train", "--model", model_dir, "--data", out / "sharegpt.json",
         "--out", run_dir, "--bf16", "--tf32", "true", "--attn-implementation", attn,
         "--max-length", 2048, "--packing", "true", "--per-device-train-batch-size", 8, "--max-steps", steps,
         "--learning-rate", "2e-5", "--logging-steps", 5, "--save-strategy", "no", "--report-to", "none",
         "--include-num-input-tokens-seen", "true", "--auto-resume", "false"], dry)
    if dry:
        return {"params": params, "attention": attn}
    state = json.loads((run_dir / "trainer_state.json").read_text())
    tokens = max(h.get("num_input_tokens_seen", 0) for h in state["log_history"])
    seconds = next(h["train_runtime"] for h in state["log_history"] if "train_runtime" in h)
    import torch

    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    tps = tokens / seconds
    return {"gpu": name, "params": params, "attention": attn, "tokens_per_s": round(tps),
            "mfu": round(6 * params * tps / peak, 3) if peak else None, "steps": steps}


def socratic_on_vllm(out: Path, sessions: int, dry: bool) -> dict:
    """Stage 2: train a small chat-template Socratic, serve it with vLLM as saved, simulate against a local teacher."""
    socratic, chat = out / "socratic-smollm2", out / "socraticchat.jsonl"
    run([PY, "-m", "model.sft_socratic.train", "--model", "smollm2", "--data", out / "sharegpt.json",
         "--out", socratic, "--template", "chat", "--bf16", "--max-length", 1024,
         "--per-device-train-batch-size", 8, "--max-steps", 60, "--learning-rate", "5e-5",
         "--save-strategy", "no", "--report-to", "none", "--auto-resume", "false"], dry)
    port = free_port()
    teacher = [PY, "-m", "tests.fault_teacher", "--port", port, "--answer-words", "80"]
    with (nullcontext(f"http://127.0.0.1:{port}/v1") if dry
          else local_server(teacher, port, ready_path="/v1/models", cwd=ROOT)) as url:
        started = time.monotonic()
        run([PY, "-m", "data.simulate", "--simulator", socratic, "--engine", "vllm", "--teacher-base-url", url,
             "--teacher-model", "teacher", "--num-sessions", sessions, "--concurrency", sessions,
             "--max-context", 1024, "--max-new-tokens", 256, "--out", chat, "--no-progress"], dry)
    if dry:
        return {}
    recs = [json.loads(line) for line in chat.read_text().splitlines()]
    return {"sessions": len(recs), "seconds_with_vllm_start": round(time.monotonic() - started, 1),
            "rounds": sum(r["num_of_rounds"] for r in recs)}


def gpu_tests(dry: bool) -> dict:
    """Stage 3: every gpu-marked test (vLLM vs HF generate on greedy decoding among them)."""
    cmd = show([PY, "-m", "pytest", "-q", "-m", "gpu", "tests"])
    if dry:
        return {}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout[-2000:], flush=True)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return {"gpu_tests": re.sub(r"=+", "", summary).strip(), "gpu_tests_passed": proc.returncode == 0}


def record(results: dict, out: Path) -> None:
    """results.json, and the figures in bench/README.md between two markers (replaced on every run)."""
    from core.conversation import atomic_write

    atomic_write(out / "results.json", lambda f: json.dump(results, f, indent=1))
    t, s = results["throughput"], results["vllm_simulation"]
    section = "\n".join([
        MARKER, "## GPU check (`make gpu-check`)", "",
        f"{t['gpu']}, {time.strftime('%Y-%m-%d')}: 1B-shaped Llama ({t['params'] / 1e9:.2f}B), packed 2048-token rows, "
        f"bf16, {t['attention']}: **{t['tokens_per_s']:,} tokens/s, MFU {t['mfu']}** (6N flops per token).",
        f"vLLM serving a trained chat-template Socratic as saved: {s['sessions']} sessions, {s['rounds']} rounds in "
        f"{s['seconds_with_vllm_start']} s including the server's start. GPU tests: {results['gpu_tests']}.",
        MARKER])
    readme = ROOT / "bench" / "README.md"
    text = readme.read_text()
    parts = text.split(MARKER)
    text = parts[0] + section + parts[2] if len(parts) == 3 else text.rstrip() + "\n\n" + section + "\n"
    atomic_write(readme, lambda f: f.write(text))


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.gpu_check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check")
    p.add_argument("--steps", type=int, default=30, help="training steps of the 1B throughput run")
    p.add_argument("--sessions", type=int, default=64)
    args = p.parse_args(argv)
    import torch

    dry = args.dry_run or not torch.cuda.is_available()
    if dry and not args.dry_run:
        print("no CUDA device here: dry run (the plan only)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if not dry:
        from core.assets import sharegpt_file

        take_sharegpt(sharegpt_file(), 2000, 0, args.out / "sharegpt.json")
    params = build_1b(args.out / "llama-1b", dry=True)
    print(f"== 1. trainer throughput: 1B-shaped Llama, {params / 1e9:.2f}B parameters", flush=True)
    results = {"throughput": throughput(args.out, params, args.steps, dry)}
    print("== 2. vLLM serving a trained Socratic, simulating against a local teacher", flush=True)
    results["vllm_simulation"] = socratic_on_vllm(args.out, args.sessions, dry)
    print("== 3. gpu-marked tests", flush=True)
    results.update(gpu_tests(dry))
    if not dry:
        record(results, args.out)
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
