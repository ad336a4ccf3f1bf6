"""The documentation stays correct: links resolve, anchors exist, the CLI reference matches the code."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]

FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _gen():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", DOCS / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_cli_reference", module)
    spec.loader.exec_module(module)
    return module


def prose_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` outside fenced code blocks, with inline code removed."""
    out, in_fence = [], False
    for no, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            in_fence = not in_fence
            continue
        if not in_fence:
            out.append((no, line))
    return out


def github_slug(heading: str) -> str:
    """GitHub's heading anchor: rendered text, lower case, punctuation removed (except - and _),
    each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links -> their text
    text = text.replace("`", "")
    text = re.sub(r"\*+", "", text)  # emphasis markers
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = github_slug(m.group(2))
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


def links(path: Path) -> list[tuple[int, str]]:
    out = []
    for no, line in prose_lines(path.read_text(encoding="utf-8")):
        for m in LINK.finditer(INLINE_CODE.sub("", line)):
            out.append((no, m.group(1)))
    return out


# ---------------------------------------------------------------------- the checker itself
def test_slug_matches_github_rules():
    assert github_slug("Quick start") == "quick-start"
    assert github_slug("`txpert train --loss`") == "txpert-train---loss"
    assert github_slug("Pearson Δ (delta)") == "pearson-δ-delta"
    assert github_slug("Scaled score: S = (a + b) / 3") == "scaled-score-s--a--b--3"
    assert github_slug("The [multigraph](x.md) file") == "the-multigraph-file"


def test_checker_finds_broken_links(tmp_path):
    page = tmp_path / "a.md"
    page.write_text("# Title\n\n## Same\n\n## Same\n\n[ok](#same-1) [bad](#nope) [f](b.md#x)\n"
                    "```\n[in code](missing.md)\n```\n`[inline](missing.md)`\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# X\n", encoding="utf-8")
    assert anchors(page) == {"title", "same", "same-1"}
    assert [t for _, t in links(page)] == ["#same-1", "#nope", "b.md#x"]
    assert broken_links(page) == ["a.md:7: #nope (no such heading)"]


# ---------------------------------------------------------------------- the documentation
def broken_links(page: Path) -> list[str]:
    problems = []
    for no, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = page if not file_part else (page.parent / file_part).resolve()
        if not dest.exists():
            problems.append(f"{page.name}:{no}: {target} (no such file)")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{page.name}:{no}: {target} (no such heading)")
    return problems


def test_docs_exist():
    names = {p.name for p in DOCS.glob("*.md")}
    for required in ("index.md", "quickstart.md", "building-graphs.md", "own-map-graph.md",
                     "training-and-evaluation.md", "metrics.md", "file-formats.md", "cli.md"):
        assert required in names, f"docs/{required} is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page):
    assert broken_links(page) == []


def test_readme_links_the_docs():
    assert "docs/index.md" in [t.split("#")[0] for _, t in links(ROOT / "README.md")]


def test_every_page_is_reachable_from_the_index():
    linked = {(DOCS / t.split("#")[0]).resolve() for _, t in links(DOCS / "index.md") if t.split("#")[0]}
    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            assert page.resolve() in linked, f"docs/index.md does not link {page.name}"


def test_cli_reference_is_fresh():
    gen = _gen()
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == gen.render(), (
        "docs/cli.md is stale: run python docs/gen_cli_reference.py")


def test_every_command_is_in_the_cli_reference():
    gen = _gen()
    names = [name for name, _, _ in gen.all_commands()]
    assert {"kgbuild", "kgbuild string", "kgbuild merge", "txpert", "txpert train"} <= set(names)
    reference = anchors(DOCS / "cli.md")
    for name in names:
        assert github_slug(name) in reference, f"`{name}` has no section in docs/cli.md"


def test_check_mode_detects_a_stale_reference(tmp_path, capsys):
    gen = _gen()
    out = tmp_path / "cli.md"
    assert gen.main(["--output", str(out)]) == 0
    assert gen.main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("## kgbuild merge", "## kgbuild mrege"), encoding="utf-8")
    assert gen.main(["--check", "--output", str(out)]) == 1
