"""Cross-modal retrieval within held-out sections, and the held-out contrastive loss ``L_spot``."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .._docs import inject
from .._utils import get_table
from ._aggregate import merge, pooled, summarise
from ._metrics import recall_at_k, spot_infonce
from ._store import RANDOM, Run

logger = logging.getLogger(__name__)

#: spots per batch of the held-out ``L_spot``
LOSS_BATCH = 128
#: the held-out ``L_spot`` a trained model should reach: this fraction of chance (``ln(batch)``)
LOSS_TARGET = 0.85


@inject
def eval_retrieval(
    sections: Any,
    *,
    model: Any,
    baselines: bool = True,
    ablations: Mapping[str, Any] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int = LOSS_BATCH,
    seeds: int | Sequence[int] = 3,
    data_dir: Any = None,
    device: Any = None,
) -> dict:
    """Cross-modal retrieval (image→gene, gene→image Recall@k) and the held-out ``L_spot`` within each section.

    ``l_spot`` is the training criterion measured on held-out spots (:func:`spot_infonce`): spot image ↔ spot gene
    embeddings of :func:`stalign.tl.embed`, symmetric InfoNCE with the model's own temperature
    (``model.logit_scale``), on fixed batches of ``batch_size`` spots (one shuffling per seed). Chance is
    ``ln(batch_size)``; the results also give the target ``0.85 ln(batch_size)``.

    Parameters
    ----------
    sections
        Sections with an image and expression (specs, paths or ``{name: data}``).
    model
        Registry name, saved-model path or :class:`~stalign.models.STAlign`; a list of them are training seeds.
    baselines
        Also the random-init model and chance (``k / n``, and ``ln(batch_size)`` for the loss).
    ablations
        ``{name: model or path}`` evaluated like ``model``.
    ks
        Cut-offs.
    batch_size
        Spots per batch of ``l_spot``.
    seeds
        Shufflings of ``l_spot`` (Recall@k has no random step: its runs differ only by model).
    {eval_params}

    Returns
    -------
    dict
        ``{"sections": {name: {"n_spots", "l_spot_chance", "l_spot_target", "methods": {method: {"i2g_R@1", ...,
        "g2i_R@10", "l_spot", "sd", "values", "runs"}}}}, "pooled": ...}``.

    Examples
    --------
    >>> from stalign import evaluation
    >>> res = evaluation.eval_retrieval(
    ...     ["stahl_mob:11"], model="stalign-base", baselines=False, seeds=2
    ... )
    >>> sorted(k for k in res["pooled"]["stalign"] if "@" in k or k.startswith("l_"))
    ['g2i_R@1', 'g2i_R@10', 'g2i_R@5', 'i2g_R@1', 'i2g_R@10', 'i2g_R@5', 'l_spot']
    >>> sec = res["sections"]["stahl_mob:11"]
    >>> (
    ...     round(sec["l_spot_chance"], 3),
    ...     sec["methods"]["stalign"]["l_spot"] < sec["l_spot_chance"] + 1,
    ... )
    (4.852, True)
    """
    run = Run.of_task(model, ablations=ablations, baselines=baselines, seeds=seeds, data_dir=data_dir, device=device)
    seeds_, store, models = run.seeds, run.store, run.models
    names = store.add(sections)
    out: dict[str, Any] = {}
    recall_names = [f"{d}_R@{k}" for d in ("i2g", "g2i") for k in ks]
    chance_loss = math.log(batch_size)
    for name in names:
        data = store[name]
        methods = {}
        n = get_table(data).n_obs
        for group, members in models.groups.items():
            if group == RANDOM and not baselines:
                continue
            recalls, losses = [], []
            for member in members:
                emb = models.embedded(member, name, data)
                if "image" not in emb.arrays or "gene" not in emb.arrays:
                    msg = f"Retrieval on {name!r} needs an image and expression; evaluate paired sections."
                    raise ValueError(msg)
                img, gene = emb.arrays["image"], emb.arrays["gene"]
                i2g = recall_at_k(img, gene, ks)
                g2i = recall_at_k(gene, img, ks)
                recall = {**{f"i2g_{k}": v for k, v in i2g.items()}, **{f"g2i_{k}": v for k, v in g2i.items()}}
                recalls.append(((member, None), recall))
                scale = float(models.models[member].logit_scale)
                for s in seeds_:
                    loss = spot_infonce(img, gene, logit_scale=scale, batch_size=batch_size, random_state=s)
                    losses.append(((member, s), {"l_spot": loss}))
            methods[group] = merge(
                summarise([x[1] for x in losses], [x[0] for x in losses]),
                summarise([x[1] for x in recalls], [x[0] for x in recalls]),
            )
        if baselines:
            chance = {m: min(1.0, int(m.split("@")[1]) / n) for m in recall_names}
            chance["l_spot"] = chance_loss
            methods["chance"] = summarise([chance], [(None, None)])
        out[name] = {
            "n_spots": int(n),
            "batch_size": batch_size,
            "l_spot_chance": chance_loss,
            "l_spot_target": LOSS_TARGET * chance_loss,
            "methods": methods,
        }
    res = {"sections": out, "pooled": pooled(out, [*recall_names, "l_spot"]), "seeds": seeds_}
    res["l_spot_chance"], res["l_spot_target"] = chance_loss, LOSS_TARGET * chance_loss
    return res
