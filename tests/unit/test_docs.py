"""The README and docs/ stay followable: every link and anchor resolves, every `make` target, repository path and
command-line example they show exists and parses. (A review found example files that were not in the
repository and links to sections that did not exist.)"""
import re
import shlex

import pytest

from conftest import ROOT
from maxwhisper import cli

pytestmark = pytest.mark.unit
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path) -> set[str]:
    return {slug(m[1]) for m in re.finditer(r"^#+ (.+)$", path.read_text(), re.M)}


def code_blocks(path) -> list[str]:
    """The shell blocks' text: every fenced block is read whole (a closing fence never opens the next), then
    those in sh, bash or no language kept."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), re.S | re.M)
    return [text for language, text in blocks if language in ("", "sh", "bash")]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(doc):
    for target, anchor in re.findall(r"\]\((?!https?:)([^)#\s]*)(?:#([^)\s]+))?\)", doc.read_text()):
        path = (doc.parent / target).resolve() if target else doc
        assert path.exists(), f"{doc.name} links to {target}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{doc.name} links to {target}#{anchor}: no such heading"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_make_target_and_repository_path_exists(doc):
    text = doc.read_text()
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    for target in re.findall(r"`make ([a-z][\w-]*)", text):
        assert target in targets, f"{doc.name} says `make {target}`: no such Makefile target"
    for path in re.findall(r"(?<![\w/.~-])((?:maxwhisper|tests|scripts|fixtures|docs)/[\w./-]+\.\w+)", text):
        if "*" not in path and "CLIP" not in path:  # a pattern, not a file (CLIP: each clip's name)
            assert (ROOT / path).exists(), f"{doc.name} names {path}, which does not exist"


def test_the_readmes_command_lines_parse():
    """Every `maxwhisper ...` line in the README's shell blocks is accepted by the CLI's parser, and the files it
    reads are in the repository (YOUR.mp3 stands for the user's own)."""
    lines = [line.split("#")[0].strip() for block in code_blocks(ROOT / "README.md") for line in block.splitlines()]
    commands = [[word for word in shlex.split(line) if "=" not in word or word.startswith("-")][1:]  # no VAR=value
                for line in lines if re.match(r"(\w+=\S+ )*(\.venv(-gpu)?/bin/)?maxwhisper ", line)]
    assert len(commands) >= 9
    for argv in commands:
        args = cli.parser().parse_args(argv)
        audio = getattr(args, "audio", None)
        assert audio is None or audio == "YOUR.mp3" or (ROOT / audio).is_file(), argv
