"""Image encoders: any timm trunk → ``n_tokens`` tokens of width ``token_dim``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


def create_trunk(name: str, *, img_size: int, **kwargs: Any) -> nn.Module:
    """Create a timm trunk without a classifier (``pretrained=False``, ``num_classes=0``); never downloads.

    ``img_size`` is passed to architectures that take it (ViTs, Swin, ...) and ignored by the others (CNNs).
    """
    import timm

    if not timm.is_model(name):
        msg = f"Unknown timm architecture {name!r}; see `timm.list_models()` for valid names (e.g. 'resnet50')."
        raise ValueError(msg)
    kwargs = dict(kwargs)
    kwargs.pop("pretrained", None)
    kwargs.pop("num_classes", None)
    if "img_size" not in kwargs:
        try:
            return timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size, **kwargs)
        except TypeError as e:
            if "img_size" not in str(e):
                raise
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)


def load_trunk_weights(trunk: nn.Module, path: str | os.PathLike, *, allow_torch_load: bool = False) -> None:
    """Load user-supplied trunk weights from a local file (safetensors, or ``torch.load(weights_only=True)``).

    Classifier-head keys in the file are ignored; a file that matches none of the trunk's keys is an error, and so
    is a file that cannot be read (truncated, corrupted, or a pickle holding more than tensors): a ``ValueError``
    that names the file.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        msg = f"Encoder weights file {str(p)!r} does not exist; pass the path of a local .safetensors file."
        raise FileNotFoundError(msg)
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(p))
        except (SafetensorError, OSError) as e:
            msg = (
                f"Encoder weights file {str(p)!r} is not a readable safetensors file ({e}); it is truncated or "
                "corrupted. Re-download or re-export it (safetensors.torch.save_file of the trunk's state_dict())."
            )
            raise ValueError(msg) from e
    else:
        if not allow_torch_load:
            msg = (
                f"{p.name!r} is not a .safetensors file. Convert it to safetensors, or set "
                "`allow_torch_load=True` in the config to read it with torch.load(weights_only=True)."
            )
            raise ValueError(msg)
        import pickle

        try:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as e:
            msg = (
                f"Encoder weights file {str(p)!r} could not be read with torch.load(weights_only=True) "
                f"({type(e).__name__}): it is corrupted or holds objects other than tensors (it was not unpickled). "
                "Convert trusted weights to .safetensors."
            )
            raise ValueError(msg) from e
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            msg = f"{p.name!r} does not hold a state dict (name → tensor); save the trunk's `state_dict()`."
            raise ValueError(msg)
    own = trunk.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    matched = {k: v for k, v in state.items() if k in own}
    if not matched:
        msg = (
            f"None of the {len(state)} tensors in {p.name!r} match the trunk's parameter names (e.g. "
            f"{next(iter(own), '?')!r}); check that the architecture name matches the weights."
        )
        raise ValueError(msg)
    bad = [k for k, v in matched.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        msg = f"Shape mismatch for {bad[:5]} in {p.name!r}; the weights belong to another architecture or size."
        raise ValueError(msg)
    missing = sorted(set(own) - set(matched))
    if missing:
        logger.warning("%d trunk tensors not found in %s (kept at init), e.g. %s", len(missing), p.name, missing[:3])
    trunk.load_state_dict(matched, strict=False)
    logger.info("Loaded %d trunk tensors from %s", len(matched), p)


class ImageEncoder(nn.Module):
    """A timm trunk followed by a linear map from pooled features to ``(n_tokens, token_dim)`` tokens.

    Parameters
    ----------
    trunk
        A module mapping ``(B, 3, H, W)`` normalised images to ``(B, F)`` features (a timm model with
        ``num_classes=0``). It may be shared between two encoders.
    img_size
        Crop side the trunk expects (used to infer ``F``).
    n_tokens, token_dim
        Token count and width.
    freeze
        Keep the trunk fixed: no gradients, normalisation layers in eval mode.
    """

    def __init__(self, trunk: nn.Module, *, img_size: int, n_tokens: int, token_dim: int, freeze: bool = False):
        super().__init__()
        self.trunk = trunk
        self.n_tokens = n_tokens
        self.token_dim = token_dim
        self.freeze = freeze
        was_training = trunk.training
        trunk.eval()
        with torch.no_grad():
            feat = trunk(torch.zeros(1, 3, img_size, img_size))
        trunk.train(was_training)
        if feat.ndim != 2:
            msg = f"The image trunk returns shape {tuple(feat.shape)}; it must return pooled (B, F) features."
            raise ValueError(msg)
        self.feat_dim = int(feat.shape[1])
        self.to_tokens = nn.Linear(self.feat_dim, n_tokens * token_dim)
        self.norm = nn.LayerNorm(token_dim)
        if freeze:
            for p in self.trunk.parameters():
                p.requires_grad_(False)
            self.trunk.eval()

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        if self.freeze:
            self.trunk.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``(B, 3, H, W)`` → tokens ``(B, n_tokens, token_dim)``."""
        if self.freeze:
            with torch.no_grad():
                feat = self.trunk(x)
        else:
            feat = self.trunk(x)
        return self.from_features(feat)

    def from_features(self, feat: torch.Tensor) -> torch.Tensor:
        """Trunk features ``(B, F)`` → tokens ``(B, n_tokens, token_dim)`` (the trainable part of the encoder)."""
        if feat.ndim != 2 or feat.shape[1] != self.feat_dim:
            msg = f"Trunk features must have shape (B, {self.feat_dim}), got {tuple(feat.shape)}."
            raise ValueError(msg)
        tok = self.to_tokens(feat).view(feat.shape[0], self.n_tokens, self.token_dim)
        return self.norm(tok)
