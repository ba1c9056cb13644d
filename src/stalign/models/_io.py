"""Save and load :class:`~stalign.models.STAlign`: safetensors + JSON config + sha256; never unpickles."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

from ._config import STAlignConfig
from ._registry import REGISTRY, available_models

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stalign")
    except PackageNotFoundError:  # pragma: no cover
        return "0.0.0"


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _unique_state(model) -> dict:
    """The model's state dict with tensors shared between modules (a shared trunk) kept once, under the first name."""
    seen: set[tuple] = set()
    out = {}
    for k, v in model.state_dict().items():
        if v.numel():
            key = (v.data_ptr(), v.dtype, tuple(v.shape), v.stride())
            if key in seen:
                continue
            seen.add(key)
        out[k] = v.contiguous()
    return out


def save(model, path: str | os.PathLike) -> Path:
    """Save a model into directory ``path``: ``model.safetensors`` and ``config.json``.

    ``config.json`` holds the :class:`~stalign.models.STAlignConfig` (gene vocabulary included), the stalign
    version and the sha256 of the weights file.

    Parameters
    ----------
    model
        An :class:`~stalign.models.STAlign`.
    path
        Directory to write (created if needed; existing files of the same names are replaced).

    Returns
    -------
    The directory.
    """
    from safetensors.torch import save_file

    from ._model import STAlign

    if not isinstance(model, STAlign):
        msg = f"`model` must be an STAlign, got {type(model).__name__}."
        raise TypeError(msg)
    d = Path(path).expanduser()
    if d.exists() and not d.is_dir():
        msg = f"{str(d)!r} exists and is not a directory; pass a directory path to save the model into."
        raise FileExistsError(msg)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{WEIGHTS_NAME}.tmp"
    save_file(_unique_state(model), str(tmp), metadata={"format": "pt", "stalign_version": _version()})
    os.replace(tmp, d / WEIGHTS_NAME)
    digest = sha256_file(d / WEIGHTS_NAME)
    meta = {
        "format_version": FORMAT_VERSION,
        "architecture": "STAlign",
        "stalign_version": _version(),
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": digest,
        "config": model.config.to_dict(),
    }
    (d / CONFIG_NAME).write_text(json.dumps(meta, indent=1))
    logger.info("Saved STAlign to %s (sha256 %s)", d, digest)
    return d


