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
    "plot_show": """\
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
    "data": """\
data
    The section: a SpatialData with a table, or an AnnData in the squidpy Visium convention.""",
    "table_key": """\
table_key
    Table of a SpatialData (ignored for an AnnData).""",
    "library_key": """\
library_key
    ``obs`` column naming each spot's section, when ``data`` holds several (as :func:`stalign.io.concat` writes);
    spatial steps then stay within each section.""",
    "copy": """\
copy
    Return a modified copy instead of writing in place (for SpatialData: a new SpatialData sharing every
    element but a copied table).""",
    "random_state": """\
random_state
    Seed of the random choices: the same seed gives the same result.""",
}
SNIPPETS["plot_params"] = "figsize\n    Figure size when ``ax`` is None.\n" + SNIPPETS["plot_show"]
#: Examples that need a finished training run (its folder ``run``): 4 steps on one small section.
SNIPPETS["tiny_run"] = """\
>>> import stalign as sta
>>> # 4 steps on one small section, a checkpoint every 2
>>> model = sta.train.pretrain(
...     [sta.datasets.stutility_mob("MOB1")],
...     output_dir="run",
...     epochs=1,
...     max_steps=4,
...     checkpoint_every=2,
...     batch_size=32,
...     show_progress_bar=False,
... )"""
#: Examples on an embedded DLPFC section (``sdata``, embedded by the bundled model).
SNIPPETS["dlpfc_embedded"] = """\
>>> import stalign as sta
>>> sdata = sta.datasets.dlpfc("151673")
>>> sta.tl.embed(sdata, show_progress_bar=False)"""
SNIPPETS["checkpoint_dir"] = "directory\n    Folder of ``step-XXXXXXXX.safetensors`` checkpoints."
#: The shared datasets' folder, a parameter of every loader.
SNIPPETS["data_dir"] = "data_dir\n    Folder that holds the datasets; defaults to ``$STALIGN_DATA_DIR``."


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
