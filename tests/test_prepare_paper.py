"""The original PlatoLM code's data rules: `clean --rules paper`, `seeds` and `baseline`.

Fixtures are written in the exact published formats (WizardLM evol-instruct V2, databricks-dolly-15k,
UltraChat's release files, Baize's per-source files) plus the shipped real ShareGPT file. Each draw is
compared with an oracle that does what the original notebook does (load everything, ``random.seed(125)``,
shuffle or ``random.sample``, take heads), written here from the notebooks' steps: the command must pick
the same records in the same order.
"""
from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from core.conversation import (GPT, HUMAN, BadRecord, BadRecordSummary, Conversation, Turn, iter_conversations,
                                read_json_records)
from tests.test_prepare import load, prepare

from data.clean import Cleaner, paper_html_to_markdown, paper_language_ok
from data.seeds import dolly_question

TOPICS = ["sous vide beef cheek", "the Krebs cycle", "Rust lifetimes", "Baroque music", "tax brackets",
          "coral bleaching", "SQL window functions", "the Treaty of Westphalia", "bread hydration"]


def words(i: int, what: str) -> str:
    return f"{what} about {TOPICS[i % len(TOPICS)]} (item {i}): please go into some detail."


@pytest.fixture(scope="module")
def sharegpt_head(tmp_path_factory) -> Path:
    """The first 400 records of the real ShareGPT V3 file, as shipped (pieces ``<id>_<start turn>``)."""
    from core.assets import sharegpt_file

    path = tmp_path_factory.mktemp("sg") / "head.json"
    path.write_text(json.dumps(list(itertools.islice(read_json_records(sharegpt_file()), 400))))
    return path


# --- clean --rules paper ----------------------------------------------------------------------------
def test_paper_html_conversion_uses_markdownify_defaults():
    html = ('<div class="markdown prose"><p>Set <code>my_var</code> to 2 and my_var*2:</p><pre><div><span>python'
            '</span><button>Copy code</button></div><code>x_1 = my_var * 2\n</code></pre></div>')
    md = paper_html_to_markdown(html)
    assert "my\\_var\\*2" in md  # default escaping, as the original's markdownify call
    assert "```python\nx_1 = my_var * 2\n```" in md and "Copy code" not in md
    assert paper_html_to_markdown("1 / 2Sure, a plain_text answer.") == "Sure, a plain\\_text answer."
    assert paper_html_to_markdown("It is 1 / 2 of it.") == "It is 1 / 2 of it."  # only at the very start


def test_paper_language_rule():
    t = lambda role, text: Turn(role, text)  # noqa: E731
    assert paper_language_ok([t(HUMAN, "What is 2 + 2?"), t(GPT, "It is 4.")]) is True
    assert not paper_language_ok([t(HUMAN, "What is 2 + 2?"), t(GPT, "It\u2019s 4.")])  # a curly apostrophe
    assert not paper_language_ok([t(HUMAN, "Qu'est-ce que c'est ?"), t(GPT, "C'est très simple.")])
    assert paper_language_ok([t(HUMAN, "Nice! \U0001F600"), t(GPT, "Thanks!")]) is True  # above U+FFFF
    assert paper_language_ok([t(HUMAN, "Translate into French: good day"), t(GPT, "Très bonne journée")]) \
        == "translation"
    assert not paper_language_ok([t(HUMAN, "Hi"), t(GPT, "Translated: très bien")])  # a human turn must ask


