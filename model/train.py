"""The shared trainer of Socratic and PlatoLM: fine-tune a causal LM with the loss on one role's turns.

The two packages call :func:`main` with their trained role and system prompt; nothing else differs.
Run it through them, from the repo root::

    python -m model.sft_socratic.train --config recipes/tiny_cpu.yaml \\
        --model smollm2 --data convs.json --out runs/socratic-tiny
    python -m model.sft_platolm.train --model DIR --data FILE --out OUT \\
        --max-length 256 --max-steps 20 --per-device-train-batch-size 2 --use-cpu --report-to none
    torchrun --nproc-per-node 4 -m model.sft_platolm.train --config recipes/platolm_7b_fsdp.yaml
    torchrun --nproc-per-node 4 -m model.sft_platolm.train --config recipes/platolm_7b_paper.yaml
    python -m model.sft_platolm.train --help        # every option, with TrainingArguments'

Options: model (``--model``, ``--attn-implementation``, ``--dtype``, ``--pad-token reuse|add``),
LoRA/QLoRA (``--lora``, ``--lora-r``, ...), data (``--data`` file or datasets name, ``--template
dyadic|chat``, ``--tokenization original|as_loaded``, ``--max-length``, ``--packing``,
``--eval-ratio``/``--eval-seed``/``--row-order``, ``--end-token``/``--end-style``), and every
``transformers.TrainingArguments`` flag.
``--config RECIPE.yaml`` sets defaults for any of them; flags on the command line win. The original's
spellings (``--model_name_or_path``, ``--data_path``, ``--output_dir``, ``--model_max_length``,
``--system_prompt``, and every flag with underscores) still parse.

Two kinds of recipe. ``recipes/*_7b_paper.yaml`` reproduce the original's ``sft_7b.sh``: one conversation
per row, right-padded with a ``<pad>`` token added to the tokenizer (``--pad-token add``: its input and
output embeddings start as the mean of the others, as the original's ``smart_tokenizer_and_embedding_resize``
did), the hyper-parameters of each script, and for PlatoLM the 5% held-out split (numpy seed 125, evaluated and
checkpointed every 37 steps, 6 kept). ``recipes/*_7b_fsdp.yaml`` are the fast ones: whole conversations packed
into 2048-token rows (fewer, fuller rows, so fewer optimizer steps per epoch) and the pad token reused
(``<unk>``), which keeps the released vocabulary. Either way FSDP wraps the backbone's own decoder layer
(its ``_no_split_modules``: LlamaDecoderLayer, MistralDecoderLayer, ...), so Socratic and PlatoLM can sit on
different backbones with the same recipe (``scripts/paper_backbones.sh``).

Dyadic runs with a sentencepiece (LLaMA-style) tokenizer tokenise as the original's slow tokenizer did
(``--tokenization original``, model.dyadic.training_tokenizer), and every tokenizer the trainer saves
(checkpoints and the final save) carries a chat template that renders the trained format and opens the trained
role's turn (Socratic's: the *human* turn), so ``vllm serve`` serves the checkpoint as it is: the role's dyadic
template (model.dyadic), or for ``--template chat`` the base model's own wrapped to do so (model.role_template).
Every save also gets ``platolm_run.json`` and a ``README.md`` model card (model.checkpoint). Without
``--template``, a run that resumes or continues a checkpoint of this trainer uses the template it records.

``--eval-ratio`` holds conversations out (drawn as the original drew them, ``--eval-seed``, default 125),
writes them to ``eval_split.jsonl`` and evaluates them every ``--eval-steps`` with ``--eval-strategy steps``
(else once at the end); the training rows stay in the draw's permutation order, as the original's did
(``--row-order file`` keeps the data file's order); ``loss.png`` shows the training and held-out losses.
``--end-token`` (Socratic only) teaches the simulator to write model.dyadic.END_OF_CONVERSATION as the
human's next turn after the last answer of every conversation that really ended (model.dyadic.really_ended:
the record says so, a simulated session the simulator ended itself, a conversation without a segment
suffix, or its last segment); ``--end-style original`` is the original's untested ``<e>`` experiment
instead (model.dyadic.LEARNED_ENDS); ``platolm_run.json`` then names the marker (``end_of_conversation``).

The run resumes by itself from the last ``checkpoint-*`` in ``--out``; Ctrl-C (single process)
finishes the step, saves a checkpoint and exits with 130, so rerunning the same command continues.
The output directory ends with the model (or adapter, see ``--lora-save``), its tokenizer,
``trainer_state.json``, ``platolm_run.json`` (recipe, data file and hash, role, template, system prompt, chat
template, pad token, held-out split, end marker, FSDP layers, ...), ``README.md`` (the model card),
``eval_split.jsonl`` (with ``--eval-ratio``) and ``loss.png``.
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
from transformers import HfArgumentParser, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from core.conversation import (GPT, HUMAN, BadRecord, BadRecordSummary, Turn, iter_conversations,
                                parse_record, write_jsonl)
from model.checkpoint import (CHAT_TEMPLATE_NAMES, DEFAULT_TEMPLATE, MODEL_CARD, RUN_RECORD, read_checkpoint,
                              write_checkpoint_files)
from model.dyadic import (CONDITIONS, LEARNED_ENDS, TEMPLATES, TOKENIZATIONS, Encoder, conditioned_system,
                          install_chat_template, really_ended, tokenises_as_slow_llama, training_tokenizer)
from model.role_template import install_role_template
from core.errors import UsageError
from core.runner import command
from model.packing import (PackingCollator, PaddingCollator, Rows, pack_bins, padding_efficiency,
                           row_lengths)

LOSS_PLOT = "loss.png"
EVAL_SPLIT = "eval_split.jsonl"
PAD_MODES = ("reuse", "add")
DEFAULT_PAD_TOKEN = "<pad>"  # the original's
ROW_ORDERS = ("permutation", "file")
ENCODING_VERSION = 3  # bump when the encoded columns change, to invalidate cached tokenisations


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"aliases": ["--model"], "metavar": "MODEL",
                                "help": "base model: local dir, hub name, or 'smollm2' (required)"})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "attention kernel; default: flash_attention_2 on CUDA when the "
                                        "flash_attn package is installed, else sdpa"})
    dtype: str = field(default="float32", metadata={
        "help": "dtype the weights are loaded in (mixed precision is --bf16/--fp16)",
        "choices": ["float32", "bfloat16", "float16", "auto"]})
    pad_token: str = field(default="reuse", metadata={
        "help": "a tokenizer without a pad token: 'reuse' <unk> (else the EOS), keeping the vocabulary; 'add' a "
                "new <pad> token whose input and output embeddings start as the mean of the others (the original)",
        "choices": list(PAD_MODES)})


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
        "aliases": ["--data"], "metavar": "DATA",
        "help": "ShareGPT / OpenAI-messages file (JSON array or JSONL), or a datasets name/dir (required)"})
    data_split: str = field(default="train", metadata={"help": "split, when --data is a datasets name"})
    data_cache_dir: str | None = field(default=None, metadata={
        "help": "where the tokenised data is cached (default: the datasets cache, $HF_DATASETS_CACHE)"})
    template: str | None = field(default=None, metadata={
        "help": "prompt template (default: the one recorded by the checkpoint this run resumes or continues, "
                "else dyadic)", "choices": list(TEMPLATES)})
    tokenization: str = field(default="original", metadata={
        "help": "dyadic runs with a sentencepiece (LLaMA-style) tokenizer: 'original' tokenises as the original's "
                "slow LlamaTokenizer did (model.dyadic.training_tokenizer), 'as_loaded' as transformers loads it; "
                "other tokenizers are used as loaded either way", "choices": list(TOKENIZATIONS)})
    model_max_length: int = field(default=2048, metadata={"aliases": ["--max-length"], "metavar": "N",
                                                          "help": "tokens per conversation / packed row"})
    eval_ratio: float = field(default=0.0, metadata={
        "help": "fraction of conversations held out for eval (written to eval_split.jsonl in --out)"})
    eval_seed: int = field(default=125, metadata={
        "help": "seed of the held-out split (the original: numpy seed 125, the last 5%% of a permutation)"})
    row_order: str = field(default="permutation", metadata={
        "help": "with --eval-ratio: the training rows in the held-out draw's permutation order, as the original "
                "(so the sampler's batches are the original's), or in the data 'file' order",
        "choices": list(ROW_ORDERS)})
    end_token: bool = field(default=False, metadata={
        "help": "Socratic: learn to write an end marker as the human's next turn after the last answer of "
                "conversations that really ended (model.dyadic.really_ended)"})
    end_style: str = field(default="project", metadata={
        "help": "--end-token's marker: 'project' = model.dyadic.END_OF_CONVERSATION as plain text under the "
                "paper's system prompt; 'original' = the original's untested experiment: <e>, added to the "
                "vocabulary, under its own system prompt (model.dyadic.LEARNED_ENDS)",
        "choices": list(LEARNED_ENDS)})
    packing: bool = field(default=True, metadata={
        "help": "pack conversations into rows of --max-length tokens (false: one per row, padded)"})
    system_prompt: str | None = field(default=None, metadata={
        "aliases": ["--system"], "metavar": "TEXT",
        "help": "system prompt for every record (default: the record's own, else the package's)"})
    strict: bool = field(default=False, metadata={"help": "stop at the first bad record"})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "processes for tokenising"})
    condition: str | None = field(default=None, metadata={
        "help": "Socratic: a record's 'intent' (and for intent,persona its 'persona') goes into its system prompt "
                "as model.dyadic.intent_system writes it (the prompt, then 'Intent: ...'); records without one "
                "keep the plain prompt", "choices": list(CONDITIONS)})


@dataclass
class TrainArguments(TrainingArguments):
    output_dir: str | None = field(default=None, metadata={
        "aliases": ["--out"], "metavar": "DIR",
        "help": "where the model, its checkpoints and platolm_run.json go (required)"})
    auto_resume: bool = field(default=True, metadata={
        "help": "resume from the last checkpoint-* in --out when there is one"})


# Project defaults under the recipe and the command line: log often enough for a plot of a short run.
# All weights take part in every step, so DDP need not search for unused ones.
PROJECT_DEFAULTS = {"logging_steps": 10, "logging_first_step": True, "ddp_find_unused_parameters": False}


def parse_args(argv: list[str] | None = None):
    """(model, lora, data, training, recipe) from ``--config RECIPE.yaml`` and the command line (which wins)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--deepspeed")
    known, _ = pre.parse_known_args(argv)
    parser = build_parser()
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
    if start_deepspeed_on_cpu(known.deepspeed or recipe.get("deepspeed")):
        parser.set_defaults(accelerator_config={"use_configured_state": True})
    model_args, lora_args, data_args, train_args, _ = parser.parse_args_into_dataclasses(argv)
    for name, value in (("--model", model_args.model_name_or_path), ("--data", data_args.data_path),
                        ("--out", train_args.output_dir)):
        if not value:
            parser.error(f"{name} is required (on the command line or in the recipe)")
    if lora_args.load_in_4bit:
        lora_args.lora = True
        if lora_args.lora_save == "merged":
            parser.error("--load-in-4bit: merging into 4-bit weights is lossy; use --lora-save adapter "
                         "and merge onto a bf16 base afterwards")
    return model_args, lora_args, data_args, train_args, {"path": known.config, "options": recipe}


