"""The layout rule: `code/*.py` are the scripts a user runs; the library is the package
`code/fat2019/`. Nothing in the package imports a script, and no script imports another."""
import ast
from pathlib import Path

CODE = Path(__file__).resolve().parent.parent / "code"
PACKAGE = CODE / "fat2019"


def script_paths() -> list[Path]:
    """The pipeline's and user tools' scripts (code/*.py) and the measuring tools' (code/tools/*.py)."""
    return [*CODE.glob("*.py"), *CODE.glob("tools/*.py")]


def scripts() -> set[str]:
    return {p.stem for p in script_paths()}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of the absolute imports in a file (its first dotted component)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_code_itself_is_not_a_package():
    # `code` is a standard-library module; a code/__init__.py would shadow it
    assert not (CODE / "__init__.py").exists()
    assert (PACKAGE / "__init__.py").is_file()


def test_the_package_imports_no_script():
    offenders = {str(p.relative_to(CODE)): sorted(imported_modules(p) & scripts())
                 for p in PACKAGE.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_script_imports_another():
    offenders = {p.name: sorted(imported_modules(p) & (scripts() - {p.stem})) for p in script_paths()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_library_module_lives_in_the_package():
    # a script is something with a main; a flat library module in code/ breaks the layout
    for p in script_paths():
        tree = ast.parse(p.read_text())
        assert any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body), \
            f"{p.name} has no `if __name__ == '__main__'`: library code belongs in code/fat2019/"


def test_the_check_sees_a_script_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom predict import main\nimport train as t\nfrom fat2019.data import audio\n")
    assert imported_modules(probe) & scripts() == {"predict", "train"}


def test_every_script_runs_through_cli_run_stage():
    # one way to parse options, report errors and set exit codes (fat2019/cli.py)
    for p in script_paths():
        tree = ast.parse(p.read_text())
        guard = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
        assert guard and "run_stage(main)" in ast.unparse(guard[0]), f"{p.name}: its main is not run by cli.run_stage"


def package_modules_imported(tree: ast.AST) -> set[str]:
    """Local names bound to the project's own modules: `from fat2019.nn import pooling`,
    `import fat2019.nn.pooling as pooling`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fat2019":
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.asname for alias in node.names
                         if alias.asname and alias.name.split(".")[0] == "fat2019")
    return names


def assigned_module_attributes(path: Path) -> list[str]:
    """`module.NAME = ...` (or augmented, or inside a tuple target) where `module` is one of
    the project's modules: state that another module reassigns."""
    tree = ast.parse(path.read_text())
    modules = package_modules_imported(tree)
    found = []
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else [])
        for target in targets:
            for t in ast.walk(target):
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in modules:
                    found.append(f"{t.value.id}.{t.attr} (line {t.lineno})")
    return found


def test_no_module_reassigns_another_modules_state():
    # state is passed (a build option, an argument), never a module global set from outside
    offenders = {str(p.relative_to(CODE)): assigned_module_attributes(p) for p in CODE.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_reassignment_check_sees_one(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from fat2019.nn import pooling\nimport os\nbefore, pooling.MAX_POOL = 1, 2\n"
                     "os.environ = {}\npooling.N += 1\n")
    assert assigned_module_attributes(probe) == ["pooling.MAX_POOL (line 3)", "pooling.N (line 5)"]


def test_no_package_module_installs_a_warnings_filter_when_imported():
    # a filter set at import changes every later stage's output; a stage sets its own
    for p in PACKAGE.rglob("*.py"):
        for node in ast.parse(p.read_text()).body:
            assert "filterwarnings" not in ast.unparse(node) or not isinstance(node, ast.Expr), \
                f"{p.relative_to(CODE)}: a module-level warnings filter"


def test_the_pipeline_never_imports_the_measuring_tools():
    # the tools measure the pipeline; the pipeline runs without them (code/fat2019/tools/)
    offenders = {}
    for p in PACKAGE.rglob("*.py"):
        if "tools" in p.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(p.read_text())
        names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        bad = sorted(n for n in names if n.startswith("fat2019.tools"))
        if bad:
            offenders[str(p.relative_to(CODE))] = bad
    assert offenders == {}


def test_the_measuring_tools_live_apart():
    # `ls code` shows the pipeline and the user tools; the measuring tools are in code/tools/
    assert not {p.stem for p in CODE.glob("*.py")} & {p.stem for p in CODE.glob("tools/*.py")}
    assert not (PACKAGE / "bench").exists() and not (PACKAGE / "rehearsal").exists()


PROFILE_FOLDER_FIELDS = {"data_dir", "models_dir", "submissions_dir"}


def folder_computations(path: Path) -> list[str]:
    """Where a file makes a run's folders itself: builds a `Paths`, or joins REPO_ROOT with
    a profile's folder field (`config.REPO_ROOT / profile.data_dir`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == "Paths":
            found.append(f"Paths(...) (line {node.lineno})")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            names = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", None) for n in ast.walk(node)}
            if "REPO_ROOT" in names and names & PROFILE_FOLDER_FIELDS:
                found.append(f"{ast.unparse(node)} (line {node.lineno})")
    return found


def test_only_the_settings_module_computes_a_runs_folders():
    # one decision in one place: settings.resolve (and settings.profile_folders for a profile's defaults)
    offenders = {str(p.relative_to(CODE)): folder_computations(p) for p in CODE.rglob("*.py")
                 if p != PACKAGE / "settings.py"}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_folder_check_sees_one(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from fat2019 import config, settings\nout = config.REPO_ROOT / demo.data_dir\n"
                     "p = settings.Paths(data=out, features=out, models=out, submissions=out)\n"
                     "ok = config.REPO_ROOT / 'models' / 'bench'\n")
    assert folder_computations(probe) == ["config.REPO_ROOT / demo.data_dir (line 2)", "Paths(...) (line 3)"]
