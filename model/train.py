"""The shared trainer of Socratic and PlatoLM: fine-tune a causal LM with the loss on one role's turns.

The two packages call :func:`main` with their trained role and system prompt; nothing else differs.
Run it through them, from the repo root::

    python -m model.sft_socratic.train --config recipes/tiny_cpu.yaml \\
        --model_name_or_path smollm2 --data_path convs.json --output_dir runs/socratic-tiny
    python -m model.sft_platolm.train --model_name_or_path DIR --data_path FILE --output_dir OUT \\
        --model_max_length 256 --max_steps 20 --per_device_train_batch_size 2 --use_cpu --report_to none
    torchrun --nproc_per_node 4 -m model.sft_platolm.train --config recipes/platolm_7b_fsdp.yaml
    python -m model.sft_platolm.train --help        # every option, with TrainingArguments'

Options: model (``--model_name_or_path``, ``--attn_implementation``, ``--dtype``), LoRA/QLoRA (``--lora``,
``--lora_r``, ...), data (``--data_path`` file or datasets name, ``--template dyadic|chat``,
``--model_max_length``, ``--eval_ratio``, ``--packing``), and every ``transformers.TrainingArguments``
flag. ``--config RECIPE.yaml`` sets defaults for any of them; flags on the command line win.

The run resumes by itself from the last ``checkpoint-*`` in ``--output_dir``; Ctrl-C (single process)
finishes the step, saves a checkpoint and exits with 130, so rerunning the same command continues.
The output directory ends with the model (or adapter, see ``--lora_save``), its tokenizer,
``trainer_state.json``, ``platolm_run.json`` (recipe, data file and hash, role, template, ...)
and ``loss.png``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml
from transformers import HfArgumentParser, TrainingArguments

from model.conversation import (BadRecord, BadRecordSummary, atomic_write, iter_conversations,
                                parse_record)
from model.dyadic import TEMPLATES, Encoder
from model.packing import (PackingCollator, PaddingCollator, Rows, pack_bins, padding_efficiency,
                           row_lengths)

RUN_RECORD = "platolm_run.json"
LOSS_PLOT = "loss.png"
ENCODING_VERSION = 1  # bump when the encoded columns change, to invalidate cached tokenisations


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "base model: local dir, hub name, or 'smollm2' (required)"})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "attention kernel; default: flash_attention_2 on CUDA when the "
                                        "flash_attn package is installed, else sdpa"})
    dtype: str = field(default="float32", metadata={
        "help": "dtype the weights are loaded in (mixed precision is --bf16/--fp16)",
        "choices": ["float32", "bfloat16", "float16", "auto"]})


@dataclass
class LoraArguments:
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters (peft) instead of all weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "comma-separated module names to adapt, or 'all-linear' (every linear layer but the head)"})
    lora_save: str = field(default="merged", metadata={
        "help": "final save: 'merged' (adapters folded into a full model) or 'adapter' (peft adapter only)",
        "choices": ["merged", "adapter"]})
    load_in_4bit: bool = field(default=False, metadata={
        "help": "QLoRA: load the base in 4-bit NF4 (needs CUDA and bitsandbytes; implies --lora)"})


@dataclass
class DataArguments:
    data_path: str | None = field(default=None, metadata={
        "help": "ShareGPT / OpenAI-messages file (JSON array or JSONL), or a datasets name/dir (required)"})
    data_split: str = field(default="train", metadata={"help": "split, when --data_path is a datasets name"})
    data_cache_dir: str | None = field(default=None, metadata={
        "help": "where the tokenised data is cached (default: the datasets cache, $HF_DATASETS_CACHE)"})
    template: str = field(default="dyadic", metadata={"help": "prompt template", "choices": list(TEMPLATES)})
    model_max_length: int = field(default=2048, metadata={"help": "tokens per conversation / packed row"})
    eval_ratio: float = field(default=0.0, metadata={"help": "fraction of conversations held out for eval"})
    packing: bool = field(default=True, metadata={
        "help": "pack conversations into rows of model_max_length (false: one per row, padded)"})
    system_prompt: str | None = field(default=None, metadata={
        "help": "system prompt for every record (default: the record's own, else the package's)"})
    strict: bool = field(default=False, metadata={"help": "stop at the first bad record"})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "processes for tokenising"})


@dataclass
class TrainArguments(TrainingArguments):
    auto_resume: bool = field(default=True, metadata={
        "help": "resume from the last checkpoint-* in --output_dir when there is one"})


# Project defaults under the recipe and the command line: log often enough for a plot of a short run.
# All weights take part in every step, so DDP need not search for unused ones.
PROJECT_DEFAULTS = {"logging_steps": 10, "logging_first_step": True, "ddp_find_unused_parameters": False}


def parse_args(argv: list[str] | None = None):
    """(model, lora, data, training, recipe) from ``--config RECIPE.yaml`` and the command line (which wins)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    parser = HfArgumentParser((ModelArguments, LoraArguments, DataArguments, TrainArguments),
                              prog=f"python -m {_prog()}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", metavar="RECIPE.yaml",
                        help="YAML recipe of defaults for any option below; command-line flags win")
    parser.set_defaults(**PROJECT_DEFAULTS)
    recipe: dict = {}
    if known.config:
        try:
            with open(known.config, encoding="utf-8") as f:
                recipe = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as err:
            parser.error(f"cannot read recipe {known.config}: {err}")
        if not isinstance(recipe, dict):
            parser.error(f"recipe {known.config} must be a mapping of option: value")
        unknown = sorted(set(recipe) - {a.dest for a in parser._actions})
        if unknown:
            parser.error(f"recipe {known.config}: unknown option(s) {', '.join(unknown)}")
        parser.set_defaults(**recipe)
    model_args, lora_args, data_args, train_args, _ = parser.parse_args_into_dataclasses(argv)
    for name, value in (("--model_name_or_path", model_args.model_name_or_path),
                        ("--data_path", data_args.data_path), ("--output_dir", train_args.output_dir)):
        if not value:
            parser.error(f"{name} is required (on the command line or in the recipe)")
    if lora_args.load_in_4bit:
        lora_args.lora = True
        if lora_args.lora_save == "merged":
            parser.error("--load_in_4bit: merging into 4-bit weights is lossy; use --lora_save adapter "
                         "and merge onto a bf16 base afterwards")
    return model_args, lora_args, data_args, train_args, {"path": known.config, "options": recipe}


