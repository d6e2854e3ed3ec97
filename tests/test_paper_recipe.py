"""The paper recipes reproduce the original's training scripts: hyper-parameters, padded one-conversation rows, an
added <pad> whose embeddings start as the mean of the others, and PlatoLM's 5% split drawn with numpy seed 125."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from core.conversation import GPT, HUMAN
from tests.conftest import ROOT
from tests.test_train import env, run_7b_script, write_convs  # noqa: F401  (env is a fixture)

# FreedomIntelligence/PlatoLM model/sft_socratic/scripts/sft_7b.sh and model/sft_platolm/scripts/sft_7b.sh
ORIGINAL = dict(model_max_length=2048, num_train_epochs=3, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                gradient_accumulation_steps=8, learning_rate=2e-5, weight_decay=0.0, warmup_steps=0.03,
                lr_scheduler_type="cosine", logging_steps=1, optim="adamw_torch")
ORIGINAL_BY_ROLE = {
    HUMAN: dict(eval_strategy="no", save_strategy="epoch", save_total_limit=3, eval_ratio=0.0),
    GPT: dict(eval_strategy="steps", eval_steps=37, save_strategy="steps", save_steps=37, save_total_limit=6,
              eval_ratio=0.05, eval_seed=125),
}
RECIPES = {HUMAN: "recipes/socratic_7b_paper.yaml", GPT: "recipes/platolm_7b_paper.yaml"}


@pytest.mark.parametrize("role", [HUMAN, GPT])
def test_paper_recipes_hold_the_original_hyper_parameters(role, tmp_path):
    from model.train import parse_args

    recipe = ROOT / RECIPES[role]
    raw = yaml.safe_load(recipe.read_text())
    assert raw["bf16"] is True and raw["tf32"] is True and raw["fsdp_config"]["activation_checkpointing"] is True
    assert "transformer_layer_cls_to_wrap" not in raw["fsdp_config"]  # the backbone's own layers
    model_args, _, data_args, train_args, _ = parse_args([
        "--config", str(recipe), "--out", str(tmp_path), "--bf16", "false", "--tf32", "false"])
    got = {**vars(train_args), **vars(model_args), **vars(data_args)}
    for key, value in {**ORIGINAL, **ORIGINAL_BY_ROLE[role]}.items():
        assert getattr(got[key], "value", got[key]) == value, key  # enums (cosine, steps ...) by their value
    assert data_args.packing is False and model_args.pad_token == "add" and data_args.template == "dyadic"
    assert data_args.tokenization == "original" and model_args.dtype == "float32"


def test_added_pad_token_starts_as_the_mean_embedding(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model.train import LoraArguments, ModelArguments, ensure_pad_token, load_model

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    size = len(tok)
    assert ensure_pad_token(tok, "add") == "<pad>" and len(tok) == size + 1 and tok.pad_token_id == size
    model = load_model(str(tiny_dir), tok, ModelArguments(pad_token="add"), LoraArguments())
    for new, old in ((model.get_input_embeddings(), base.get_input_embeddings()),
                     (model.get_output_embeddings(), base.get_output_embeddings())):
        assert new.weight.shape[0] == size + 1
        assert torch.equal(new.weight[:size], old.weight)
        assert torch.allclose(new.weight[size], old.weight.mean(dim=0), atol=1e-7)
    assert model.config.pad_token_id == size


def test_padded_rows_hold_one_conversation_each(tiny_tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from core.conversation import iter_conversations
    from model.dyadic import Encoder
    from model.packing import PaddingCollator
    from model.train import ensure_pad_token, make_rows

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer.name_or_path)
    ensure_pad_token(tok, "add")
    data = write_convs(tmp_path / "c.json", n=6, seed=4, bad=False)
    encoded = [r | {"length": len(r["input_ids"])} for r in Encoder(tok, GPT).encode_many(iter_conversations(data))]
    rows, lengths = make_rows(Dataset.from_list(encoded), packing=False, max_length=2048)
    assert len(rows) == 6 and lengths == [r["length"] for r in encoded]
    batch = PaddingCollator(tok.pad_token_id)([rows[i] for i in range(len(rows))])
    for i, row in enumerate(encoded):
        n = len(row["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == row["input_ids"]
        assert (batch["input_ids"][i, n:] == tok.pad_token_id).all() and (batch["labels"][i, n:] == -100).all()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    assert (batch["attention_mask"] == 0).any()


@pytest.mark.slow
@pytest.mark.xdist_group("launches")
def test_platolm_paper_script_runs_its_first_steps(tiny_dir, env, tmp_path):  # noqa: F811
    """scripts/sft_platolm_7b_paper.sh, shrunk by flags to the tiny model on 2 CPU processes (FSDP on a Llama)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data, out = write_convs(tmp_path / "convs.json"), tmp_path / "out"
    proc = run_7b_script("scripts/sft_platolm_7b_paper.sh", tiny_dir, data, out, env, "--eval-steps", "1",
                         "--save-steps", "2")
    record = json.loads((out / "platolm_run.json").read_text())
    assert record["recipe"]["path"] == "recipes/platolm_7b_paper.yaml"
    assert record["packing"] is False and record["rows"] == record["conversations"]["train"] == 38
    assert record["pad_token"] == "<pad>" and record["fsdp_layers_to_wrap"] == ["LlamaDecoderLayer"]
    assert "one per row" in proc.stderr

    base_tok, tok = AutoTokenizer.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(out)
    assert len(tok) == len(base_tok) + 1 and tok.pad_token == "<pad>" and tok.pad_token_id == len(base_tok)
    # the pad row of the input embeddings never gets a gradient: it is still the mean it started as
    base, model = AutoModelForCausalLM.from_pretrained(tiny_dir), AutoModelForCausalLM.from_pretrained(out)
    start = base.get_input_embeddings().weight.mean(dim=0)
    assert torch.allclose(model.get_input_embeddings().weight[tok.pad_token_id], start, atol=1e-6)

    # the held-out 5%: the original's draw over the 40 usable records, in file order
    np.random.seed(125)
    perm = np.random.permutation(40)
    expected = sorted(f"c{i}" for i in perm[int(40 * 0.95):])
    held = [json.loads(line)["id"] for line in (out / "eval_split.jsonl").read_text().splitlines()]
    assert sorted(held) == expected
    state = json.loads((out / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "eval_loss" in h] == [1, 2, 3]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
