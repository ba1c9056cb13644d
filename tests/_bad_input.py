"""The harness of the bad-input catalogues (``tests/*/test_bad_input.py``, ``tests/test_cli_bad_input.py``).

Every case asserts three things: the error type; that the message names the problem *and* the fix (two regexes);
and that every input the user handed over (SpatialData, AnnData, DataFrames, arrays, files on disk) is unchanged,
by a deep before/after comparison (:func:`snapshot`, :func:`assert_unchanged`). Inputs come from the synthetic
section and tiny model of ``tests/conftest.py`` (``toy_*``, loaded once, on first use) and tiny tables built by the
cases; the few cases about the real datasets ask for ``ctx.data_dir`` (skipped without the data folder).

A catalogue file reads::

    CASES = Catalogue()
    case = CASES.case


    @case(
        "pp-zero-crop-pixels",
        ValueError,
        r"out_px=0",
        r"positive integer number of pixels",
    )
    def _(ctx):
        a = ctx.ad.copy()
        return [a], lambda: sta.pp.crop_boxes(
            a, size_um=50, out_px=0
        )  # (inputs to snapshot, the failing call)


    @pytest.mark.parametrize("name", list(CASES))
    def test_bad_input(name, bad_input_ctx):
        CASES.check(name, bad_input_ctx)

Snapshots record everything a user could observe; :func:`assert_unchanged` re-snapshots and compares, naming the
first difference by its path (``table.obsm['spatial']``, ``uns['spatial']['toy'][...]``). Image and label arrays
are compared through a sha1 of their pixels (the coarse-to-fine levels of a multiscale image), so a 2k² section
costs milliseconds; an element replaced by another object with the same pixels passes, as it should (the user
cannot tell them apart).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io as _stdio
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

# ----------------------------------------------------------------------------------------------- snapshots

#: arrays above this many elements are hashed on a strided sample instead of in full
_FULL_HASH_MAX = 60_000_000


def _array_digest(a: Any) -> tuple:
    arr = a.data if hasattr(a, "dims") and hasattr(a, "data") else a  # xarray → dask/numpy
    shape, dtype = tuple(arr.shape), str(arr.dtype)
    if np.prod(shape) > _FULL_HASH_MAX:
        sl = tuple(slice(None, None, max(1, s // 512)) for s in shape)
        arr = arr[sl]
    arr = np.ascontiguousarray(np.asarray(arr))
    return ("array", shape, dtype, hashlib.sha1(arr.tobytes()).hexdigest())


def _image_element(elem: Any) -> tuple:
    if hasattr(elem, "children") and len(elem.children):  # multiscale DataTree
        levels = []
        for name in sorted(elem.children):
            ds = elem[name].ds
            levels.append((name, {v: _array_digest(ds[v]) for v in ds.data_vars}))
        return ("multiscale", tuple(levels), _attrs(elem))
    return ("image", _array_digest(elem), _attrs(elem))


def _attrs(elem: Any) -> Any:
    attrs = getattr(elem, "attrs", {}) or {}
    try:
        return _plain(dict(attrs))
    except Exception:  # noqa: BLE001 - transformations are objects; their repr is what the user sees
        return repr(attrs)


def _frame(df: pd.DataFrame) -> tuple:
    return ("frame", df.copy(deep=True))


def _matrix(X: Any) -> tuple:
    if X is None:
        return ("none",)
    if sparse.issparse(X):
        X = X.tocsr(copy=True)
        X.sort_indices()
        return ("sparse", type(X).__name__, X.shape, X.dtype.str, X.indptr.copy(), X.indices.copy(), X.data.copy())
    return ("dense", type(X).__name__, np.array(X, copy=True))


def _plain(x: Any) -> Any:
    """A deep, comparable copy of nested uns-like content."""
    if isinstance(x, dict) or (hasattr(x, "keys") and hasattr(x, "__getitem__") and not isinstance(x, pd.DataFrame)):
        return ("dict", {str(k): _plain(x[k]) for k in x.keys()})
    if isinstance(x, list | tuple):
        return (type(x).__name__, [_plain(v) for v in x])
    if isinstance(x, np.ndarray):
        return ("ndarray", x.dtype.str, np.array(x, copy=True))
    if sparse.issparse(x):
        return _matrix(x)
    if isinstance(x, pd.DataFrame):
        return _frame(x)
    if isinstance(x, pd.Series | pd.Index | pd.Categorical):
        return ("pandas", type(x).__name__, x.copy())
    return ("value", copy.deepcopy(x))


def _anndata(ad: AnnData) -> dict:
    return {
        "shape": ad.shape,
        "obs_names": list(ad.obs_names),
        "var_names": list(ad.var_names),
        "obs": _frame(ad.obs),
        "var": _frame(ad.var),
        "X": _matrix(ad.X),
        "obsm": {k: _plain(v) for k, v in ad.obsm.items()},
        "varm": {k: _plain(v) for k, v in ad.varm.items()},
        "obsp": {k: _matrix(v) for k, v in ad.obsp.items()},
        "layers": {k: _matrix(v) for k, v in ad.layers.items()},
        "uns": _plain(dict(ad.uns)),
    }


def _spatialdata(sd: Any) -> dict:
    out: dict[str, Any] = {"tables": {k: _anndata(v) for k, v in sd.tables.items()}}
    out["images"] = {k: _image_element(v) for k, v in sd.images.items()}
    out["labels"] = {k: _image_element(v) for k, v in sd.labels.items()}
    shapes = {}
    for k, gdf in sd.shapes.items():
        cols = {c: gdf[c].to_numpy().copy() for c in gdf.columns if c != "geometry"}
        shapes[k] = ("shapes", list(gdf.index), [g.wkb for g in gdf.geometry], cols, _attrs(gdf))
    out["shapes"] = shapes
    out["points"] = {k: _frame(v.compute()) for k, v in sd.points.items()}
    return out


def _path(p: Path) -> tuple:
    if p.is_file():
        return ("file", hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mode)
    if p.is_dir():
        return ("dir", {str(q.relative_to(p)): _path(q) for q in sorted(p.rglob("*")) if q.is_file()})
    return ("absent",)


def snapshot(obj: Any) -> Any:
    """Everything observable about ``obj``, deep-copied."""
    from spatialdata import SpatialData

    if isinstance(obj, SpatialData):
        return ("SpatialData", _spatialdata(obj))
    if isinstance(obj, AnnData):
        return ("AnnData", _anndata(obj))
    if isinstance(obj, Path):
        return ("Path", _path(obj))
    return ("plain", _plain(obj))


def _compare(a: Any, b: Any, where: str) -> None:
    assert type(a) is type(b), f"{where}: type {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} became {sorted(b)}"
        for k in a:
            _compare(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: length {len(a)} became {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _compare(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{where}: array {a.shape}/{a.dtype} → {b.shape}/{b.dtype}"
        same = np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        assert same, f"{where}: array contents changed"
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, obj=where)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, obj=where)
    elif isinstance(a, pd.Index):
        pd.testing.assert_index_equal(a, b, obj=where)
    elif isinstance(a, pd.Categorical):
        pd.testing.assert_extension_array_equal(a, b, obj=where)
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), f"{where}: NaN became {b!r}"
    else:
        assert a == b, f"{where}: {a!r} became {b!r}"


def assert_unchanged(before: Any, obj: Any, *, name: str = "input") -> None:
    """Raise AssertionError naming the first difference between ``before`` (a :func:`snapshot`) and ``obj`` now."""
    _compare(before, snapshot(obj), name)


# ---------------------------------------------------------------------------------------------- the CLI


class CliFailed(Exception):
    """``stalign ...`` exited with a non-zero status; the message is its stderr."""


def run_cli(argv: list) -> None:
    """Run ``stalign *argv`` in process; raise :class:`CliFailed` with its stderr when it exits non-zero."""
    from stalign import cli

    err, out = _stdio.StringIO(), _stdio.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = cli.main([str(a) for a in argv])
    if rc != 0:
        raise CliFailed(f"rc={rc}: {err.getvalue()}")


# ------------------------------------------------------------------------------------------------ the cases

#: snapshots of the shared (session) inputs, taken when a case first uses them: id(object) → snapshot
_SHARED: dict[int, Any] = {}


class Ctx:
    """What the cases build their inputs from. The shared inputs are session fixtures, loaded on first use."""

    def __init__(self, request: pytest.FixtureRequest, tmp: Path):
        self._request = request
        self._used: dict[str, Any] = {}
        self.tmp = tmp

    def _shared(self, fixture: str) -> Any:
        obj = self._request.getfixturevalue(fixture)
        if fixture not in self._used:
            self._used[fixture] = obj
            _SHARED.setdefault(id(obj), snapshot(obj))
        return obj

    @property
    def section(self):
        """The synthetic SpatialData (60 spots, 30 genes, image ``toy_image``); shared, never changed by a case."""
        return self._shared("toy_sdata")

    @property
    def ad(self):
        """The section as a squidpy-convention AnnData (library ``toy``, a ``hires`` image); copy before changing."""
        return self._shared("toy_adata")

    @cached_property
    def emb(self):
        """A copy of ``ad`` with the tiny model's embeddings and a two-label ``obs["lab"]``."""
        emb = self._shared("toy_embedded").copy()
        emb.obs["lab"] = pd.Categorical(np.where(np.arange(emb.n_obs) % 2, "a", "b"))
        return emb

    @property
    def model(self):
        """The tiny STAlign over the synthetic genes; shared, never trained in place."""
        return self._request.getfixturevalue("toy_model")

    @property
    def data_dir(self) -> Path:
        """The real shared data folder (the case is skipped without it, and fails in CI)."""
        return self._request.getfixturevalue("data_dir")

    def sdata(self, n: int = 60):
        """A SpatialData of the first ``n`` spots: the section's (read-only) image and shapes, a copied table."""
        from spatialdata import SpatialData

        sec = self.section
        t = sec.tables["table"]
        return SpatialData(images=dict(sec.images), shapes=dict(sec.shapes), tables={"table": t[:n].copy()})

    def saved_model(self) -> Path:
        """The tiny model saved to ``tmp/model``."""
        import stalign as sta

        return sta.models.save(self.model, self.tmp / "model")

    def assert_shared_unchanged(self) -> None:
        for name, obj in self._used.items():
            assert_unchanged(_SHARED[id(obj)], obj, name=name)


