"""The inputs of one evaluation run: named sections (loaded once) and the models with their embedding cache.

Embeddings come from the public :func:`stalign.tl.embed`, so the harness scores what a user gets. Each embedded
section is kept as a light *view*: the original section's elements and counts, shared (not copied), with the
embeddings and ``tl.embed``'s ``uns`` record added to a new table, ready for ``tl.domains`` / ``tl.annotate`` /
``tl.predict_expression`` exactly as a user would call them after ``tl.embed``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import Key
from .._utils import embedding_keys, embedding_record, get_table, resolve_device, uns_key

logger = logging.getLogger(__name__)

#: name of the main model (its group of training seeds) in the results
MAIN = "stalign"
#: name of the untrained model of the same architecture (a baseline)
RANDOM = "random_init"


# ---------------------------------------------------------------------------------------------- small helpers
def dataset_of(name: str) -> str:
    """Dataset part of a section spec: ``"her2st:C6"`` → ``"her2st"``."""
    return name.partition(":")[0]


def patient_of(name: str) -> str | None:
    """Patient / donor of a section spec when known: her2st letter, DLPFC donor (pairs of slices), else ``None``.

    Parameters
    ----------
    name
        Section spec, e.g. ``"her2st:C6"`` or ``"dlpfc:151674"``.

    Returns
    -------
    ``"<dataset>:<patient>"``, or ``None`` when the dataset records no patient.

    Examples
    --------
    >>> from stalign import evaluation
    >>> (
    ...     evaluation.patient_of("her2st:C6"),
    ...     evaluation.patient_of("dlpfc:151674"),
    ...     evaluation.patient_of("stahl_mob:11"),
    ... )
    ('her2st:C', 'dlpfc:donor3', None)
    """
    ds, _, sec = name.partition(":")
    sec = sec.split("[")[0]
    if ds == "her2st" and sec:
        return f"her2st:{sec[0].upper()}"
    if ds == "dlpfc":
        donors = {"15150": "1", "15166": "2", "15167": "3"}  # 151507-10, 151669-72, 151673-76 (Maynard et al.)
        d = donors.get(sec[:5])
        return f"dlpfc:donor{d}" if d else None
    return None


def signature_default(func: Callable, name: str) -> Any:
    """Default of parameter ``name`` of ``func`` (the tl defaults the evaluation follows)."""
    return inspect.signature(func).parameters[name].default


def default_smooth_um() -> float:
    """Default smoothing radius (µm) of :func:`stalign.tl.domains`, the one every method of the harness gets."""
    from ..tl import domains

    return float(signature_default(domains, "smooth_um"))


def check_smooth_um(smooth_um: Any, default: float) -> float:
    """``smooth_um`` checked (a number of µm, ``>= 0``); ``None`` gives ``default``."""
    from .._validators import check_number

    if smooth_um is None:
        return float(default)
    return float(check_number(smooth_um, "smooth_um", strict=False, hint=" (µm; 0 turns smoothing off)"))


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """``3`` → ``[0, 1, 2]``; a sequence of seeds is kept as given."""
    if isinstance(seeds, bool) or not isinstance(seeds, int | np.integer | Sequence):
        msg = f"seeds must be a number of seeds (e.g. 3) or a list of seeds, got {seeds!r}."
        raise ValueError(msg)
    out = list(range(int(seeds))) if isinstance(seeds, int | np.integer) else [int(s) for s in seeds]
    if not out or any(s < 0 for s in out):
        msg = f"seeds={seeds!r}: pass a positive number of seeds (e.g. 3) or a non-empty list of seeds >= 0."
        raise ValueError(msg)
    return out


def shell(table: AnnData, obsm: Mapping[str, np.ndarray] | None = None, *, counts: bool = True) -> AnnData:
    """A throw-away AnnData sharing the counts and obs names of ``table`` with chosen ``obsm`` (user data untouched)."""
    X = table.X if counts else np.zeros((table.n_obs, 0), dtype=np.float32)
    var = table.var[[]].copy() if counts else pd.DataFrame(index=pd.Index([], dtype=str))
    ad = AnnData(X=X, obs=pd.DataFrame(index=table.obs_names.copy()), var=var)
    for k, v in (obsm or {}).items():
        ad.obsm[k] = np.asarray(v, dtype=np.float32)
    return ad


def labels_of(table: AnnData, labels_key: str, name: str) -> pd.Series:
    """Manual labels of a section (missing and empty values as ``None``)."""
    if labels_key not in table.obs:
        msg = (
            f"Section {name!r} has no obs[{labels_key!r}] (manual labels); evaluate labelled sections or pass "
            f"labels_key= (columns: {', '.join(map(str, table.obs.columns))})."
        )
        raise KeyError(msg)
    lab = table.obs[labels_key].astype(object)
    return lab.where(lab.notna() & (lab.astype(str) != ""), None)


# ---------------------------------------------------------------------------------------------- sections
class Sections:
    """Named sections: loaded on demand from specs (``datasets.load``) or given as objects; loaded once per run."""

    def __init__(self, data_dir: Any = None) -> None:
        self.data_dir = data_dir
        self._cache: dict[str, Any] = {}

    def add(self, items: Any) -> list[str]:
        """Register ``items`` (specs, paths or ``{name: data}``); return their names in order."""
        if items is None:
            return []
        if isinstance(items, Mapping):
            for k, v in items.items():
                self._cache[str(k)] = v
            return [str(k) for k in items]
        if isinstance(items, str | os.PathLike):
            items = [items]
        names = []
        for it in items:
            if not isinstance(it, str | os.PathLike):
                msg = (
                    f"Sections must be specs ('dlpfc:151674'), paths, or a dict {{name: SpatialData/AnnData}}; "
                    f"got {type(it).__name__}."
                )
                raise TypeError(msg)
            names.append(str(it))
        return names

    def __getitem__(self, name: str):
        if name not in self._cache:
            from ..datasets import load

            logger.info("Loading %s", name)
            self._cache[name] = load(name, data_dir=self.data_dir)
        return self._cache[name]


# ---------------------------------------------------------------------------------------------- models
def _is_record(v: Any) -> bool:
    return isinstance(v, Mapping) and isinstance(v.get("keys"), Mapping) and "weights_fingerprint" in v


def with_embeddings(data: Any, obsm: Mapping[str, np.ndarray], record: Mapping, *, table_key: str = Key.table):
    """``data`` as a user has it after ``tl.embed``: same elements and counts (shared), embeddings in a new table.

    Any stalign embedding already in ``data`` is left out of the view, so the view holds exactly one.
    """
    table = get_table(data, table_key=table_key)
    stale = {k for v in table.uns.values() if _is_record(v) for k in v["keys"].values()}
    new = AnnData(
        X=table.X,
        obs=table.obs.copy(),
        var=table.var.copy(),
        obsm={**{k: v for k, v in table.obsm.items() if k not in stale}, **obsm},
        uns={**{k: v for k, v in table.uns.items() if not _is_record(v)}, uns_key(Key.X): dict(record)},
    )
    if isinstance(data, AnnData):
        return new
    from spatialdata import SpatialData

    return SpatialData(
        images=dict(data.images),
        labels=dict(data.labels),
        points=dict(data.points),
        shapes=dict(data.shapes),
        tables={k: (new if k == table_key else v) for k, v in data.tables.items()},
    )


class Embedded:
    """One model's ``tl.embed`` output for one section: ``arrays`` by kind, the ``uns`` record and the ``view``."""

    def __init__(self, arrays: dict[str, np.ndarray], record: dict, view: Any) -> None:
        self.arrays = arrays
        self.record = record
        self.view = view

    @property
    def keys(self) -> dict[str, str]:
        """``{kind: obsm key}`` of the embeddings (``fused``, ``image``, ``gene``, ``niche``)."""
        return {k: v for k, v in embedding_keys(self.record).items() if k in self.arrays}


