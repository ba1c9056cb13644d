"""`STAlign`: spot/niche image and gene encoders, ABFN fusion, projection heads and contrastive losses."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .._batch import BatchKey
from ._backbones import build_trunk
from ._config import STAlignConfig
from ._losses import (
    EMBEDDING_KEYS,
    PREDICTION_KEYS,
    VIEW_KEYS,
    LossOutput,
    contrastive_loss,
    gather_negatives,
    predictive_loss,
)
from .nn import ABFN, GeneEncoder, ImageEncoder, PredictionHead, ProjectionHead

logger = logging.getLogger(__name__)

#: Upper bound of ``1 / temperature`` when it is learned (CLIP's clamp).
MAX_LOGIT_SCALE = 100.0


def _apply_rows(fn: Callable[..., torch.Tensor], mask: torch.Tensor | None, *xs: torch.Tensor) -> torch.Tensor:
    """``fn(*xs)`` on the rows where ``mask`` holds (one batched call); other rows of the output are zero.

    A mask on the host (as :meth:`STAlign.embed` passes it) is read without waiting for the device.
    """
    if mask is None or bool(mask.all()):
        return fn(*xs)
    idx = torch.nonzero(mask).squeeze(1).to(xs[0].device, non_blocking=True)
    out_rows = fn(*(x[idx] for x in xs))
    out = out_rows.new_zeros((xs[0].shape[0], *out_rows.shape[1:]))
    return out.index_copy(0, idx, out_rows)


class STAlign(nn.Module):
    """ST-Align: multi-scale image–gene model with spot/niche encoders, ABFN fusion and one shared space.

    Parameters
    ----------
    config
        All sizes (see :class:`~stalign.models.STAlignConfig`, presets ``base`` and ``large``).
    load_encoder_weights
        Read ``config.spot_encoder_weights`` / ``niche_encoder_weights`` if set (``False`` when the whole
        model's weights are loaded afterwards, as :func:`~stalign.models.load` does).

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.stutility_mob("MOB1")
    >>> genes = sta.pp.build_vocabulary([sdata])
    >>> model = sta.models.STAlign(
    ...     sta.models.STAlignConfig.base(genes, spot_size=32, niche_size=32)
    ... )
    >>> ds = sta.pp.SpotDataset(
    ...     [sdata], genes=model.genes, spot_px=32, niche_px=32, batch_size=32
    ... )
    >>> batch = ds[0]
    >>> emb = model.embed(batch)
    >>> emb["joint"].shape
    torch.Size([32, 128])
    >>> out = model.loss(batch)
    >>> out.loss.backward()
    """

    def __init__(self, config: STAlignConfig, *, load_encoder_weights: bool = True):
        super().__init__()
        if not isinstance(config, STAlignConfig):
            msg = f"`config` must be an STAlignConfig, got {type(config).__name__}; use STAlignConfig.base(genes)."
            raise TypeError(msg)
        self.config = cfg = config
        T, W = cfg.n_tokens, cfg.token_dim

        def trunk(which: str) -> nn.Module:
            return build_trunk(
                getattr(cfg, f"{which}_encoder"),
                img_size=getattr(cfg, f"{which}_size"),
                kwargs=getattr(cfg, f"{which}_encoder_kwargs"),
                weights=getattr(cfg, f"{which}_encoder_weights") or None,
                load_weights=load_encoder_weights,
                allow_torch_load=cfg.allow_torch_load,
                which=which,
            ).to(memory_format=torch.channels_last)

        spot_trunk = trunk("spot")
        if cfg.share_image_encoder:
            niche_trunk, niche_freeze = spot_trunk, cfg.freeze_spot_encoder
        else:
            niche_trunk, niche_freeze = trunk("niche"), cfg.freeze_niche_encoder
        self.spot_image_encoder = ImageEncoder(
            spot_trunk, img_size=cfg.spot_size, n_tokens=T, token_dim=W, freeze=cfg.freeze_spot_encoder
        )
        self.niche_image_encoder = ImageEncoder(
            niche_trunk, img_size=cfg.niche_size, n_tokens=T, token_dim=W, freeze=niche_freeze
        )

        spot_emb = nn.Embedding(cfg.n_genes, cfg.gene_dim)
        niche_emb = spot_emb if cfg.share_gene_embedding else nn.Embedding(cfg.n_genes, cfg.gene_dim)
        kw = {"n_tokens": T, "token_dim": W, "n_heads": cfg.n_heads, "ffn_mult": cfg.ffn_mult, "dropout": cfg.dropout}
        kw["pool_norm"] = cfg.gene_pool_norm
        self.spot_gene_encoder = GeneEncoder(spot_emb, n_layers=cfg.spot_gene_layers, **kw)
        self.niche_gene_encoder = GeneEncoder(niche_emb, n_layers=cfg.niche_gene_layers, **kw)

        fkw = {"n_heads": cfg.n_heads, "ffn_mult": cfg.ffn_mult, "dropout": cfg.dropout}
        self.spot_fusion = ABFN(W, **fkw)
        self.niche_fusion = ABFN(W, **fkw)

        D = cfg.embed_dim
        self.heads = nn.ModuleDict(
            {
                "image": ProjectionHead(W, D),
                "gene": ProjectionHead(W, D),
                "joint": ProjectionHead(2 * W, D),
                "niche_image": ProjectionHead(W, D),
                "niche_gene": ProjectionHead(W, D),
                "niche_joint": ProjectionHead(2 * W, D),
            }
        )

        if cfg.predict_genes:
            # the predictive objective: each image tower also predicts the expression its crop covers
            P = len(cfg.predict_genes)
            self.predict_heads = nn.ModuleDict(
                {k: PredictionHead(T * W, cfg.predict_hidden, P) for k in ("image", "niche_image")}
            )
            pos = {g: i for i, g in enumerate(cfg.genes)}
            index = torch.tensor([pos[g] for g in cfg.predict_genes], dtype=torch.long)
            self.register_buffer("predict_index", index, persistent=False)
        else:
            self.predict_heads = None

        log_scale = torch.tensor(math.log(1.0 / cfg.temperature))
        if cfg.learn_temperature:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)
        self.register_buffer("image_mean", torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        c = self.config
        return (
            f"STAlign(spot={c.spot_encoder}@{c.spot_size}px, niche={c.niche_encoder}@{c.niche_size}px, "
            f"tokens={c.n_tokens}x{c.token_dim}, genes={c.n_genes}, embed_dim={c.embed_dim}, params={n / 1e6:.2f}M)"
        )

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.parameters()).device

    @property
    def genes(self) -> list[str]:
        """The gene vocabulary (columns of the expression inputs)."""
        return self.config.genes

    @property
    def logit_scale(self) -> torch.Tensor:
        """``1 / temperature`` (clamped to at most 100 when learned)."""
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def _prep_image(self, x: torch.Tensor, size: int, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            msg = f"`{name}` must be a (B, 3, H, W) tensor (uint8 0–255, or float in [0, 1]), got {shape}."
            raise ValueError(msg)
        x = x.to(self.image_mean.device, non_blocking=True)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        # channels-last is 2-3x faster for CNNs on CPU (oneDNN) and suits tensor cores on CUDA
        return ((x - self.image_mean) / self.image_std).contiguous(memory_format=torch.channels_last)

    def _mask(self, mask: torch.Tensor | None, n: int) -> torch.Tensor:
        """``mask`` as a bool ``(n,)`` tensor, left where it is (a host mask is read without a device sync)."""
        if mask is None:
            return torch.ones(n, dtype=torch.bool)
        mask = torch.as_tensor(mask).bool()
        if mask.shape != (n,):
            msg = f"Mask of shape {tuple(mask.shape)} does not match the batch size {n}."
            raise ValueError(msg)
        return mask

    # ------------------------------------------------------------------ encoders
    def encode_image(
        self,
        spot_image: torch.Tensor | None,
        niche_image: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        return_tokens: bool = False,
        features: Mapping[str, torch.Tensor | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Embed spot and/or niche crops (H&E only; no expression needed).

        Parameters
        ----------
        spot_image
            ``(B, 3, S, S)`` spot crops, uint8 or float in ``[0, 1]`` (resampled to ``config.spot_size``).
        niche_image
            ``(B, 3, N, N)`` niche crops centred on the same spots.
        mask
            Bool ``(B,)``: rows that hold an image; other rows are not encoded and are zero in the output.
        return_tokens
            Also return the ``(B, T, W)`` tokens as ``"image_tokens"`` / ``"niche_image_tokens"``.
        features
            Precomputed ``(B, F)`` outputs of a frozen trunk, keyed ``"image"`` / ``"niche_image"`` (what
            :meth:`trunk_features` returns; the training loop caches them): those crops skip the trunk.

        Returns
        -------
        ``{"image": (B, D), "niche_image": (B, D)}`` (L2-normalised) for the inputs given; with prediction heads
        (``config.predict_genes``) also ``"image_pred"`` / ``"niche_image_pred"``, ``(B, P)`` predicted expression of
        the predicted genes, standardised within a section.
        """
        features = features or {}

        def prep(key, x, size, name, enc):
            feat = features.get(key)
            if feat is not None:  # a frozen trunk's cached features: only the trainable part runs
                return key, feat.to(self.image_mean.device, non_blocking=True).float(), enc.from_features
            return key, None if x is None else self._prep_image(x, size, name), enc

        inputs = (
            prep("image", spot_image, self.config.spot_size, "spot_image", self.spot_image_encoder),
            prep("niche_image", niche_image, self.config.niche_size, "niche_image", self.niche_image_encoder),
        )
        return self._encode(
            inputs, mask=mask, return_tokens=return_tokens, need="encode_image needs `spot_image` and/or `niche_image`."
        )

    @torch.no_grad()
    def trunk_features(self, images: torch.Tensor, *, level: Literal["spot", "niche"] = "spot") -> torch.Tensor:
        """``(B, F)`` features of a crop batch from the spot or niche trunk, prepared as :meth:`encode_image` does.

        For a frozen trunk these do not change in training; the training loop computes them once per crop.
        """
        enc, size = (
            (self.spot_image_encoder, self.config.spot_size)
            if level == "spot"
            else (self.niche_image_encoder, self.config.niche_size)
        )
        return enc.trunk(self._prep_image(images, size, f"{level}_image")).float()

    def encode_gene(
        self,
        spot_expr: torch.Tensor | None,
        niche_expr: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        return_tokens: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Embed spot and/or niche expression (no image needed); also works on synthetic marker prompts.

        Parameters
        ----------
        spot_expr
            ``(B, V)`` float expression on ``config.genes`` (``log1p`` of normalised counts; 0 = not measured).
            A marker prompt is e.g. ``log1p(100)`` on the marker genes and 0 elsewhere.
        niche_expr
            ``(B, V)`` niche (neighbourhood-mean) expression, same scale.
        mask
            Bool ``(B,)``: rows that hold expression; other rows are zero in the output.
        return_tokens
            Also return the tokens as ``"gene_tokens"`` / ``"niche_gene_tokens"``.

        Returns
        -------
        ``{"gene": (B, D), "niche_gene": (B, D)}`` (L2-normalised) for the inputs given.
        """

        def prep(x):
            return None if x is None else torch.as_tensor(x).to(self.image_mean.device, non_blocking=True).float()

        inputs = (
            ("gene", prep(spot_expr), self.spot_gene_encoder),
            ("niche_gene", prep(niche_expr), self.niche_gene_encoder),
        )
        return self._encode(
            inputs, mask=mask, return_tokens=return_tokens, need="encode_gene needs `spot_expr` and/or `niche_expr`."
        )

    def _encode(self, inputs, *, mask, return_tokens: bool, need: str) -> dict[str, torch.Tensor]:
        """``{key: head(encoder(x))}`` (and the tokens) for each ``(key, x, encoder)`` whose input is given."""
        out: dict[str, torch.Tensor] = {}
        for key, x, enc in inputs:
            if x is None:
                continue
            m = self._mask(mask, x.shape[0])
            tok = _apply_rows(enc, m, x)
            out[key] = _apply_rows(self.heads[key], m, tok)
            if self.predict_heads is not None and key in self.predict_heads:
                out[f"{key}_pred"] = _apply_rows(self.predict_heads[key], m, tok)
            if return_tokens:
                out[f"{key}_tokens"] = tok
        if not out:
            raise ValueError(need)
        return out

    def fuse(
        self, image_tokens: torch.Tensor, gene_tokens: torch.Tensor, *, level: Literal["spot", "niche"] = "spot"
    ) -> torch.Tensor:
        """ABFN fusion of ``(B, T, W)`` image and gene tokens → L2-normalised ``(B, D)`` (``f_spot``/``f_niche``).

        Get the tokens from :meth:`encode_image` / :meth:`encode_gene` with ``return_tokens=True``.
        """
        if level == "spot":
            return self.heads["joint"](self.spot_fusion(image_tokens, gene_tokens))
        if level == "niche":
            return self.heads["niche_joint"](self.niche_fusion(image_tokens, gene_tokens))
        msg = f"`level` must be 'spot' or 'niche', got {level!r}."
        raise ValueError(msg)

    def embed(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Embed a batch (a dict keyed by :class:`~stalign._batch.BatchKey`).

        Returns
        -------
        L2-normalised ``(B, D)`` tensors for what the inputs allow: ``"image"``, ``"niche_image"`` (from
        crops), ``"gene"``, ``"niche_gene"`` (from expression), ``"joint"``, ``"niche_joint"`` (the ABFN outputs
        ``f_spot`` and ``f_niche``, where both modalities exist),
        ``"image_pred"`` / ``"niche_image_pred"`` with prediction heads (see :meth:`encode_image`),
        plus the bool ``(B,)`` masks ``"has_image"`` and ``"has_expr"`` (on the model's device). Rows lacking a
        modality are zero in the tensors that need it (use the masks); the joint ones need both.

        Masks given on the host (CPU) while the model is on a GPU are read there: the forward pass then never waits
        for the GPU, which is how :func:`~stalign.tl.embed` calls it.
        """
        K = BatchKey
        n = None
        for k in (K.spot_image, K.niche_image, K.spot_expr, K.niche_expr):
            if batch.get(k) is not None:
                n = batch[k].shape[0]
                break
        if n is None:
            msg = f"The batch has none of {K.spot_image!r}, {K.niche_image!r}, {K.spot_expr!r}, {K.niche_expr!r}."
            raise KeyError(msg)
        has_image_input = batch.get(K.spot_image) is not None or batch.get(K.niche_image) is not None
        has_expr_input = batch.get(K.spot_expr) is not None or batch.get(K.niche_expr) is not None
        no = torch.zeros(n, dtype=torch.bool)
        has_image = self._mask(batch.get(K.has_image), n) if has_image_input else no
        has_expr = self._mask(batch.get(K.has_expr), n) if has_expr_input else no
        out: dict[str, torch.Tensor] = {}
        if bool(has_image.any()):
            feats = {"image": batch.get(K.spot_features), "niche_image": batch.get(K.niche_features)}
            out.update(
                self.encode_image(
                    batch.get(K.spot_image),
                    batch.get(K.niche_image),
                    mask=has_image,
                    return_tokens=True,
                    features=feats,
                )
            )
        if bool(has_expr.any()):
            out.update(
                self.encode_gene(batch.get(K.spot_expr), batch.get(K.niche_expr), mask=has_expr, return_tokens=True)
            )
        view = batch.get(K.spot_image_view)
        if view is not None and bool(has_image.any()):  # the self-supervised term's second view of the spot crop
            x = self._prep_image(view, self.config.spot_size, "spot_image_view")
            enc = self._encode((("image", x, self.spot_image_encoder),), mask=has_image, return_tokens=False, need="")
            out["image_view"] = enc["image"]
        both = has_image & has_expr.to(has_image.device)
        if bool(both.any()):
            for key, ti, tg, level in (
                ("joint", "image_tokens", "gene_tokens", "spot"),
                ("niche_joint", "niche_image_tokens", "niche_gene_tokens", "niche"),
            ):
                if ti in out and tg in out:
                    out[key] = _apply_rows(
                        lambda a, g, level=level: self.fuse(a, g, level=level), both, out[ti], out[tg]
                    )
        emb = {k: out[k] for k in (*EMBEDDING_KEYS, *PREDICTION_KEYS, *VIEW_KEYS) if k in out}
        dev = self.image_mean.device
        emb["has_image"] = has_image.to(dev, non_blocking=True)
        emb["has_expr"] = has_expr.to(dev, non_blocking=True)
        return emb

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Same as :meth:`embed`."""
        return self.embed(batch)

    @property
    def adapts_norm_statistics(self) -> bool:
        """Whether embedding a section normalises with that section's own statistics (:meth:`section_statistics`).

        True when ``config.norm_statistics == "section"`` and the model holds BatchNorm layers outside frozen trunks.
        """
        return self.config.norm_statistics == "section" and bool(self._adaptable_norms())

    def _adaptable_norms(self) -> list[nn.Module]:
        """BatchNorm layers of the trainable encoders (a frozen trunk keeps its own statistics)."""
        frozen = [enc.trunk for enc in (self.spot_image_encoder, self.niche_image_encoder) if enc.freeze]
        skip = {id(m) for t in frozen for m in t.modules()}
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in skip]

    @contextlib.contextmanager
    def section_statistics(self, batches: Iterable[Mapping[str, torch.Tensor]]) -> Iterator[STAlign]:
        """Within the block, BatchNorm layers normalise with the statistics of ``batches`` (spots of one section).

        Each training batch comes from one section and is normalised by its own statistics; embedding a section with
        statistics of its own spots (AdaBN, Li et al. 2016) makes inference match. The running statistics, the
        momentum and the train/eval state of every layer are restored on exit, so a shared model is not modified.

        Parameters
        ----------
        batches
            Batch dicts (:class:`~stalign._batch.BatchKey`) of spots of the section, e.g. a random sample of them.

        Yields
        ------
        The model, in eval mode, normalising with the section's statistics.
        """
        norms = self._adaptable_norms()
        saved = [(m, {k: v.clone() for k, v in m.state_dict().items()}, m.momentum) for m in norms]
        modes = [(mod, mod.training) for mod in self.modules()]  # restored exactly, frozen trunks included
        try:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over all the batches given
            self.eval()
            for m in norms:
                m.train()
            ids = {id(m) for m in norms}
            image = any(id(m) in ids for e in (self.spot_image_encoder, self.niche_image_encoder) for m in e.modules())
            gene = any(id(m) in ids for e in (self.spot_gene_encoder, self.niche_gene_encoder) for m in e.modules())
            K = BatchKey
            with torch.no_grad():
                for batch in batches:  # only the encoders that hold BatchNorm layers run
                    if image and bool(batch[K.has_image].any()):
                        self.encode_image(batch[K.spot_image], batch[K.niche_image], mask=batch[K.has_image])
                    if gene and bool(batch[K.has_expr].any()):
                        self.encode_gene(batch[K.spot_expr], batch[K.niche_expr], mask=batch[K.has_expr])
            for m in norms:
                m.eval()
            yield self
        finally:
            for m, state, momentum in saved:
                m.load_state_dict(state)
                m.momentum = momentum
            for mod, training in modes:
                mod.training = training

    # ------------------------------------------------------------------ losses
    def loss(
        self,
        batch: Mapping[str, torch.Tensor],
        *,
        negatives: torch.Tensor | None = None,
        negative_batch: Mapping[str, torch.Tensor] | None = None,
    ) -> LossOutput:
        """Weighted contrastive loss of a batch (``L_spot``, ``L_niche``, ``L_NS`` and unimodal spot↔niche terms).

        Parameters
        ----------
        batch
            Batch dict (:class:`~stalign._batch.BatchKey`). Every other row is an in-batch negative.
        negatives
            Optional ``(B, K)`` integer indices of hard negatives per anchor (``-1`` = none): rows of
            ``batch``, or of ``negative_batch`` when given (encoded in one batched forward).
        negative_batch
            Extra batch that ``negatives`` indexes into.

        Returns
        -------
        :class:`~stalign.models.LossOutput` with the weighted ``loss`` and unweighted ``components``.
        """
        emb = self.embed(batch)
        neg = None
        if negatives is not None:
            if negative_batch is None:
                neg = gather_negatives(emb, negatives, exclude_self=True)
            else:
                neg = gather_negatives(self.embed(negative_batch), negatives)
        elif negative_batch is not None:
            msg = "`negative_batch` was given without `negatives` (the (B, K) indices into it)."
            raise ValueError(msg)
        return self.loss_from_embeddings(emb, negatives=neg, batch=batch)

    def loss_from_embeddings(
        self,
        emb: Mapping[str, torch.Tensor],
        gathered: Mapping[str, torch.Tensor] | None = None,
        *,
        offset: int = 0,
        negatives: Mapping[str, torch.Tensor] | None = None,
        batch: Mapping[str, torch.Tensor] | None = None,
    ) -> LossOutput:
        """Loss from precomputed embeddings (for DDP: candidates gathered across ranks).

        Parameters
        ----------
        emb
            Local output of :meth:`embed` (anchors).
        gathered
            The same keys concatenated over ranks (e.g. with ``torch.distributed.nn.all_gather`` so gradients
            flow); local rows start at ``offset``. ``None``: in-batch negatives only.
        offset
            Index of the first local row in ``gathered``.
        negatives
            Hard negatives from :func:`~stalign.models.gather_negatives` (``(B, K, D)`` + ``(B, K)`` masks).
        batch
            The local batch, whose expression is the target of the predictive term (``config.w_predict > 0``);
            ``None`` leaves that term out.
        """
        out = contrastive_loss(
            dict(emb),
            None if gathered is None else dict(gathered),
            weights=self.config.loss_weights,
            logit_scale=self.logit_scale,
            offset=offset,
            negatives=None if negatives is None else dict(negatives),
            soft_targets=self.config.soft_targets,
        )
        w = float(self.config.w_predict)
        if w > 0 and batch is not None and self.predict_heads is not None:
            value, n = predictive_loss(emb, batch, self.predict_index)
            if n:
                out.components["predict"] = value
                out.counts["predict"] = n
                out.loss = out.loss + w * value
        return out

    # ------------------------------------------------------------------ save
    def save(self, path: str | os.PathLike) -> os.PathLike:
        """Save weights (safetensors), config and sha256 into directory ``path`` (see :func:`~stalign.models.save`)."""
        from ._io import save

        return save(self, path)