def _prog() -> str:
    main_mod = sys.modules.get("__main__")
    spec = getattr(main_mod, "__spec__", None)
    return spec.name if spec is not None else "model.train"


# -- tokenizer and model ------------------------------------------------------------------------

def ensure_pad_token(tokenizer) -> str:
    """Give the tokenizer a pad token without growing the vocabulary.

    LLaMA tokenizers have none. Reusing ``<unk>`` (else the EOS) keeps the embedding matrix exactly the
    released size, so the weights load into the stock architecture; it is safe because padded
    positions are never attended to (attention mask, or their own block when packed) nor trained.
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer.pad_token


def pick_attention(requested: str | None) -> str:
    """flash-attention 2 where it can run (packed rows then use its variable-length kernel), else SDPA."""
    if requested:
        return requested
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_model(path: str, tokenizer, model_args: ModelArguments, lora_args: LoraArguments):
    """The base model ready to train: caching off (packed rows need it off), pad id set, LoRA applied."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": pick_attention(model_args.attn_implementation),
              "dtype": model_args.dtype if model_args.dtype == "auto" else getattr(torch, model_args.dtype)}
    if lora_args.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    # With a KV cache the model skips the packed-sequence mask and packed rows would see each other.
    model.config.use_cache = False
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if lora_args.lora:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if lora_args.load_in_4bit:
            model = prepare_model_for_kbit_training(model)
        targets = lora_args.lora_target_modules
        model = get_peft_model(model, LoraConfig(
            r=lora_args.lora_r, lora_alpha=lora_args.lora_alpha, lora_dropout=lora_args.lora_dropout,
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
            task_type="CAUSAL_LM"))
    return model


def check_qlora_possible() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "--load_in_4bit (QLoRA) needs a CUDA GPU; use --lora without it on this machine"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "--load_in_4bit (QLoRA) needs the bitsandbytes package (pip install bitsandbytes)"
    return None


# -- data ---------------------------------------------------------------------------------------

def _raw_features():
    from datasets import Features, Value

    return Features({"id": Value("string"), "record": Value("string"), "bad": Value("string")})


def _bad_row(err: BadRecord) -> dict:
    return {"id": str(err.record), "record": "",
            "bad": json.dumps([err.file, err.record, err.reason, err.detail], ensure_ascii=False)}


