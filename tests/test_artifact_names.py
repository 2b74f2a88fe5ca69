"""layout.py names every artifact of models/, submissions/ and the tools' outputs: no other
module spells an artifact's file name or suffix (a string literal, or an f-string piece,
such as "report.png" or the ".weights.h5" of f"{prefix}.weights.h5")."""
import ast
import re
from pathlib import Path

CODE = Path(__file__).resolve().parent.parent / "code"

# a file name or suffix with an artifact's extension: "history.csv", ".last.keras", "fold*.oof.csv"
ARTIFACT_NAME = re.compile(r"[\w.*<>-]*\.(h5|keras|json|csv|png|lock|log)")
BARE_EXTENSION = re.compile(r"\.(h5|keras|json|csv|png|lock|log)")   # e.g. path.endswith(".csv")

# Modules that name files layout.py does not own, each for a reason:
OWN_FORMATS = {
    "fat2019/layout.py": "the artifacts' names",
    "fat2019/data/dataset.py": "the dataset's input files (the competition's format, never written by a stage)",
    "fat2019/data/feature_cache.py": "the feature cache's own files, inside its folder",
    "fat2019/data/cache_builder.py": "the feature cache's bad_files.csv, beside them",
    "fat2019/tools/bench/gpu_variants.py": "scratch files of a save-time measurement in a temporary folder",
    "fat2019/data/release.py": "the public release's own metadata CSVs, read to build the dataset's files",
    "tools/bench_ray.py": "the benchmark's own logs, in its scratch folder",
    "tools/rehearse.py": "the rehearsal's own record and logs, in its work folder",
}


def docstring_nodes(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def artifact_literals(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every string constant, f-string pieces included, that is an
    artifact's name or suffix; docstrings and messages (which hold spaces) do not count."""
    tree = ast.parse(source)
    skip = docstring_nodes(tree)
    return sorted((node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                  and ARTIFACT_NAME.fullmatch(node.value) and not BARE_EXTENSION.fullmatch(node.value))


def test_no_module_but_layout_spells_an_artifact_name():
    offenders = {}
    for path in sorted(CODE.rglob("*.py")):
        name = path.relative_to(CODE).as_posix()
        if name not in OWN_FORMATS and (found := artifact_literals(path.read_text())):
            offenders[name] = found
    assert offenders == {}


def test_the_check_sees_literals_and_f_string_pieces():
    source = ('"""Docstring: report.png is fine here."""\n'
              'out = folder / "report.png"\n'
              'best = folder / f"{prefix}.weights.h5"\n'
              'print(f"error: {path} has no history.csv")\n'
              'ok = name.endswith(".csv")\n')
    assert artifact_literals(source) == [(2, "report.png"), (3, ".weights.h5")]
