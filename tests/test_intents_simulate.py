"""Intent-conditioned simulation (``data.simulate --intents``, ``data.intents``, ``model.dyadic.intent_system``).

Against live local processes (tests/fault_teacher.py) that log every request they get: the simulator
(Socratic at an endpoint, or a chat model playing the user) and the teacher. The intent must reach the
simulator's system message and never the teacher's requests, and every record keeps it.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from core.conversation import GPT, HUMAN, BadRecord, Turn
from core.errors import UsageError
from data.intents import read_intents
from data.simulate import main as simulate_main
from model.dyadic import SOCRATIC_SYSTEM, intent_system
from tests.servers import Server, fault_server
from tests.test_simulate import read

APOLOGY = "You want to write a sincere apology to a friend after a family disagreement."
TRIP = "You want to plan a cheap three-day trip to Lisbon in spring."
TERSE = "You write short, informal messages without capital letters."
GARDEN = "You want to know why your tomato leaves are turning yellow."
SEED_QUESTION = "my tomato plant has yellow leaves, what do i do"
INTENTS = [
    {"id": "apology", "intent": APOLOGY},
    {"id": "trip", "intent": TRIP, "persona": TERSE},
    {"id": "garden", "intent": GARDEN,
     "conversations": [{"from": "human", "value": SEED_QUESTION}, {"from": "gpt", "value": "Water less."}]},
    {"id": "blank", "intent": "   "},
    {"id": "number", "intent": 7},
]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def procs(tmp_path_factory):
    """A Socratic-like simulator, a chat model to play the user (role-play) and a teacher, each logging requests."""
    tmp = tmp_path_factory.mktemp("intent-servers")
    started: dict[str, Server] = {}
    for name, role in (("sim", "human"), ("roleplay", "human"), ("teacher", "gpt")):
        started[name] = fault_server(tmp, name, "--role", role, "--log-requests", str(tmp / f"{name}.requests.jsonl"))
        started[name].requests = tmp / f"{name}.requests.jsonl"
    yield started
    for srv in started.values():
        srv.stop()


def requests(srv: Server, since: int = 0) -> list[dict]:
    return read(srv.requests)[since:] if srv.requests.exists() else []


def test_intent_system_is_the_papers_prompt_then_the_intent_and_persona():
    assert intent_system(None) == SOCRATIC_SYSTEM and intent_system(None, TERSE) == SOCRATIC_SYSTEM
    assert intent_system(f"  {APOLOGY}\n") == f"{SOCRATIC_SYSTEM}Intent: {APOLOGY}\n\n"
    assert intent_system(TRIP, TERSE) == f"{SOCRATIC_SYSTEM}Intent: {TRIP}\n\nPersona: {TERSE}\n\n"
    assert intent_system(TRIP, base="Be a user.\n\n") == f"Be a user.\n\nIntent: {TRIP}\n\n"
    for bad in ("", "  ", 3):
        with pytest.raises(ValueError, match="non-empty string"):
            intent_system(bad)


def test_read_intents_takes_every_format_and_names_bad_records(tmp_path, capsys):
    path = write_jsonl(tmp_path / "intents.jsonl", [
        *INTENTS,
        {"intent": "You want a pasta recipe.", "messages": [{"role": "system", "content": "s"},
                                                             {"role": "user", "content": "pasta?"}]},
        {"id": "q", "intent": "You want a haiku.", "question": "write me a haiku"},
        {"id": "apology", "intent": "duplicate"},
        {"id": "bad-persona", "intent": TRIP, "persona": ["terse"]},
        "not an object"])
    recs = read_intents(path)
    assert [(r.id, r.intent, r.persona, r.question) for r in recs] == [
        ("apology", APOLOGY, None, None), ("trip", TRIP, TERSE, None), ("garden", GARDEN, None, SEED_QUESTION),
        ("5", "You want a pasta recipe.", None, "pasta?"), ("q", "You want a haiku.", None, "write me a haiku")]
    assert [r.spec().id for r in recs][:3] == ["intent-apology", "intent-trip", "intent-garden"]
    err = capsys.readouterr().err
    for rid, reason in (("blank", "empty intent"), ("number", "intent not a string"), ("apology", "duplicate id"),
                        ("bad-persona", "persona not a string"), (9, "not an object")):
        assert f"{path}: record {rid!r}: {reason}" in err
    with pytest.raises(BadRecord, match=r"record 'blank': empty intent"):
        read_intents(path, strict=True)
    empty = write_jsonl(tmp_path / "none.jsonl", [{"id": "a", "intent": ""}, {"id": "b"}])
    with pytest.raises(UsageError) as no_usable:
        read_intents(empty)
    assert str(no_usable.value).startswith(f"{empty}: no usable intent record") and "\n" not in str(no_usable.value)


def test_simulate_with_intents_conditions_the_simulator_and_never_the_teacher(tmp_path, procs, capsys):
    sim, teacher = procs["sim"], procs["teacher"]
    seen = len(requests(sim)), len(requests(teacher))
    intents = write_jsonl(tmp_path / "intents.jsonl", INTENTS)
    out = tmp_path / "conditioned.jsonl"
    assert simulate_main(["--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
                          "--intents", str(intents), "--num-sessions", "3", "--max-turns", "2",
                          "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "record 'blank': empty intent" in err and "record 'number': intent not a string" in err
    recs = {r["id"]: r for r in read(out)}
    assert sorted(recs) == ["intent-apology", "intent-garden", "intent-trip"]
    for rid, intent, persona in (("apology", APOLOGY, None), ("trip", TRIP, TERSE), ("garden", GARDEN, None)):
        rec = recs[f"intent-{rid}"]
        assert rec["mode"] == "intent" and rec["intent"] == intent and rec.get("persona") == persona
        assert rec["num_of_rounds"] == 2 and rec["meta"]["intents"] == str(intents)
    garden = recs["intent-garden"]["conversations"]
    assert garden[0] == {"from": HUMAN, "value": SEED_QUESTION}  # the seed question, answered by the teacher
    assert garden[1]["value"].startswith("Answer 1:")

    systems = [r["messages"][0] for r in requests(sim, seen[0])]
    assert all(m["role"] == "system" for m in systems)
    assert {m["content"] for m in systems} == {intent_system(APOLOGY), intent_system(TRIP, TERSE),
                                               intent_system(GARDEN)}
    sent_to_teacher = json.dumps(requests(teacher, seen[1]))
    assert requests(teacher, seen[1]) and all(w not in sent_to_teacher for w in (APOLOGY, TRIP, TERSE, GARDEN))


def test_roleplay_gets_the_intent_through_its_placeholder(tmp_path, procs):
    chat, teacher = procs["roleplay"], procs["teacher"]
    seen = len(requests(chat))
    intents = write_jsonl(tmp_path / "intents.jsonl", INTENTS[:2])
    out = tmp_path / "roleplay.jsonl"
    common = ["--simulator", chat.url, "--simulator-kind", "roleplay", "--teacher-base-url", teacher.url,
              "--teacher-model", "t", "--num-sessions", "2", "--max-turns", "1", "--no-progress"]
    assert simulate_main([*common, "--intents", str(intents), "--out", str(out)]) == 0
    assert {r["intent"] for r in read(out)} == {APOLOGY, TRIP}
    prompts = [r["messages"][0]["content"] for r in requests(chat, seen)]
    assert len(prompts) == 2 and all("{intent}" not in p and "{conversation}" not in p for p in prompts)
    assert sum(APOLOGY in p for p in prompts) == 1 and sum(f"{TRIP} {TERSE}" in p for p in prompts) == 1

    # free mode: the line that states the intent is left out of the default prompt
    assert simulate_main([*common, "--out", str(tmp_path / "free.jsonl")]) == 0
    free = requests(chat, seen + 2)[0]["messages"][0]["content"]
    assert "goal of your own" not in free and "The conversation so far:" in free

    plain = tmp_path / "plain.txt"
    plain.write_text("Act as the user.\n\n{conversation}\n")
    code = simulate_main([*common, "--intents", str(intents), "--roleplay-prompt", str(plain),
                          "--out", str(tmp_path / "refused.jsonl")])
    assert code == 2 and not (tmp_path / "refused.jsonl").exists()


def test_bad_intents_files_are_one_line_errors(tmp_path, procs, capsys):
    sim, teacher = procs["sim"], procs["teacher"]
    common = ["--simulator", sim.url, "--teacher-base-url", teacher.url, "--teacher-model", "t",
              "--num-sessions", "2", "--out", str(tmp_path / "out.jsonl"), "--no-progress"]
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"id": "a", "intent": ""}, {"id": "b", "intent": None}])
    assert simulate_main([*common, "--intents", str(empty)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: {empty}: no usable intent record")
    assert simulate_main([*common, "--intents", str(tmp_path / "missing.jsonl")]) == 2
    assert f"{tmp_path / 'missing.jsonl'}: intents file not found" in capsys.readouterr().err
    strict = write_jsonl(tmp_path / "strict.jsonl", INTENTS)
    assert simulate_main([*common, "--intents", str(strict), "--strict"]) == 1
    assert f"error: {strict}: record 'blank': empty intent" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_local_simulator_puts_the_intent_in_its_prompt(tiny_dir):
    from data.end_rules import EndRule
    from data.simulators import LocalSimulator, Sampling
    from model.generate import Generator

    sim = LocalSimulator(Generator(str(tiny_dir), "dyadic", "cpu"), Sampling(max_new_tokens=4),
                         EndRule("paper", 512, 4))
    turns = [Turn(HUMAN, "hello"), Turn(GPT, "hi, how can I help?")]

    async def ask_both():
        try:
            return await sim.ask(turns, 1), await sim.ask(turns, 1, TRIP, TERSE)
        finally:
            await sim.close()

    free, conditioned = asyncio.run(ask_both())
    added = len(sim.counter.prompt_ids(turns, system=intent_system(TRIP, TERSE))) - len(sim.counter.prompt_ids(turns))
    assert added > 10
    assert conditioned.prompt_tokens - free.prompt_tokens == added  # the budget counts it
    assert conditioned.input_tokens - free.input_tokens == added  # and the model was given it