class Models:
    """The models of one run and a cache of their embeddings per section.

    Models come in *groups*: ``"stalign"`` holds the main model, or one model per training seed when several are
    given; each ablation is a group; ``"random_init"`` holds one untrained model of the same architecture per
    main model. Results aggregate over the members of a group (and over clustering seeds).
    """

    def __init__(
        self,
        model: Any,
        *,
        ablations: Mapping[str, Any] | None = None,
        random_init: bool = True,
        device: Any = None,
        seed: int = 0,
    ) -> None:
        import torch

        from ..models import STAlign

        self.device = resolve_device(device)
        self.models: dict[str, Any] = {}
        self.info: dict[str, dict] = {}
        self.groups: dict[str, list[str]] = {}
        main = self._add_group(MAIN, model)
        for name, spec in (ablations or {}).items():
            if name in (MAIN, RANDOM):
                msg = f"Ablation name {name!r} is reserved; choose another name."
                raise ValueError(msg)
            self._add_group(str(name), spec)
        if random_init:
            members = []
            for i, member in enumerate(main):
                torch.manual_seed(seed + i)
                rnd = STAlign(self.models[member].config, load_encoder_weights=False)
                name = RANDOM if len(main) == 1 else f"{RANDOM}[{i}]"
                self._add(name, rnd.to(self.device).eval(), f"random initialisation of the config of {member}")
                members.append(name)
            self.groups[RANDOM] = members
        self._emb: dict[tuple[str, str], Embedded] = {}

    def _load(self, spec: Any):
        from ..models import STAlign, load

        if isinstance(spec, STAlign):
            return spec.to(self.device).eval()
        if not isinstance(spec, str | os.PathLike):
            msg = (
                f"A model must be a registry name, a saved-model folder or a stalign STAlign module, got "
                f"{type(spec).__name__}."
            )
            raise TypeError(msg)
        return load(spec, device=self.device, cache=True)

    def _add_group(self, group: str, spec: Any) -> list[str]:
        specs = list(spec) if isinstance(spec, list | tuple) else [spec]
        if not specs:
            msg = f"No model given for {group!r}; pass a registry name, a folder or a list of them (training seeds)."
            raise ValueError(msg)
        members = [group if len(specs) == 1 else f"{group}[{i}]" for i in range(len(specs))]
        for member, s in zip(members, specs, strict=True):
            self._add(member, self._load(s), s)
        self.groups[group] = members
        return members

    def _add(self, name: str, m, spec) -> None:
        from ..models import weights_fingerprint

        self.models[name] = m
        self.info[name] = {
            "spec": spec if isinstance(spec, str) else (str(spec) if isinstance(spec, os.PathLike) else "instance"),
            "name": getattr(m, "name", None),
            "weights_sha256": getattr(m, "weights_sha256", None),
            "weights_fingerprint": weights_fingerprint(m),
            "n_parameters": int(sum(p.numel() for p in m.parameters())),
            "n_genes": len(m.config.genes),
        }

    def embedded(self, member: str, name: str, data: Any) -> Embedded:
        """``tl.embed(data, model=member, copy=True)`` of section ``name``, computed once per run."""
        key = (member, name)
        if key not in self._emb:
            from ..tl import embed

            out = embed(data, model=self.models[member], device=self.device, copy=True, show_progress_bar=False)
            table = get_table(out)
            record = embedding_record(table, Key.X)
            arrays = {
                kind: np.asarray(table.obsm[k], dtype=np.float32)
                for kind, k in embedding_keys(record).items()
                if k in table.obsm
            }
            obsm = {embedding_keys(record)[kind]: v for kind, v in arrays.items()}
            self._emb[key] = Embedded(arrays, dict(record), with_embeddings(data, obsm, record))
            logger.info("Embedded %s with %s (%s)", name, member, ", ".join(arrays))
        return self._emb[key]


# ---------------------------------------------------------------------------------------------- one run
class Run:
    """What the tasks of one evaluation share: the seeds, the sections (loaded once) and the models (embedded once).

    :func:`~stalign.evaluation.evaluate` opens one with :meth:`shared` so that every task it runs reuses it; a task
    called on its own starts its own (:meth:`of_task`).
    """

    _current: ContextVar[Run | None] = ContextVar("stalign_evaluation_run", default=None)

    def __init__(self, model: Any, *, ablations: Any, baselines: bool, seeds: Any, data_dir: Any, device: Any):
        self.seeds = seed_list(seeds)
        self.store = Sections(data_dir)
        self.models = Models(model, ablations=ablations, random_init=baselines, device=device, seed=self.seeds[0])

    @classmethod
    def of_task(cls, model: Any, **kwargs: Any) -> Run:
        """The run of the :func:`evaluate` call in progress, else a new run of ``model`` (a task called alone)."""
        current = cls._current.get()
        return current if current is not None else cls(model, **kwargs)

    @contextlib.contextmanager
    def shared(self):
        """Within the block, every task uses this run."""
        token = Run._current.set(self)
        try:
            yield self
        finally:
            Run._current.reset(token)