def build_parser() -> HfArgumentParser:
    """Every option: the project's dataclasses, TrainingArguments' and ``--config``; the project's defaults set.

    --help shows one spelling per option: the shared vocabulary's (``--model``, ``--data``, ``--out``,
    ``--max-length``, ``--system``: each field's ``aliases``) or the hyphenated field name. The original's
    spellings (``--model_name_or_path``, ``--output_dir``, every flag with underscores) still parse, so the
    original's scripts run unchanged.
    """
    parser = HfArgumentParser((ModelArguments, LoraArguments, DataArguments, TrainArguments),
                              prog=f"python -m {_prog()}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", metavar="RECIPE.yaml",
                        help="YAML recipe of defaults for any option below; command-line flags win")
    parser.set_defaults(**PROJECT_DEFAULTS)
    for action in parser._actions:  # HfArgumentParser adds --field_name, --field-name, then the aliases
        spellings = [o for o in action.option_strings if o.startswith("--")]
        if spellings:
            action.option_strings = [o for o in action.option_strings if o not in spellings] + spellings[-1:]
    return parser


def start_deepspeed_on_cpu(deepspeed_config) -> bool:
    """DeepSpeed under torchrun on a machine without CUDA: start its gloo process group; True if started.

    accelerate (1.15) starts DeepSpeed's process group only on an accelerator; on a CPU-only machine every
    process would train alone (world size 1) and DeepSpeed's batch check fails. DeepSpeed's CPU accelerator
    talks over gloo when oneCCL is not installed, so the group is started here on gloo and the Trainer
    takes this state (``accelerator_config.use_configured_state``). A test path, not a fast one.
    """
    launched = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"  # by `accelerate launch`
    if not (deepspeed_config or launched) or int(os.environ.get("LOCAL_RANK", -1)) == -1:
        return False
    import torch

    if torch.cuda.is_available():
        return False
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo")
    finally:
        if not launched:
            del os.environ["ACCELERATE_USE_DEEPSPEED"]
    return True


