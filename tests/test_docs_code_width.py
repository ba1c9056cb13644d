"""No code line of the documentation is cut off: each fits the width of the site's code blocks (issue 22).

The site uses furo: its content column is 46em wide, a code block has 0.875rem of padding on each side and sets code
at 81.25 % of the body size in a monospace font of 0.6em per character, so a line of up to 90 characters shows
whole; on an API page the docstring sits in a ``dd`` indented by 2rem, which leaves 86. Longer lines scroll out of
sight (the landing page's example lost the end of its comment that way). Checked: the code blocks of the pages in
``docs/``, the code cells of the executed tutorials, and the Examples of every docstring.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: characters of code a block shows whole on a page, and inside an API entry
PAGE_COLUMNS = 90
API_COLUMNS = 86


def _fenced_blocks(text: str):
    """``(line number, line)`` of every line inside a fenced code block (```` ``` ```` / ```` ```{code-cell} ````).

    ```` ```text ```` blocks are left out: they reproduce a program's output as it prints it.
    """
    fence, skip = None, False
    for i, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*(`{3,})(\S*)", line)
        if m and fence is None:
            fence, skip = m.group(1), m.group(2) == "text"
            continue
        if fence is not None and line.strip() == fence:
            fence = None
            continue
        if fence is not None and not skip and not re.match(r"^:\w+:", line):  # a directive option, not code
            yield i, line


def _tutorial_code(text: str):
    """``(line number, line)`` of the code cells of a jupytext percent script."""
    code = True
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("# %%"):
            code = "[markdown]" not in line
            continue
        if code:
            yield i, line


def _docstring_examples(path: Path):
    """``(line number, line)`` of the ``>>>``/``...`` lines of a module's strings: docstrings, and the shared
    example snippets that ``_docs.inject`` puts into them."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for k, line in enumerate(node.value.splitlines()):
                if line.lstrip().startswith((">>>", "...")):
                    yield node.lineno + k, line


def _too_long(lines, limit: int, where: str) -> list[str]:
    return [f"{where}:{i}: {len(line.rstrip())} > {limit}: {line.strip()[:60]}…"
            for i, line in lines if len(line.rstrip()) > limit]  # fmt: skip


def test_page_code_blocks_fit():
    bad = []
    for path in sorted((ROOT / "docs").rglob("*.md")):
        if "_build" not in path.parts:
            bad += _too_long(_fenced_blocks(path.read_text()), PAGE_COLUMNS, str(path.relative_to(ROOT)))
    assert not bad, "\n".join(bad)


def test_tutorial_code_cells_fit():
    bad = []
    for path in sorted((ROOT / "tutorials").glob("*.py")):
        bad += _too_long(_tutorial_code(path.read_text()), PAGE_COLUMNS, str(path.relative_to(ROOT)))
    assert not bad, "\n".join(bad)


def test_docstring_examples_fit():
    bad = []
    for path in sorted((ROOT / "src" / "stalign").rglob("*.py")):
        lines = [(i, line.lstrip()) for i, line in _docstring_examples(path)]
        bad += _too_long(lines, API_COLUMNS, str(path.relative_to(ROOT)))
    assert not bad, "\n".join(bad)


def test_the_check_finds_a_cut_line():
    page = "text\n\n```python\nx = 1  # " + "a" * 100 + "\n```\n"
    assert [i for i, _ in _fenced_blocks(page)] == [4]
    assert _too_long(_fenced_blocks(page), PAGE_COLUMNS, "page")
    tut = "# %% [markdown]\n# " + "b" * 120 + "\n\n# %%\ny = 2\n"
    assert [line for _, line in _tutorial_code(tut)] == ["y = 2"]


def test_returns_sections_read_as_one_sentence():
    """numpydoc reads every unindented line of a Returns/Yields section as a new entry ("name : type"): a wrapped,
    unnamed description becomes one broken entry per line. One return is a type line with an indented description;
    several are named."""
    import importlib
    import inspect

    from numpydoc.docscrape import NumpyDocString

    bad = []
    for m in ("io", "datasets", "pp", "tl", "cohort", "pl", "models", "train", "evaluation"):
        mod = importlib.import_module(f"stalign.{m}")
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not obj.__doc__:
                continue
            doc = NumpyDocString(inspect.getdoc(obj))
            for section in ("Returns", "Yields"):
                entries = doc[section]
                if len(entries) > 1 and not all(e.name for e in entries):
                    bad.append(f"{m}.{name} {section}: {[e.type[:40] for e in entries]}")
    assert not bad, "\n".join(bad)