@dataclass
class Case:
    build: Callable[[Ctx], tuple[list, Callable[[], object]]]  # → (inputs to snapshot, the failing call)
    exc: type | tuple
    problem: str  # regex the message must match: what is wrong
    fix: str  # regex the message must match: what to do


def _message(e: BaseException) -> str:
    return e.args[0] if isinstance(e, KeyError) and e.args else str(e)


class Catalogue(dict):
    """The cases of one test folder, by name (``<area>-<what>``)."""

    def case(self, name: str, exc, problem: str, fix: str):
        """Decorator registering ``build(ctx) -> (inputs, call)`` as the case ``name``."""

        def deco(build):
            assert name not in self, name
            self[name] = Case(build, exc, problem, fix)
            return build

        return deco

    def check(self, name: str, ctx: Ctx) -> None:
        """Run the case: the error type, the problem and the fix in the message, the inputs unchanged."""
        c = self[name]
        inputs, call = c.build(ctx)
        before = [snapshot(x) for x in inputs]
        with pytest.raises(c.exc) as info:
            call()
        msg = _message(info.value)
        assert re.search(c.problem, msg, re.S), f"the message does not name the problem: {msg!r}"
        assert re.search(c.fix, msg, re.S), f"the message does not name the fix: {msg!r}"
        assert "Traceback" not in msg
        for i, (b, x) in enumerate(zip(before, inputs, strict=True)):
            assert_unchanged(b, x, name=f"input[{i}]")
        ctx.assert_shared_unchanged()  # the shared section, tables and embeddings are read-only for every case