def _prog() -> str:
    main_mod = sys.modules.get("__main__")
    spec = getattr(main_mod, "__spec__", None)
    return spec.name if spec is not None else "model.train"


# -- tokenizer and model ------------------------------------------------------------------------

def ensure_pad_token(tokenizer, mode: str = "reuse") -> str:
    """Give a tokenizer that has none (LLaMA's) a pad token: ``reuse`` one, or ``add`` ``<pad>`` (the original).

    Reusing ``<unk>`` (else the EOS) keeps the embedding matrix exactly the released size, so the weights
    load into the stock architecture; it is safe because padded positions are never attended to
    (attention mask, or their own block when packed) nor trained. ``add`` grows the vocabulary by one, as
    the original's ``smart_tokenizer_and_embedding_resize`` did (:func:`resize_for_added_tokens`).
    """
    if mode not in PAD_MODES:
        raise ValueError(f"pad token mode must be one of {PAD_MODES}, not {mode!r}")
    if tokenizer.pad_token is None:
        if mode == "add":
            tokenizer.add_special_tokens({"pad_token": DEFAULT_PAD_TOKEN})
        else:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer.pad_token


def resize_for_added_tokens(model, n_tokens: int) -> int:
    """Grow the embeddings to ``n_tokens`` rows; each new input and output row is the mean of the old rows.

    The original's initialisation (exactly the mean, where transformers would sample around it). Returns
    how many rows were added. Under DeepSpeed ZeRO-3 the weights are partitioned when loaded (their local
    shape is empty), so the size is the module's own and the rows are gathered while they are written.
    """
    import contextlib

    import torch
    from transformers.integrations import is_deepspeed_zero3_enabled

    old = model.get_input_embeddings().num_embeddings
    if n_tokens <= old:
        return 0
    model.resize_token_embeddings(n_tokens, mean_resizing=False)
    weights = list({id(e.weight): e.weight for e in (model.get_input_embeddings(), model.get_output_embeddings())
                    if e is not None}.values())
    gathered = contextlib.nullcontext()
    if is_deepspeed_zero3_enabled():
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(weights, modifier_rank=0)
    with gathered, torch.no_grad():
        for weight in weights:
            weight[old:] = weight[:old].mean(dim=0, keepdim=True)
    return n_tokens - old


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
    resize_for_added_tokens(model, len(tokenizer))
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


