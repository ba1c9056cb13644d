"""Signature and docstring conventions of the public API, in the spirit of scanpy's structure tests."""

from __future__ import annotations

import inspect
import pathlib

import pytest

import stalign
import stalign.evaluation

MODULES = ["io", "datasets", "pp", "tl", "cohort", "pl", "models", "train"]


def _public_functions():
    for mod_name in MODULES:
        mod = getattr(stalign, mod_name)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                yield pytest.param(obj, id=f"{mod_name}.{name}")


FUNCS = list(_public_functions())


def test_namespaces_export_something():
    for mod_name in MODULES:
        assert getattr(stalign, mod_name).__all__, f"stalign.{mod_name} exports nothing"
    assert isinstance(stalign.__version__, str)


@pytest.mark.parametrize("func", FUNCS)
def test_at_most_three_positional(func):
    params = inspect.signature(func).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 3, f"{func.__qualname__} has {len(positional)} positional parameters"


@pytest.mark.parametrize("func", FUNCS)
def test_no_positional_bools(func):
    for p in inspect.signature(func).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            assert not isinstance(p.default, bool), f"{func.__qualname__}: bool {p.name!r} must be keyword-only"


@pytest.mark.parametrize("func", FUNCS)
def test_copy_is_keyword_only_false(func):
    sig = inspect.signature(func)
    if "copy" in sig.parameters:
        p = sig.parameters["copy"]
        assert p.kind == p.KEYWORD_ONLY and p.default is False
        assert "inplace" not in sig.parameters, "never both copy and inplace"


