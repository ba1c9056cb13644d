"""The dataset that turns sections into batches of spot/niche crops and spot/niche expression.

Used by :func:`stalign.tl.embed` (``inference=True``) and by :mod:`stalign.train`. Batching happens here, not in
the DataLoader, so that one window read per crop scale serves a whole batch: use ``DataLoader(ds, batch_size=None)``
or :meth:`SpotDataset.dataloader`.

One module (~480 lines, over the ~450 guideline) because the batch plan, the crop cache and the expression of a
batch all work on the per-section state that :class:`SpotDataset` holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from anndata import AnnData
from scipy import sparse

from .._batch import BatchKey
from .._constants import NICHE_UM, SPOT_UM, Key
from .._genes import gene_index
from .._section import Section, get_section
from ._blocks import BlockCache
from ._crops import DEFAULT_PX, _check_size, check_centres_on_image, read_crops, spatial_order
from ._niche import _check_radius, niche_counts
from ._normalize import log_normalize

logger = logging.getLogger(__name__)


@dataclass
class _Prepared:
    """What one section contributes to the dataset (picklable, no AnnData)."""

    section: Section  # table=None: only coords, geometry and lazy image levels
    names: np.ndarray
    spot_expr: sparse.csr_matrix | None  # (n, V)
    niche_expr: sparse.csr_matrix | None  # (n, V)
    has_expr: np.ndarray  # (n,) bool
    cluster: np.ndarray  # (n,) int64
    spot_cache: np.ndarray | None = None  # (n, 3, S, S) uint8 crops, when cache_crops=True
    niche_cache: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.names)


def _vocab_map(table: AnnData, genes: Sequence[str]) -> tuple[sparse.csr_matrix, int]:
    idx = gene_index(table, genes)
    ok = idx >= 0
    rows = np.flatnonzero(ok)
    M = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, idx[ok])), shape=(len(idx), len(genes)), dtype=np.float32
    )
    return M, int(ok.sum())


def _prepare(
    data: Any, i: int, *, genes: Sequence[str], radius_um: float, niche_key: str, cluster: Any,
    table_key: str, image_key: str | None, library_id: str | None, use_image: bool, use_expr: bool,
) -> _Prepared:  # fmt: skip
    sec = get_section(data, table_key=table_key, image_key=image_key, library_id=library_id)
    table = sec.table
    n = table.n_obs
    names = np.asarray(table.obs_names.astype(str))
    spot = niche = None
    has_expr = np.zeros(n, dtype=bool)
    if use_expr and table.n_vars > 0:
        M, n_mapped = _vocab_map(table, genes)
        if n_mapped == 0:
            logger.warning(
                "Section %d (%r): none of its %d genes is in the vocabulary.", i, sec.library_id, table.n_vars
            )
        else:
            X = table.X if sparse.issparse(table.X) else sparse.csr_matrix(np.asarray(table.X))
            X = X.tocsr().astype(np.float32)
            totals = np.asarray(X.sum(axis=1)).ravel().astype(np.float64)
            spot = log_normalize(X, totals=totals, vocab_map=M)
            stored = table.obsm.get(niche_key) if niche_key in table.obsm else None
            if stored is not None and stored.shape == X.shape:
                Xn = sparse.csr_matrix(stored, dtype=np.float32)
            else:
                Xn = niche_counts(sec, radius_um=radius_um)  # on the side: the user's object is not modified
            ntot = np.asarray(Xn.sum(axis=1)).ravel().astype(np.float64)
            niche = log_normalize(Xn, totals=ntot, vocab_map=M)
            has_expr = (totals > 0) & (np.diff(spot.indptr) > 0)
    if cluster is None:
        cl = np.full(n, -1, dtype=np.int64)
    else:
        cl = np.asarray(cluster)
        if cl.shape != (n,):
            msg = f"clusters[{i}] has shape {cl.shape}; it must hold one integer per spot ({n})."
            raise ValueError(msg)
        cl = cl.astype(np.int64)
    images = sec.images if use_image else []
    light = Section(table=None, library_id=sec.library_id, coords=sec.coords, microns_per_pixel=sec.microns_per_pixel,
                    spot_diameter_fullres=sec.spot_diameter_fullres, images=images)  # fmt: skip
    if light.has_image:
        check_centres_on_image(light, light.coords, names)
    return _Prepared(section=light, names=names, spot_expr=spot, niche_expr=niche, has_expr=has_expr, cluster=cl)


class SpotDataset(torch.utils.data.Dataset):
    """Batches of spot and niche crops and expression over one or more sections.

    Item ``i`` is a whole batch (a ``dict`` keyed by :class:`stalign._batch.BatchKey`), so load it with
    ``DataLoader(ds, batch_size=None, num_workers=...)`` (:meth:`dataloader`). Each batch comes from one section
    and is spatially compact (spots follow a Hilbert curve), so each crop scale is read as one window.

    Parameters
    ----------
    sections
        SpatialData objects (with a table) and/or AnnData in the squidpy Visium convention. They are not modified.
    genes
        The model's gene vocabulary (``V`` symbols, at least one unless ``use_expr=False``); each section's genes are
        mapped onto it with :func:`stalign.pp.gene_index` (counts of genes mapping to the same entry are summed).
    spot_um, niche_um
        Sides of the spot and niche crops in micrometres.
    spot_px, niche_px
        Output sizes of the spot and niche crops in pixels.
    niche_radius_um
        Radius of the niche for expression (default: see :func:`stalign.pp.niche_expression`). A table that already
        has ``obsm[niche_key]`` (from :func:`~stalign.pp.niche_expression`) uses it instead.
    batch_size
        Spots per batch *per rank*; a global batch holds ``batch_size * world_size`` spots.
    shuffle
        Shuffle (training): a random grid offset per epoch gives different compact batches, whose order is
        permuted across sections. Ignored with ``inference=True``.
    layout
        ``"compact"``: each batch is a spatially compact run of spots (one window read per crop scale; inference and
        fast reading). ``"random"`` (training): each batch is a random subset of one section, so in-batch negatives
        span the whole slide rather than neighbouring spots; windows are split automatically by the crop reader.
    cache_crops
        Read every spot's spot and niche crop once (in compact windows) and keep them in memory as uint8
        (``n × 3 × (S² + N²)`` bytes; ~7 kB per spot at 32 px). For training, where each crop is read every epoch
        and batches are random; augmentation still applies per batch.
    seed
        Seed of every random choice; with :meth:`set_epoch`, batches are a pure function of ``(seed, epoch)``.
    gene_dropout
        Fraction of vocabulary genes zeroed per batch (same columns for spot and niche; training only).
    inference
        Ordered, every spot exactly once, no dropout, incomplete batches kept; in a section with expression every
        spot is marked ``has_expr`` (a spot without counts on the vocabulary is an empty profile,
        :attr:`n_empty_spots`).
    drop_last
        Drop each section's incomplete last batch (training only).
    rank, world_size
        Distributed sharding: rank ``r`` gets rows ``r::world_size`` of every global batch (``shard_layout =
        "strided"``). In training, incomplete global batches are trimmed to a multiple of ``world_size`` so every
        rank gets the same number of equal-sized batches.
    clusters
        Optional per-section integer arrays (one per spot) of cluster ids for hard negatives; ``-1`` otherwise.
    transform
        Callable applied to each batch dict (e.g. augmentation from :mod:`stalign.train`).
    use_image, use_expr
        Set ``False`` to ignore images or expression (``has_image`` / ``has_expr`` become False).
    niche_key
        ``obsm`` key of precomputed niche counts.
    table_key, image_key, library_id
        Which table / image / library of each section to use.

    Notes
    -----
    Expression is ``log1p(normalize_total(counts, 1e4))`` with library sizes over the whole panel; niche
    expression is the same transform applied to the niche's mean raw counts. Unmeasured genes are 0.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.stutility_mob("MOB1")
    >>> model = sta.models.load("stalign-base")
    >>> ds = sta.pp.SpotDataset(
    ...     [sdata],
    ...     genes=model.genes,
    ...     spot_px=32,
    ...     niche_px=32,
    ...     batch_size=64,
    ...     inference=True,
    ... )
    >>> len(ds), ds.n_spots
    (6, 379)
    >>> batch = ds[0]
    >>> batch["spot_image"].shape  # uint8 crops
    torch.Size([64, 3, 32, 32])
    >>> # expression over the model's vocabulary
    >>> batch["spot_expr"].shape == (64, len(model.genes))
    True
    """

    shard_layout = "strided"

    def __init__(
        self,
        sections: Sequence[Any] | Any,
        *,
        genes: Sequence[str],
        spot_um: float = SPOT_UM,
        niche_um: float = NICHE_UM,
        spot_px: int = DEFAULT_PX,
        niche_px: int = DEFAULT_PX,
        niche_radius_um: float | None = None,
        batch_size: int = 256,
        shuffle: bool = True,
        layout: str = "compact",
        cache_crops: bool = False,
        seed: int = 0,
        gene_dropout: float = 0.0,
        inference: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        clusters: Sequence[Any] | None = None,
        transform: Callable[[dict], dict] | None = None,
        use_image: bool = True,
        use_expr: bool = True,
        niche_key: str = Key.niche_expr,
        table_key: str = Key.table,
        image_key: str | None = None,
        library_id: str | None = None,
    ) -> None:
        from anndata import AnnData

        if not isinstance(sections, list | tuple):
            sections = [sections]
        if len(sections) == 0:
            msg = "`sections` is empty; pass a list of SpatialData / AnnData sections."
            raise ValueError(msg)
        _check_size(spot_um, spot_px)
        _check_size(niche_um, niche_px)
        radius = _check_radius(niche_radius_um)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
            msg = f"batch_size={batch_size!r}; it must be a positive integer."
            raise ValueError(msg)
        if not (isinstance(world_size, int | np.integer) and world_size >= 1 and 0 <= rank < world_size):
            msg = f"rank={rank!r}, world_size={world_size!r}; need world_size >= 1 and 0 <= rank < world_size."
            raise ValueError(msg)
        if not (0.0 <= gene_dropout < 1.0):
            msg = f"gene_dropout={gene_dropout!r}; it must be in [0, 1)."
            raise ValueError(msg)
        if clusters is not None and len(clusters) != len(sections):
            msg = f"clusters has {len(clusters)} entries for {len(sections)} sections; pass one array (or None) each."
            raise ValueError(msg)
        if isinstance(genes, str | bytes) or not isinstance(genes, Iterable):
            msg = (
                f"genes must be a sequence of gene symbols (the model's vocabulary, e.g. model.genes), got "
                f"{type(genes).__name__} {genes!r}."
            )
            raise TypeError(msg)
        genes = [str(g) for g in genes]
        if len(genes) == 0 and use_expr:
            msg = (
                "genes is empty but use_expr=True: no expression could reach the batches. Pass the model's gene "
                "vocabulary (e.g. genes=model.genes), or use_expr=False for image-only batches."
            )
            raise ValueError(msg)
        self.genes = genes
        self.spot_um, self.niche_um = float(spot_um), float(niche_um)
        self.spot_px, self.niche_px = int(spot_px), int(niche_px)
        self.niche_radius_um = radius
        self.batch_size = int(batch_size)
        self.inference = bool(inference)
        self.shuffle = bool(shuffle) and not self.inference
        if layout not in ("compact", "random"):
            msg = f"layout must be 'compact' or 'random', got {layout!r}."
            raise ValueError(msg)
        self.layout = "compact" if self.inference else layout
        self.seed = int(seed)
        self.gene_dropout = 0.0 if self.inference else float(gene_dropout)
        self.drop_last = bool(drop_last) and not self.inference
        self.rank, self.world_size = int(rank), int(world_size)
        self.transform = transform
        self._sections = []
        for i, data in enumerate(sections):
            if not isinstance(data, AnnData | Section) and not hasattr(data, "tables"):
                msg = f"sections[{i}] is a {type(data).__name__}; expected a SpatialData or an AnnData."
                raise TypeError(msg)
            self._sections.append(
                _prepare(
                    data,
                    i,
                    genes=genes,
                    radius_um=radius,
                    niche_key=niche_key,
                    cluster=None if clusters is None else clusters[i],
                    table_key=table_key,
                    image_key=image_key,
                    library_id=library_id,
                    use_image=use_image,
                    use_expr=use_expr,
                )  # fmt: skip
            )
        # one bounded cache of decoded image blocks for all sections: memory does not grow with their number
        self._block_cache = BlockCache()
        for p in self._sections:
            p.section.block_cache = self._block_cache
        self._cells = [self._cell(p) for p in self._sections]
        if cache_crops:
            for p, cell in zip(self._sections, self._cells, strict=True):
                self._fill_cache(p, cell)
            self._block_cache.clear()  # every crop is in memory now: the decoded blocks are not read again
        self.epoch = 0
        self.start = 0
        self._plan_cache: tuple[int, list] | None = None

    @classmethod
    def from_config(cls, sections: Sequence[Any] | Any, config: Any, **kwargs: Any) -> SpotDataset:
        """The dataset a model of ``config`` reads: its gene vocabulary, crop sides in µm and px, niche radius.

        The one place where a model configuration becomes a dataset: :func:`stalign.tl.embed`, training and the
        evaluation all build their batches here, so a new field of the configuration is passed on once.

        Parameters
        ----------
        sections
            As for :class:`SpotDataset`.
        config
            The model's :class:`~stalign.models.STAlignConfig` (``model.config``).
        **kwargs
            Any other argument of :class:`SpotDataset` (``batch_size``, ``inference``, ...); one that the
            configuration also sets (e.g. ``spot_um``) overrides it.

        Returns
        -------
        The dataset.

        Examples
        --------
        >>> import stalign as sta
        >>> model = sta.models.load("stalign-base")
        >>> ds = sta.pp.SpotDataset.from_config(
        ...     [sta.datasets.stutility_mob("MOB1")], model.config, inference=True
        ... )
        >>> (ds.spot_um, ds.spot_px) == (model.config.spot_um, model.config.spot_size)
        True
        """
        fields = {
            "genes": config.genes,
            "spot_um": config.spot_um,
            "niche_um": config.niche_um,
            "niche_radius_um": config.niche_radius_um,
            "spot_px": config.spot_size,
            "niche_px": config.niche_size,
        }
        return cls(sections, **(fields | kwargs))

    # ------------------------------------------------------------------ plan
    @staticmethod
    def _cell(p: _Prepared) -> float:
        from scipy.spatial import cKDTree

        if p.n < 2:
            return 1.0
        d, _ = cKDTree(p.section.coords).query(p.section.coords, k=2)
        return float(np.median(d[:, 1])) or 1.0

    def _fill_cache(self, p: _Prepared, cell: float, chunk: int = 512) -> None:
        if not p.section.has_image:
            return
        order = spatial_order(p.section.coords, cell=cell)
        p.spot_cache = np.empty((p.n, 3, self.spot_px, self.spot_px), dtype=np.uint8)
        p.niche_cache = np.empty((p.n, 3, self.niche_px, self.niche_px), dtype=np.uint8)
        for a in range(0, p.n, chunk):
            rows = order[a : a + chunk]
            xy, names = p.section.coords[rows], p.names[rows]
            p.spot_cache[rows] = read_crops(p.section, xy, size_um=self.spot_um, out_px=self.spot_px, names=names)
            p.niche_cache[rows] = read_crops(p.section, xy, size_um=self.niche_um, out_px=self.niche_px, names=names)

    @property
    def n_spots(self) -> int:
        """Spots over all sections."""
        return sum(p.n for p in self._sections)

    @property
    def section_sizes(self) -> list[int]:
        """Spots of each section, in the order given (the ``rows`` that :meth:`make_batch` takes are below these)."""
        return [p.n for p in self._sections]

    @property
    def n_empty_spots(self) -> int:
        """Spots of sections with expression that have no count on the vocabulary (all-zero or unmapped genes)."""
        return sum(int((~p.has_expr).sum()) for p in self._sections if p.spot_expr is not None)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (batches depend only on ``seed`` and ``epoch``); resets :meth:`set_start`."""
        self.epoch = int(epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` batches of this rank's epoch without reading them (exact resume)."""
        self.start = int(start)

    def _global_batches(self) -> list[tuple[int, np.ndarray, int]]:
        """``(section, rows, batch_id)`` of every global batch of the current epoch."""
        if self._plan_cache is not None and self._plan_cache[0] == self.epoch:
            return self._plan_cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        g = self.batch_size * self.world_size
        plan = []
        for s, (p, cell) in enumerate(zip(self._sections, self._cells, strict=True)):
            offset = rng.uniform(0.0, 4.0 * cell, size=2) if self.shuffle else (0.0, 0.0)
            if self.shuffle and self.layout == "random":
                order = rng.permutation(p.n)
            else:
                order = spatial_order(p.section.coords, cell=cell, offset=offset)
            for a in range(0, p.n, g):
                rows = order[a : a + g]
                if len(rows) < g and not self.inference:
                    if self.drop_last:
                        continue
                    rows = rows[: len(rows) - len(rows) % self.world_size]
                    if len(rows) == 0:
                        continue
                plan.append((s, rows))
        if self.shuffle:
            plan = [plan[i] for i in rng.permutation(len(plan))]
        plan = [(s, rows, b) for b, (s, rows) in enumerate(plan)]
        self._plan_cache = (self.epoch, plan)
        return plan

    def _local_batches(self) -> list[tuple[int, np.ndarray, int]]:
        out = []
        for s, rows, b in self._global_batches():
            local = rows[self.rank :: self.world_size]
            if len(local):
                out.append((s, local, b))
        return out

    def __len__(self) -> int:
        return max(len(self._local_batches()) - self.start, 0)

    def batch_indices(self) -> list[tuple[int, np.ndarray]]:
        """``(section, rows)`` of each of this rank's batches in the current epoch (after :meth:`set_start`)."""
        return [(s, rows) for s, rows, _ in self._local_batches()[self.start :]]

    # ----------------------------------------------------------------- items
    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        local = self._local_batches()
        if not 0 <= i < len(local) - self.start:
            raise IndexError(i)
        s, rows, b = local[self.start + i]
        return self.make_batch(s, rows, batch_id=b)

    def make_batch(self, s: int, rows: np.ndarray, *, batch_id: int = 0) -> dict[str, torch.Tensor]:
        """Build the batch of spots ``rows`` of section ``s``."""
        p = self._sections[s]
        rows = np.asarray(rows, dtype=np.int64)
        B, V = len(rows), len(self.genes)
        out: dict[str, torch.Tensor] = {}
        if p.spot_cache is not None:
            spot, niche = p.spot_cache[rows], p.niche_cache[rows]
            has_image = np.ones(B, dtype=bool)
        elif p.section.has_image:
            xy = p.section.coords[rows]
            names = p.names[rows]
            spot = read_crops(p.section, xy, size_um=self.spot_um, out_px=self.spot_px, names=names)
            niche = read_crops(p.section, xy, size_um=self.niche_um, out_px=self.niche_px, names=names)
            has_image = np.ones(B, dtype=bool)
        else:
            spot = np.zeros((B, 3, self.spot_px, self.spot_px), dtype=np.uint8)
            niche = np.zeros((B, 3, self.niche_px, self.niche_px), dtype=np.uint8)
            has_image = np.zeros(B, dtype=bool)
        if p.spot_expr is not None:
            se = p.spot_expr[rows].toarray()
            ne = p.niche_expr[rows].toarray()
            if self.gene_dropout > 0 and V:
                rng = np.random.default_rng([self.seed, self.epoch, batch_id, 1])
                drop = rng.random(V) < self.gene_dropout
                se[:, drop] = 0.0
                ne[:, drop] = 0.0
            # inference encodes every spot of a section with expression (an empty spot as an empty profile, so that
            # no embedding is undefined); training leaves empty spots out of the expression terms
            has_expr = np.ones(B, dtype=bool) if self.inference else p.has_expr[rows]
        else:
            se = np.zeros((B, V), dtype=np.float32)
            ne = np.zeros((B, V), dtype=np.float32)
            has_expr = np.zeros(B, dtype=bool)
        out[BatchKey.spot_image] = torch.from_numpy(np.ascontiguousarray(spot))
        out[BatchKey.niche_image] = torch.from_numpy(np.ascontiguousarray(niche))
        out[BatchKey.spot_expr] = torch.from_numpy(np.ascontiguousarray(se, dtype=np.float32))
        out[BatchKey.niche_expr] = torch.from_numpy(np.ascontiguousarray(ne, dtype=np.float32))
        out[BatchKey.has_image] = torch.from_numpy(has_image)
        out[BatchKey.has_expr] = torch.from_numpy(np.asarray(has_expr, dtype=bool))
        out[BatchKey.section] = torch.full((B,), s, dtype=torch.int64)
        out[BatchKey.cluster] = torch.from_numpy(p.cluster[rows].copy())
        out[BatchKey.index] = torch.from_numpy(rows.copy())
        if self.transform is not None:
            out = self.transform(out)
        return out

    def dataloader(self, *, num_workers: int = 0, **kwargs: Any) -> torch.utils.data.DataLoader:
        """A :class:`~torch.utils.data.DataLoader` over whole batches (``batch_size=None``, in order)."""
        return torch.utils.data.DataLoader(self, batch_size=None, shuffle=False, num_workers=num_workers, **kwargs)
