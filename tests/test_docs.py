"""The documentation cannot drift: docs/cli.md is every command's real --help, every command README.md and
docs/ show exists with the flags it uses, every relative link leads somewhere, and the README stays short."""
from __future__ import annotations

import re

import pytest

from scripts import docs

ROOT = docs.ROOT

pytestmark = pytest.mark.xdist_group("docs")  # one worker: its module fixtures are built once


@pytest.fixture(scope="module")
def rendered() -> str:
    """docs/cli.md as it should be now: runs every command's --help once (a subprocess each)."""
    return docs.render_cli_doc()


@pytest.fixture(scope="module")
def sections(rendered):
    return docs.help_sections(rendered)


@pytest.fixture(scope="module")
def trainer_flags():
    return docs.trainer_flags()


def test_a_group_of_tests_shares_one_worker(request):
    """Under ``make test`` (pytest-xdist, --dist loadgroup) a grouped test carries its group; pytest 9.2 silently
    dropped it, and every grouped module built its expensive fixtures on each worker."""
    if getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith("@docs"), request.node.nodeid


@pytest.mark.slow
def test_cli_doc_is_current(rendered):
    assert docs.CLI_DOC.is_file(), "docs/cli.md is missing: run `python -m scripts.docs`"
    assert docs.CLI_DOC.read_text(encoding="utf-8") == rendered, \
        "docs/cli.md is out of date: run `python -m scripts.docs`"


def test_every_runnable_module_is_documented():
    """COMMANDS names every module under model/ data/ eval/ scripts/ that runs as ``python -m``."""
    runnable = set()
    for top in ("model", "data", "eval", "scripts"):
        for path in (ROOT / top).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if path.name == "__main__.py" or re.search(r"^if __name__ == .__main__.:", text, re.MULTILINE):
                parts = path.relative_to(ROOT).with_suffix("").parts
                runnable.add(".".join(parts[:-1] if path.name == "__main__.py" else parts))
    assert runnable == set(docs.COMMANDS)


@pytest.mark.slow
def test_sub_commands_match_help(sections):
    """COMMANDS lists exactly the sub-commands each module's --help offers."""
    for module, subs in docs.COMMANDS.items():
        if module in docs.TRAINERS:
            continue
        body = sections[module, None]
        choices = re.search(r"^positional arguments:\n\s+\{([\w,-]+)\}", body, re.MULTILINE)
        offered = choices.group(1).split(",") if choices else []
        assert sorted(offered) == sorted(subs), module
    assert set(sections) == {(m, s) for m, subs in docs.COMMANDS.items() for s in (None, *subs)}


# where --max-length may appear: a training or split length (data.prepare's own help shows split's usage)
TRAINING_LENGTH = {("model.dyadic", None), ("data.prepare", "split"), ("data.prepare", None),
                   *((trainer, None) for trainer in docs.TRAINERS)}


@pytest.mark.slow
def test_every_command_speaks_one_vocabulary(sections, trainer_flags):
    """No --help shows another spelling of a shared concept as a flag of its own (core.options.VOCABULARY: old
    spellings parse, hidden); --max-length is only a training or split length; --json is a switch, not a path."""
    from core.options import VOCABULARY

    concept_of = {s: concept for concept, (_, others) in VOCABULARY.items() for s in others}
    shown = {key: trainer_flags if key[0] in docs.TRAINERS else docs.option_flags(body)
             for key, body in sections.items()}
    wrong = [f"{' '.join(filter(None, key))}: {flag} (the {concept_of[flag]} is {VOCABULARY[concept_of[flag]][0]})"
             for key, flags in shown.items() for flag in sorted(flags) if flag in concept_of]
    assert wrong == []
    assert {key for key, flags in shown.items() if "--max-length" in flags} <= TRAINING_LENGTH
    assert [key for key, body in sections.items() if re.search(r"^  --json [A-Z]", body, re.MULTILINE)] == []


@pytest.mark.slow
@pytest.mark.parametrize("path", docs.doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shown_commands_are_real(path, sections, trainer_flags):
    markdown = path.read_text(encoding="utf-8")
    assert docs.command_problems(markdown, sections, trainer_flags, path.name) == []


@pytest.mark.slow
def test_the_command_check_catches_mistakes(sections, trainer_flags):
    good = """
```bash
python -m data.prepare split --data a.json --out b.json --tokenizer smollm2 --no-carry-answer
OPENAI_API_KEY=... python -m data.simulate --simulator http://127.0.0.1:8000/v1 \\
    --num-sessions 3 --out s.jsonl > log.txt    # a comment --not-a-flag
torchrun --nproc-per-node 4 -m model.sft_platolm.train --config recipes/platolm_7b_paper.yaml --bf16 --pad-token add
python -m eval.mt_bench answer --model smollm2 --name x && python -m eval.tables --data r --out o.md
```
Inline: `data.simulate --end-rule paper\\|fit`, `python -m eval.simulator human-likeness --detector default`.
"""
    assert len(docs.shown_commands(good)) == 7
    assert docs.command_problems(good, sections, trainer_flags, "good") == []
    bad = """
```bash
python -m data.prepare split --data a.json --no-such-flag
python -m data.prepare nosuch --data a.json
python -m model.nothing --x
python -m model.sft_socratic.train --not_a_trainer_flag 1 --output_dir o
python -m eval.mt_bench --model-id x
python -m eval.tables --data r && python -m data.simulate --out s.jsonl --also-bogus
```
Inline: `data.simulate --wrong`.
"""
    problems = docs.command_problems(bad, sections, trainer_flags, "bad")
    assert len(problems) == 7, problems
    for word in ("--no-such-flag", "'nosuch'", "model.nothing", "--not_a_trainer_flag", "--output_dir",  # undocumented
                 "no sub-command", "--also-bogus", "--wrong"):
        assert any(word in p for p in problems), word


def test_readme_is_short():
    size = (ROOT / "README.md").stat().st_size
    assert size < 15_000, f"README.md is {size} bytes: move reference material into docs/"


@pytest.mark.parametrize("path", docs.doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert docs.link_problems(path) == []


def test_the_link_check_catches_mistakes(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## The `python -m data.prepare` part\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[a](other.md) [b](other.md#the-python--m-dataprepare-part) [c](#page) "
                    "[d](https://example.com/x) `[not a link](nowhere.md)`\n\n"
                    "[e](missing.md) [f](other.md#no-such-heading) [g](#nope)\n")
    problems = docs.link_problems(page)
    assert [re.search(r": \((\S+)\): ", p).group(1) for p in problems] == \
        ["missing.md", "other.md#no-such-heading", "#nope"], problems
