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


# ---------------------------------------------------------------------- commands quoted in the docs
def shell_commands(text: str) -> list[tuple[int, list[str]]]:
    """``(line, argv)`` of every kgbuild / txpert call in the ```bash blocks of a page (continuations joined,
    comments dropped); ``torchrun ... -m txpert_head.cli.main`` counts as ``txpert``."""
    out, block, lang = [], None, ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if FENCE.match(line.lstrip()):
            if block is None:
                block, lang = [], line.strip().strip("`~").strip()
            else:
                if lang in ("bash", "sh", "shell"):
                    out.extend(_calls(block))
                block = None
            i += 1
            continue
        if block is not None:
            block.append((i + 1, line))
        i += 1
    return out


def _calls(block: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    import shlex

    calls, buf, first = [], "", 0
    for no, line in block:
        if not buf:
            first = no
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        try:
            tokens = shlex.split(buf, comments=True)
        except ValueError:
            tokens = buf.split()
        buf = ""
        for k, tok in enumerate(tokens):
            name = tok.rsplit("/", 1)[-1]
            if name in ("kgbuild", "txpert") and (k == 0 or tokens[k - 1] in ("do", "then", ";", "&&", "time")):
                calls.append((first, [name] + tokens[k + 1:]))
                break
            if tok == "-m" and k + 1 < len(tokens) and tokens[k + 1] in ("txpert_head.cli.main", "kgbuild.cli"):
                calls.append((first, ["txpert" if tokens[k + 1] == "txpert_head.cli.main" else "kgbuild"] + tokens[k + 2:]))
                break
    return calls


def test_command_extraction():
    text = ("```bash\nkgbuild string --min-score 700 \\\n   -o s.kg.npz   # comment --nope\n"
            "for g in a b; do\n  txpert train --data x.h5ad --graph $g -o runs/$g\ndone\n"
            "torchrun --nproc_per_node 2 -m txpert_head.cli.main train --loss mmd -o r\n```\n"
            "```text\nkgbuild --not-a-command\n```\n")
    got = shell_commands(text)
    assert [argv for _, argv in got] == [
        ["kgbuild", "string", "--min-score", "700", "-o", "s.kg.npz"],
        ["txpert", "train", "--data", "x.h5ad", "--graph", "$g", "-o", "runs/$g"],
        ["txpert", "train", "--loss", "mmd", "-o", "r"]]


def test_commands_in_the_docs_exist_with_their_options():
    """Every kgbuild / txpert example in a ```bash block names a real subcommand, only real options, and
    only real training options after --set."""
    import dataclasses

    from txpert_head.training.config import TrainConfig

    gen = _gen()
    groups = dict(gen.cli_groups())
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    problems, checked = [], 0
    for page in PAGES:
        for no, argv in shell_commands(page.read_text(encoding="utf-8")):
            checked += 1
            group = groups[argv[0]]
            words = [a for a in argv[1:] if not a.startswith("-")]
            if not words:
                continue
            command = group.commands.get(words[0])  # the first bare word is the subcommand
            if command is None:
                problems.append(f"{page.name}:{no}: {argv[0]} has no command {words[0]!r}")
                continue
            known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}
            for arg, value in zip(argv[1:], argv[2:] + [""]):
                if arg == "--set" and value.split("=", 1)[0] not in train_keys:
                    problems.append(f"{page.name}:{no}: --set {value}: no training option {value.split('=', 1)[0]!r}")
                if arg.startswith("-") and arg not in ("-", "--") and not arg.lstrip("-")[:1].isdigit():
                    opt = arg.split("=", 1)[0]
                    if opt not in known:
                        problems.append(f"{page.name}:{no}: `{argv[0]} {words[0]}` has no option {opt}")
    assert checked >= 40, f"only {checked} example commands found: is the extraction broken?"
    assert problems == []


def test_training_config_examples_are_valid(tmp_path):
    """Every ```toml block of the training page is a valid `txpert train --config` file."""
    from txpert_head.runs.folder import read_config_file
    from txpert_head.training.config import TrainConfig

    text = (DOCS / "training-and-evaluation.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert blocks
    for k, block in enumerate(blocks):
        path = tmp_path / f"config_{k}.toml"
        path.write_text(block, encoding="utf-8")
        TrainConfig.from_dict(read_config_file(path))
