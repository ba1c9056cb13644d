"""Parameter text shared by several public functions, written once (squidpy's ``_docs.py`` in a few lines).

A docstring names a snippet as ``{name}`` on a line of its own; :func:`inject` replaces it with the snippet,
indented like the placeholder.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

SNIPPETS = {
    "plot_params": """\
figsize
    Figure size when ``ax`` is None.
ax
    Axes to draw into.
show
    Show the figure (and return None).
return_fig
    Return the Figure instead of the Axes.""",
    "plot_returns": """\
The Axes, the Figure (``return_fig=True``) or None (``show=True``).""",
    "eval_params": """\
data_dir
    Data folder for section specs.
device
    Torch device.""",
}


def inject(func: F) -> F:
    """Fill the ``{name}`` placeholders of ``func``'s docstring with :data:`SNIPPETS`, keeping their indentation."""
    doc = func.__doc__ or ""
    lines = []
    for line in doc.splitlines():
        key = line.strip()
        if key.startswith("{") and key.endswith("}") and key[1:-1] in SNIPPETS:
            indent = line[: len(line) - len(line.lstrip())]
            lines.append(textwrap.indent(SNIPPETS[key[1:-1]], indent))
        else:
            lines.append(line)
    func.__doc__ = "\n".join(lines)
    return func
