"""Batch augmentation for pretraining, vectorised over the whole batch and seeded from a :class:`torch.Generator`.

Random parameters are always drawn for the *global* batch (all DDP ranks together) from a generator seeded by
``(seed, step)``; each rank then keeps its own rows. A spot therefore gets the same augmentation whether it is
trained in one process or on any rank of a DDP job, and a resumed run replays exactly the same augmentations.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from .._batch import BatchKey

logger = logging.getLogger(__name__)

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) as in skimage.color.rgb2hed
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32)
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_LOG_ADJUST = torch.log(torch.tensor(1e-6))
# RGB <-> YIQ for hue rotation
_YIQ_FROM_RGB = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_RGB_FROM_YIQ = torch.linalg.inv(_YIQ_FROM_RGB)


@dataclass
class AugmentConfig:
    """What :func:`augment_batch` does; every field can be set from ``pretrain(augment={...})``.

    Parameters
    ----------
    flip
        Random horizontal and vertical flips.
    rotate
        Random multiples of 90°. Every image augmentation is drawn independently for the spot and the niche crop.
    hed
        Stain jitter strength in HED space (Tellez et al. 2018): each stain channel is scaled by ``1 ± hed`` and
        shifted by ``± hed``. ``0`` turns it off. Stain and colour jitter draw one shift per batch (one section).
    brightness, contrast, saturation
        Jitter strengths (factors drawn in ``1 ± value``); ``0`` turns each off.
    hue
        Hue rotation, as a fraction of a full turn (``± hue``).
    resolution
        Largest down-sampling factor of the resolution jitter (crops are down-sampled by a random factor in
        ``[1, resolution]`` then up-sampled back, so low-resolution and full-resolution slides meet); ``1`` turns it
        off.
    resolution_p
        Probability that a spot gets resolution jitter.
    gene_dropout
        Largest fraction of the measured genes zeroed per spot (the fraction is drawn in ``[0, gene_dropout]``);
        each of the spot and niche profiles loses its own random genes (independent masks) and is renormalised to 1e4 counts.

    Examples
    --------
    >>> import stalign as sta
    >>> aug = sta.train.AugmentConfig(hed=0.02, gene_dropout=0.1)
    >>> aug.flip, aug.hed
    (True, 0.02)
    >>> sta.train.AugmentConfig.from_any({"rotate": False}).rotate
    False
    """

    flip: bool = True
    rotate: bool = True
    hed: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02
    resolution: float = 4.0
    resolution_p: float = 0.5
    gene_dropout: float = 0.25

    @classmethod
    def from_any(cls, value) -> AugmentConfig | None:
        """Build from ``None``/``False`` (off), ``True`` (defaults), a dict of overrides, or an instance."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = set(value) - known
            if unknown:
                msg = f"Unknown augmentation option(s) {sorted(unknown)}; valid options are {sorted(known)}."
                raise ValueError(msg)
            return cls(**value)
        msg = f"`augment` must be a bool, a dict or an AugmentConfig, not {type(value).__name__}."
        raise TypeError(msg)

    def to_dict(self) -> dict:
        """JSON-serialisable fields."""
        return asdict(self)


_RES_FACTORS = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def _uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def _draw_geometry(g: torch.Generator, n: int, config: AugmentConfig) -> dict[str, torch.Tensor]:
    """Per-spot flips, turns and resolution factors."""
    return {
        "flip_h": torch.rand(n, generator=g) < 0.5,
        "flip_v": torch.rand(n, generator=g) < 0.5,
        "rot": torch.randint(0, 4, (n,), generator=g),
        "res_on": torch.rand(n, generator=g) < config.resolution_p,
        "res_idx": torch.randint(0, len(_RES_FACTORS), (n,), generator=g),
    }


def _draw_stain(g: torch.Generator, n: int, config: AugmentConfig) -> dict[str, torch.Tensor]:
    """One stain/colour shift for the whole batch (a batch comes from one section), expanded to ``n`` rows."""
    one = {
        "hed_a": 1 + (torch.rand(1, 3, generator=g) * 2 - 1) * config.hed,
        "hed_b": (torch.rand(1, 3, generator=g) * 2 - 1) * config.hed,
        "br": _uniform(g, 1, 1 - config.brightness, 1 + config.brightness),
        "co": _uniform(g, 1, 1 - config.contrast, 1 + config.contrast),
        "sa": _uniform(g, 1, 1 - config.saturation, 1 + config.saturation),
        "hu": _uniform(g, 1, -config.hue, config.hue),
    }
    return {k: v.expand(n, *v.shape[1:]) for k, v in one.items()}


