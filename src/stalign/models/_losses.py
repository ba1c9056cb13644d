"""Contrastive losses: masked symmetric InfoNCE with in-batch (optionally cross-rank) and hard negatives."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

#: term name → (embedding key, embedding key) it aligns
TERMS: dict[str, tuple[str, str]] = {
    "spot": ("image", "gene"),  # L_spot
    "niche": ("niche_image", "niche_gene"),  # L_niche
    "ns": ("joint", "niche_joint"),  # L_NS: ABFN spot ↔ ABFN niche
    "image_ns": ("image", "niche_image"),  # unimodal spot ↔ niche, images
    "gene_ns": ("gene", "niche_gene"),  # unimodal spot ↔ niche, expression
    "image_ssl": ("image", "image_view"),  # SimCLR: two augmented views of the spot crop
}
#: embedding keys produced by :meth:`STAlign.embed`
EMBEDDING_KEYS = ("image", "gene", "joint", "niche_image", "niche_gene", "niche_joint")
#: prediction-head outputs of :meth:`STAlign.embed` → the expression they predict (batch key)
PREDICTIONS: dict[str, str] = {"image_pred": "spot_expr", "niche_image_pred": "niche_expr"}
PREDICTION_KEYS = tuple(PREDICTIONS)
#: the second view's embedding (training with the self-supervised image term)
VIEW_KEYS = ("image_view",)
#: a gene whose standard deviation within a batch is below this is not a target in that batch (unmeasured, or flat)
MIN_TARGET_STD = 1e-3
_IMAGE_KEYS = {"image", "niche_image", "image_view"}
_GENE_KEYS = {"gene", "niche_gene"}


@dataclass
class LossOutput:
    """Result of :meth:`STAlign.loss`.

    Attributes
    ----------
    loss
        Weighted sum of the computed terms (a scalar with gradient).
    components
        Unweighted value of each term that had at least one valid anchor (``"spot"``, ``"niche"``, ``"ns"``,
        ``"image_ns"``, ``"gene_ns"``). Terms without valid rows are absent, not zero-filled.
    counts
        Number of local anchors that entered each term (for re-weighting across DDP ranks).

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.stutility_mob("MOB1")
    >>> model = sta.models.load("stalign-base")
    >>> batch = sta.pp.SpotDataset(
    ...     [sdata], genes=model.genes, spot_px=32, niche_px=32, batch_size=32
    ... )[0]
    >>> out = model.loss(batch)
    >>> out.loss.shape, sorted(out.components)  # the weighted total and each term
    (torch.Size([]), ['gene_ns', 'image_ns', 'niche', 'ns', 'spot'])
    """

    loss: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def modality_mask(emb: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """Bool ``(B,)`` (or ``(B, K)`` for gathered negatives) rows of ``emb[key]`` that hold a real embedding."""
    has_image, has_expr = emb["has_image"], emb["has_expr"]
    if key in _IMAGE_KEYS:
        return has_image
    if key in _GENE_KEYS:
        return has_expr
    return has_image & has_expr


def gather_negatives(
    emb: dict[str, torch.Tensor], index: torch.Tensor, *, exclude_self: bool = False
) -> dict[str, torch.Tensor]:
    """Gather hard negatives: ``(B, K)`` row indices into ``emb`` → ``(B, K, D)`` embeddings and ``(B, K)`` masks.

    Parameters
    ----------
    emb
        Embeddings of the rows the indices point to (output of :meth:`STAlign.embed`).
    index
        ``(B, K)`` integer indices; negative values mark padding (no negative in that slot).
    exclude_self
        ``index`` points into the anchors' own batch: slot ``index[i, k] == i`` (the positive) is masked.

    Returns
    -------
    The same keys as ``emb``: embeddings ``(B, K, D)`` and masks ``has_image`` / ``has_expr`` ``(B, K)``.

    Examples
    --------
    >>> import stalign as sta
    >>> import torch
    >>> model = sta.models.load("stalign-base")
    >>> ds = sta.pp.SpotDataset(
    ...     [sta.datasets.stutility_mob("MOB1")],
    ...     genes=model.genes,
    ...     spot_px=32,
    ...     niche_px=32,
    ...     batch_size=8,
    ... )
    >>> emb = model.embed(ds[0])
    >>> index = torch.tensor(
    ...     [[1, 2], [0, -1], [3, 0], [2, 1], [5, 6], [4, 7], [7, 4], [6, -1]]
    ... )  # -1: no negative
    >>> neg = sta.models.gather_negatives(emb, index, exclude_self=True)
    >>> neg["image"].shape, neg["has_image"].shape
    (torch.Size([8, 2, 128]), torch.Size([8, 2]))
    """
    if index.ndim != 2:
        msg = f"Hard-negative indices must be a (B, K) tensor, got shape {tuple(index.shape)}."
        raise ValueError(msg)
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        msg = f"Hard-negative indices must be integers, got {index.dtype}."
        raise TypeError(msg)
    n = emb["has_image"].shape[0]
    index = index.to(emb["has_image"].device).long()
    if (index >= n).any():
        msg = f"Hard-negative index {int(index.max())} is out of range for {n} candidate rows."
        raise ValueError(msg)
    valid = index >= 0
    if exclude_self:
        valid &= index != torch.arange(index.shape[0], device=index.device)[:, None]
    safe = index.clamp_min(0)
    out = {k: v[safe] for k, v in emb.items() if k in EMBEDDING_KEYS}
    out["has_image"] = emb["has_image"][safe] & valid
    out["has_expr"] = emb["has_expr"][safe] & valid
    return out


def sample_negatives(
    section: torch.Tensor,
    cluster: torch.Tensor,
    k: int,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Hard negatives inside a batch: per anchor, ``k`` rows of the same section from another cluster.

    Parameters
    ----------
    section
        ``(B,)`` integer section id of each row (:attr:`~stalign._batch.BatchKey.section`).
    cluster
        ``(B,)`` cluster id within its section (``-1`` = unknown: such rows get no hard negatives).
    k
        Negatives per anchor.
    generator
        Random generator (on the tensors' device) for reproducible draws.

    Returns
    -------
    torch.Tensor
        ``(B, k)`` indices into the batch, ``-1`` where fewer than ``k`` candidates exist; pass it as
        ``negatives=`` to :meth:`STAlign.loss`.

    Examples
    --------
    >>> import stalign as sta
    >>> import torch
    >>> section = torch.tensor([0, 0, 0, 0, 1, 1])
    >>> cluster = torch.tensor([0, 0, 1, 1, 0, 1])
    >>> idx = sta.models.sample_negatives(
    ...     section, cluster, 1, generator=torch.Generator().manual_seed(0)
    ... )
    >>> idx.shape
    torch.Size([6, 1])
    """
    if k < 1:
        msg = f"`k` must be >= 1, got {k}."
        raise ValueError(msg)
    section, cluster = section.long(), cluster.long()
    cand = (section[:, None] == section[None, :]) & (cluster[:, None] != cluster[None, :])
    cand &= (cluster[:, None] >= 0) & (cluster[None, :] >= 0)
    scores = torch.rand(cand.shape, generator=generator, device=cand.device).masked_fill(~cand, -1.0)
    kk = min(k, cand.shape[1])
    top, idx = scores.topk(kk, dim=1)
    idx = idx.masked_fill(top < 0, -1)
    if kk < k:
        idx = torch.cat([idx, idx.new_full((idx.shape[0], k - kk), -1)], dim=1)
    return idx


