"""The package's layers, read from the source with ``ast``: runner -> stages -> science -> core.

* **core** (``errors``, ``options``, ``io``, ``contract``): imports nothing above core;
* **science** (cohort data, synthetic cohort, adapters, statistics, preprocessing, models, training, fusion,
  evaluation, Grad-CAM, figures): pure functions and result objects; imports science and core only, so it never
  knows about ``reports/<profile>/`` or prints a notebook notice;
* **stages** (``her2lib.stages``): one function per numbered notebook; imports science and core;
* **runner** (``her2lib.runner``): pipeline, provenance, report, notebook set-up; may import everything.

Every her2lib import sits at the top of its module (no hidden function-level dependencies between her2lib
modules), and a function-level import of a third-party module carries a comment saying why it is lazy.
Each rule is checked on a small synthetic source too, so the checker itself can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "her2lib"
LAYERS = ("core", "science", "stages", "runner")
CORE = {"her2lib", "her2lib.errors", "her2lib.options", "her2lib.io", "her2lib.contract"}


def _existing_module(name: str) -> str:
    """The longest prefix of ``name`` that is a her2lib module or package (``her2lib.errors.DataError`` ->
    ``her2lib.errors``)."""
    parts = name.split(".")
    while len(parts) > 1:
        rel = Path(*parts[1:])
        if (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file():
            return ".".join(parts)
        parts = parts[:-1]
    return "her2lib"


def layer_of(module: str) -> str:
    """The layer of a dotted her2lib name (a module, or a name inside one)."""
    module = _existing_module(module)
    if module in CORE:
        return "core"
    if module == "her2lib.stages" or module.startswith("her2lib.stages."):
        return "stages"
    if module == "her2lib.runner" or module.startswith("her2lib.runner."):
        return "runner"
    return "science"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    """Dotted names an ``ImportFrom`` node brings in (``from . import x`` names ``pkg.x`` too)."""
    if node.level == 0:
        base = node.module or ""
    else:
        pkg = module.split(".") if is_package else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    names = [base]
    if not node.module or node.level > 0:
        names += [f"{base}.{a.name}" for a in node.names]
    return names


def her2lib_imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, int, bool]]:
    """``(imported her2lib module, line, at_top_level)`` for every import of a her2lib module in ``source``."""
    tree = ast.parse(source)
    top = {id(n) for n in tree.body}
    for n in tree.body:  # imports guarded by `if TYPE_CHECKING:` or try/except at module level count as top
        if isinstance(n, (ast.If, ast.Try)):
            top |= {id(c) for c in ast.walk(n)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = _absolute(module, node, is_package)
        else:
            continue
        for name in names:
            if name == "her2lib" or name.startswith("her2lib."):
                found.append((name, node.lineno, id(node) in top))
    return found


def lazy_imports_without_reason(source: str) -> list[int]:
    """Lines of function-level imports of third-party modules that carry no comment (on the line or just above)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    bad = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                here = lines[node.lineno - 1]
                above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
                if "#" not in here and not above.startswith("#"):
                    bad.append(node.lineno)
    return bad


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, module_name(path), path.name == "__init__.py"


def wrong_way(module: str, imported: str) -> bool:
    return LAYERS.index(layer_of(imported)) > LAYERS.index(layer_of(module))


# ------------------------------------------------------------------------------------------------ the checker
def test_checker_catches_an_upward_and_a_function_level_import():
    src = "from ..stages import notice\n\ndef f():\n    from .data import load_cohort\n    import matplotlib\n"
    found = her2lib_imports(src, "her2lib.stats.tables")
    assert ("her2lib.stages", 1, True) in found
    assert ("her2lib.stats.data", 4, False) in found
    assert wrong_way("her2lib.stats.tables", "her2lib.stages")
    assert not wrong_way("her2lib.stages.training", "her2lib.train")
    assert wrong_way("her2lib.contract", "her2lib.data")
    assert lazy_imports_without_reason(src) == [5]
    assert lazy_imports_without_reason("def f():\n    import torch  # lazy: heavy\n") == []


def test_layer_names():
    assert layer_of("her2lib.io") == "core" and layer_of("her2lib.stats.roc") == "science"
    assert layer_of("her2lib.stages.training") == "stages" and layer_of("her2lib.runner.pipeline") == "runner"


# ------------------------------------------------------------------------------------------------ the package
@pytest.mark.parametrize(
    "path,module,is_package", list(_modules()), ids=lambda v: str(v) if isinstance(v, str) else None
)
def test_imports_point_one_way_and_sit_at_the_top(path, module, is_package):
    source = path.read_text(encoding="utf-8")
    problems = []
    for imported, line, at_top in her2lib_imports(source, module, is_package):
        if wrong_way(module, imported):
            problems.append(
                f"{path.name}:{line} {module} ({layer_of(module)}) imports {imported} "
                f"({layer_of(imported)}): imports must point runner -> stages -> science -> core"
            )
        if not at_top:
            problems.append(f"{path.name}:{line} function-level import of {imported}: move it to the top")
    for line in lazy_imports_without_reason(source):
        problems.append(f"{path.name}:{line} function-level import without a comment saying why it is lazy")
    assert not problems, "\n".join(problems)


