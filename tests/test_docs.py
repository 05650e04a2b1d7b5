"""The user documentation (README.md and docs/*.md): short README, links that resolve, commands
that the command line accepts, and no development history."""

import re
from pathlib import Path

import pytest

from cellclr.cli.main import build_parser
from cellclr.config import load_config
from cellclr.shipped import shipped_names

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_\[\]()]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} +(.+?) *$", _prose(page.read_text()), re.M)
    return {_slug(h) for h in headings}


def test_docs_folder_exists_and_the_readme_links_every_page():
    linked = set(re.findall(r"\]\((docs/[^)#]+)", README.read_text()))
    assert {_name(p) for p in PAGES[1:]} <= linked, "a docs page the README does not link"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_point_to_existing_files_and_headings(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no such heading in {_name(file)}")
    assert not broken, f"{_name(page)}: {broken}"


def test_readme_is_short_and_gives_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 320
    assert text.startswith("# cellclr\n")
    top = text[: text.index("\n## ")]
    assert "make demo" in top and "make test" in top


def test_the_readme_cell_painting_commands_are_those_of_the_cell_painting_page():
    readme = README.read_text()
    section = readme[readme.index("## Cell Painting") : readme.index("On a screen of your own")]
    blocks = [block.strip("\n") for block in section.split("```")[1::2]]
    assert len(blocks) == 2
    page = (ROOT / "docs" / "cell-painting.md").read_text()
    for block in blocks:
        assert block in page


def _commands(text: str) -> list[str]:
    """Every ``cellclr VERB ...`` of a page: in code blocks (continuation lines joined) and in
    inline code, from ``cellclr`` to the end of the line or the closing quote."""
    found = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            found += re.findall(r"(?:^|[\s\"])(cellclr(?: [^\"#]*)?)", line)
    for span in re.findall(r"`([^`]+)`", _prose(text).replace("\n", " ")):
        found += re.findall(r"(?:^|[\s\"])(cellclr(?: [^\"]*)?)", span)
    return found


def _options(parser) -> dict:
    verbs = parser._subparsers._group_actions[0].choices
    return {name: set(p._option_string_actions) for name, p in verbs.items()}


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_command_names_a_verb_and_options_that_exist(page):
    parser = build_parser()
    verbs, top = _options(parser), set(parser._option_string_actions)
    shipped = set(shipped_names())
    wrong = []
    commands = _commands(page.read_text())
    for command in commands:
        words = command.split()[1:]
        while words and words[0] in top:
            words = words[1:]
        if not words or not re.fullmatch(r"[a-z][a-z0-9-]*", words[0]):
            continue  # `cellclr --help`, `cellclr VERB --help`
        verb, rest = words[0], words[1:]
        if verb not in verbs:
            wrong.append(f"{command}: no verb {verb}")
            continue
        for i, word in enumerate(rest):
            flag = word.strip("[]().,;:")
            if flag.startswith("--") and flag.split("=")[0] not in verbs[verb]:
                wrong.append(f"{command}: {verb} has no {flag}")
            if flag in ("--config", "--configs"):
                for value in rest[i + 1 :]:
                    if value.startswith("-") or not re.fullmatch(r"[a-z0-9-]+", value):
                        break
                    if value not in shipped:
                        wrong.append(f"{command}: no shipped config {value}")
    assert not wrong, f"{_name(page)}: {wrong}"


def test_the_command_check_sees_the_commands():
    cp = _commands((ROOT / "docs" / "cell-painting.md").read_text())
    assert sum(c.startswith("cellclr crop --loaddata") for c in cp) == 2
    scaling = _commands((ROOT / "docs" / "scaling-out.md").read_text())
    assert any(c.startswith("cellclr run --crops /scratch") for c in scaling)  # after -m


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_override_names_a_key_and_a_value_that_the_config_accepts(page):
    text = page.read_text().replace("\n", " ")
    overrides = re.findall(r"--set +'?([a-z_]+\.[a-z_0-9]+=[^\s'`]+)", text)
    for override in overrides:
        if not override.startswith("section.key="):  # the syntax, not a key
            load_config(None, [override])  # raises ConfigError naming a wrong one
    if page.name == "results.md":
        assert "data.sampler=uniform" in overrides


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_python_examples_compile(page):
    for block in re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M):
        compile(block, _name(page), "exec")


HISTORY = [
    "this session",
    "earlier run",
    "the issue",
    "development checkout",
    "goals not met",
    "for the record",
]


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_development_history(page):
    text = page.read_text().lower()
    found = [phrase for phrase in HISTORY if phrase in text]
    if page.name != "architecture.md":  # the developers' page may name the tests
        found += re.findall(r"\btest_\w+", text)
    assert not found, f"{_name(page)}: {found}"
