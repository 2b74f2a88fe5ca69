"""Every file that the docs or the code point a reader to is in the repository.

Read: README.md, BENCHMARKS.md, docs/*.md and every other Markdown file; the comments
and string literals (docstrings, messages) of the code's Python files; the shell scripts,
.ci/run, requirements.txt and .gitignore. (Not the tests: they name made-up files on
purpose.) A reference is one of:
  - a Markdown link to a relative target: resolved against the linking file's folder;
  - a path under one of the repository's own folders (`code/...`, `docs/...`,
    `tests/...`, `.ci/...`) or the package (`fat2019/...`, i.e. `code/fat2019/...`);
  - a bare file name of the kinds a reader opens (`*.md`, `*.py`, `*.sh`): some file of
    that name is in the repository;
  - a path that climbs out of the repository (`../shared/x.sh`): never allowed, a fresh
    clone lacks it.
Placeholders (`<model>`, `{name}`, `*`, `fold[5-9]`) are patterns, not files, and skipped.
"""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# generated or local folders: never part of a clone's content
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".whl", "input", "models",
             "submissions"}
OWN_FOLDERS = ("code/", "docs/", "tests/", ".ci/")
OPENED_SUFFIXES = (".md", ".py", ".sh")
PLACEHOLDER = re.compile(r"[<>{}*\[\]$]")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
# path-like words: runs of letters, digits, . _ - / and placeholder characters
WORD = re.compile(r"[\w./<>{}*\[\]$-]+")

# References in files that their owners rewrite in this round (the scripts in code/ and
# fat2019/tools/bench/, fat2019/nn/): (file, reference) pairs, each to be fixed there and then
# removed from here. BENCHMARKS.md's GPU marker must change together with gpu_bench.py's
# SECTION_START, which finds the section by it.
PENDING = {
    ("code/fat2019/tools/bench/gpu_setup.py", "../shared/gpu-wheels.sh"),  # a script outside the repository
    ("BENCHMARKS.md", "../shared/gpu-wheels.sh"),                 # quoted from gpu_bench.py's command
    (".gitignore", "../shared/gpu-wheels.sh"),
}
# Files that still cite the specification by name (it is not in the repository) instead
# of docs/faithfulness.md; their owners rewrite them in this round.
PENDING_SPEC: set[str] = set()
# Files a tool writes (never tracked), named bare in the code that writes them
WRITTEN = {"cpu.md", "gpu.md"}


def repo_files(root: Path) -> list[Path]:
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not any(part in SKIP_DIRS for part in rel.parts[:-1]):
            out.append(rel)
    return out


def prose_of_python(text: str) -> str:
    """The comments and string literals of a Python file, one per line."""
    parts = []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING):
            parts.append(token.string)
    return "\n".join(parts)


def sources(root: Path, files: list[Path]) -> dict[Path, str]:
    """{file: the text to search} for every file whose prose is checked."""
    out = {}
    for rel in files:
        if rel.suffix == ".md":
            out[rel] = (root / rel).read_text(encoding="utf-8")
        elif rel.parts[0] == "tests" and rel.suffix == ".py":
            continue
        elif rel.suffix == ".py":
            out[rel] = prose_of_python((root / rel).read_text(encoding="utf-8"))
        elif rel.suffix == ".sh" or rel.name in {"run", ".gitignore", "requirements.txt"}:
            out[rel] = (root / rel).read_text(encoding="utf-8")  # whole: a command's paths count too
    return out


def references(text: str) -> tuple[set[str], set[str]]:
    """(Markdown link targets, path-like words) in `text`."""
    links = {m.group(1).split("#")[0] for m in MD_LINK.finditer(text)}
    links = {t for t in links if t and not re.match(r"[a-z]+:", t)}  # http:, mailto:
    words = {w.rstrip(".") for w in WORD.findall(text)}
    words = {w for w in words if re.search(r"\w", w)} - links  # a link is checked as a link
    return links, words


