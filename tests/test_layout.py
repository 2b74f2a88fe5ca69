"""Stage scripts stand side by side: none imports another (artifact names live in layout.py)."""
import ast
from pathlib import Path

CODE = Path(__file__).resolve().parent.parent / "code"
# the scripts a user runs; every other module in code/ is a library module. bench.py is
# not a stage: it measures the features stage's own function, so it may import features.
STAGE_SCRIPTS = {"make_demo_data", "features", "pretrain", "train", "predict", "ensemble", "tag",
                 "bench", "zoo_table", "inspect_oof"}
MAY_IMPORT = {"bench": {"features"}}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_stage_script_imports_another():
    offenders = {}
    for path in CODE.glob("*.py"):
        bad = imported_modules(path) & (STAGE_SCRIPTS - {path.stem} - MAY_IMPORT.get(path.stem, set()))
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}, f"stage scripts imported as modules: {offenders}"


def test_the_check_sees_a_stage_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom predict import main\nimport train as t\n")
    assert imported_modules(probe) & STAGE_SCRIPTS == {"predict", "train"}
