"""Public training API: :func:`pretrain`, :func:`finetune` and :func:`pretrain_from_config`.

One module (~540 lines, over the ~450 guideline) because the three entry points share the checks of the sections
and the output folder, the dataset and the ``run.json`` they write.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils import resolve_device
from .._validators import renamed_arguments
from ._config import FIELDS, TrainConfig, make_config
from ._distributed import cleanup, init_distributed
from ._engine import fit
from ._features import cache_frozen_features, cached_levels, compose

logger = logging.getLogger(__name__)


def _check_sections(sections: Any) -> list[Any]:
    """``sections`` as a list, each a SpatialData, an AnnData or a loader spec string; else a clear TypeError."""
    if sections is None:
        msg = (
            "`sections` is None; pass a list of SpatialData/AnnData sections or loader specs such as "
            "['dlpfc:151673', 'her2st:B1']."
        )
        raise TypeError(msg)
    if isinstance(sections, str | bytes) or not isinstance(sections, Sequence):
        sections = [sections]
    for i, s in enumerate(sections):
        if not (isinstance(s, str) or hasattr(s, "tables") or hasattr(s, "var_names")):
            msg = (
                f"sections[{i}] is a {type(s).__name__}; each section must be a SpatialData, an AnnData or a loader "
                "spec string such as 'dlpfc:151673'."
            )
            raise TypeError(msg)
    if not sections:
        msg = "`sections` is empty; pass at least one SpatialData/AnnData object or loader spec."
        raise ValueError(msg)
    return list(sections)


def _check_output_dir(output_dir: Any) -> Path:
    """``output_dir`` as a Path, refused when it (or a parent) is an existing file; nothing is created."""
    if not isinstance(output_dir, str | os.PathLike) or not str(output_dir):
        msg = f"output_dir={output_dir!r}; pass the path of a folder for checkpoints, metrics and the model."
        raise TypeError(msg)
    path = Path(output_dir).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "output_dir" if p == path else f"{str(p)!r}, a parent of output_dir,"
                msg = (
                    f"output_dir {str(path)!r}: {what} exists and is not a directory; pass a directory path (an "
                    "existing folder, or a new one to be created)."
                )
                raise FileExistsError(msg)
            break
    return path


def _check_counts(sections: list[Any], dataset_kwargs: dict) -> None:
    """Raise, as tl.embed does, when a section's counts hold NaN, infinite or negative values."""
    from .._constants import Key
    from .._section import get_section

    for data in sections:
        sec = get_section(
            data,
            table_key=dataset_kwargs.get("table_key", Key.table),
            image_key=dataset_kwargs.get("image_key"),
            library_id=dataset_kwargs.get("library_id"),
        )
        sec.has_expression  # noqa: B018 - raises for counts that are not raw counts


def resolve_sections(sections: Any, *, data_dir: str | os.PathLike | None = None) -> list[Any]:
    """Turn ``sections`` into a list of SpatialData / AnnData objects.

    Strings are resolved with :func:`stalign.datasets.load`: loader specs ``"<dataset>:<section>"`` (e.g.
    ``"dlpfc:151673"``, ``"her2st:B1"``) or paths (``.h5ad``, ``.zarr``, a Space Ranger ``outs`` folder).

    Parameters
    ----------
    sections
        One or a sequence of SpatialData / AnnData objects and/or loader spec strings.
    data_dir
        Data folder passed to the readers; defaults to ``$STALIGN_DATA_DIR``.

    Returns
    -------
    List of SpatialData / AnnData objects, in the order given.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.stutility_mob("MOB1")
    >>> sections = sta.train.resolve_sections([sdata, "stutility_mob:MOB2"])
    >>> [s.tables["table"].obs["sample"].iloc[0] for s in sections]
    ['MOB1', 'MOB2']
    """
    from ..datasets import load

    return [load(s, data_dir=data_dir) if isinstance(s, str) else s for s in _check_sections(sections)]