class _Collected(BadRecordSummary):
    """A quiet summary that hands back the bad records it received, to store them as rows."""

    def __init__(self):
        super().__init__(show_first=0)
        self.pending: list[BadRecord] = []

    def add(self, err: BadRecord) -> None:
        super().add(err)
        self.pending.append(err)

    def drain(self) -> list[dict]:
        rows = [_bad_row(e) for e in self.pending]
        self.pending.clear()
        return rows


def _file_rows(path: str):
    """Every record of a conversation file: the parsed conversation, or why it was rejected."""
    bad = _Collected()
    for conv in iter_conversations(path, False, bad):
        yield from bad.drain()
        yield {"id": conv.id, "record": json.dumps(conv.to_sharegpt(), ensure_ascii=False), "bad": ""}
    yield from bad.drain()


def _hub_rows(batch: dict, indices: list[int], file: str) -> dict:
    out = {"id": [], "record": [], "bad": []}
    for k, index in enumerate(indices):
        try:
            conv = parse_record({c: batch[c][k] for c in batch}, index, file)
            row = {"id": conv.id, "record": json.dumps(conv.to_sharegpt(), ensure_ascii=False), "bad": ""}
        except BadRecord as err:
            row = _bad_row(err)
        for c in out:
            out[c].append(row[c])
    return out


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_records(data_args: DataArguments):
    """The data as rows {id, record (ShareGPT JSON) | bad (why not)}, cached by the datasets library.

    Returns (dataset, data hash): the file's SHA-256, or the datasets fingerprint of a hub dataset.
    """
    from datasets import Dataset, load_dataset

    path = data_args.data_path
    if os.path.isfile(path):
        sha = file_sha256(path)
        ds = Dataset.from_generator(_file_rows, features=_raw_features(), cache_dir=data_args.data_cache_dir,
                                    gen_kwargs={"path": path}, fingerprint=f"platolm-records-{sha}")
        return ds, f"sha256:{sha}"
    hub = load_dataset(path, split=data_args.data_split, cache_dir=data_args.data_cache_dir)
    ds = hub.map(_hub_rows, batched=True, with_indices=True, remove_columns=hub.column_names,
                 features=_raw_features(), fn_kwargs={"file": path}, desc="reading records")
    return ds, f"datasets:{hub._fingerprint}"


