"""Signature and docstring conventions of the public API, in the spirit of scanpy's structure tests."""

from __future__ import annotations

import inspect

import pytest

import stalign

MODULES = ["io", "pp", "tl", "pl", "models", "train"]


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


def test_no_print_in_library():
    import pathlib
    import re

    root = pathlib.Path(stalign.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if re.search(r"^\s*print\(", p.read_text(), flags=re.MULTILINE)
    ]
    assert not offenders, f"print() in library code: {offenders}"