def _build_config(config: Any, sections: list[Any]):
    from .._genes import build_vocabulary
    from ..models import STAlignConfig

    if isinstance(config, STAlignConfig):
        return config
    overrides: dict[str, Any] = {}
    backbone = None
    if isinstance(config, dict):
        overrides = dict(config)
        config = overrides.pop("preset", "base")
        backbone = overrides.pop("backbone", None)
    if not isinstance(config, str):
        msg = f"`config` must be an STAlignConfig, a preset name ('base', 'large') or a dict, not {type(config).__name__}."
        raise TypeError(msg)
    genes = overrides.pop("genes", None) or build_vocabulary(sections)
    if not genes:
        logger.warning("The training sections measure no gene: the gene encoders will not train.")
    n = overrides.get("predict_genes")
    if isinstance(n, int) and not isinstance(n, bool):
        overrides["predict_genes"] = predictive_genes(sections, genes, n_per_section=n)
    if backbone is not None:  # {"backbone": name, "weights": ..., "freeze": ...}: STAlignConfig.from_backbone
        if config != "base":
            msg = f"A `backbone` config builds on the 'base' preset; drop preset={config!r}."
            raise ValueError(msg)
        return STAlignConfig.from_backbone(backbone, genes, **overrides)
    return STAlignConfig.preset(config, genes, **overrides)


def predictive_genes(sections: list[Any], genes: list[str], *, n_per_section: int) -> list[str]:
    """Targets of the predictive objective: the union of each paired section's ``n_per_section`` most variable genes.

    Only sections with an image and expression teach an image tower to predict, so only theirs count; the choice uses
    counts alone (no label), and every gene is mapped onto the vocabulary ``genes`` (Ensembl ids and mouse symbols
    included). Genes come in vocabulary order.
    """
    from .._genes import gene_index
    from .._section import get_section
    from .._validators import check_int
    from ..pp import reference_hvgs

    check_int(n_per_section, "predict_genes", hint=" (most variable genes per paired section, or a list of genes)")
    chosen: set[int] = set()
    for data in sections:
        sec = get_section(data)
        if not (sec.has_image and sec.has_expression):
            continue
        hv = reference_hvgs([sec.table], n_top_genes=min(n_per_section, sec.table.n_vars))
        idx = gene_index(list(hv), genes)
        chosen.update(int(i) for i in idx[idx >= 0])
    if not chosen:
        msg = "predict_genes needs sections with an image and expression among the training sections; none has both."
        raise ValueError(msg)
    return [genes[i] for i in sorted(chosen)]