def test_library_never_switches_the_matplotlib_backend():
    offenders = [
        f"{p.name}:{i}"
        for p, _, _ in _modules()
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if ".use(" in line and "matplotlib" in line or "mpl.use(" in line or "plt.switch_backend" in line
    ]
    assert not offenders, f"library code changes the user's matplotlib backend: {offenders}"


def function_lengths(source: str) -> list[tuple[str, int, int]]:
    """``(name, first line, body lines without the docstring)`` of every function in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            first = body[0]
            is_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            start = (body[1].lineno if len(body) > 1 else first.end_lineno) if is_doc else first.lineno
            out.append((node.name, node.lineno, node.end_lineno - start + 1))
    return out


MAX_FUNCTION_LINES = 80  # after `ruff format`, docstring excluded


def test_length_checker_counts_the_body_without_the_docstring():
    src = 'def f():\n    """Doc.\n\n    More.\n    """\n    a = 1\n    return a\n\ndef g():\n    return 1\n'
    assert function_lengths(src) == [("f", 1, 2), ("g", 9, 1)]


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{p.relative_to(PACKAGE.parent)}:{line} {name} ({n} lines)"
        for p, _, _ in _modules()
        for name, line, n in function_lengths(p.read_text(encoding="utf-8"))
        if n > MAX_FUNCTION_LINES
    ]
    assert not long, f"split these at their own section comments: {long}"


def positional_options(source: str) -> list[tuple[str, int, list[str]]]:
    """Public functions and methods with more than three parameters whose options (parameters with a default)
    beyond the third parameter can be passed by position: ``(name, line, [such parameters])``."""
    found = []

    def visit(body, owner=""):
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, f"{node.name}.")
            elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                pos = [a for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                with_default = pos[len(pos) - len(node.args.defaults) :] if node.args.defaults else []
                late = [a.arg for i, a in enumerate(pos) if i >= 3 and a in with_default]
                if len(pos) + len(node.args.kwonlyargs) > 3 and late:
                    found.append((owner + node.name, node.lineno, late))

    visit(ast.parse(source).body)
    return found


def test_keyword_only_checker():
    src = "def f(a, b, c, d=1, e=2): ...\ndef g(a, b, c, *, d=1): ...\ndef _h(a, b, c, d=1): ...\n"
    assert positional_options(src) == [("f", 1, ["d", "e"])]


def test_public_functions_take_their_options_keyword_only():
    offenders = [
        f"{p.relative_to(PACKAGE.parent)}:{line} {name}: {late}"
        for p, _, _ in _modules()
        for name, line, late in positional_options(p.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"make these options keyword-only (*): {offenders}"


def test_every_stage_is_reachable_from_the_package():
    from her2lib import stages

    for name in stages.__all__:
        obj = getattr(stages, name)
        assert obj.__module__.startswith("her2lib.stages"), name
    with pytest.raises(AttributeError):
        stages.no_such_stage  # noqa: B018


def test_notebook_setup_does_not_import_torch():
    """Every notebook's set-up cell imports the runner's notebook module; the tables notebooks must not pay for
    torch, timm and MONAI (several seconds per kernel)."""
    import subprocess
    import sys

    code = (
        "import sys, her2lib.runner.notebook; print(sorted(m for m in ('torch', 'timm', 'monai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


#: the heavy libraries each notebook's imports may load: notebooks that do not train or explain a model must not
#: pay for torch, timm and MONAI (~8 s per kernel on machine C, more on a slower CPU); 02 resizes with torch only
NOTEBOOK_HEAVY_IMPORTS = {
    "00_cohort": set(),
    "01_cohort_tables": set(),
    "02_preprocess": {"torch"},
    "05_fusion": set(),
    "06_evaluation": set(),
}


@pytest.mark.parametrize("stem", sorted(NOTEBOOK_HEAVY_IMPORTS))
def test_notebook_imports_load_only_what_the_notebook_needs(stem):
    """Every import line of the notebook's code cells, run in a fresh interpreter: the heavy libraries loaded must
    be within :data:`NOTEBOOK_HEAVY_IMPORTS` (a module-level import of ``her2lib.train``'s model code, or of
    ``her2lib.models``, in a stage these notebooks use fails here)."""
    import subprocess
    import sys

    import nbformat

    nb = nbformat.read(PACKAGE.parent / "notebooks" / f"{stem}.ipynb", as_version=4)
    lines = [
        line
        for cell in nb.cells
        if cell.cell_type == "code"
        for line in cell.source.splitlines()
        if line.startswith(("import ", "from "))
    ]
    code = "\n".join(lines) + "\nimport sys; print(' '.join(m for m in ('torch', 'timm', 'monai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert set(out.stdout.split()) <= NOTEBOOK_HEAVY_IMPORTS[stem], (stem, out.stdout)
