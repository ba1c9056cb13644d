"""Save and load :class:`~stalign.models.STAlign`: safetensors + JSON config + sha256; never unpickles.

Loading is safe by default: only a safetensors weights file whose sha256 matches the value recorded in its
``config.json`` (and in the registry, and ``sha256=`` when given) is read. Anything else is refused with an
explanation, unless the caller opts in: ``allow_torch_load=True`` reads a ``torch.save`` file with
``torch.load(weights_only=True)`` (which refuses arbitrary pickled objects), and ``trust_unverified=True`` accepts a
weights file whose sha256 is recorded nowhere. A sha256 that does not match is always refused.

One module (~520 lines, over the ~450 guideline): saving, loading, the registry lookup, the verification and the
in-process cache all read and write the same file format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

from .._utils import package_version
from ._config import STAlignConfig
from ._registry import REGISTRY, available_models

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 2
#: Renamed state-dict prefixes per format version: version 1 named the ABFN heads ``fused`` and ``niche``.
_RENAMED = {1: {"heads.fused.": "heads.joint.", "heads.niche.": "heads.niche_joint."}}
#: Weights suffixes that ``allow_torch_load=True`` reads with ``torch.load(weights_only=True)``.
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


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

    Examples
    --------
    >>> import stalign as sta
    >>> model = sta.models.load("stalign-base")
    >>> path = sta.models.save(model, "my_model")
    >>> sorted(p.name for p in path.iterdir())
    ['config.json', 'model.safetensors']
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
    # Both files are written under temporary names and moved into place (weights first): an interrupted save
    # leaves the previous model intact, or at worst new weights next to the old config.json, which load()
    # refuses because the recorded sha256 differs. Never a half-written file under the final name.
    tmp_w = d / f".{WEIGHTS_NAME}.tmp-{os.getpid()}"
    tmp_c = d / f".{CONFIG_NAME}.tmp-{os.getpid()}"
    try:
        save_file(_unique_state(model), str(tmp_w), metadata={"format": "pt", "stalign_version": package_version()})
        digest = sha256_file(tmp_w)
        meta = {
            "format_version": FORMAT_VERSION,
            "architecture": "STAlign",
            "stalign_version": package_version(),
            "weights_file": WEIGHTS_NAME,
            "weights_sha256": digest,
            "config": model.config.to_dict(),
        }
        tmp_c.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_w, d / WEIGHTS_NAME)
        os.replace(tmp_c, d / CONFIG_NAME)
    finally:
        for tmp in (tmp_w, tmp_c):
            tmp.unlink(missing_ok=True)
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
    if int(meta.get("format_version", 1)) > FORMAT_VERSION:
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
    if path.suffix == ".safetensors" or path.suffix in TORCH_SUFFIXES:
        return path, path.parent / CONFIG_NAME
    msg = (
        f"{str(path)!r} is neither a model directory, a config.json nor a .safetensors file; pass the directory "
        "written by stalign.models.save."
    )
    raise ValueError(msg)


def _is_safetensors(path: Path) -> bool:
    """Whether ``path`` starts like a safetensors file: an 8-byte header length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return False
        n = int.from_bytes(head, "little")
        if n <= 0 or n > 100_000_000:
            return False
        first = f.read(1)
    return first == b"{"


def _tensor_stamp(model) -> tuple:
    """Storage and in-place version counter of every tensor: changes if anyone modifies or moves the weights."""
    return tuple((t.data_ptr(), getattr(t, "_version", 0)) for t in model.state_dict(keep_vars=True).values())


def weights_fingerprint(model) -> str:
    """sha256 of a model's weights as they are in memory (names, dtypes, shapes and bytes of every tensor).

    It identifies the weights an embedding was computed with, also for a model trained in memory and never saved
    (its file's sha256, if any, no longer describes it). Computed once per state of the weights: a model whose
    tensors change (an optimiser step, ``.to()``) gets a new fingerprint.

    Parameters
    ----------
    model
        An :class:`~stalign.models.STAlign`.

    Returns
    -------
    64-character hex digest.

    Examples
    --------
    >>> import stalign as sta
    >>> model = sta.models.load("stalign-base")
    >>> fp = sta.models.weights_fingerprint(model)
    >>> len(fp), fp == sta.models.weights_fingerprint(sta.models.load("stalign-base"))
    (64, True)
    """
    import torch

    stamp = _tensor_stamp(model)
    cached = getattr(model, "_stalign_fingerprint", None)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    h = hashlib.sha256()
    for name, t in sorted(_unique_state(model).items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)};".encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest = h.hexdigest()
    model._stalign_fingerprint = (stamp, digest)
    return digest


#: Models loaded with ``cache=True`` in this process: key (files, their stat, registry sha256) -> (model, stamp).
_CACHE: OrderedDict[tuple, tuple[Any, tuple]] = OrderedDict()
#: Most models kept in the cache (least recently used dropped first).
CACHE_SIZE = 4