def dangling(root: Path) -> list[str]:
    """'file: reference (why)' for every reference that names no file of the repository."""
    files = repo_files(root)
    present = {str(f) for f in files} | {str(d) for f in files for d in f.parents if str(d) != "."}
    names = {f.name for f in files}
    problems = []
    for rel, text in sorted(sources(root, files).items()):
        links, words = references(text)
        for target in sorted(links):
            if PLACEHOLDER.search(target):
                continue
            resolved = (root / rel.parent / target).resolve()
            if not resolved.is_relative_to(root):
                problems.append(f"{rel}: link {target} (outside the repository)")
            elif not resolved.exists():
                problems.append(f"{rel}: link {target} (no such file)")
        for word in sorted(words):
            if PLACEHOLDER.search(word) or "/" not in word and not word.endswith(OPENED_SUFFIXES):
                continue
            if (str(rel), word) in PENDING or word in WRITTEN:
                continue
            if word.startswith("../"):
                if not word.endswith(OPENED_SUFFIXES) and word.count("/") == 1:
                    continue  # `../x.wav`: an example of a rejected name, not a reference
                # relative to the citing file (a Markdown page in docs/) or to the root (a command)
                inside = [p for p in ((root / rel.parent / word).resolve(), (root / word).resolve())
                          if p.is_relative_to(root)]
                if not any(p.exists() for p in inside):
                    problems.append(f"{rel}: {word} ({'no such file' if inside else 'outside the repository'})")
                continue
            path = word[2:] if word.startswith("./") else word
            if path.startswith("fat2019/"):
                path = "code/" + path
            if path.startswith(OWN_FOLDERS) or path.startswith("code/"):
                if path.rstrip("/") not in present:
                    problems.append(f"{rel}: {word} (no such file)")
            elif "/" not in path and path.endswith(OPENED_SUFFIXES) and path not in names:
                problems.append(f"{rel}: {word} (no file of that name)")
    return problems


def test_every_referenced_file_exists():
    assert dangling(ROOT) == []


def test_nothing_cites_the_specification_by_name():
    """The specification is not part of the repository: the facts are in docs/."""
    files = repo_files(ROOT)
    citing = sorted(str(rel) for rel, text in sources(ROOT, files).items()
                    if re.search(r"\bSPEC\b", text) and str(rel) not in PENDING_SPEC)
    assert citing == []


@pytest.fixture
def tiny_repo(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "code" / "fat2019" / "util").mkdir(parents=True)
    (tmp_path / "code" / "fat2019" / "util" / "locks.py").write_text("# see docs/locks.md\n")
    (tmp_path / "docs" / "locks.md").write_text("# Locks\nSee [the README](../README.md).\n")
    (tmp_path / "README.md").write_text("Locks: [docs/locks.md](docs/locks.md), `code/fat2019/util/locks.py`, "
                                        "`fat2019/util/locks.py`, `locks.py`; files `models/<name>/fold<k>.lock`.\n")
    return tmp_path


def test_a_consistent_tree_has_no_dangling_reference(tiny_repo):
    assert dangling(tiny_repo) == []


@pytest.mark.parametrize("text, expected", [
    ("See [the cache](docs/cache.md).", "README.md: link docs/cache.md (no such file)"),
    ("The locks live in `code/locks.py`.", "README.md: code/locks.py (no such file)"),
    ("The locks live in fat2019/locks.py.", "README.md: fat2019/locks.py (no such file)"),
    ("Details in SPEC.md.", "README.md: SPEC.md (no file of that name)"),
    ("Run `sh ../shared/setup.sh` first.", "README.md: ../shared/setup.sh (outside the repository)"),
])
def test_a_dangling_reference_is_found(tiny_repo, text, expected):
    (tiny_repo / "README.md").write_text(text + "\n")
    assert dangling(tiny_repo) == [expected]


def test_a_dangling_reference_in_a_python_comment_is_found(tiny_repo):
    (tiny_repo / "code" / "fat2019" / "util" / "locks.py").write_text('"""Uses docs/nfs.md."""\nx = 1  # and tests/test_nfs.py\n')
    assert dangling(tiny_repo) == ["code/fat2019/util/locks.py: docs/nfs.md (no such file)",
                                   "code/fat2019/util/locks.py: tests/test_nfs.py (no such file)"]


def test_the_readme_zoo_table_is_what_zoo_table_prints():
    """The README says `code/tools/zoo_table.py` prints its zoo table: it must, character for
    character (it builds the six full-size models, so it takes a few seconds)."""
    import zoo_table
    from fat2019 import config

    printed = zoo_table.zoo_table(config.PROFILES["full"], 80)
    assert printed in (ROOT / "README.md").read_text(encoding="utf-8")