def _directional(
    q: torch.Tensor,
    cand: torch.Tensor,
    cand_mask: torch.Tensor,
    pos: torch.Tensor,
    scale: torch.Tensor,
    neg: torch.Tensor | None,
    neg_mask: torch.Tensor | None,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    logits = scale * (q @ cand.T)
    logits = logits.masked_fill(~cand_mask[None, :], float("-inf"))
    if neg is not None:
        nl = scale * torch.einsum("nd,nkd->nk", q, neg)
        logits = torch.cat([logits, nl.masked_fill(~neg_mask, float("-inf"))], dim=1)
    if target is None:
        return F.cross_entropy(logits.float(), pos)
    logp = F.log_softmax(logits.float(), dim=1)
    return -torch.where(target > 0, target * logp, torch.zeros_like(logp)).sum(dim=1).mean()


def _soft_target(
    anchor: torch.Tensor, cand: torch.Tensor, cand_mask: torch.Tensor, temperature: float, n_neg: int
) -> torch.Tensor:
    """Targets ``softmax(g_i · g_j / temperature)`` over the candidates from expression similarity (no gradient).

    Spots of the same tissue share the probability mass instead of being pushed apart as negatives; hard negatives,
    when there are any, keep a target of zero.
    """
    with torch.no_grad():
        s = (anchor.float() @ cand.float().T) / temperature
        s = s.masked_fill(~cand_mask[None, :], float("-inf"))
        t = torch.softmax(s, dim=1)
        if n_neg:
            t = torch.cat([t, t.new_zeros((t.shape[0], n_neg))], dim=1)
    return t


def contrastive_loss(
    emb: dict[str, torch.Tensor],
    gathered: dict[str, torch.Tensor] | None = None,
    *,
    weights: dict[str, float],
    logit_scale: torch.Tensor,
    offset: int = 0,
    negatives: dict[str, torch.Tensor] | None = None,
    soft_targets: float = 0.0,
) -> LossOutput:
    """Weighted sum of masked symmetric InfoNCE terms.

    Parameters
    ----------
    emb
        Local embeddings (``(B, D)``, L2-normalised) and masks ``has_image`` / ``has_expr`` ``(B,)``.
    gathered
        The candidates: the same dict concatenated over all DDP ranks (local rows at ``offset``). ``None``
        uses ``emb`` (in-batch negatives).
    weights
        Weight per term name (see :data:`TERMS`); terms with weight 0 are skipped.
    logit_scale
        ``1 / temperature``.
    offset
        Row of the first local anchor in ``gathered``.
    negatives
        Hard negatives from :func:`gather_negatives`: ``(B, K, D)`` per key and ``(B, K)`` masks.
    soft_targets
        Temperature of soft targets for the image ↔ gene terms (``L_spot``, ``L_niche``): each anchor's target is
        spread over the candidates by the similarity of their gene embeddings, ``softmax(g_i · g_j / soft_targets)``
        (no gradient through the targets); ``0`` keeps one-hot targets (InfoNCE).

    Returns
    -------
    :class:`LossOutput`; rows without the needed modality are masked out of each term.

    Examples
    --------
    >>> import stalign as sta
    >>> model = sta.models.load("stalign-base")
    >>> ds = sta.pp.SpotDataset(
    ...     [sta.datasets.stutility_mob("MOB1")],
    ...     genes=model.genes,
    ...     spot_px=32,
    ...     niche_px=32,
    ...     batch_size=32,
    ... )
    >>> # L2-normalised embeddings and has_image / has_expr masks
    >>> emb = model.embed(ds[0])
    >>> out = sta.models.contrastive_loss(
    ...     emb,
    ...     weights={"spot": 0.3, "niche": 0.3, "ns": 0.4},
    ...     logit_scale=model.logit_scale,
    ... )
    >>> sorted(out.components), out.loss.ndim
    (['niche', 'ns', 'spot'], 0)
    """
    if gathered is None:
        gathered, offset = emb, 0
    device = emb["has_image"].device
    total = torch.zeros((), device=device)
    components: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for term, (ka, kb) in TERMS.items():
        w = float(weights.get(term, 0.0))
        if w == 0 or ka not in emb or kb not in emb:
            continue
        m = modality_mask(emb, ka) & modality_mask(emb, kb)
        if not bool(m.any()):
            continue
        rows = torch.nonzero(m).squeeze(1)
        pos = rows + offset
        parts = []
        gene_key = kb if kb in _GENE_KEYS and ka in _IMAGE_KEYS else None
        for q_key, c_key in ((ka, kb), (kb, ka)):
            neg = neg_mask = None
            if negatives is not None and c_key in negatives:
                neg = negatives[c_key][rows]
                neg_mask = modality_mask(negatives, c_key)[rows]
            target = None
            if soft_targets > 0 and gene_key is not None:
                mask = modality_mask(gathered, c_key) & modality_mask(gathered, gene_key)
                n_neg = 0 if neg is None else neg.shape[1]
                target = _soft_target(emb[gene_key][rows], gathered[gene_key], mask, soft_targets, n_neg)
            parts.append(
                _directional(
                    emb[q_key][rows],
                    gathered[c_key],
                    modality_mask(gathered, c_key),
                    pos,
                    logit_scale,
                    neg,
                    neg_mask,
                    target,
                )
            )
        value = 0.5 * (parts[0] + parts[1])
        components[term] = value
        counts[term] = int(rows.numel())
        total = total + w * value
    return LossOutput(loss=total, components=components, counts=counts)


def standardize_targets(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expression ``x`` ``(B, P)`` standardised per gene over the ``rows`` (bool ``(B,)``) of one batch.

    Every batch comes from one section, so this is the expression relative to the section: stain, depth and panel
    differences between sections drop out. Returns the standardised values and the bool ``(P,)`` genes that vary in the
    batch (an unmeasured gene is all zero: it is never a target).
    """
    xr = x[rows].float()
    mean = xr.mean(dim=0, keepdim=True)
    std = xr.std(dim=0, unbiased=False, keepdim=True)
    valid = std.squeeze(0) > MIN_TARGET_STD
    return (x.float() - mean) / std.clamp_min(MIN_TARGET_STD), valid


def predictive_loss(
    emb: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], index: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Mean squared error of the prediction heads against the batch's standardised expression of the predicted genes.

    Parameters
    ----------
    emb
        Output of :meth:`STAlign.embed` with ``"image_pred"`` / ``"niche_image_pred"`` (``(B, P)``).
    batch
        The batch (:class:`~stalign._batch.BatchKey`): ``spot_expr`` / ``niche_expr`` ``(B, V)`` are the targets.
    index
        ``(P,)`` columns of the vocabulary that the heads predict.

    Returns
    -------
    The loss averaged over the two scales (over the rows with an image and expression, and the genes that vary in the
    batch), and the number of rows that entered it (``0``: no target in this batch, the loss is a zero).
    """
    rows = emb["has_image"] & emb["has_expr"]
    n = int(rows.sum())
    values = []
    if n >= 2:
        for key, target_key in PREDICTIONS.items():
            if key not in emb or batch.get(target_key) is None:
                continue
            target = batch[target_key].to(emb[key].device)[:, index]
            z, valid = standardize_targets(target, rows)
            if not bool(valid.any()):
                continue
            err = (emb[key].float() - z)[rows][:, valid]
            values.append(err.pow(2).mean())
    if not values:
        return emb["has_image"].new_zeros((), dtype=torch.float32), 0
    return torch.stack(values).mean(), n