def test_clean_paper_rules_cli(tmp_path):
    rows = [
        {"id": "html", "conversations": [{"from": "human", "value": "Explain my_var please"},
                                         {"from": "gpt", "value": "<div><p>It is <b>a name</b>.</p></div>"}]},
        {"id": "one-turn", "conversations": [{"from": "human", "value": "Anyone?"}]},
        {"id": "vendor", "conversations": [{"from": "human", "value": "Are you ChatGPT?"},
                                           {"from": "gpt", "value": "Yes."}]},
        {"id": "quote", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "It\u2019s me."}]},
        {"id": "translate", "conversations": [{"from": "human", "value": "Translate 'cat' to German"},
                                              {"from": "gpt", "value": "Die Katze (plural: Katzen, ä)"}]},
        {"id": "leading-gpt", "conversations": [{"from": "gpt", "value": "Hello!"},
                                                {"from": "human", "value": "Hello to you."}]},
        {"id": "dup-split-differently", "conversations": [{"from": "human", "value": "Hello!Hel"},
                                                          {"from": "gpt", "value": "lo to you."}]},
    ]
    src, out, report = tmp_path / "raw.jsonl", tmp_path / "clean.json", tmp_path / "counts.json"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = prepare("clean", "--data", src, "--out", out, "--rules", "paper", "--report", report)
    kept = {c.id: c for c in load(out)}
    assert sorted(kept) == ["dup-split-differently", "html", "leading-gpt", "translate"]
    assert kept["html"].turns[0].text == "Explain my\\_var please"  # every turn goes through markdownify
    assert kept["html"].turns[1].text == "It is **a name**."
    assert [t.role for t in kept["leading-gpt"].turns] == [GPT, HUMAN]  # roles untouched
    assert json.loads(report.read_text()) == {
        "read": 7, "bad records": 0, "too short": 1, "ai mentions": 1, "html": 0, "language": 1,
        "kept": 4, "translation exceptions": 1}  # duplicates are the split's (after it, on segments)
    lines = proc.stderr.splitlines()
    steps = [line.split()[0] for line in lines[lines.index(next(x for x in lines if x.startswith("step"))) + 1:][:6]]
    assert steps == ["read", "too", "ai", "html", "language", "(1"]  # the original's order, then the split
    bad = prepare("clean", "--data", src, "--out", out, "--rules", "paper", "--lang", "en", check=False)
    assert bad.returncode == 2 and "--lang is a setting of --rules default" in bad.stderr


def test_clean_paper_rules_on_real_sharegpt(tmp_path, sharegpt_head):
    """Per-step counts on real records; the paper's language rule drops far more than py3langid does."""
    out, paper, default = tmp_path / "o.json", tmp_path / "paper.json", tmp_path / "default.json"
    prepare("clean", "--data", sharegpt_head, "--out", out, "--rules", "paper", "--report", paper)
    prepare("clean", "--data", sharegpt_head, "--out", tmp_path / "d.json", "--report", default)
    p, d = json.loads(paper.read_text()), json.loads(default.read_text())
    print("paper:", p, "\ndefault:", d)
    assert p["read"] == d["read"] == 400 and p["bad records"] == d["bad records"]
    assert p["kept"] == len(load(out)) == p["read"] - sum(p[s] for s in ("bad records", "too short", "ai mentions",
                                                                       "html", "language"))
    assert p["language"] > d["language"] > 0
    assert all(paper_language_ok(c.turns) for c in load(out))


# --- seeds: WizardLM --------------------------------------------------------------------------------
def wizardlm_v2_records() -> list[dict]:
    """WizardLM_evol_instruct_V2_143k.json records: ``idx`` and ShareGPT-style ``conversations``."""
    rng = random.Random(7)
    recs = []
    for i in range(90):
        idx = f"alpaca_{i}" if i % 5 == 0 else "".join(rng.choice("abcdefghijkLMNOPQxyz") for _ in range(7))
        turns = [{"from": "human", "value": words(i, "Question")}, {"from": "gpt", "value": words(i, "Answer")}]
        if i % 7 == 3:  # evolved multi-round records: left out by the original
            turns += [{"from": "human", "value": "And then?"}, {"from": "gpt", "value": "Then it is done."}]
        recs.append({"idx": idx, "conversations": turns})
    recs.insert(40, {"idx": "emptyQA", "conversations": [{"from": "human", "value": ""},
                                                         {"from": "gpt", "value": ""}]})
    return recs


def notebook_wizardlm(records: list[dict], n: int, seed: int) -> list[dict]:
    """wizardlm.ipynb's steps: no alpaca_ ids, exactly two non-empty turns, seed, shuffle, head."""
    kept = [{"id": r["idx"], "conversations": r["conversations"]} for r in records
            if not r["idx"].startswith("alpaca_") and len(r["conversations"]) == 2
            and all(u["value"] for u in r["conversations"])]
    random.seed(seed)
    random.shuffle(kept)
    return kept[:n]