@pytest.mark.parametrize("func", FUNCS)
def test_numpydoc(func):
    doc = inspect.getdoc(func)
    assert doc, f"{func.__qualname__} has no docstring"
    params = [
        p.name for p in inspect.signature(func).parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if params:
        assert "Parameters\n----------" in doc, f"{func.__qualname__}: no Parameters section"
        section = doc.split("Parameters\n----------\n", 1)[1]
        section = section.split("\n\n", 1)[0] if "-------" not in section else section.split("\nReturns\n", 1)[0]
        documented = set()
        for line in section.splitlines():
            if line and not line.startswith(" "):
                names = line.split(" : ")[0]
                documented |= {n.strip().lstrip("*") for n in names.split(",")}
        missing = [n for n in params if n not in documented]
        assert not missing, f"{func.__qualname__}: parameters {missing} undocumented"
    assert "Returns\n-------" in doc or "Yields\n------" in doc, f"{func.__qualname__}: no Returns section"


#: One name per concept (docs/contributing.md, "Names"): the names on the left are spelt as on the right.
RENAMED = {"seed": "random_state", "embed_key": "use_rep", "format": "file_format", "inplace": "copy"}
#: Parameters of these names mean one thing everywhere: (annotation, keyword-only).
CONVENTIONS = {
    "data": ("AnnData | SpatialData", False),
    "random_state": ("int", True),
    "use_rep": ("str | None", True),
    "table_key": ("str", True),
    "library_key": ("str | None", True),
}
CONVENTION_FUNCS = FUNCS + [
    pytest.param(getattr(stalign.evaluation, n), id=f"evaluation.{n}")
    for n in stalign.evaluation.__all__
    if inspect.isfunction(getattr(stalign.evaluation, n))
]


@pytest.mark.parametrize("func", CONVENTION_FUNCS)
def test_one_name_per_concept(func):
    """``random_state`` (not ``seed``), ``use_rep`` (not ``embed_key``), no ``format`` (a builtin), no private
    parameter; ``data``, ``random_state``, ``use_rep``, ``table_key``, ``library_key`` typed alike everywhere."""
    sig = inspect.signature(func)
    for name, p in sig.parameters.items():
        assert not name.startswith("_"), f"{func.__qualname__}: private parameter {name!r} in a public function"
        if name in RENAMED and not (name == "inplace" and func.__name__ == "tile_tissue"):
            raise AssertionError(f"{func.__qualname__}: parameter {name!r}; the package's name is {RENAMED[name]!r}")
        if name in CONVENTIONS:
            annotation, kw_only = CONVENTIONS[name]
            assert str(p.annotation) == annotation, f"{func.__qualname__}: {name}: {p.annotation!r}, not {annotation!r}"
            if kw_only:
                assert p.kind == p.KEYWORD_ONLY, f"{func.__qualname__}: {name} must be keyword-only"
        if name == "key_added":  # a string default, or None for a name derived from the other arguments
            ok = isinstance(p.default, str) or (p.default is None and str(p.annotation) == "str | None")
            assert p.kind == p.KEYWORD_ONLY and ok, f"{func.__qualname__}: key_added"


@pytest.mark.parametrize("func", CONVENTION_FUNCS)
def test_no_private_types_in_signatures(func):
    """A public function takes and returns public types only (no ``Section``, no ``_Private`` class)."""
    import re

    sig = inspect.signature(func)
    annotations = [str(p.annotation) for p in sig.parameters.values()] + [str(sig.return_annotation)]
    bad = [a for a in annotations if re.search(r"\bSection\b|(?<![\w.])_[A-Za-z]", a)]
    assert not bad, f"{func.__qualname__}: private types in its signature: {bad}"


def test_no_print_in_library():

    import re

    root = pathlib.Path(stalign.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if re.search(r"^\s*print\(", p.read_text(), flags=re.MULTILINE)
    ]
    assert not offenders, f"print() in library code: {offenders}"


# ------------------------------------------------------------------------------------------------ the house
#: Floors of the package (DESIGN.md §5): a module imports only from its own floor or below. train and tl share floor
#: 4 and never import each other; the cohort (many sections) sits above tl, which never imports it. Core modules
#: (``stalign/_*.py``) are floor 0.
FLOORS = {
    "io": 1,
    "datasets": 1,
    "pp": 2,
    "models": 3,
    "train": 4,
    "tl": 4,
    "cohort": 5,
    "pl": 6,
    "evaluation": 6,
    "cli": 6,
    "__main__": 7,
}
TOP = 8  # stalign/__init__.py
#: Deprecated aliases kept for one release, each the one import against the order: (module, target).
DEPRECATED_ALIASES = {("stalign.tl", "stalign.cohort")}


def _floor_of(module: str) -> tuple[int, str]:
    """``(floor, part)`` of a dotted module name inside stalign (part: the subpackage, or "core"/"top")."""
    parts = module.split(".")
    if len(parts) == 1:
        return TOP, "top"
    head = parts[1]
    if head in FLOORS:
        return FLOORS[head], head
    if head.startswith("_"):
        return 0, "core"
    raise AssertionError(f"unknown part of the package: {module}")


def _imports(path, module: str, is_package: bool):
    """Every stalign module imported by the file (absolute or relative), with its line."""
    import ast

    tree = ast.parse(path.read_text())
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "stalign" or a.name.startswith("stalign."):
                    yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = base[: len(base) - node.level + 1] + ([node.module] if node.module else [])
                target = ".".join(target)
            elif node.module and (node.module == "stalign" or node.module.startswith("stalign.")):
                target = node.module
            else:
                continue
            for a in node.names:
                # `from .. import io` imports the subpackage io; `from ..pp import x` imports from pp
                sub = f"{target}.{a.name}"
                yield (sub if _is_module(sub) else target), node.lineno


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _modules():

    root = pathlib.Path(stalign.__file__).parent
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield p, ".".join(parts), is_package


def test_imports_flow_one_way():
    """io → pp → models → train/tl → pl/evaluation/cli: no import from a later floor, none between train and tl, and
    no import of another subpackage's private module (only its public namespace, or the core ``stalign._*``)."""
    bad = []
    for path, module, is_package in _modules():
        floor, part = _floor_of(module)
        for target, line in _imports(path, module, is_package):
            t_floor, t_part = _floor_of(target)
            where = f"{module}:{line} imports {target}"
            if t_part == part or t_part == "core":
                continue
            if part == "top":
                continue  # the top-level namespace re-exports the subpackages
            if (module, target) in DEPRECATED_ALIASES:
                continue
            if t_floor > floor or {part, t_part} == {"train", "tl"}:
                bad.append(f"{where} (a later floor)")
            elif target != f"stalign.{t_part}":
                bad.append(f"{where} (a private module of another subpackage; import from stalign.{t_part})")
    assert not bad, "\n".join(bad)


def test_tl_never_imports_the_cohort():
    """The cohort (plan, shard over ranks, collect) calls tl's one-section tools; no module of tl imports it back,
    except the deprecated ``tl.embed_cohort`` alias in ``tl/__init__.py``."""
    assert FLOORS["cohort"] > FLOORS["tl"]
    bad = [
        f"{module}:{line} imports {target}"
        for path, module, is_package in _modules()
        if _floor_of(module)[1] in ("tl", "train")
        for target, line in _imports(path, module, is_package)
        if _floor_of(target)[1] == "cohort" and (module, target) not in DEPRECATED_ALIASES
    ]
    assert not bad, "\n".join(bad)
    assert DEPRECATED_ALIASES == {("stalign.tl", "stalign.cohort")}


def test_core_modules_import_no_torch_at_module_level():
    """``import stalign`` must not import torch (it loads on first use of a model, a dataset or training)."""
    import subprocess
    import sys

    code = "import sys, stalign; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def _stalign_imports(path: pathlib.Path) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from stalign... import name`` in a script, at any depth."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "stalign":
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize(
    "script", sorted((pathlib.Path(__file__).parents[1] / "benchmarks").glob("*.py")), ids=lambda p: p.name
)
def test_benchmark_scripts_import_existing_names(script):
    """Benchmarks reach into stalign's modules; a name moved by a refactor must fail here, not hours into a run."""
    import importlib

    missing = []
    for module, name in _stalign_imports(script):
        if not hasattr(importlib.import_module(module), name):
            missing.append(f"{module}.{name}")
    assert not missing, f"{script.name} imports names that no longer exist: {missing}"


@pytest.mark.parametrize("mod_name", [*MODULES, "evaluation"])
def test_dir_shows_the_public_api_only(mod_name):
    """``dir(stalign.<sub>)`` lists the public API (``__all__``), no private module or helper."""
    import importlib

    mod = importlib.import_module(f"stalign.{mod_name}")
    assert sorted(dir(mod)) == sorted(mod.__all__)


def test_renamed_names_still_work_one_release(tmp_path):
    """Old keyword names and ``tl.embed_cohort`` warn (``FutureWarning``) and do what the new names do."""
    import numpy as np

    from stalign.evaluation import spot_infonce

    a = np.random.default_rng(0).normal(size=(256, 8))
    with pytest.warns(FutureWarning, match="renamed random_state="):
        old = spot_infonce(a, a[::-1], logit_scale=10.0, seed=1)
    assert old == spot_infonce(a, a[::-1], logit_scale=10.0, random_state=1)
    with pytest.raises(TypeError, match="pass random_state= only"):
        spot_infonce(a, a, logit_scale=10.0, seed=1, random_state=1)
    with pytest.warns(FutureWarning, match="stalign.cohort.embed"), pytest.raises(TypeError, match="list"):
        stalign.tl.embed_cohort("her2st:A1", tmp_path / "out")  # the new function's own checks run