def layers_to_wrap(model) -> list[str]:
    """The decoder-layer classes FSDP should shard one by one: those the backbone declares unsplittable.

    ``_no_split_modules`` (LlamaDecoderLayer, MistralDecoderLayer, Qwen2DecoderLayer, ...), restricted to
    classes the model really contains, so one recipe serves every backbone.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    present = {type(m).__name__ for m in base.modules()}
    return [name for name in (getattr(base, "_no_split_modules", None) or []) if name in present]


def fill_fsdp_wrap(train_args: TrainingArguments, model) -> list[str] | None:
    """Wrap the backbone's own decoder layers when FSDP is on and the recipe names none; returns the classes.

    TrainingArguments turned the recipe's ``fsdp_config`` into accelerate's plugin arguments before the
    model existed; the classes are filled in there (``accelerate launch`` configs: through the environment
    variable accelerate reads). Explicit ``transformer_layer_cls_to_wrap`` still wins.
    """
    plugin = getattr(train_args, "fsdp_plugin_args", None)
    launched = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    if not (plugin or launched):
        return None
    if plugin:
        policy, named = plugin.get("auto_wrap_policy"), plugin.get("transformer_cls_names_to_wrap")
    else:
        policy, named = os.environ.get("FSDP_AUTO_WRAP_POLICY"), os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP")
    if (policy or "TRANSFORMER_BASED_WRAP") != "TRANSFORMER_BASED_WRAP":
        return None
    if named:
        return named.split(",") if isinstance(named, str) else list(named)
    layers = layers_to_wrap(model)
    if not layers:
        raise UsageError(f"FSDP: {type(model).__name__} declares no decoder-layer class (_no_split_modules); "
                         f"name one with --fsdp-config '{{\"transformer_layer_cls_to_wrap\": [...]}}'")
    if plugin:
        plugin["transformer_cls_names_to_wrap"] = ",".join(layers)
        train_args.fsdp_config["transformer_layer_cls_to_wrap"] = layers
    else:
        os.environ["FSDP_TRANSFORMER_CLS_TO_WRAP"] = ",".join(layers)
    return layers


def check_qlora_possible() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "--load-in-4bit (QLoRA) needs a CUDA GPU; use --lora without it on this machine"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "--load-in-4bit (QLoRA) needs the bitsandbytes package (pip install bitsandbytes)"
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


def _encode_rows(batch: dict, encoder: Encoder, file: str, default_system: str, system: str | None = None,
                 condition: str | None = None, ended: frozenset = frozenset(), end_marker: str = "") -> dict:
    """One encoded row per record, in the records' order (row i of the result is record i: the held-out split
    is written from the records by position). A record's system prompt: ``system`` (--system_prompt), else its
    own, else ``default_system``; under ``condition`` followed by its intent (``intent``: whether it had one)."""
    out = {"id": [], "input_ids": [], "labels": [], "length": [], "bad": [], "intent": []}

    def put(rid, ids, labels, bad, intent=False):
        for column, value in zip(out, (rid, ids, labels, len(ids), bad, intent)):
            out[column].append(value)

    convs, conditioned, problems = [], [], dict(enumerate(batch["bad"]))
    for i, (rid, record, bad) in enumerate(zip(batch["id"], batch["record"], batch["bad"])):
        if bad:
            continue
        conv = parse_record(json.loads(record), rid, file)
        base = system if system is not None else conv.system if conv.system is not None else default_system
        try:
            conv.system = conditioned_system(conv, base, condition, file)
        except BadRecord as err:  # an intent that is not a non-empty string
            problems[i] = _bad_row(err)["bad"]
            continue
        if conv.id in ended and conv.turns[-1].role == GPT:
            conv.turns.append(Turn(HUMAN, end_marker))
        convs.append(conv)
        conditioned.append(conv.system != base)
    rows = zip(encoder.encode_many(convs, file), conditioned)  # one per good record, in order
    for i, rid in enumerate(batch["id"]):
        if problems[i]:
            put(rid, [], [], problems[i])
            continue
        row, intent = next(rows)
        if isinstance(row, BadRecord):
            put(str(row.record), [], [], _bad_row(row)["bad"])
        else:
            put(row["id"], row["input_ids"], row["labels"], "", intent)
    return out


def ended_ids(records) -> frozenset:
    """Ids of the records that really ended (``model.dyadic.really_ended`` over the whole file)."""
    convs = []
    for rid, record, bad in zip(records["id"], records["record"], records["bad"]):
        if not bad:
            convs.append(parse_record(json.loads(record), rid))
    return frozenset(c.id for c, ended in zip(convs, really_ended(convs)) if ended)


def encode_records(records, data_hash: str, tokenizer, train_role: str, default_system: str,
                   data_args: DataArguments, ended: frozenset = frozenset()):
    """Tokenise with ``datasets.map``; the cache key covers data, tokenizer, role, template, length, prompt
    and the end marker (``ended``: ids whose conversation gets ``--end-style``'s marker as a last human turn).

    Returns (encoded dataset, whether it came from the cache).
    """
    from datasets import Features, List, Value

    template = data_args.template or DEFAULT_TEMPLATE  # unset outside main (which follows the checkpoint)
    encoder = Encoder(tokenizer, train_role, template, data_args.model_max_length)  # rows carry their prompt
    key = hashlib.sha256(json.dumps([ENCODING_VERSION, data_hash, records._fingerprint,
                                     tokenizer_fingerprint(tokenizer), train_role, template,
                                     data_args.model_max_length, data_args.system_prompt, data_args.condition,
                                     default_system, bool(ended) and data_args.end_style]).encode()).hexdigest()[:24]
    cache_file, cached = None, False
    if records.cache_files:
        folder = Path(records.cache_files[0]["filename"]).parent
        cache_file = str(folder / f"platolm-encoded-{key}.arrow")
        cached = any(folder.glob(f"platolm-encoded-{key}*.arrow"))
    features = Features({"id": Value("string"), "input_ids": List(Value("int32")), "labels": List(Value("int32")),
                         "length": Value("int32"), "bad": Value("string"), "intent": Value("bool")})
    encoded = records.map(_encode_rows, batched=True, remove_columns=records.column_names, features=features,
                          fn_kwargs={"encoder": encoder, "file": data_args.data_path,
                                     "default_system": default_system, "system": data_args.system_prompt,
                                     "condition": data_args.condition, "ended": ended,
                                     "end_marker": LEARNED_ENDS[data_args.end_style].marker},
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


def split_eval(n: int, ratio: float, seed: int, order: str = "permutation") -> tuple[list[int], list[int]]:
    """A fixed random held-out split, (train positions, eval positions), drawn as the original drew it.

    ``np.random.seed(seed); perm = np.random.permutation(n)``; the first ``int(n * (1 - ratio))`` train, the
    rest eval (at the original's seed 125 and 5%: the same conversations, given the same usable records).
    At least one of each when ``0 < ratio`` and ``n > 1``. ``order``: the positions in the permutation's order,
    as the original's rows were (the sampler then draws the original's batches), or sorted (``file``).
    """
    if ratio <= 0:
        return list(range(n)), []
    if order not in ROW_ORDERS:
        raise ValueError(f"row order must be one of {ROW_ORDERS}, not {order!r}")
    perm = np.random.RandomState(seed).permutation(n)
    n_train = min(max(int(n * (1 - ratio)), 1), n - 1) if n > 1 else n
    train, held = perm[:n_train].tolist(), perm[n_train:].tolist()
    return (train, held) if order == "permutation" else (sorted(train), sorted(held))


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


def plot_losses(log_history: list[dict], path: Path) -> list[str]:
    """Write the training and held-out loss curves as a PNG; returns the curves drawn (none: no file)."""
    from core.plots import figure

    curves = {"train": [(h["step"], h["loss"]) for h in log_history if "loss" in h],
              "eval": [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]}
    drawn = [name for name, points in curves.items() if points]
    if not drawn:
        return []
    with figure(path, figsize=(7, 4), dpi=100) as (fig, ax):
        for name in drawn:
            ax.plot(*zip(*curves[name]), "-" if name == "train" else "o--", label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        ax.grid(alpha=0.3)
    return drawn


def prepare_chat_template(tokenizer, train_role: str, system: str, data_args: DataArguments,
                          say) -> tuple[str | None, list[str]]:
    """Write the chat template that serves the trained role into the tokenizer, so that every checkpoint and the
    final save carry it: ``vllm serve`` then renders the trained format, and Socratic's opens a user turn.

    Dyadic runs: the role's dyadic template (model.dyadic). Chat runs: the base model's own template wrapped so
    that it renders as training did, with ``system`` as the default (model.role_template). Returns the
    template's name (model.checkpoint.CHAT_TEMPLATE_NAMES; None: none fits, the tokenizer keeps its own) and
    notes on what it does beyond the plain rule, both said here, before training, and kept for the model card.
    """
    try:
        if data_args.template == "dyadic":
            install_chat_template(tokenizer, train_role)
            notes = []
        else:
            notes = install_role_template(tokenizer, train_role, system)
    except ValueError as err:
        kept = "the base model's own" if data_args.template == "chat" else "its own"
        notes = [f"no chat template that serves the trained role fits ({err}); the tokenizer keeps {kept}, "
                 f"whose generation prompt opens an assistant turn: serve it with `python -m model.serve`"]
        say(f"warning: {notes[0]}")
        return None, notes
    for note in notes:
        say(f"note: the saved chat template: {note}")
    return CHAT_TEMPLATE_NAMES[train_role], notes


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

def check_options(train_role: str, model_args: ModelArguments, lora_args: LoraArguments,
                  data_args: DataArguments, train_args: TrainArguments) -> None:
    """Combinations the user must fix, refused before anything is loaded."""
    if lora_args.load_in_4bit and (problem := check_qlora_possible()):
        raise UsageError(problem)
    if data_args.end_token and train_role != HUMAN:
        raise UsageError("--end-token: only Socratic (trained on the human's turns) learns to end a conversation")
    if data_args.condition and train_role != HUMAN:
        raise UsageError("--condition: only Socratic (trained on the human's turns) is conditioned on intents")
    if train_args.eval_strategy != "no" and data_args.eval_ratio <= 0:
        raise UsageError(f"--eval-strategy {train_args.eval_strategy.value} needs a held-out split: "
                         f"give --eval-ratio (the original: 0.05)")
    if model_args.pad_token == "add" and lora_args.lora and lora_args.lora_save == "adapter":
        raise UsageError("--pad-token add grows the vocabulary, which a bare LoRA adapter cannot carry; "
                         "use --lora-save merged or --pad-token reuse")


def load_tokenizer(model_path: str, model_args: ModelArguments, data_args: DataArguments):
    """(tokenizer, pad token, whether it now tokenises as the original's slow LLaMA tokenizer)."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if data_args.template == "chat" and not tokenizer.chat_template:
        raise UsageError(f"--template chat: {model_args.model_name_or_path} has no chat template; "
                         f"use --template dyadic")
    pad = ensure_pad_token(tokenizer, model_args.pad_token)  # the original's order: <pad> first, then the others
    end = LEARNED_ENDS[data_args.end_style]
    if data_args.end_token and end.added_token:  # one new id; its embeddings start as the mean (load_model)
        # not flagged special (the original's was its sep_token): generation skips special tokens when decoding
        tokenizer.add_tokens([AddedToken(end.marker, normalized=False, special=False)])
    training_tokenizer(tokenizer, data_args.tokenization, data_args.template or DEFAULT_TEMPLATE)  # unset: a base model
    return tokenizer, pad, tokenises_as_slow_llama(tokenizer)


@dataclass
class Prepared:
    """The tokenised data of one run, split into training and held-out rows."""
    data_hash: str
    summary: BadRecordSummary
    train_rows: Rows
    eval_rows: Rows | None
    n_train: int
    n_eval: int
    n_ended: int
    efficiency: float
    n_conditioned: dict | None = None  # --condition: {"train": n, "eval": n} conversations that had an intent


def prepare_data(tokenizer, train_role: str, system_prompt: str, data_args: DataArguments,
                 train_args: TrainArguments, say) -> Prepared:
    """Read, tokenise (cached), drop bad records, hold out the eval split (written to EVAL_SPLIT), build rows."""
    summary = BadRecordSummary(show_first=5 if train_args.process_index == 0 else 0)
    with train_args.main_process_first(desc="reading and tokenising the data"):
        records, data_hash = load_records(data_args)
        ended = ended_ids(records) if data_args.end_token else frozenset()
        encoded, cached = encode_records(records, data_hash, tokenizer, train_role, system_prompt, data_args, ended)
    good = split_bad(encoded, data_args, summary)
    say(f"data: {data_args.data_path} ({data_hash[:23]}), {len(good)} conversations"
        + (" (tokenised earlier: loaded from the datasets cache)" if cached else ""))
    say(summary.report())
    if not good:
        raise UsageError(f"no usable conversation in {data_args.data_path}")
    train_pos, eval_pos = split_eval(len(good), data_args.eval_ratio, data_args.eval_seed, data_args.row_order)
    usable = encoded.select(good)
    train_rows, train_tokens = make_rows(usable.select(train_pos), data_args.packing, data_args.model_max_length)
    eval_rows = make_rows(usable.select(eval_pos), data_args.packing, data_args.model_max_length)[0] \
        if eval_pos else None
    if eval_pos and train_args.process_index == 0:
        held = records.select([good[i] for i in eval_pos])["record"]
        write_jsonl(Path(train_args.output_dir) / EVAL_SPLIT, (json.loads(r) for r in held))
    efficiency = padding_efficiency(train_tokens, train_args.per_device_train_batch_size, train_args.seed)
    n_ended = len(ended.intersection(usable["id"])) if ended else 0
    conditioned = ({"train": sum(usable.select(train_pos)["intent"]), "eval": sum(usable.select(eval_pos)["intent"])}
                   if data_args.condition else None)
    return Prepared(data_hash, summary, train_rows, eval_rows, len(train_pos), len(eval_pos), n_ended, efficiency,
                    conditioned)


def run_record(train_role: str, system: str, model_args, lora_args, data_args, recipe, argv, data: Prepared,
               **outcome) -> dict:
    """What ``platolm_run.json`` says about the run (model.checkpoint reads the template, role and system prompt
    back; the model card is rendered from it). ``system``: the run's default system prompt."""
    return {
        "train_role": train_role, "system_prompt": system,
        "template": data_args.template, "model_max_length": data_args.model_max_length,
        "tokenization": data_args.tokenization, "base_model": model_args.model_name_or_path,
        "data_path": data_args.data_path, "data_hash": data.data_hash, "recipe": recipe,
        "argv": sys.argv[1:] if argv is None else argv, "pad_token_mode": model_args.pad_token,
        "packing": data_args.packing, "padding_efficiency": round(data.efficiency, 4),
        "conversations": {"train": data.n_train, "eval": data.n_eval, "bad": data.summary.total},
        "eval_split": {"ratio": data_args.eval_ratio, "seed": data_args.eval_seed,
                       "file": EVAL_SPLIT if data.n_eval else None},
        "bad_records": dict(data.summary.counts), "rows": len(data.train_rows),
        "end_of_conversation": LEARNED_ENDS[data_args.end_style].marker if data_args.end_token else None,
        "end_style": data_args.end_style if data_args.end_token else None, "row_order": data_args.row_order,
        "ended_conversations": data.n_ended if data_args.end_token else None,
        "condition": data_args.condition, "conditioned_conversations": data.n_conditioned,
        "lora": asdict(lora_args) if lora_args.lora else None, **outcome,
    }


def resume_point(train_args: TrainArguments) -> str | None:
    """The checkpoint this run resumes from: ``--resume-from-checkpoint``, else the last in ``--out``."""
    from transformers.trainer_utils import get_last_checkpoint

    resume = train_args.resume_from_checkpoint
    if resume is None and train_args.auto_resume and os.path.isdir(train_args.output_dir):
        resume = get_last_checkpoint(train_args.output_dir)
    return resume


def follow_checkpoint(model_path: str, data_args: DataArguments, train_args: TrainArguments) -> None:
    """``--template`` unset: the template recorded by the checkpoint this run resumes, else by the model it
    continues (a checkpoint this trainer saved), else dyadic. Set but contradicting that record: a warning."""
    resume = resume_point(train_args)
    checkpoint = read_checkpoint(resume) if resume else None
    if checkpoint is None or checkpoint.record_file is None:
        checkpoint = read_checkpoint(model_path)
    data_args.template = checkpoint.template_for(data_args.template)


class RecordEachCheckpoint(TrainerCallback):
    """Writes the run record and the model card into every ``checkpoint-N`` the Trainer saves."""

    def __init__(self, record: dict):
        self.record = record

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_checkpoint_files(folder, {**self.record, "saved": "checkpoint", "steps": state.global_step,
                                            "epochs": state.epoch})


def write_final_record(trainer, record: dict, say) -> None:
    """The loss plot, then the run record and the model card of the final save (model.checkpoint)."""
    out = Path(trainer.args.output_dir)
    plotted = plot_losses(trainer.state.log_history, out / LOSS_PLOT)
    write_checkpoint_files(out, {**record, "steps": trainer.state.global_step, "epochs": trainer.state.epoch,
                                 "loss_plot": LOSS_PLOT if plotted else None})
    say(f"saved the {record['saved']} model, its tokenizer, trainer_state.json, {RUN_RECORD}, {MODEL_CARD}"
        + (f" and {LOSS_PLOT}" if plotted else "") + f" in {out}")


def train_or_resume(trainer, train_args: TrainArguments, stopper: StopOnSignal, say) -> dict | None:
    """Train, resuming from the last checkpoint; the metrics, or None when a signal stopped it (saved)."""
    resume = resume_point(train_args)
    if resume:
        say(f"resuming from {resume}")
    with stopper if train_args.world_size == 1 else contextlib.nullcontext():
        result = trainer.train(resume_from_checkpoint=resume)
    if stopper.requested:
        say(f"stopped at step {trainer.state.global_step}; checkpoint saved in {train_args.output_dir}; "
            f"run the same command again to resume")
        return None
    return dict(result.metrics)


def describe_data(data: Prepared, data_args: DataArguments, batch: int, pad: str, slow: bool) -> str:
    """What the run trains on, said before training."""
    text = (f"train: {data.n_train} conversations in {len(data.train_rows)} rows "
            f"({'packed' if data_args.packing else 'one per row'}), eval: {data.n_eval}; "
            f"padding efficiency (real tokens / tokens computed) {data.efficiency:.3f} at batch {batch}; "
            f"pad token {pad}"
            + ("; tokenised as the original's slow LLaMA tokenizer" if slow else "")
            + (f"; {data.n_ended} conversations end with {LEARNED_ENDS[data_args.end_style].marker}"
               if data_args.end_token else ""))
    if data.n_conditioned is not None:
        text += (f"\n--condition {data_args.condition}: {data.n_conditioned['train']} of {data.n_train} training and "
                 f"{data.n_conditioned['eval']} of {data.n_eval} held-out conversations carry an intent"
                 + ("" if sum(data.n_conditioned.values()) else "; warning: none does (it needs a field 'intent')"))
    return text


@command
def main(train_role: str, system_prompt: str, argv: list[str] | None = None) -> int:
    model_args, lora_args, data_args, train_args, recipe = parse_args(argv)
    check_options(train_role, model_args, lora_args, data_args, train_args)

    from transformers import Trainer

    from core.assets import resolve

    main_rank = train_args.process_index == 0
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if main_rank else (lambda *a: None)
    model_path = resolve(model_args.model_name_or_path)
    follow_checkpoint(model_path, data_args, train_args)
    tokenizer, pad, slow = load_tokenizer(model_path, model_args, data_args)
    if data_args.end_token and LEARNED_ENDS[data_args.end_style].system:
        system_prompt = LEARNED_ENDS[data_args.end_style].system  # a --system still wins (prepare_data)
    system = system_prompt if data_args.system_prompt is None else data_args.system_prompt
    chat_template, notes = prepare_chat_template(tokenizer, train_role, system, data_args, say)
    data = prepare_data(tokenizer, train_role, system_prompt, data_args, train_args, say)
    tokenizer.model_max_length = data_args.model_max_length  # after encoding, which cuts long ones itself
    say(describe_data(data, data_args, train_args.per_device_train_batch_size, f"{pad!r} ({model_args.pad_token})",
                      slow))

    model = load_model(model_path, tokenizer, model_args, lora_args)
    if lora_args.lora and main_rank:
        model.print_trainable_parameters()
    wrap = fill_fsdp_wrap(train_args, model)
    attn = model.config._attn_implementation
    collator = (PackingCollator(tokenizer.pad_token_id, flatten=attn == "flash_attention_2")
                if data_args.packing else PaddingCollator(tokenizer.pad_token_id))
    record = run_record(train_role, system, model_args, lora_args, data_args, recipe, argv, data, pad_token=pad,
                        slow_llama_tokenization=slow, chat_template=chat_template, chat_template_notes=notes,
                        attn_implementation=attn, fsdp_layers_to_wrap=wrap)
    stopper = StopOnSignal()
    trainer = Trainer(model=model, args=train_args, data_collator=collator, train_dataset=data.train_rows,
                      eval_dataset=data.eval_rows, processing_class=tokenizer,
                      callbacks=[RecordEachCheckpoint(record)]
                      + ([stopper.callback] if train_args.world_size == 1 else []))

    layers = f" wrapping {', '.join(wrap)}" if wrap else ""
    say(f"processes: {train_args.world_size}" + (f", FSDP{layers}" if trainer.is_fsdp_enabled else "")
        + (", DeepSpeed" if trainer.is_deepspeed_enabled else "") + f"; attention: {attn}")
    if train_args.fsdp and not trainer.is_fsdp_enabled:
        say(f"note: FSDP runs on GPUs only (it would be{layers}); here the processes train as plain data parallel")
    metrics = train_or_resume(trainer, train_args, stopper, say)
    if metrics is None:
        return 130
    if data.eval_rows is not None and train_args.eval_strategy == "no":
        metrics.update(trainer.evaluate())

    saved = save_final(trainer, tokenizer, lora_args)
    trainer.save_state()
    if trainer.is_world_process_zero():
        write_final_record(trainer, {**record, "saved": saved, "metrics": metrics}, say)
    return 0