def test_seeds_wizardlm_as_the_notebook(tmp_path):
    records = wizardlm_v2_records()
    src, out = tmp_path / "WizardLM_evol_instruct_V2_143k.json", tmp_path / "wizard_sg.json"
    src.write_text(json.dumps(records))
    proc = prepare("seeds", "--data", src, "--out", out, "--source", "wizardlm", "--n", 25)
    seeds = json.loads(out.read_text())
    expected = notebook_wizardlm(records, 25, 125)
    assert [s["id"] for s in seeds] == [e["id"] for e in expected]
    assert [s["conversations"] for s in seeds] == [e["conversations"] for e in expected]
    assert all(s["source"] == "wizardlm" for s in seeds)
    assert f"{src}: record 'emptyQA': empty text" in proc.stderr  # neither question nor answer: skipped, named
    assert "18 records left out: alpaca ids left out" in proc.stderr
    assert "records left out: not exactly one round" in proc.stderr
    strict = prepare("seeds", "--data", src, "--out", tmp_path / "s.json", "--source", "wizardlm", "--strict",
                     check=False)
    assert strict.returncode == 1 and "emptyQA" in strict.stderr and not (tmp_path / "s.json").exists()


def test_seed_whose_first_round_exceeds_the_budget_is_skipped(tmp_path):
    records = wizardlm_v2_records()[1:12]
    records[3]["conversations"][1]["value"] = "A very long answer indeed. " * 200
    src, out = tmp_path / "wizard.json", tmp_path / "seeds.json"
    src.write_text(json.dumps(records))
    proc = prepare("seeds", "--data", src, "--out", out, "--source", "wizardlm", "--tokenizer", "smollm2",
                   "--max-context", 400)
    long_id = records[3]["idx"]
    assert f"record {long_id!r}: first round exceeds the budget" in proc.stderr
    kept = [s.id for s in load(out)]
    assert long_id not in kept and len(kept) == len(notebook_wizardlm(records, 99, 125)) - 1


# --- seeds: Dolly -----------------------------------------------------------------------------------
DOLLY_SIZES = {"open_qa": 37, "general_qa": 22, "classification": 21, "closed_qa": 18, "brainstorming": 18,
               "information_extraction": 15, "summarization": 12, "creative_writing": 7}  # dolly-15k's shares


def dolly_records() -> list[dict]:
    """databricks-dolly-15k.jsonl records (instruction, context, response, category), categories interleaved."""
    cats = [c for c, k in DOLLY_SIZES.items() for _ in range(k)]
    random.Random(3).shuffle(cats)
    return [{"instruction": words(i, "Instruction"), "context": f"Context paragraph {i}." if i % 3 else "",
             "response": words(i, "Response"), "category": c} for i, c in enumerate(cats)]


def notebook_dolly_sample(records: list[dict], n: int, seed: int) -> list[dict]:
    """dolly.ipynb's steps: stratified_sampling(..., 'category', n, seed), the one missing open_qa record
    appended."""
    random.seed(seed)
    counts: dict = {}
    for r in records:
        counts[r["category"]] = counts.get(r["category"], 0) + 1
    sample = []
    for cat, k in counts.items():
        size = round(n * (k / len(records)))
        group = [r for r in records if r["category"] == cat]
        sample.extend(group if len(group) <= size else random.sample(group, size))
    assert len(sample) == n - 1  # the fixture reproduces the notebook's shortfall of one
    sample.append(next(r for r in records if r["category"] == "open_qa" and r not in sample))
    return sample


def notebook_dolly(records: list[dict], n: int, seed: int) -> list[str]:
    """... then the question of each (category sentence, instruction, context)."""
    sample = notebook_dolly_sample(records, n, seed)
    prefixes = {"closed_qa": "This is a Closed Question-Answering task.\n",
                "summarization": "This is a Summarization task.\n",
                "information_extraction": "This is a Information Extraction task.\n"}
    return [prefixes[r["category"]] + r["instruction"] + "\n" + r["context"] if r["category"] in prefixes
            else r["instruction"] for r in sample]