def tokenizer_fingerprint(tokenizer) -> str:
    parts = [tokenizer.backend_tokenizer.to_str(), str(tokenizer.chat_template),
             str(tokenizer.bos_token), str(tokenizer.eos_token)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _encode_rows(batch: dict, encoder: Encoder, file: str, default_system: str) -> dict:
    out = {"id": [], "input_ids": [], "labels": [], "length": [], "bad": []}

    def put(rid, ids, labels, bad):
        out["id"].append(rid)
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["length"].append(len(ids))
        out["bad"].append(bad)

    convs = []
    for rid, record, bad in zip(batch["id"], batch["record"], batch["bad"]):
        if bad:
            put(rid, [], [], bad)
            continue
        conv = parse_record(json.loads(record), rid, file)
        if conv.system is None:  # the package's prompt is the fallback (an explicit override still wins)
            conv.system = default_system
        convs.append(conv)
    for row in encoder.encode_many(convs, file):
        if isinstance(row, BadRecord):
            put(str(row.record), [], [], _bad_row(row)["bad"])
        else:
            put(row["id"], row["input_ids"], row["labels"], "")
    return out


def encode_records(records, data_hash: str, tokenizer, train_role: str, default_system: str,
                   data_args: DataArguments):
    """Tokenise with ``datasets.map``; the cache key covers data, tokenizer, role, template, length, prompt.

    Returns (encoded dataset, whether it came from the cache).
    """
    from datasets import Features, List, Value

    encoder = Encoder(tokenizer, train_role, data_args.template, data_args.model_max_length,
                      data_args.system_prompt)
    key = hashlib.sha256(json.dumps([ENCODING_VERSION, data_hash, records._fingerprint,
                                     tokenizer_fingerprint(tokenizer), train_role, data_args.template,
                                     data_args.model_max_length, data_args.system_prompt,
                                     default_system]).encode()).hexdigest()[:24]
    cache_file, cached = None, False
    if records.cache_files:
        folder = Path(records.cache_files[0]["filename"]).parent
        cache_file = str(folder / f"platolm-encoded-{key}.arrow")
        cached = any(folder.glob(f"platolm-encoded-{key}*.arrow"))
    features = Features({"id": Value("string"), "input_ids": List(Value("int32")),
                         "labels": List(Value("int32")), "length": Value("int32"), "bad": Value("string")})
    encoded = records.map(_encode_rows, batched=True, remove_columns=records.column_names, features=features,
                          fn_kwargs={"encoder": encoder, "file": data_args.data_path,
                                     "default_system": default_system},
                          new_fingerprint=key, cache_file_name=cache_file,
                          num_proc=data_args.preprocessing_num_workers, desc="tokenising")
    return encoded, cached


def split_bad(encoded, data_args: DataArguments, summary: BadRecordSummary) -> list[int]:
    """Indices of the usable rows; every other row goes into ``summary`` (or raises with --strict)."""
    good = []
    for i, bad in enumerate(encoded["bad"]):
        if not bad:
            good.append(i)
            continue
        err = BadRecord(*json.loads(bad))
        if data_args.strict:
            raise err
        summary.add(err)
    return good


def split_eval(n: int, ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """A fixed random held-out split: (train positions, eval positions)."""
    order = np.random.default_rng(seed).permutation(n)
    n_eval = int(round(n * ratio)) if ratio > 0 else 0
    if ratio > 0 and n > 1:
        n_eval = min(max(n_eval, 1), n - 1)
    return sorted(order[n_eval:].tolist()), sorted(order[:n_eval].tolist())


def make_rows(encoded, packing: bool, max_length: int) -> tuple[Rows, list[int]]:
    """Training rows and their token counts: packed bins, or one conversation per row."""
    lengths = list(encoded["length"])
    bins = pack_bins(lengths, max_length) if packing else [[i] for i in range(len(lengths))]
    return Rows(encoded, bins), row_lengths(lengths, bins)


# -- feedback and outputs -----------------------------------------------------------------------

class StopOnSignal:
    """Ctrl-C / SIGTERM: finish the step, save a checkpoint, stop. A second signal aborts at once."""

    def __init__(self):
        from transformers import TrainerCallback

        outer = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if outer.requested:
                    control.should_save = True
                    control.should_training_stop = True

        self.callback = _Callback()
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: finishing this step and saving a checkpoint "
              f"(send it again to abort without saving)", file=sys.stderr, flush=True)


def plot_losses(log_history: list[dict], path: Path) -> bool:
    """Write the training (and eval) loss curve as a PNG; False when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    if not train and not evals:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for points, label, style in ((train, "train", "-"), (evals, "eval", "o--")):
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def save_final(trainer, tokenizer, lora_args: LoraArguments) -> str:
    """Save what ``from_pretrained`` loads: the full model (FSDP: gathered), or a merged / bare adapter."""
    out = trainer.args.output_dir
    model = trainer.accelerator.unwrap_model(trainer.model)
    if lora_args.lora and lora_args.lora_save == "merged":
        merged = model.merge_and_unload()
        merged.config.use_cache = True
        if trainer.is_world_process_zero():
            merged.save_pretrained(out)
            tokenizer.save_pretrained(out)
        return "merged"
    base = model.get_base_model() if lora_args.lora else model
    base.config.use_cache = True  # caching was off for training only
    trainer.save_model(out)  # also saves the tokenizer (processing_class)
    return "adapter" if lora_args.lora else "full"


# -- main ---------------------------------------------------------------------------------------

def main(train_role: str, system_prompt: str, argv: list[str] | None = None) -> int:
    model_args, lora_args, data_args, train_args, recipe = parse_args(argv)
    if lora_args.load_in_4bit and (problem := check_qlora_possible()):
        print(f"error: {problem}", file=sys.stderr)
        return 2

    from transformers import AutoTokenizer, Trainer
    from transformers.trainer_utils import get_last_checkpoint

    from model.assets import resolve

    main_rank = train_args.process_index == 0
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if main_rank else (lambda *a: None)
    model_path = resolve(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad = ensure_pad_token(tokenizer)

    summary = BadRecordSummary(show_first=5 if main_rank else 0)
    try:
        with train_args.main_process_first(desc="reading and tokenising the data"):
            records, data_hash = load_records(data_args)
            encoded, cached = encode_records(records, data_hash, tokenizer, train_role, system_prompt, data_args)
        good = split_bad(encoded, data_args, summary)
    except (BadRecord, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    tokenizer.model_max_length = data_args.model_max_length  # after encoding, which cuts long ones itself
    say(f"data: {data_args.data_path} ({data_hash[:23]}), {len(good)} conversations"
        + (" (tokenised earlier: loaded from the datasets cache)" if cached else ""))
    say(summary.report())
    if not good:
        print(f"error: no usable conversation in {data_args.data_path}", file=sys.stderr)
        return 1
    train_pos, eval_pos = split_eval(len(good), data_args.eval_ratio, train_args.data_seed or train_args.seed)
    usable = encoded.select(good)
    train_rows, train_tokens = make_rows(usable.select(train_pos), data_args.packing, data_args.model_max_length)
    eval_rows = make_rows(usable.select(eval_pos), data_args.packing, data_args.model_max_length)[0] \
        if eval_pos else None
    efficiency = padding_efficiency(train_tokens, train_args.per_device_train_batch_size, train_args.seed)
    say(f"train: {len(train_pos)} conversations in {len(train_rows)} rows "
        f"({'packed' if data_args.packing else 'one per row'}), eval: {len(eval_pos)}; "
        f"padding efficiency (real tokens / tokens computed) {efficiency:.3f} "
        f"at batch {train_args.per_device_train_batch_size}; pad token {pad!r}")

    model = load_model(model_path, tokenizer, model_args, lora_args)
    if lora_args.lora and main_rank:
        model.print_trainable_parameters()
    attn = model.config._attn_implementation
    collator = (PackingCollator(tokenizer.pad_token_id, flatten=attn == "flash_attention_2")
                if data_args.packing else PaddingCollator(tokenizer.pad_token_id))
    stopper = StopOnSignal()
    trainer = Trainer(model=model, args=train_args, data_collator=collator, train_dataset=train_rows,
                      eval_dataset=eval_rows, processing_class=tokenizer,
                      callbacks=[stopper.callback] if train_args.world_size == 1 else None)

    say(f"processes: {train_args.world_size}" + (", FSDP" if trainer.is_fsdp_enabled else "")
        + (", DeepSpeed" if trainer.is_deepspeed_enabled else "") + f"; attention: {attn}")
    if train_args.fsdp and not trainer.is_fsdp_enabled:
        say("note: FSDP runs on GPUs only; here the processes train as plain data parallel")
    resume = train_args.resume_from_checkpoint
    if resume is None and train_args.auto_resume and os.path.isdir(train_args.output_dir):
        resume = get_last_checkpoint(train_args.output_dir)
    if resume:
        say(f"resuming from {resume}")
    with stopper if train_args.world_size == 1 else contextlib.nullcontext():
        result = trainer.train(resume_from_checkpoint=resume)
    if stopper.requested:
        say(f"stopped at step {trainer.state.global_step}; checkpoint saved in {train_args.output_dir}; "
            f"run the same command again to resume")
        return 130
    metrics = dict(result.metrics)
    if eval_rows is not None and train_args.eval_strategy == "no":
        metrics.update(trainer.evaluate())

    saved = save_final(trainer, tokenizer, lora_args)
    trainer.save_state()
    if trainer.is_world_process_zero():
        out = Path(train_args.output_dir)
        plotted = plot_losses(trainer.state.log_history, out / LOSS_PLOT)
        record = {
            "train_role": train_role, "system_prompt": data_args.system_prompt or system_prompt,
            "template": data_args.template, "model_max_length": data_args.model_max_length,
            "base_model": model_args.model_name_or_path, "data_path": data_args.data_path,
            "data_hash": data_hash, "recipe": recipe, "argv": sys.argv[1:] if argv is None else argv,
            "saved": saved, "pad_token": pad, "attn_implementation": attn,
            "packing": data_args.packing, "padding_efficiency": round(efficiency, 4),
            "conversations": {"train": len(train_pos), "eval": len(eval_pos), "bad": summary.total},
            "bad_records": dict(summary.counts), "rows": len(train_rows),
            "lora": asdict(lora_args) if lora_args.lora else None,
            "metrics": metrics, "loss_plot": LOSS_PLOT if plotted else None,
        }
        atomic_write(out / RUN_RECORD, lambda f: json.dump(record, f, indent=2, default=str))
        say(f"saved the {saved} model, its tokenizer, trainer_state.json, {RUN_RECORD}"
            + (f" and {LOSS_PLOT}" if plotted else "") + f" in {out}")
    return 0
