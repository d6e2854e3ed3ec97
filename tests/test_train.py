"""The shared Socratic / PlatoLM trainer: CLI contract, role masking, packing, resume, torchrun, LoRA, recipes,
the learned end of conversation, held-out evaluation, and FSDP on any backbone."""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import PYTHON, ROOT, env_offline, run_main
from tests.tiny import CORPUS

SOCRATIC, PLATOLM = "model.sft_socratic.train", "model.sft_platolm.train"


# -- helpers ------------------------------------------------------------------------------------

def write_convs(path: Path, n: int = 40, seed: int = 0, bad: bool = True) -> Path:
    """Multi-turn ShareGPT conversations made of the tiny corpus, plus two bad records."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        turns = []
        for _ in range(rng.randint(1, 3)):
            turns.append({"from": "human", "value": rng.choice(CORPUS)[: rng.randint(20, 80)]})
            turns.append({"from": "gpt", "value": rng.choice(CORPUS)[: rng.randint(20, 90)]})
        records.append({"id": f"c{i}", "conversations": turns})
    if bad:
        records += [{"id": "bad-role", "conversations": [{"from": "alien", "value": "hi"}]}, {"id": "no-turns"}]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def convs(tmp_path_factory) -> Path:
    return write_convs(tmp_path_factory.mktemp("data") / "convs.json")


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """Subprocess environment with a private datasets cache (shared by this module's runs)."""
    e = env_offline()
    e["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("hf-datasets"))
    e["OMP_NUM_THREADS"] = "1"
    return e


def run_cli(args: list[str], env: dict, timeout: int = 240, in_process: bool = False) -> subprocess.CompletedProcess:
    """``python -m model.sft_*.train ...`` (``args`` start with ``-m MODULE``): a subprocess (the contract test is
    each trainer's smoke test), or ``in_process`` (``env`` unused: pass ``--data-cache-dir`` where it matters)."""
    if in_process:
        import importlib

        from model.train import main

        role = importlib.import_module(args[1].rsplit(".", 1)[0])
        proc = run_main(lambda argv: main(role.TRAIN_ROLE, role.SYSTEM_PROMPT, argv), args[2:])
    else:
        proc = subprocess.run([PYTHON, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def contract_args(module: str, model, data, out) -> list[str]:
    return ["-m", module, "--model", str(model), "--data", str(data), "--out", str(out),
            "--max-length", "256", "--max-steps", "20", "--per-device-train-batch-size", "2",
            "--use-cpu", "--report-to", "none"]


def mean_loss(model_dir, data: Path, train_role: str) -> float:
    """Mean loss over the trained tokens of every conversation, one padded batch, no training."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.conversation import iter_conversations
    from model.dyadic import Encoder
    from model.packing import PaddingCollator
    from model.train import ensure_pad_token

    tok = AutoTokenizer.from_pretrained(model_dir)
    ensure_pad_token(tok)
    rows = [r for r in Encoder(tok, train_role, max_length=256).encode_many(iter_conversations(data))
            if isinstance(r, dict)]
    batch = PaddingCollator(tok.pad_token_id)(rows)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(**batch).loss.item()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_7b_script(script: str, model, data, out, env: dict, *extra: str) -> subprocess.CompletedProcess:
    """A 7B launch script (its recipe unchanged), shrunk by flags to a tiny model: 3 steps on 2 CPU processes."""
    script_env = dict(env, NPROC="2", MASTER_PORT=str(free_port()), PYTHON=PYTHON, MODEL=str(model),
                      DATA=str(data), OUT=str(out))
    proc = subprocess.run(["bash", script, "--use-cpu", "--bf16", "false", "--tf32", "false", "--max-steps", "3",
                           "--max-length", "256", "--per-device-train-batch-size", "2",
                           "--gradient-accumulation-steps", "1", "--dataloader-num-workers", "0", *extra],
                          cwd=ROOT, env=script_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc


# -- the command-line contract ------------------------------------------------------------------

@pytest.mark.parametrize("module,role", [(SOCRATIC, "human"), (PLATOLM, "gpt")])
def test_contract_trains_saves_and_loss_goes_down(module, role, tiny_dir, convs, env, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    proc = run_cli(contract_args(module, tiny_dir, convs, out), env)
    log = proc.stderr + proc.stdout
    # the bad-record summary comes before training starts
    assert "skipped 2 bad records" in proc.stderr and "unknown role" in proc.stderr
    assert proc.stderr.index("skipped 2 bad records") < proc.stderr.index("train: 40 conversations")
    assert "'loss'" in log

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert tok.pad_token == "<unk>" and model.config.pad_token_id == tok.unk_token_id
    assert model.get_input_embeddings().weight.shape == base.get_input_embeddings().weight.shape
    assert model.config.use_cache is True
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 20
    record = json.loads((out / "platolm_run.json").read_text())
    assert record["train_role"] == role and record["template"] == "dyadic"
    assert record["data_hash"] == "sha256:" + hashlib.sha256(convs.read_bytes()).hexdigest()
    assert record["conversations"] == {"train": 40, "eval": 0, "bad": 2}
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 20 small steps lower the loss on the training data by ~0.019 (6.004 -> 5.985): a 0.005 margin, noise ~1e-5
    assert mean_loss(out, convs, role) < mean_loss(tiny_dir, convs, role) - 0.005


# -- the loss sits on the trained role only -----------------------------------------------------

def first_step_loss(module_role: str, tiny_dir, data: Path, tmp_path: Path, cache: Path) -> float:
    """The loss of the first optimisation step (before any update) of an in-process run on all of ``data``."""
    from model.sft_platolm import SYSTEM_PROMPT as PLATOLM_SYSTEM
    from model.sft_socratic import SYSTEM_PROMPT as SOCRATIC_SYSTEM
    from model.train import main

    out = tmp_path / f"out-{data.stem}"
    system = SOCRATIC_SYSTEM if module_role == "human" else PLATOLM_SYSTEM
    rc = main(module_role, system, [
        "--model", str(tiny_dir), "--data", str(data), "--out", str(out),
        "--max-length", "256", "--max-steps", "1", "--per-device-train-batch-size", "16",
        "--packing", "false", "--logging-steps", "1", "--save-strategy", "no", "--use-cpu",
        "--report-to", "none", "--data-cache-dir", str(cache), "--disable-tqdm", "true"])
    assert rc == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return next(h["loss"] for h in history if "loss" in h)


def dialogues(last_role: str, change: str | None) -> list[dict]:
    """Six conversations; ``change`` rewrites every turn of that role that comes last, or of the trained one."""
    pairs = [("What is the capital of France?", "Paris is the capital of France."),
             ("Tell me a joke about cats.", "Why did the cat sit on the computer?"),
             ("How do I sort a list in Python?", "Use sorted(xs) or xs.sort()."),
             ("Explain gradient descent.", "It walks downhill on the loss surface."),
             ("Write a haiku about autumn.", "Leaves falling slowly to the ground."),
             ("What is 0123456789?", "The quick brown fox jumps over the lazy dog.")]
    out = []
    for i, (q, a) in enumerate(pairs):
        turns = [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        if last_role == "human":
            turns.append({"from": "human", "value": "Can you write a haiku?"})
        for t, turn in enumerate(turns):
            if turn["from"] == change:
                if (change == last_role and t == len(turns) - 1) or change != last_role:
                    turn["value"] = "Sorted ( xs ) { keep an eye } on the mouse, 42 ! " * 4
        out.append({"id": f"d{i}", "conversations": turns})
    return out


@pytest.mark.parametrize("role", ["human", "gpt"])
def test_loss_only_on_the_trained_role(role, sharp_llama, tmp_path):
    """Socratic (human): rewriting the final assistant turns keeps the loss, rewriting human turns changes it.
    PlatoLM (gpt): the reverse, with conversations that end on a human turn. The first step's loss is the one a
    plain forward pass gives (no trainer), and the model with large random weights (``sharp_llama``) tells the
    rewritten turns apart by far more than float noise (checked: a 0.05 margin, where noise is ~1e-5)."""
    other = "gpt" if role == "human" else "human"
    last = other  # the untrained role speaks last, so nothing trained comes after its change
    cache = tmp_path / "cache"
    losses, direct = {}, {}
    for change in (None, other, role):
        data = tmp_path / f"{change or 'orig'}.json"
        data.write_text(json.dumps(dialogues(last, change)))
        losses[change] = first_step_loss(role, sharp_llama, data, tmp_path, cache)
        direct[change] = mean_loss(sharp_llama, data, role)
    assert losses == pytest.approx(direct, rel=1e-5)
    assert abs(direct[role] - direct[None]) > 0.05, direct  # the margin
    assert losses[other] == pytest.approx(losses[None], rel=1e-5)
    assert abs(losses[role] - losses[None]) > 0.05, losses


# -- packing ------------------------------------------------------------------------------------

def test_pack_bins_fill_rows_within_capacity():
    from model.packing import pack_bins, padding_efficiency, row_lengths

    rng = random.Random(1)
    lengths = [rng.randint(5, 100) for _ in range(200)]
    bins = pack_bins(lengths, 128)
    assert sorted(i for b in bins for i in b) == list(range(200))
    assert max(row_lengths(lengths, bins)) <= 128
    assert len(bins) < 0.75 * len(lengths)
    assert bins == pack_bins(lengths, 128)
    assert pack_bins([300, 10], 128) == [[0], [1]]  # too long: a row of its own
    assert padding_efficiency([4, 2, 4, 2], batch_size=4) == pytest.approx(12 / 16)
    assert padding_efficiency(row_lengths(lengths, bins), 4) > padding_efficiency(lengths, 4)


@pytest.fixture(scope="module")
def sharp_llama(tiny_dir, tmp_path_factory) -> Path:
    """A tiny Llama with large random weights, so every token's loss depends strongly on its context."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    out = tmp_path_factory.mktemp("sharp-llama")
    config = AutoConfig.from_pretrained(tiny_dir)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(out)
    return out


def token_loss_sum(model, batch: dict) -> tuple[float, int]:
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                             reduction="sum", ignore_index=-100)
    return loss.item(), int((labels != -100).sum())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_and_padded_batches_give_the_same_loss(attn, sharp_llama, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from core.conversation import iter_conversations
    from model.dyadic import Encoder
    from model.packing import PackingCollator, PaddingCollator, Rows, pack_bins
    from model.train import LoraArguments, ModelArguments, ensure_pad_token, load_model

    data = write_convs(tmp_path / "c.json", n=12, seed=3, bad=False)
    tok = AutoTokenizer.from_pretrained(sharp_llama)
    ensure_pad_token(tok)
    encoded = [r for r in Encoder(tok, "gpt", max_length=1024).encode_many(iter_conversations(data))]

    table = Dataset.from_list(encoded)
    bins = pack_bins([len(r["input_ids"]) for r in encoded], 1024)
    assert any(len(b) >= 3 for b in bins)
    packed_rows, single_rows = Rows(table, bins), Rows(table, [[i] for i in range(len(encoded))])
    packed = PackingCollator(tok.pad_token_id)([packed_rows[i] for i in range(len(bins))])
    padded = PaddingCollator(tok.pad_token_id)([single_rows[i] for i in range(len(encoded))])
    assert packed["input_ids"].numel() < padded["input_ids"].numel()

    model = load_model(str(sharp_llama), tok, ModelArguments(attn_implementation=attn), LoraArguments()).eval()
    loss_packed, n_packed = token_loss_sum(model, packed)
    loss_padded, n_padded = token_loss_sum(model, padded)
    assert n_packed == n_padded > 0
    assert loss_packed == pytest.approx(loss_padded, rel=1e-4)
    # the same rows with positions that do not restart let conversations see each other: a different loss
    leaky = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"]))
    assert abs(token_loss_sum(model, leaky)[0] - loss_padded) > 10 * 1e-4 * abs(loss_padded)


def test_flattened_batch_for_flash_attention_keeps_positions():
    from model.packing import PackingCollator

    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "position_ids": [0, 1, 2]},
            {"input_ids": [8, 9], "labels": [-100, 9], "position_ids": [0, 1]}]
    flat = PackingCollator(0, flatten=True)(rows)
    assert flat["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    padded = PackingCollator(0)(rows)
    assert padded["position_ids"].tolist() == [[0, 1, 2], [0, 1, 0]]  # the pad is a block of its own
    assert padded["labels"].tolist()[1] == [-100, 9, -100]


# -- pad token ----------------------------------------------------------------------------------

def test_pad_token_reuses_unk_then_eos_and_keeps_the_vocabulary(tiny_dir):
    from transformers import AutoTokenizer

    from model.train import ensure_pad_token

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    size = len(tok)
    assert tok.pad_token is None and ensure_pad_token(tok) == "<unk>" and len(tok) == size
    tok = AutoTokenizer.from_pretrained(tiny_dir, unk_token=None)
    tok.unk_token = None
    assert ensure_pad_token(tok) == "</s>" and len(tok) == size
    tok.pad_token = "<s>"
    assert ensure_pad_token(tok) == "<s>"


# -- interruption and resume --------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_next_run_resumes_from_it(tiny_dir, convs, env, tmp_path):
    out = tmp_path / "out"
    args = [*contract_args(PLATOLM, tiny_dir, convs, out), "--data-cache-dir", str(tmp_path / "cache")]
    args[args.index("--max-steps") + 1] = "100000"
    proc = subprocess.Popen([PYTHON, *args, "--logging-steps", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = bytearray()
    while seen.count(b"'loss'") < 3:  # the third logged step is the event (read1 waits for output, not for time)
        chunk = proc.stdout.read1(4096)
        assert chunk, f"the run ended before its third step:\n{seen.decode(errors='replace')[-3000:]}"
        seen.extend(chunk)
    proc.send_signal(signal.SIGINT)
    seen.extend(proc.stdout.read())
    rc = proc.wait(timeout=120)
    text = seen.decode(errors="replace")
    assert rc == 130, text[-3000:]
    assert "saving a checkpoint" in text and "run the same command again to resume" in text
    ckpts = sorted(out.glob("checkpoint-*"))
    assert len(ckpts) == 1 and not (out / "model.safetensors").exists()
    step = int(ckpts[0].name.split("-")[1])
    assert step >= 3

    args[args.index("--max-steps") + 1] = str(step + 2)
    again = run_cli([*args, "--logging-steps", "1"], env, in_process=True)
    assert f"resuming from {ckpts[0]}" in again.stderr
    assert "loaded from the datasets cache" in again.stderr  # tokenised once, by the first run
    history = json.loads((out / "trainer_state.json").read_text())
    assert history["global_step"] == step + 2
    logged = [h["step"] for h in history["log_history"] if "loss" in h]
    assert logged[-2:] == [step + 1, step + 2] and len(logged) == len(set(logged))


# -- distributed --------------------------------------------------------------------------------

@pytest.mark.parametrize("script", sorted((ROOT / "scripts").glob("sft_*_7b*.sh")), ids=lambda p: p.name)
def test_each_7b_script_launches_its_trainer_with_its_recipe(script):
    """The launch command of every 7B script, printed instead of run (PYTHON=echo); two of them run for real:
    the fast one below (FSDP on a Qwen2) and the paper one in tests/test_paper_recipe.py (FSDP on a Llama)."""
    role = "socratic" if "socratic" in script.name else "platolm"
    recipe = f"recipes/{role}_7b_{'paper' if script.stem.endswith('paper') else 'fsdp'}.yaml"
    env = dict(env_offline(), PYTHON="echo", NPROC="2", MASTER_PORT="29501", MODEL="m", DATA="d", OUT="o")
    proc = subprocess.run(["bash", str(script), "--max-steps", "3"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29501",
                                   "-m", f"model.sft_{role}.train", "--config", recipe, "--model", "m",
                                   "--data", "d", "--out", "o", "--max-steps", "3"]


@pytest.mark.slow
@pytest.mark.xdist_group("launches")
def test_7b_script_runs_its_recipe_on_another_backbone_under_torchrun(tiny_tokenizer, convs, env, tmp_path):
    """scripts/sft_platolm_7b.sh with its packed FSDP recipe unchanged, shrunk by flags to a tiny Qwen2 on 2 CPU
    processes over gloo: FSDP wraps the backbone's own decoder layer (the recipe names none)."""
    from transformers import AutoModelForCausalLM

    model_dir = tiny_backbone("qwen2", tiny_tokenizer, tmp_path / "qwen2")
    out = tmp_path / "out"
    proc = run_7b_script("scripts/sft_platolm_7b.sh", model_dir, convs, out, env)
    assert "processes: 2" in proc.stderr
    assert proc.stderr.count("skipped 2 bad records") == 1  # the main process reports
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert any("eval_loss" in h for h in state["log_history"])  # the recipe's 5% held-out split
    record = json.loads((out / "platolm_run.json").read_text())
    assert record["conversations"] == {"train": 38, "eval": 2, "bad": 2}
    assert record["recipe"]["path"] == "recipes/platolm_7b_fsdp.yaml"
    assert record["fsdp_layers_to_wrap"] == ["Qwen2DecoderLayer"]
    assert type(AutoModelForCausalLM.from_pretrained(out)).__name__ == "Qwen2ForCausalLM"


# -- LoRA ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_lora_on_smollm2_saves_a_merged_model(smollm2_dir, convs, env, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    run_cli(["-m", SOCRATIC, "--config", "recipes/tiny_cpu.yaml", "--model", "smollm2",
             "--data", str(convs), "--out", str(out), "--lora", "--lora-r", "4",
             "--lora-target-modules", "q_proj,v_proj", "--max-steps", "3", "--max-length", "128",
             "--learning-rate", "1e-2"], env, in_process=True)
    assert not (out / "adapter_config.json").exists()
    merged = load_file(out / "model.safetensors")
    base = load_file(Path(smollm2_dir) / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[name], base[name])
    assert torch.equal(merged["model.layers.0.self_attn.k_proj.weight"], base["model.layers.0.self_attn.k_proj.weight"])
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 49152
    record = json.loads((out / "platolm_run.json").read_text())
    assert record["saved"] == "merged" and record["lora"]["lora_r"] == 4


def test_lora_adapter_save_loads_through_peft(tiny_dir, convs, env, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    args = contract_args(SOCRATIC, tiny_dir, convs, out)
    args[args.index("--max-steps") + 1] = "2"
    run_cli([*args, "--lora", "--lora-save", "adapter"], env, in_process=True)
    assert (out / "adapter_config.json").exists() and (out / "tokenizer.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out)  # base from adapter_config + the adapter
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_qlora_asks_for_what_it_needs(tiny_dir, convs, tmp_path, capsys):
    from model.train import main

    base = ["--model", str(tiny_dir), "--data", str(convs), "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as err:
        main("gpt", "", [*base, "--load-in-4bit"])
    assert err.value.code == 2 and "--lora-save adapter" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main("gpt", "", [*base, "--load-in-4bit", "--lora-save", "adapter"]) == 2
        assert "CUDA GPU" in capsys.readouterr().err


# -- recipes and data sources -------------------------------------------------------------------

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_recipe_sets_defaults_and_the_command_line_wins(tiny_dir, convs, tmp_path):
    from model.train import parse_args

    recipe = ROOT / "recipes" / "tiny_cpu.yaml"
    base = ["--config", str(recipe), "--model", str(tiny_dir), "--data", str(convs),
            "--out", str(tmp_path)]
    model_args, lora_args, data_args, train_args, rec = parse_args(base)
    options = rec["options"]
    assert train_args.max_steps == options["max_steps"] and data_args.model_max_length == options["model_max_length"]
    _, _, data_args, train_args, _ = parse_args([*base, "--max-steps", "3", "--max-length", "64"])
    assert train_args.max_steps == 3 and data_args.model_max_length == 64
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 1e-5\n")
    with pytest.raises(SystemExit):
        parse_args(["--config", str(bad), *base[2:]])


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_every_recipe_names_its_command_and_only_known_options(recipe):
    import yaml
    from transformers import HfArgumentParser

    from model.train import DataArguments, LoraArguments, ModelArguments, TrainArguments

    head = recipe.read_text().split("\n\n")[0]
    assert "model.sft_" in head and f"--config recipes/{recipe.name}" in head
    options = yaml.safe_load(recipe.read_text())
    parser = HfArgumentParser((ModelArguments, LoraArguments, DataArguments, TrainArguments))
    assert set(options) <= {a.dest for a in parser._actions}


def test_a_datasets_directory_is_read_with_bad_records_counted(tiny_tokenizer, tmp_path):
    from core.conversation import BadRecordSummary
    from model.train import DataArguments, encode_records, load_records, split_bad

    folder = tmp_path / "ds"
    folder.mkdir()
    lines = [{"id": "a", "messages": [{"role": "user", "content": "Hi there"},
                                      {"role": "assistant", "content": "Hello!"}]},
             {"id": "b", "messages": [{"role": "user", "content": "Only a question"}]}]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    args = DataArguments(data_path=str(folder), data_cache_dir=str(tmp_path / "cache"), model_max_length=256)
    records, data_hash = load_records(args)
    assert data_hash.startswith("datasets:")
    encoded, cached = encode_records(records, data_hash, tiny_tokenizer, "gpt", "SYS ", args)
    summary = BadRecordSummary(show_first=0)
    good = split_bad(encoded, args, summary)
    assert [encoded[i]["id"] for i in good] == ["a"] and dict(summary.counts) == {"no gpt turn": 1}
    assert encode_records(records, data_hash, tiny_tokenizer, "gpt", "SYS ", args)[1] is True


# -- learned end of conversation (--end-token) --------------------------------------------------

ENDING_RECORDS = [  # (record, does it really end?)
    ({"id": "whole", "conversations": [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4."}]}, True),
    ({"id": "seg_0", "conversations": [{"from": "human", "value": "Tell me a joke."}, {"from": "gpt", "value": "A cat."}]}, False),
    ({"id": "seg_1", "conversations": [{"from": "human", "value": "Another?"}, {"from": "gpt", "value": "A dog."}]}, True),
    ({"id": "cut_0_0", "conversations": [{"from": "human", "value": "Sort?"}, {"from": "gpt", "value": "sorted()."}]}, False),
    ({"id": "cut_1_0", "conversations": [{"from": "human", "value": "In place?"}, {"from": "gpt", "value": "sort()."}]}, True),
    ({"id": "sim-budget", "end_reason": "context_full",
      "conversations": [{"from": "human", "value": "Explain gradients."}, {"from": "gpt", "value": "Slopes."}]}, False),
    ({"id": "sim-learned", "end_reason": "learned_end",
      "conversations": [{"from": "human", "value": "Haiku?"}, {"from": "gpt", "value": "Leaves fall."}]}, True),
    ({"id": "said-no", "ended": False,
      "conversations": [{"from": "human", "value": "Paris?"}, {"from": "gpt", "value": "France."}]}, False),
    ({"id": "open_question", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                                               {"from": "human", "value": "Unanswered?"}]}, False),
]


def test_end_marker_is_trained_after_the_last_answer_of_ended_conversations_only(tiny_tokenizer, tmp_path):
    from model.dyadic import END_OF_CONVERSATION, SOCRATIC_SYSTEM
    from model.train import DataArguments, encode_records, ended_ids, load_records

    data = tmp_path / "ending.json"
    data.write_text(json.dumps([r for r, _ in ENDING_RECORDS]))
    args = DataArguments(data_path=str(data), data_cache_dir=str(tmp_path / "cache"), model_max_length=256,
                         end_token=True)
    records, data_hash = load_records(args)
    ended = ended_ids(records)
    assert ended == {r["id"] for r, end in ENDING_RECORDS if end} | {"open_question"}  # ended, but on a question
    encoded, _ = encode_records(records, data_hash, tiny_tokenizer, "human", SOCRATIC_SYSTEM, args, ended)
    marker = tiny_tokenizer.bos_token + END_OF_CONVERSATION + tiny_tokenizer.eos_token
    tok = tiny_tokenizer
    for (record, end), row in zip(ENDING_RECORDS, encoded):
        runs = trained_runs(row["input_ids"], row["labels"], tok)
        human_turns = [t["value"] for t in record["conversations"] if t["from"] == "human"]
        assert runs == [tok.bos_token + q + tok.eos_token for q in human_turns] + ([marker] if end else []), record["id"]


def trained_runs(ids: list[int], labels: list[int], tokenizer) -> list[str]:
    runs, cur = [], []
    for tid, lab in zip(ids, labels):
        if lab != -100:
            cur.append(tid)
        elif cur:
            runs.append(tokenizer.decode(cur))
            cur = []
    return runs + ([tokenizer.decode(cur)] if cur else [])


def test_socratic_learns_to_end_conversations(socratic_that_ends, tiny_dir):
    """The trainer with --end-token on two-round conversations that all ended: the marker becomes all but certain
    after the last answer, and stays out of reach after the first answer and before the opening question (the
    fixture checks the margin); greedy decoding then writes it, and the untrained model never would."""
    from core.conversation import HUMAN, Turn
    from model.dyadic import END_OF_CONVERSATION
    from model.generate import Generator
    from tests.tiny import FOLLOW_UP, MARGIN, end_probabilities

    record = json.loads((socratic_that_ends.path / "platolm_run.json").read_text())
    assert record["end_of_conversation"] == END_OF_CONVERSATION
    assert record["ended_conversations"] == len(socratic_that_ends.records) == 4
    p = socratic_that_ends.p
    assert len(p["end"]) == len(p["go_on"]) == 4 and min(p["end"]) >= MARGIN and max(p["go_on"]) <= 1 - MARGIN
    assert max(end_probabilities(tiny_dir, socratic_that_ends.records)["end"]) < 1e-6  # before training

    gen = Generator(str(socratic_that_ends.path), device="cpu")
    convs = [[Turn(t["from"], t["value"]) for t in r["conversations"]] for r in socratic_that_ends.records]
    greedy = gen.generate([*convs, *(c[:2] for c in convs)], HUMAN, temperature=0, max_new_tokens=24)
    assert [c.text for c in greedy] == [END_OF_CONVERSATION] * 4 + [FOLLOW_UP] * 4


@pytest.mark.slow
def test_a_trained_end_marker_ends_simulated_sessions(socratic_that_ends, tmp_path, servers, plain_teacher):
    """The round trip: trainer --end-token -> (served or loaded) simulator -> data.simulate --end-rule learned.
    Each session starts from a training conversation's first round, answered by the server the answers came from,
    so every context the simulator meets has one outcome by the fixture's margin: the follow-up, then the marker."""
    from model.dyadic import END_OF_CONVERSATION
    from tests.servers import serve_simulator
    from tests.test_simulate import read, simulate

    socratic = socratic_that_ends.path
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps([{"id": r["id"], "conversations": r["conversations"][:2]}
                                 for r in socratic_that_ends.records]))
    teacher = plain_teacher
    servers.append(served := serve_simulator(tmp_path, socratic, "socratic"))
    runs = {}
    for name, rule, simulator in (("learned", "learned", str(socratic)), ("served", "learned", served.url),
                                  ("paper", "paper", str(socratic))):
        runs[name] = tmp_path / f"{name}.jsonl"
        simulate(tmp_path, "--simulator", simulator, "--teacher-base-url", teacher.url, "--teacher-model", "t",
                 "--mode", "seeded", "--seeds", str(seeds), "--num-sessions", "4", "--end-rule", rule,
                 "--min-turns", "1", "--max-turns", "4", "--simulator-temperature", "0.01", "--max-new-tokens", "24",
                 "--max-context", "512", "--out", str(runs[name]))
    trained = {r["id"]: r["conversations"] for r in socratic_that_ends.records}
    for name in ("learned", "served"):
        sessions = read(runs[name])
        assert len(sessions) == 4, name
        for r in sessions:
            assert (r["end_reason"], r["num_of_rounds"]) == ("learned_end", 2), name
            assert r["conversations"] == trained[r["seed_id"]], name
    paper = read(runs["paper"])
    assert len(paper) == 4 and all(r["end_reason"] != "learned_end" for r in paper)  # the paper's rule goes on
    assert all(r["meta"]["usage"]["end_markers_suppressed"] >= 1 for r in paper)
    assert all(END_OF_CONVERSATION not in t["value"] for f in runs.values() for r in read(f) for t in r["conversations"])


def test_end_token_is_socratics_only(tiny_dir, convs, tmp_path, capsys):
    from model.train import main

    assert main("gpt", "", ["--model", str(tiny_dir), "--data", str(convs),
                            "--out", str(tmp_path), "--end-token"]) == 2
    assert "only Socratic" in capsys.readouterr().err


# -- held-out evaluation during training --------------------------------------------------------

def test_eval_every_n_steps_and_the_plot_shows_both_curves(tiny_dir, convs, tmp_path):
    from model.train import main, plot_losses

    out = tmp_path / "out"
    assert main("human", "S ", ["--model", str(tiny_dir), "--data", str(convs),
                                "--out", str(out), "--eval-ratio", "0.2", "--eval-strategy", "steps",
                                "--eval-steps", "2", "--max-steps", "6", "--logging-steps", "1",
                                "--per-device-train-batch-size", "2", "--max-length", "256",
                                "--save-strategy", "no", "--use-cpu", "--report-to", "none", "--disable-tqdm", "true",
                                "--data-cache-dir", str(tmp_path / "cache")]) == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "eval_loss" in h] == [2, 4, 6]
    held = [json.loads(line)["id"] for line in (out / "eval_split.jsonl").read_text().splitlines()]
    record = json.loads((out / "platolm_run.json").read_text())
    assert len(held) == record["conversations"]["eval"] == 8 and record["conversations"]["train"] == 32
    assert plot_losses(history, tmp_path / "again.png") == ["train", "eval"]
    assert plot_losses([h for h in history if "eval_loss" in h], tmp_path / "eval.png") == ["eval"]
    assert plot_losses([], tmp_path / "none.png") == [] and not (tmp_path / "none.png").exists()
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_strategy_needs_a_held_out_split(tiny_dir, convs, tmp_path, capsys):
    from model.train import main

    assert main("human", "", ["--model", str(tiny_dir), "--data", str(convs),
                              "--out", str(tmp_path), "--eval-strategy", "steps"]) == 2
    assert "--eval-ratio" in capsys.readouterr().err


# -- backbones: FSDP wraps each one's own decoder layer ------------------------------------------

def tiny_backbone(kind: str, tokenizer, out: Path) -> Path:
    """A random-init tiny model of another architecture, built from its config, with the tiny tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(kind, vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("kind,layer", [("llama", "LlamaDecoderLayer"), ("mistral", "MistralDecoderLayer"),
                                        ("qwen2", "Qwen2DecoderLayer")])
def test_fsdp_wraps_the_layer_class_the_backbone_declares(kind, layer, tiny_tokenizer, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from model.train import TrainArguments, fill_fsdp_wrap, layers_to_wrap

    model = AutoModelForCausalLM.from_pretrained(tiny_backbone(kind, tiny_tokenizer, tmp_path / kind))
    assert layers_to_wrap(model) == [layer]
    args = TrainArguments(output_dir=str(tmp_path), use_cpu=True, fsdp=True,
                          fsdp_config={"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP"})
    assert fill_fsdp_wrap(args, model) == [layer]
    assert args.fsdp_plugin_args["transformer_cls_names_to_wrap"] == layer
    named = TrainArguments(output_dir=str(tmp_path), use_cpu=True, fsdp=True,
                           fsdp_config={"transformer_layer_cls_to_wrap": ["MyBlock"]})
    assert fill_fsdp_wrap(named, model) == ["MyBlock"]  # a recipe that names one wins
    plain = TrainArguments(output_dir=str(tmp_path), use_cpu=True)
    assert fill_fsdp_wrap(plain, model) is None
    # `accelerate launch --config_file configs/accelerate_fsdp.yaml`: FSDP comes from the environment
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "")  # unset: accelerate's config names no class
    assert fill_fsdp_wrap(plain, model) == [layer]
    assert os.environ["FSDP_TRANSFORMER_CLS_TO_WRAP"] == layer