def test_seeds_dolly_as_the_notebook(tmp_path):
    records = dolly_records()
    src, out = tmp_path / "databricks-dolly-15k.jsonl", tmp_path / "dolly_q.json"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = prepare("seeds", "--data", src, "--out", out, "--source", "dolly", "--n", 50)
    seeds = json.loads(out.read_text())
    assert [s["conversations"][0]["value"] for s in seeds] == notebook_dolly(records, 50, 125)
    assert all(len(s["conversations"]) == 1 and s["conversations"][0]["from"] == "human" for s in seeds)
    assert [s["id"] for s in seeds] == [f"dolly_{i}" for i in range(50)]
    assert Counter(s["category"] for s in seeds)["open_qa"] == round(50 * 37 / 150) + 1
    assert f"{round(50 * 37 / 150) + 1:>8} of       37  open_qa" in proc.stderr
    with_answer = prepare("seeds", "--data", src, "--out", tmp_path / "qa.json", "--source", "dolly", "--n", 50,
                          "--with-answer")
    assert with_answer.returncode == 0
    qa = json.loads((tmp_path / "qa.json").read_text())
    assert [s["conversations"][0] for s in qa] == [s["conversations"][0] for s in seeds]
    assert [s["conversations"][1] for s in qa] == [{"from": "gpt", "value": r["response"]}
                                                   for r in notebook_dolly_sample(records, 50, 125)]


def test_dolly_question_rules():
    raw = {"instruction": "Summarise this.", "context": "A long text.", "category": "summarization"}
    assert dolly_question(raw, 0, "f") == "This is a Summarization task.\nSummarise this.\nA long text."
    raw = {"instruction": "Who wrote it?", "context": "Some page.", "category": "open_qa"}
    assert dolly_question(raw, 0, "f") == "Who wrote it?"  # context dropped, as the notebook did
    raw = {"instruction": "Extract\ud800 names", "context": "", "category": "information_extraction"}
    assert dolly_question(raw, 0, "f") == "This is a Information Extraction task.\nExtract names\n"
    with pytest.raises(BadRecord, match="missing 'instruction'"):
        dolly_question({"instruction": " ", "category": "open_qa"}, 7, "f")


def test_dolly_seed_with_neither_question_nor_answer(tmp_path):
    src = tmp_path / "dolly.jsonl"
    records = dolly_records()[:20]
    records[5] = {"instruction": "", "context": "", "response": "", "category": "open_qa"}
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = prepare("seeds", "--data", src, "--out", tmp_path / "d.json", "--source", "dolly", "--n", 10)
    assert f"{src}: record 5: missing 'instruction'" in proc.stderr and "skipped 1 bad records" in proc.stderr
    assert len(load(tmp_path / "d.json")) == 10
    strict = prepare("seeds", "--data", src, "--out", tmp_path / "s.json", "--source", "dolly", "--strict",
                     check=False)
    assert strict.returncode == 1 and not (tmp_path / "s.json").exists()


def test_seeds_from_real_sharegpt(tmp_path, sharegpt_head):
    out = tmp_path / "sg.json"
    proc = prepare("seeds", "--data", sharegpt_head, "--out", out, "--source", "sharegpt", "--n", 30)
    assert "records left out: not opening with a question" in proc.stderr  # the V3 pieces after the first
    seeds = load(out)
    firsts = {c.id: c.turns[:2] for c in iter_conversations(sharegpt_head, summary=BadRecordSummary(show_first=0))
              if [t.role for t in c.turns[:2]] == [HUMAN, GPT]}  # the conversation's opening round
    order = list(firsts)
    random.seed(125)
    random.shuffle(order)
    assert [s.id for s in seeds] == order[:30] and all(s.turns == firsts[s.id] for s in seeds)


# --- baselines --------------------------------------------------------------------------------------
ULTRA_FILES = {"ultrachat_release_230407.json": 50, "ultrachat_material_release_230412.json": 12,
               "ultrachat_material_release_230417.json": 30, "ultrachat_existent_material_release_230420.json": 25}


def write_ultrachat(d: Path) -> dict[str, list[str]]:
    """UltraChat's four release files (JSONL of {"id", "data"}); returns each file's lines."""
    d.mkdir()
    lines, k = {}, 0
    for name, size in ULTRA_FILES.items():
        lines[name] = []
        for _ in range(size):
            data = [words(k, "Question"), words(k, "Answer"), words(k + 1, "Follow-up"), words(k + 1, "Reply")]
            lines[name].append(json.dumps({"id": str(k), "data": data}) + "\n")
            k += 1
        (d / name).write_text("".join(lines[name]))
    return lines