def _read_meta(config_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        msg = f"Could not read {str(config_path)!r} ({e}); it must be the config.json written by stalign.models.save."
        raise ValueError(msg) from e
    if not isinstance(meta, dict) or "config" not in meta:
        msg = f"{str(config_path)!r} has no 'config' entry; it was not written by stalign.models.save."
        raise ValueError(msg)
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        msg = (
            f"{str(config_path)!r} uses format version {meta['format_version']}, newer than this stalign supports "
            f"({FORMAT_VERSION}); upgrade stalign."
        )
        raise ValueError(msg)
    return meta


def _resolve_path(path: Path) -> tuple[Path, Path]:
    """(weights file, config file) from a directory, a weights file or a config file."""
    if path.is_dir():
        config_path = path / CONFIG_NAME
        if not config_path.is_file():
            msg = f"No {CONFIG_NAME} in {str(path)!r}; pass a directory written by stalign.models.save."
            raise FileNotFoundError(msg)
        meta = _read_meta(config_path)
        return path / meta.get("weights_file", WEIGHTS_NAME), config_path
    if path.suffix == ".json":
        meta = _read_meta(path)
        return path.parent / meta.get("weights_file", WEIGHTS_NAME), path
    if path.suffix == ".safetensors":
        return path, path.parent / CONFIG_NAME
    msg = f"{str(path)!r} is neither a model directory, a config.json nor a .safetensors file."
    raise ValueError(msg)


def load(
    name_or_path: str | os.PathLike,
    *,
    device: str | None = None,
    sha256: str | None = None,
):
    """Load a model by registry name (see :func:`available_models`) or from a directory written by :func:`save`.

    The weights are read with safetensors (never unpickled) and their sha256 is checked against the value
    recorded in ``config.json``, the registry, and ``sha256`` if given.

    Parameters
    ----------
    name_or_path
        A registered name (``"stalign-base"``), a directory, its ``config.json`` or its ``model.safetensors``.
    device
        Where to put the model (``None``: CUDA if available, else CPU).
    sha256
        Expected sha256 of the weights file (optional extra check).

    Returns
    -------
    :class:`~stalign.models.STAlign` in eval mode.
    """
    name = str(name_or_path)
    expected = sha256
    source = name
    if name in REGISTRY:
        entry = REGISTRY[name]
        root = resources.files("stalign.models")
        weights_res, config_res = root.joinpath(entry["file"]), root.joinpath(entry["config"])
        if entry["sha256"] is None or not weights_res.is_file() or not config_res.is_file():
            msg = (
                f"The weights of {name!r} are not bundled with this version of stalign yet. Pretrain a model with "
                "`stalign.train.pretrain(...)` and load its output directory with `stalign.models.load(path)`."
            )
            raise FileNotFoundError(msg)
        if expected is not None and expected != entry["sha256"]:
            msg = f"sha256={expected!r} differs from the registry's {entry['sha256']!r} for {name!r}."
            raise ValueError(msg)
        expected = entry["sha256"]
        with resources.as_file(weights_res) as wp, resources.as_file(config_res) as cp:
            weights_path, config_path = Path(wp), Path(cp)
            return _load_files(weights_path, config_path, expected, device, source)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        msg = f"{name!r} is neither a registered model ({available_models()}) nor an existing path."
        raise FileNotFoundError(msg)
    weights_path, config_path = _resolve_path(path)
    return _load_files(weights_path, config_path, expected, device, source)


def _load_files(weights_path: Path, config_path: Path, expected: str | None, device, source: str):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .._utils import resolve_device
    from ._model import STAlign

    for p, what in ((weights_path, "weights"), (config_path, "config")):
        if not p.is_file():
            msg = f"The {what} file {str(p)!r} is missing; save the model with stalign.models.save(model, path)."
            raise FileNotFoundError(msg)
    meta = _read_meta(config_path)
    digest = sha256_file(weights_path)
    for label, want in (("config.json", meta.get("weights_sha256")), ("the expected value", expected)):
        if want is not None and digest != want:
            msg = (
                f"sha256 of {str(weights_path)!r} is {digest}, but {label} records {want}: the weights file is "
                "truncated, corrupted or was modified. Re-save or re-download the model."
            )
            raise ValueError(msg)
    try:
        config = STAlignConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        msg = f"The config in {str(config_path)!r} is invalid: {e}"
        raise ValueError(msg) from e
    model = STAlign(config, load_encoder_weights=False)
    try:
        state = load_file(str(weights_path))
    except SafetensorError as e:
        msg = f"{str(weights_path)!r} is not a readable safetensors file ({e}); it is truncated or corrupted."
        raise ValueError(msg) from e
    expected_state = _unique_state(model)
    missing = sorted(set(expected_state) - set(state))
    unexpected = sorted(set(state) - set(expected_state))
    if missing or unexpected:
        msg = (
            f"The weights in {str(weights_path)!r} do not match the config in {str(config_path)!r}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]} (of {len(missing)}/"
            f"{len(unexpected)}). Save config and weights together with stalign.models.save."
        )
        raise ValueError(msg)
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(expected_state[k].shape)]
    if bad:
        msg = (
            f"The weights in {str(weights_path)!r} do not fit the config in {str(config_path)!r}: shapes differ for "
            f"{bad[:5]} (e.g. {tuple(state[bad[0]].shape)} vs {tuple(expected_state[bad[0]].shape)})."
        )
        raise ValueError(msg)
    model.load_state_dict(state, strict=False)
    if meta.get("stalign_version") not in (None, _version()):
        logger.info("Model %s was saved with stalign %s (running %s)", source, meta["stalign_version"], _version())
    model.weights_sha256 = digest
    model.source = source
    return model.to(resolve_device(device)).eval()