def _file_stamp(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _cache_key(name_or_path: Any, device: Any) -> tuple | None:
    """Key of a model given by name or path: its files, their stat and the registry sha256 (``None``: don't cache).

    A file that is replaced or rewritten changes its stamp, so it is loaded (and its sha256 verified) again.
    """
    name = str(name_or_path)
    try:
        if name in REGISTRY:
            entry = REGISTRY[name]
            root = resources.files("stalign.models")
            weights, config = root.joinpath(entry["file"]), root.joinpath(entry["config"])
            if not (isinstance(weights, Path) and isinstance(config, Path)):
                return None  # e.g. a zipped install: no stable file to stamp
            return ("registry", name, entry["sha256"], _file_stamp(weights), _file_stamp(config), str(device))
        path = Path(name).expanduser()
        if not path.exists():
            return None
        weights, config = _resolve_path(path)
        return ("path", _file_stamp(weights), _file_stamp(config), str(device))
    except (OSError, ValueError):
        return None


def clear_cache() -> None:
    """Forget the models loaded with ``cache=True`` in this process (the next such load reads the files again).

    Returns
    -------
    ``None``.

    Examples
    --------
    >>> import stalign as sta
    >>> a = sta.models.load("stalign-base", cache=True)
    >>> sta.models.load("stalign-base", cache=True) is a  # verified once, then reused
    True
    >>> sta.models.clear_cache()
    >>> sta.models.load("stalign-base", cache=True) is a
    False
    """
    _CACHE.clear()


def load(
    name_or_path: str | os.PathLike,
    *,
    device: str | None = None,
    sha256: str | None = None,
    allow_torch_load: bool = False,
    trust_unverified: bool = False,
    cache: bool = False,
):
    """Load a model by registry name (see :func:`available_models`) or from a directory written by :func:`save`.

    The weights are read with safetensors (never unpickled) and their sha256 is checked against the value
    recorded in ``config.json``, the registry, and ``sha256`` if given. By default a weights file that is not
    safetensors, or whose sha256 is recorded nowhere, is refused; a sha256 that differs is always refused.

    Parameters
    ----------
    name_or_path
        A registered name (``"stalign-base"``), a directory, its ``config.json`` or its ``model.safetensors``.
    device
        Where to put the model (``None``: CUDA if available, else CPU).
    sha256
        Expected sha256 of the weights file (optional extra check; it also verifies a file whose ``config.json``
        records none).
    allow_torch_load
        Opt-in: read a weights file that is not safetensors (``.pt``, ``.bin``, ...: a ``torch.save`` state dict)
        with ``torch.load(weights_only=True)``, which loads tensors but refuses arbitrary pickled objects.
        Prefer converting such files with ``stalign.models.save``.
    trust_unverified
        Opt-in: accept a weights file whose sha256 is recorded neither in ``config.json`` nor given as ``sha256``.
    cache
        Reuse the model this process already loaded from the same, unchanged files onto the same device, as long as
        its weights were not modified (what the :mod:`stalign.tl` functions do, saving ~1 s of building and hashing
        per call). The returned module is then shared: don't train it; load without ``cache`` to get your own copy.

    Returns
    -------
    :class:`~stalign.models.STAlign` in eval mode.

    Raises
    ------
    ValueError
        The weights are not safetensors (without ``allow_torch_load``), carry no recorded sha256 (without
        ``trust_unverified``), do not match a recorded sha256, cannot be parsed, or do not fit the config.
    FileNotFoundError
        The name is not registered and the path does not exist, or a file is missing.

    Examples
    --------
    >>> import stalign as sta
    >>> model = sta.models.load("stalign-base")  # bundled; its sha256 is checked
    >>> # embedding width; a whole-transcriptome vocabulary
    >>> model.config.embed_dim, len(model.genes) > 10_000
    (128, True)
    >>> path = sta.models.save(model, "my_model")
    >>> sta.models.load(path).config == model.config
    True
    """
    if not isinstance(name_or_path, str | os.PathLike):
        msg = (
            f"name_or_path must be a registered model name ({', '.join(available_models())}) or the path of a saved "
            f"model, got {type(name_or_path).__name__}."
        )
        raise TypeError(msg)
    if sha256 is not None and not (isinstance(sha256, str) and len(sha256) == 64):
        msg = f"sha256 must be the 64-character hex digest of the weights file, got {sha256!r}."
        raise ValueError(msg)
    if cache:
        from .._utils import resolve_device

        dev = resolve_device(device)
        key = _cache_key(name_or_path, dev) if sha256 is None and not (allow_torch_load or trust_unverified) else None
        if key is not None and key in _CACHE:
            m, stamp = _CACHE[key]
            if _tensor_stamp(m) == stamp:
                _CACHE.move_to_end(key)
                logger.debug("Model %s from the per-process cache (files unchanged since verified).", name_or_path)
                return m
            del _CACHE[key]  # modified in place since it was verified: load it again
        m = load(name_or_path, device=dev, sha256=sha256, allow_torch_load=allow_torch_load,
                 trust_unverified=trust_unverified)  # fmt: skip
        if key is not None:
            _CACHE[key] = (m, _tensor_stamp(m))
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
        return m
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
            return _load_files(weights_path, config_path, expected, device, source, allow_torch_load, trust_unverified)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        msg = f"{name!r} is neither a registered model ({available_models()}) nor an existing path."
        raise FileNotFoundError(msg)
    weights_path, config_path = _resolve_path(path)
    return _load_files(weights_path, config_path, expected, device, source, allow_torch_load, trust_unverified)


def _check_safetensors(weights_path: Path) -> None:
    """Parse the safetensors header (no tensor data, no code): a truncated or corrupted file is refused early."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as e:
        msg = f"{str(weights_path)!r} is not a readable safetensors file ({e}); it is truncated or corrupted."
        raise ValueError(msg) from e


def _torch_state(weights_path: Path) -> dict:
    """``torch.load(weights_only=True)`` of a state dict; anything else (a pickled object) is refused."""
    import pickle

    import torch
    from safetensors import SafetensorError

    errors = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError, OSError)
    try:
        state = torch.load(str(weights_path), map_location="cpu", weights_only=True)
    except (*errors, SafetensorError) as e:
        msg = (
            f"{str(weights_path)!r} could not be read with torch.load(weights_only=True) ({type(e).__name__}): it "
            "holds objects other than tensors (possibly code), or is corrupted. It was not unpickled; convert "
            "trusted weights to safetensors with stalign.models.save."
        )
        raise ValueError(msg) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        msg = f"{str(weights_path)!r} does not hold a state dict (name → tensor); save the model's `state_dict()`."
        raise ValueError(msg)
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _load_files(
    weights_path: Path,
    config_path: Path,
    expected: str | None,
    device,
    source: str,
    allow_torch_load: bool = False,
    trust_unverified: bool = False,
):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .._utils import resolve_device
    from ._model import STAlign

    for p, what in ((weights_path, "weights"), (config_path, "config")):
        if not p.is_file():
            msg = f"The {what} file {str(p)!r} is missing; save the model with stalign.models.save(model, path)."
            raise FileNotFoundError(msg)
    is_st = _is_safetensors(weights_path)
    if not is_st and not allow_torch_load:
        msg = (
            f"{str(weights_path)!r} is not a safetensors file (a pickle / torch.save file, or corrupted); stalign "
            "only loads safetensors by default because unpickling can run arbitrary code. Convert trusted weights "
            "with stalign.models.save, or pass allow_torch_load=True to read them with torch.load(weights_only=True)."
        )
        raise ValueError(msg)
    if is_st:
        _check_safetensors(weights_path)
    meta = _read_meta(config_path)
    digest = sha256_file(weights_path)
    recorded = meta.get("weights_sha256")
    for label, want in (("config.json", recorded), ("the expected value", expected)):
        if want is not None and digest != want:
            msg = (
                f"sha256 of {str(weights_path)!r} is {digest}, but {label} records {want}: the weights file is "
                "truncated, corrupted or was modified. Re-save or re-download the model."
            )
            raise ValueError(msg)
    if recorded is None and expected is None:
        if not trust_unverified:
            msg = (
                f"{str(config_path)!r} records no 'weights_sha256', so {str(weights_path)!r} cannot be verified. "
                f"Pass sha256= (its sha256 is {digest}) if you know the expected value, re-save the model with "
                "stalign.models.save, or pass trust_unverified=True to load it anyway."
            )
            raise ValueError(msg)
        logger.warning("Loading unverified weights %s (sha256 %s, recorded nowhere).", weights_path, digest)
    try:
        config = STAlignConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        msg = f"The config in {str(config_path)!r} is invalid: {e}"
        raise ValueError(msg) from e
    model = STAlign(config, load_encoder_weights=False)
    if is_st:
        try:
            state = load_file(str(weights_path))
        except SafetensorError as e:
            msg = f"{str(weights_path)!r} is not a readable safetensors file ({e}); it is truncated or corrupted."
            raise ValueError(msg) from e
    else:
        state = _torch_state(weights_path)
    for old, new in _RENAMED.get(int(meta.get("format_version", 1)), {}).items():
        state = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}
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
    if meta.get("stalign_version") not in (None, package_version()):
        logger.info(
            "Model %s was saved with stalign %s (running %s)", source, meta["stalign_version"], package_version()
        )
    model = model.to(resolve_device(device)).eval()
    model.weights_sha256 = digest
    model.source = source
    # what the file holds: tl.embed records the name and sha256 only while the weights still match it
    model.loaded_fingerprint = weights_fingerprint(model)
    return model