def notebook_parts(parts: list[list], n: int, seed: int) -> list:
    """The UltraChat and Baize notebooks: round(n * share) per part (the sum must be n), one seed, shuffle
    each part in turn, heads concatenated, shuffled again with the same seed."""
    total = sum(map(len, parts))
    sizes = [round(n * (len(p) / total)) for p in parts]
    assert sum(sizes) == n
    random.seed(seed)
    for p in parts:
        random.shuffle(p)
    union = [x for p, k in zip(parts, sizes) for x in p[:k]]
    random.seed(seed)
    random.shuffle(union)
    return union


def test_baseline_ultrachat_as_the_notebook(tmp_path):
    lines = write_ultrachat(tmp_path / "ultrachat")
    out = tmp_path / "ultra_10k_for_train.json"
    proc = prepare("baseline", "--source", "ultrachat", "--data", tmp_path / "ultrachat", "--out", out, "--n", 30)
    names = list(ULTRA_FILES)
    s1, s2, s3 = list(lines[names[0]]), lines[names[1]] + lines[names[2]], list(lines[names[3]])
    expected = [json.loads(x) for x in notebook_parts([s1, s2, s3], 30, 125)]
    got = json.loads(out.read_text())
    assert [g["id"] for g in got] == [e["id"] for e in expected]
    assert all([t["value"] for t in g["conversations"]] == e["data"] for g, e in zip(got, expected))
    assert [t["from"] for t in got[0]["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert Counter(g["part"] for g in got) == {"world": 13, "writing": 11, "materials": 6}
    assert "13 of       50  world" in proc.stderr and "11 of       42  writing" in proc.stderr
    # the same files named explicitly, in another order: the same draw
    files = [tmp_path / "ultrachat" / n for n in reversed(names)]
    prepare("baseline", "--source", "ultrachat", "--data", *files, "--part", "materials", "writing", "writing",
            "world", "--out", tmp_path / "again.json", "--n", 30)
    assert json.loads((tmp_path / "again.json").read_text()) == got


BAIZE_PARTS = {"medical": 30, "quora": 34, "stackoverflow": 36, "alpaca": 20}


def baize_input(i: int, rounds: int, unanswered: bool) -> str:
    text = "The conversation between human and AI assistant.\n"
    for r in range(rounds):
        text += f"[|Human|] {words(i + r, 'Question')}\n[|AI|] {words(i + r, 'Answer')}\n"
    return text + ("[|Human|] One more question nobody answered?" if unanswered else "[|Human|] ")


def baize_turns(i: int, rounds: int) -> list[dict]:
    """The conversation ``baize_input(i, rounds, ...)`` holds, written down directly (not parsed back)."""
    return [{"from": role, "value": words(i + r, what)} for r in range(rounds)
            for role, what in (("human", "Question"), ("gpt", "Answer"))]


def test_baize_transcripts_parse_as_the_notebook_parsed_them():
    """Hand-worked transcripts: the opening sentence dropped, turns stripped, a last [|Human|] line (answered by
    nobody, or empty) cut, an answer over several lines kept whole."""
    from data.baselines import parse_baize

    text = ("The conversation between human and AI assistant.\n[|Human|] What is 2 + 2?\n[|AI|] It is 4.\n"
            "[|Human|] And 3 + 3?\n[|AI|] Six:\n  3 + 3 = 6.\n[|Human|] Thanks, and 4 + 4?")
    assert [(t.role, t.text) for t in parse_baize(text, "f", "r")] == [
        (HUMAN, "What is 2 + 2?"), (GPT, "It is 4."), (HUMAN, "And 3 + 3?"), (GPT, "Six:\n  3 + 3 = 6.")]
    text = "The conversation between human and AI assistant.\n[|Human|] Hi\n[|AI|] Hello!\n[|Human|] "
    assert [(t.role, t.text) for t in parse_baize(text, "f", "r")] == [(HUMAN, "Hi"), (GPT, "Hello!")]
    with pytest.raises(BadRecord, match="no \\[\\|Human"):
        parse_baize("The conversation between human and AI assistant.\n[|Human|] ", "f", "r")


def test_baseline_baize_as_the_notebook(tmp_path):
    d = tmp_path / "baize"
    d.mkdir()
    data = {}
    for part, size in BAIZE_PARTS.items():
        data[part] = [{"topic": f"{part} topic {i}", "input": baize_input(i, 1 + i % 3, i % 4 == 0)}
                      for i in range(size)]
        (d / f"{part}_chat_data.json").write_text(json.dumps(data[part], indent=1))
    out = tmp_path / "baize_10k_for_train.json"
    proc = prepare("baseline", "--source", "baize", "--data", d, "--out", out, "--n", 40)
    expected = notebook_parts([list(data["medical"]), list(data["quora"]), list(data["stackoverflow"])], 40, 125)
    got = json.loads(out.read_text())
    assert [g["topic"] for g in got] == [e["topic"] for e in expected]  # alpaca left out, as the original
    drawn = [int(e["topic"].split()[-1]) for e in expected]  # "<part> topic <i>"
    assert [g["conversations"] for g in got] == [baize_turns(i, 1 + i % 3) for i in drawn]
    assert "alpaca" not in proc.stderr.split("drew")[1].split("wrote")[0]
    with_alpaca = prepare("baseline", "--source", "baize", "--data", d, "--out", tmp_path / "all.json", "--n", 40,
                          "--exclude-part")
    assert "of       20  alpaca" in with_alpaca.stderr


def test_baseline_sharegpt_first_segments(tmp_path, sharegpt_head):
    out = tmp_path / "vicuna.json"
    proc = prepare("baseline", "--source", "sharegpt", "--data", sharegpt_head, "--out", out, "--n", 50)
    firsts = [c.id for c in iter_conversations(sharegpt_head, summary=BadRecordSummary(show_first=0))
              if c.id.endswith("_0")]
    random.seed(125)
    random.shuffle(firsts)
    assert [c.id for c in load(out)] == firsts[:50]
    assert "records left out: later segments (not _0) left out" in proc.stderr
    unsplit = tmp_path / "unsplit.json"
    unsplit.write_text(json.dumps([{"id": "abc", "conversations": [{"from": "human", "value": "Hi?"},
                                                                   {"from": "gpt", "value": "Hello."}]}]))
    bad = prepare("baseline", "--source", "sharegpt", "--data", unsplit, "--out", tmp_path / "x.json", check=False)
    assert bad.returncode == 2 and "give a split file" in bad.stderr


def test_baseline_file_of_the_wrong_shape(tmp_path):
    """A Baize file given as an UltraChat part: each record skipped with file, record and reason, the run goes
    on with the other part; --strict stops before writing anything."""
    write_ultrachat(tmp_path / "u")
    world = tmp_path / "u" / "ultrachat_release_230407.json"
    wrong = tmp_path / "quora_chat_data.json"
    wrong.write_text(json.dumps([{"topic": "t", "input": baize_input(i, 2, False)} for i in range(5)]))
    out = tmp_path / "ultra.json"
    proc = prepare("baseline", "--source", "ultrachat", "--data", world, wrong, "--part", "world", "writing",
                   "--out", out, "--n", 10)
    assert f"{wrong}: record 'ultrachat_writing_0': no turns" in proc.stderr
    assert "skipped 5 bad records" in proc.stderr
    assert len(load(out)) == 10 and {c.extra["part"] for c in load(out)} == {"world"}
    strict = prepare("baseline", "--source", "ultrachat", "--data", world, wrong, "--part", "world", "writing",
                     "--out", tmp_path / "s.json", "--n", 10, "--strict", check=False)
    assert strict.returncode == 1 and not (tmp_path / "s.json").exists()


def test_clean_paper_rules_leave_duplicates_to_the_split():
    """The original de-duplicated segments after its split, not conversations before it: a paper-rules clean
    keeps both (data.prepare split drops the second: tests/test_fidelity.py)."""
    cleaner = Cleaner(rules="paper")
    convs = [Conversation("a", [Turn(HUMAN, "ab"), Turn(GPT, "c")]),
             Conversation("b", [Turn(HUMAN, "a"), Turn(GPT, "bc")])]
    assert len(list(cleaner.run(convs))) == 2 and "duplicates" not in cleaner.counts()