def _geometric(img: torch.Tensor, flip_h: torch.Tensor, flip_v: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Flip/rotate each image of ``img`` (B, C, H, W) by its own parameters (square crops)."""
    out = torch.where(flip_h[:, None, None, None], img.flip(-1), img)
    out = torch.where(flip_v[:, None, None, None], out.flip(-2), out)
    if img.shape[-1] != img.shape[-2]:
        return out
    res = out
    for k in (1, 2, 3):
        sel = rot == k
        if bool(sel.any()):
            res = torch.where(sel[:, None, None, None], torch.rot90(out, k, dims=(-2, -1)), res)
    return res


def _hed_jitter(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``x`` float RGB in [0, 1] (B, 3, H, W); alpha/beta (B, 3)."""
    dev = x.device
    hed_from_rgb = _HED_FROM_RGB.to(dev)
    rgb_from_hed = _RGB_FROM_HED.to(dev)
    log_adjust = _LOG_ADJUST.to(dev)
    od = torch.log(x.clamp_min(1e-6)) / log_adjust  # (B,3,H,W) >= 0
    hed = torch.einsum("bchw,cd->bdhw", od, hed_from_rgb).clamp_min(0)
    hed = hed * alpha[:, :, None, None] + beta[:, :, None, None]
    od2 = torch.einsum("bdhw,dc->bchw", hed * log_adjust, rgb_from_hed)
    return torch.exp(od2).clamp(0, 1)


def _colour_jitter(x: torch.Tensor, b: torch.Tensor, c: torch.Tensor, s: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation (factors) and hue (fraction of a turn), each (B,)."""
    x = x * b[:, None, None, None]
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    mean = grey.mean(dim=(-2, -1), keepdim=True)
    x = (x - mean) * c[:, None, None, None] + mean
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    x = (x - grey) * s[:, None, None, None] + grey
    theta = h * 2 * torch.pi
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(len(h), 3, 3, device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    yiq = _YIQ_FROM_RGB.to(x.device, x.dtype)
    rgb = _RGB_FROM_YIQ.to(x.device, x.dtype)
    m = rgb @ rot @ yiq  # (B,3,3)
    x = torch.einsum("bij,bjhw->bihw", m, x)
    return x.clamp(0, 1)


def _resolution_jitter(x: torch.Tensor, factor_idx: torch.Tensor) -> torch.Tensor:
    """Down-sample rows by ``_RES_FACTORS[factor_idx]`` (``-1``: untouched) and up-sample back."""
    out = x
    size = x.shape[-2:]
    for i, f in enumerate(_RES_FACTORS):
        sel = factor_idx == i
        if not bool(sel.any()):
            continue
        small = (max(1, round(size[0] / f)), max(1, round(size[1] / f)))
        if small == tuple(size):
            continue
        rows = x[sel]
        down = F.interpolate(rows, size=small, mode="area")
        up = F.interpolate(down, size=size, mode="bilinear", align_corners=False)
        out = out.clone() if out is x else out
        out[sel] = up
    return out


def _renormalise(expr: torch.Tensor) -> torch.Tensor:
    """Rescale ``log1p`` expression rows so their counts sum to 1e4 again."""
    counts = torch.expm1(expr.clamp_min(0))
    total = counts.sum(dim=1, keepdim=True)
    scale = torch.where(total > 0, 1e4 / total.clamp_min(1e-12), torch.ones_like(total))
    return torch.log1p(counts * scale)


def augment_batch(
    batch: dict[str, torch.Tensor],
    config: AugmentConfig,
    *,
    generator: torch.Generator,
    rows: torch.Tensor | None = None,
    n_global: int | None = None,
) -> dict[str, torch.Tensor]:
    """Augment a batch dict (returns a new dict; the input is not modified).

    Parameters
    ----------
    batch
        Batch keyed by :class:`stalign._batch.BatchKey`; images uint8 ``(B, 3, S, S)``, expression ``(B, V)``.
    config
        What to do.
    generator
        CPU generator the random parameters are drawn from.
    rows
        Positions of this batch's rows in the global batch (DDP); default ``arange(B)``.
    n_global
        Size of the global batch the parameters are drawn for; default ``B``.

    Returns
    -------
    A new batch dict with augmented ``spot_image``, ``niche_image``, ``spot_expr`` and ``niche_expr``.

    Examples
    --------
    >>> import stalign as sta
    >>> import torch
    >>> sdata = sta.datasets.stutility_mob("MOB1")
    >>> genes = sta.pp.build_vocabulary([sdata])
    >>> batch = sta.pp.SpotDataset(
    ...     [sdata], genes=genes, spot_px=32, niche_px=32, batch_size=16
    ... )[0]
    >>> aug = sta.train.augment_batch(
    ...     batch, sta.train.AugmentConfig(), generator=torch.Generator().manual_seed(0)
    ... )
    >>> aug["spot_image"].shape == batch["spot_image"].shape
    True
    """
    out = dict(batch)
    ref = next(v for v in batch.values() if isinstance(v, torch.Tensor))
    b = len(ref)
    n = b if n_global is None else int(n_global)
    rows = torch.arange(b) if rows is None else rows.to("cpu", torch.long)
    g = generator
    # draw every parameter for the global batch, in a fixed order, whether or not it is used. Flips, turns and
    # blur are drawn independently for the spot and the niche crop (shared ones would let the image spot<->niche
    # terms pair crops by the augmentation itself). Stain/colour jitter is one shift per batch, i.e. per section:
    # it mimics slide-to-slide staining differences and keeps the colour differences between spots, which at
    # low resolution are most of what an image tells about its spot (per-spot colour noise collapses training).
    stain = _draw_stain(g, n, config)
    params = {key: {**_draw_geometry(g, n, config), **stain} for key in (BatchKey.spot_image, BatchKey.niche_image)}
    drop_frac = torch.rand(n, generator=g) * config.gene_dropout
    drop_seed = int(torch.randint(0, 2**62, (1,), generator=g))

    sl = rows
    has_image = batch.get(BatchKey.has_image)
    allowed = [i for i, f in enumerate(_RES_FACTORS) if f <= config.resolution]
    for key, prm in params.items():
        img = batch.get(key)
        if img is None or img.numel() == 0:
            continue
        dev = img.device
        res_idx = prm["res_idx"][sl]
        if allowed:
            res_idx = torch.where(prm["res_on"][sl] & (res_idx <= max(allowed)), res_idx, torch.full_like(res_idx, -1))
        else:
            res_idx = torch.full_like(res_idx, -1)
        was_uint8 = img.dtype == torch.uint8
        x = img.float() / 255.0 if was_uint8 else img.float()
        fh = prm["flip_h"][sl].to(dev) if config.flip else torch.zeros(b, dtype=torch.bool, device=dev)
        fv = prm["flip_v"][sl].to(dev) if config.flip else torch.zeros(b, dtype=torch.bool, device=dev)
        rr = prm["rot"][sl].to(dev) if config.rotate else torch.zeros(b, dtype=torch.long, device=dev)
        x = _geometric(x, fh, fv, rr)
        if config.hed > 0:
            x = _hed_jitter(x, prm["hed_a"][sl].to(dev), prm["hed_b"][sl].to(dev))
        if config.brightness > 0 or config.contrast > 0 or config.saturation > 0 or config.hue > 0:
            x = _colour_jitter(
                x, prm["br"][sl].to(dev), prm["co"][sl].to(dev), prm["sa"][sl].to(dev), prm["hu"][sl].to(dev)
            )
        x = _resolution_jitter(x, res_idx.to(dev))
        if has_image is not None:
            x = torch.where(has_image.to(dev)[:, None, None, None], x, torch.zeros_like(x))
        out[key] = (x * 255.0).round_().clamp_(0, 255).to(torch.uint8) if was_uint8 else x.to(img.dtype)

    spot, niche = batch.get(BatchKey.spot_expr), batch.get(BatchKey.niche_expr)
    if config.gene_dropout > 0 and (spot is not None or niche is not None):
        expr_ref = spot if spot is not None else niche
        v = expr_ref.shape[1]
        # the (B, V) dropout mask comes from its own generator so its cost does not scale with the global batch
        # Independent masks for the spot and the niche view (like the independent flips of the two crops): with one
        # shared mask the gene spot<->niche term could pair the views by their common missing genes.
        gm = torch.Generator().manual_seed(drop_seed)
        frac = drop_frac[sl].to(expr_ref.device)[:, None]
        for key, x in ((BatchKey.spot_expr, spot), (BatchKey.niche_expr, niche)):
            u = torch.rand(n, v, generator=gm)[sl].to(expr_ref.device)  # drawn for both views, used or not
            if x is not None:
                out[key] = _renormalise(torch.where(u >= frac, x, torch.zeros_like(x))).to(x.dtype)
    return out