@renamed_arguments(seed="random_state")
def section_clusters(sections: list[Any], *, n_clusters: int = 8, random_state: int = 0) -> list[np.ndarray]:
    """Per-section k-means clusters of expression (PCA of log-normalised counts) for hard negatives.

    Sections without expression get ``-1`` everywhere (no hard negatives).

    Parameters
    ----------
    sections
        SpatialData / AnnData objects.
    n_clusters
        Number of k-means clusters per section.
    random_state
        Seed of the PCA and k-means.

    Returns
    -------
    One ``int64`` array of cluster labels per section (``-1`` for spots without counts).

    Examples
    --------
    >>> import stalign as sta
    >>> sections = [sta.datasets.stutility_mob("MOB1"), sta.datasets.her2st("A2")]
    >>> labels = sta.train.section_clusters(sections, n_clusters=4)
    >>> [sorted(set(lab.tolist())) for lab in labels]
    [[0, 1, 2, 3], [0, 1, 2, 3]]
    """
    from scipy import sparse
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    from .._section import get_section
    from ..pp import log_normalize

    out = []
    for data in sections:
        table = get_section(data, require_image=False).table
        x = table.X
        n = table.n_obs
        if x is None or table.n_vars == 0 or n < 2 * n_clusters:
            out.append(np.full(n, -1, dtype=np.int64))
            continue
        x = sparse.csr_matrix(x, dtype=np.float32)
        tot = np.asarray(x.sum(1)).ravel()
        x = log_normalize(x, totals=tot)
        keep = np.asarray((x > 0).sum(0)).ravel() >= max(3, n // 100)
        dense = x[:, keep].toarray()
        if dense.shape[1] < 2:
            out.append(np.full(n, -1, dtype=np.int64))
            continue
        pcs = PCA(n_components=min(20, dense.shape[1] - 1), random_state=random_state).fit_transform(dense)
        lab = KMeans(n_clusters=n_clusters, n_init=3, random_state=random_state).fit_predict(pcs).astype(np.int64)
        lab[tot <= 0] = -1
        out.append(lab)
    return out


def _train_sections(model_factory, sections: Any, *, output_dir: Any, train: TrainConfig, mode: str):
    """Check the run, load the sections, build the model and the dataset, write ``run.json`` and train.

    ``train`` is already checked (:meth:`TrainConfig.validate`); the sections and ``output_dir`` are checked here,
    before any section is loaded or any folder created.
    """
    from ..pp import SpotDataset

    sections = _check_sections(sections)
    _check_output_dir(output_dir)
    device = resolve_device(train.device)
    info, device = init_distributed(device)
    try:
        if train.batch_size % info.world_size:
            msg = (
                f"batch_size={train.batch_size} (the global batch) is not divisible by the {info.world_size} "
                f"processes; use a multiple of {info.world_size}."
            )
            raise ValueError(msg)
        dataset_kwargs = train.dataset_kwargs or {}
        sections = resolve_sections(sections, data_dir=train.data_dir)
        _check_counts(sections, dataset_kwargs)
        model = model_factory(sections)
        config = model.config
        clusters = (
            section_clusters(sections, n_clusters=train.n_clusters, random_state=train.seed)
            if train.hard_negatives > 0
            else None
        )
        kwargs = {
            "layout": "random",
            "cache_crops": True,
            "batch_size": train.batch_size // info.world_size,
            "shuffle": True,
            "seed": train.seed,
            "rank": info.rank,
            "world_size": info.world_size,
            "clusters": clusters,
        }
        cached = cached_levels(model, train.cache_features)
        if len(cached) == 2:  # the frozen trunks' features replace the crops: none is read in training
            kwargs.update(use_image=False, cache_crops=False)
        kwargs.update(dataset_kwargs)
        dataset = SpotDataset.from_config(sections, config, **kwargs)
        if cached:
            add_features, augment = cache_frozen_features(
                model.to(device), sections, train.augment, dataset_kwargs=dataset_kwargs
            )
            dataset.transform = compose(dataset.transform, add_features)
            train = dataclasses.replace(train, augment=augment)
        lr = train.peak_lr()
        run_info = {"mode": mode, "lr": lr, "world_size": info.world_size}
        if info.is_main:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            run = {
                **run_info,
                "config": config.to_dict(),
                "train": train.to_dict(),
                "n_spots": dataset.n_spots,
                "n_sections": len(sections),
            }
            (Path(output_dir) / "run.json").write_text(json.dumps(run, indent=1))
        logger.info(
            "Training on %d spots from %d sections, %d genes, global batch %d, lr %.3g, %d process(es), %s",
            dataset.n_spots, len(sections), len(config.genes), train.batch_size, lr, info.world_size, device,
        )  # fmt: skip

        def on_end(m):
            from ..models import save

            save(m, Path(output_dir) / "model")

        model = fit(
            model,
            dataset,
            train,
            output_dir=Path(output_dir),
            lr=lr,
            run_info=run_info,
            device=device,
            info=info,
            on_end=on_end,
        )
    finally:
        cleanup(info)
    return model


def pretrain(
    sections: Any,
    config: Any = "base",
    *,
    output_dir: str | os.PathLike,
    train: TrainConfig | dict | None = None,
    **options: Any,
):
    """Pretrain an ST-Align model from scratch on spatial transcriptomics sections.

    Self-supervised: no label is used. Works in one process (CPU or one GPU) and, started by
    ``torchrun --nproc_per_node N``, as a DDP job (gloo on CPU, NCCL on CUDA) whose in-batch negatives span the
    global batch of all ranks. Every argument is checked before any section is loaded or any folder is created.

    Parameters
    ----------
    sections
        SpatialData objects and/or AnnData in the squidpy Visium convention, or loader specs such as
        ``"dlpfc:151673"`` (see :func:`resolve_sections`). They are not modified.
    config
        An :class:`~stalign.models.STAlignConfig`, a preset name (``"base"``, ``"large"``) or a dict
        ``{"preset": "base", **overrides}``, or ``{"backbone": name, "weights": ..., **overrides}`` for a
        pretrained image backbone (:meth:`STAlignConfig.from_backbone <stalign.models.STAlignConfig.from_backbone>`).
        With a preset or a backbone, the gene vocabulary is built from ``sections`` (:func:`stalign.pp.build_vocabulary`).
    output_dir
        Folder for ``metrics.jsonl`` (one JSON row per step: step, epoch, lr, weight_decay, loss, each loss term,
        grad_norm, pairs_per_s), ``checkpoints/``, ``run.json`` (the model config, the
        :class:`~stalign.train.TrainConfig` and the resolved learning rate) and the final ``model/``
        (:func:`stalign.models.save`).
    train
        A :class:`~stalign.train.TrainConfig` or a dict of its fields: every training option (epochs, batch size,
        learning rate and schedule, device, checkpoints, augmentation, ...), each documented there.
    **options
        :class:`~stalign.train.TrainConfig` fields that override ``train``, e.g. ``epochs=10``, ``batch_size=256``,
        ``lr=1e-3``, ``max_steps=100``, ``device="cuda"``; an unknown name raises a :class:`TypeError` that lists
        the valid ones.

    Returns
    -------
    The trained :class:`~stalign.models.STAlign` (in eval mode), also saved to ``output_dir/model``.

    Examples
    --------
    >>> import stalign as sta
    >>> model = sta.train.pretrain(
    ...     ["dlpfc:151673", "her2st:B1"], "base", output_dir="runs/base", epochs=10
    ... )  # doctest: +SKIP

    A few steps on one small section, as a check that runs in seconds:

    >>> sdata = sta.datasets.stutility_mob("MOB1")
    >>> model = sta.train.pretrain(
    ...     [sdata],
    ...     {"preset": "base", "spot_size": 32, "niche_size": 32},
    ...     output_dir="run",
    ...     epochs=1,
    ...     max_steps=4,
    ...     batch_size=32,
    ...     show_progress_bar=False,
    ... )
    >>> sorted(p.name for p in __import__("pathlib").Path("run").iterdir())
    ['checkpoints', 'metrics.jsonl', 'model', 'run.json']
    >>> ax = sta.pl.training_curves("run", smooth=2)

    The same options as one reusable :class:`~stalign.train.TrainConfig` (keywords still override it):

    >>> quick = sta.train.TrainConfig(
    ...     epochs=1, max_steps=2, batch_size=32, show_progress_bar=False
    ... )
    >>> model = sta.train.pretrain(
    ...     [sdata], model.config, output_dir="run2", train=quick, seed=1
    ... )
    >>> import json
    >>> json.loads(open("run2/run.json").read())["train"]["seed"]
    1
    """
    train = make_config(train, options)

    def factory(secs):
        from ..models import STAlign

        cfg = _build_config(config, secs)
        torch.manual_seed(train.seed)  # identical initial weights on every rank
        return STAlign(cfg)

    return _train_sections(factory, sections, output_dir=output_dir, train=train, mode="pretrain")


def finetune(
    model: Any, sections: Any, *, output_dir: str | os.PathLike, train: TrainConfig | dict | None = None, **options: Any
):
    """Continue training a model (e.g. ``stalign-base``) on your own sections with the same self-supervised losses.

    Same options and outputs as :func:`pretrain`; the model keeps its gene vocabulary (each section's genes are
    mapped onto it). Without a :class:`~stalign.train.TrainConfig`, the defaults are those of
    :meth:`TrainConfig.finetune_defaults <stalign.train.TrainConfig.finetune_defaults>`:
    ``lr = 1e-4 * batch_size / 256``, 0.5 warm-up epochs, constant weight decay, 5 epochs.

    Parameters
    ----------
    model
        An :class:`~stalign.models.STAlign`, or a registry name / saved folder for :func:`stalign.models.load`.
        A given module is trained in place and returned.
    sections
        As in :func:`pretrain`.
    output_dir, **options
        As in :func:`pretrain`.
    train
        A :class:`~stalign.train.TrainConfig`, used as given, or a dict of its fields, applied to the fine-tuning
        defaults.

    Returns
    -------
    The fine-tuned model (in eval mode), also saved to ``output_dir/model``.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.stutility_mob("MOB1")
    >>> model = sta.train.finetune(
    ...     "stalign-base",
    ...     [sdata],
    ...     output_dir="finetuned",
    ...     epochs=1,
    ...     max_steps=4,
    ...     batch_size=32,
    ...     show_progress_bar=False,
    ... )
    >>> sta.tl.embed(sdata, model=model, show_progress_bar=False)
    >>> sta.models.load("finetuned/model").genes == model.genes  # the vocabulary is kept
    True
    """
    from ..models import load

    train = make_config(train, options, finetune=True)
    if isinstance(model, str | os.PathLike):
        model = load(model)
    if not hasattr(model, "config") or not hasattr(model, "loss"):
        msg = f"`model` must be an STAlign (or a name/path for stalign.models.load), not {type(model).__name__}."
        raise TypeError(msg)
    if getattr(model.config, "genes", None) is not None and len(model.config.genes) == 0:
        warnings.warn("The model has an empty gene vocabulary; only image terms train.", UserWarning, stacklevel=2)

    return _train_sections(lambda secs: model, sections, output_dir=output_dir, train=train, mode="finetune")


def read_config(path: str | os.PathLike) -> dict:
    """Read a TOML (``.toml``) or JSON training configuration into a dict with ``data``, ``model``, ``train``.

    Parameters
    ----------
    path
        A ``.toml`` or ``.json`` file.

    Returns
    -------
    The configuration dict (top-level keys among ``data``, ``model``, ``train``).

    Examples
    --------
    >>> import stalign as sta
    >>> _ = open("recipe.toml", "w").write('''
    ... [data]
    ... sections = ["dlpfc:151673", "her2st:C2"]
    ... [model]
    ... preset = "base"
    ... [train]
    ... output_dir = "runs/base"
    ... epochs = 10
    ... ''')
    >>> sta.train.read_config("recipe.toml")["data"]["sections"]
    ['dlpfc:151673', 'her2st:C2']
    """
    path = Path(path)
    if not path.is_file():
        msg = f"Config file {str(path)!r} does not exist; pass the path of a .toml or .json file."
        raise FileNotFoundError(msg)
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            cfg = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            msg = f"Cannot parse {str(path)!r} as TOML: {e}"
            raise ValueError(msg) from e
    elif path.suffix.lower() == ".json":
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            msg = f"Cannot parse {str(path)!r} as JSON: {e}"
            raise ValueError(msg) from e
    else:
        msg = f"Config file {str(path)!r} must end in .toml or .json."
        raise ValueError(msg)
    unknown = set(cfg) - {"data", "model", "train"}
    if unknown:
        msg = f"Unknown section(s) {sorted(unknown)} in {str(path)!r}; use [data], [model] and [train]."
        raise ValueError(msg)
    return cfg


def pretrain_from_config(path: str | os.PathLike, **overrides: Any):
    """Run :func:`pretrain` from a TOML or JSON file (what ``stalign pretrain --config FILE`` calls).

    The file has three tables::

        [data]
        sections = ["dlpfc:151673", "her2st:B1"]  # loader specs (see resolve_sections)
        data_dir = "../shared/data"  # optional

        [model]
        preset = "base"  # plus any STAlignConfig field to override
        embed_dim = 128

        [train]
        output_dir = "runs/base"  # plus any field of TrainConfig
        epochs = 10
        batch_size = 128

    Parameters
    ----------
    path
        The configuration file. A relative ``output_dir`` is taken relative to the current directory.
    **overrides
        ``output_dir`` or :class:`~stalign.train.TrainConfig` fields that replace the file's ``[train]`` values
        (``None`` values are ignored), e.g. ``output_dir`` or ``epochs`` from the command line.

    Returns
    -------
    The trained :class:`~stalign.models.STAlign`.

    Examples
    --------
    >>> import stalign as sta
    >>> _ = open("recipe.toml", "w").write('''
    ... [data]
    ... sections = ["stutility_mob:MOB1"]
    ... [model]
    ... preset = "base"
    ... spot_size = 32
    ... niche_size = 32
    ... [train]
    ... output_dir = "run"
    ... epochs = 1
    ... max_steps = 2
    ... batch_size = 32
    ... show_progress_bar = false
    ... ''')
    >>> model = sta.train.pretrain_from_config("recipe.toml")
    >>> model.config.spot_size
    32
    """
    cfg = read_config(path)
    data = dict(cfg.get("data", {}))
    sections = data.pop("sections", None)
    if not sections:
        msg = f'{str(path)!r} has no [data] sections; add e.g. sections = ["dlpfc:151673"].'
        raise ValueError(msg)
    data_dir = data.pop("data_dir", None)
    if data:
        msg = f"Unknown [data] key(s) {sorted(data)} in {str(path)!r}; use `sections` and `data_dir`."
        raise ValueError(msg)
    model_cfg = dict(cfg.get("model", {}))
    model_cfg.setdefault("preset", "base")
    train = dict(cfg.get("train", {}))
    train.update({k: v for k, v in overrides.items() if v is not None})
    valid = ["output_dir", *FIELDS]
    unknown = sorted(set(train) - set(valid))
    if unknown:
        msg = f"Unknown [train] option(s) {unknown}; valid options are {valid} (see stalign.train.TrainConfig)."
        raise ValueError(msg)
    if "output_dir" not in train:
        msg = f"{str(path)!r} has no [train] output_dir; add one or pass --output-dir."
        raise ValueError(msg)
    output_dir = train.pop("output_dir")
    train.setdefault("data_dir", data_dir)
    return pretrain(sections, model_cfg, output_dir=output_dir, train=train)
