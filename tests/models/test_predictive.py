"""The predictive objective (issue 21): prediction heads on the image towers, their loss, and what tl does with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests._synthetic import GENES, toy_config


def _model(genes=GENES, *, predict=None, w=1.0, seed=0):
    from stalign.models import STAlign

    torch.manual_seed(seed)
    predict = list(genes[:10]) if predict is None else predict
    return STAlign(toy_config(genes, predict_genes=predict, w_predict=w)).eval()


def _batch(n=12, v=len(GENES), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "spot_image": torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
        "niche_image": torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
        "spot_expr": torch.rand(n, v, generator=g),
        "niche_expr": torch.rand(n, v, generator=g),
        "has_image": torch.ones(n, dtype=torch.bool),
        "has_expr": torch.ones(n, dtype=torch.bool),
    }


def test_config_checks_and_round_trips_the_predicted_genes():
    from stalign.models import STAlignConfig

    cfg = toy_config(GENES, predict_genes=[g.lower() for g in GENES[:3]], w_predict=0.5)
    assert cfg.predict_genes == cfg.genes[:3]  # symbols normalised like the vocabulary
    assert STAlignConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="not in the vocabulary"):
        toy_config(GENES, predict_genes=["NOT_A_GENE"])
    with pytest.raises(ValueError, match="w_predict"):
        toy_config(GENES, predict_genes=GENES[:2], w_predict=-1)
    assert toy_config(GENES).predict_genes == []


def test_heads_add_predictions_and_a_loss_term_only_when_configured():
    batch = _batch()
    plain = _model(predict=[])
    assert plain.predict_heads is None
    assert "image_pred" not in plain.embed(batch) and "predict" not in plain.loss(batch).components
    m = _model()
    emb = m.embed(batch)
    assert emb["image_pred"].shape == (12, 10) and emb["niche_image_pred"].shape == (12, 10)
    out = m.loss(batch)
    assert "predict" in out.components and out.counts["predict"] == 12
    assert torch.isfinite(out.loss)
    # the weight scales the term: w_predict=0 leaves it out
    assert "predict" not in _model(w=0.0).loss(batch).components


def test_predictive_loss_ignores_unmeasured_genes_and_rows_without_a_modality():
    from stalign.models._losses import predictive_loss

    m = _model()
    batch = _batch()
    batch["spot_expr"][:, :5] = 0.0  # five predicted genes not measured in this section
    with torch.no_grad():
        emb = m.embed(batch)
    value, n = predictive_loss(emb, batch, m.predict_index)
    # a perfect prediction of the measured genes scores 0, whatever is predicted for the unmeasured ones
    target = batch["spot_expr"][:, m.predict_index]
    z = (target - target.mean(0)) / target.std(0, unbiased=False).clamp_min(1e-3)
    emb_perfect = {**emb, "image_pred": z.clone(), "niche_image_pred": None}
    emb_perfect["image_pred"][:, :5] = 123.0
    del emb_perfect["niche_image_pred"]
    perfect, _ = predictive_loss(emb_perfect, batch, m.predict_index)
    assert float(perfect) == pytest.approx(0.0, abs=1e-6) and float(value) > 0.1 and n == 12
    # rows without an image or without expression do not count
    batch["has_image"][:4] = False
    emb = m.embed(batch)
    assert predictive_loss(emb, batch, m.predict_index)[1] == 8
    batch["has_expr"][:] = False
    emb = m.embed(batch)
    value, n = predictive_loss(emb, batch, m.predict_index)
    assert n == 0 and float(value) == 0.0


def test_the_heads_learn_real_expression_from_real_crops(data_dir):
    """A few steps on one real batch (her2st C3: H&E + counts) lower the predictive term: gradients reach the towers."""
    import stalign as sta
    from stalign.train._api import predictive_genes

    sdata = sta.datasets.her2st("C3", data_dir=data_dir)
    genes = sta.pp.build_vocabulary([sdata])
    predict = predictive_genes([sdata], genes, n_per_section=32)
    assert 0 < len(predict) <= 32 and set(predict) <= set(genes)
    torch.manual_seed(0)
    model = sta.models.STAlign(toy_config(genes, predict_genes=predict, w_predict=1.0))
    ds = sta.pp.SpotDataset([sdata], genes=genes, spot_px=16, niche_px=16, batch_size=64, layout="random", seed=0)
    batch = ds[0]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        out = model.loss(batch)
        first = float(out.components["predict"].detach()) if first is None else first
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert float(model.loss(batch).components["predict"].detach()) < 0.8 * first


def test_predictive_genes_need_a_paired_section(data_dir):
    import stalign as sta
    from stalign.train._api import predictive_genes

    counts_only = sta.datasets.her2st("A2", data_dir=data_dir)
    with pytest.raises(ValueError, match="image and expression"):
        predictive_genes([counts_only], sta.pp.build_vocabulary([counts_only]), n_per_section=16)


@pytest.fixture(scope="module")
def mob_pair(data_dir):
    import stalign as sta

    ref, query = (sta.datasets.stutility_mob(s, data_dir=data_dir) for s in ("MOB1", "MOB2"))
    genes = sta.pp.build_vocabulary([ref, query])
    ref_genes = sta.pp.gene_index(ref.tables["table"], genes)
    predict = sorted({genes[i] for i in ref_genes[ref_genes >= 0][:200]})
    return ref, query, _model(genes, predict=predict)


def test_embed_writes_the_head_predictions_and_predict_expression_uses_them(mob_pair):
    import stalign as sta

    ref, query, model = mob_pair
    q = sta.tl.embed(query, model=model, copy=True, show_progress_bar=False)
    table = q.tables["table"]
    rec = table.uns["stalign"]
    assert table.obsm["X_stalign_pred"].shape == (table.n_obs, len(model.config.predict_genes))
    assert rec["keys"]["pred"] == "X_stalign_pred" and list(rec["pred_genes"]) == model.config.predict_genes
    r = sta.tl.embed(ref, model=model, copy=True, show_progress_bar=False)

    ridge = sta.tl.predict_expression(q, [r], n_top_genes=20)  # the default: ridge on the image embedding
    assert ridge.uns["stalign_pred"]["params"]["method"] == "ridge"
    assert ridge.shape == (table.n_obs, 20) and np.isfinite(ridge.X).all() and (ridge.X >= 0).all()

    head = sta.tl.predict_expression(q, [r], n_top_genes=20, method="head")
    assert head.shape[0] == table.n_obs and np.isfinite(head.X).all() and (head.X >= 0).all()
    idx = sta.pp.gene_index(list(head.var_names), model.config.predict_genes)
    assert (idx >= 0).all()  # only genes the head predicts
    # head values are the stored standardised predictions put on the reference's scale
    Z = table.obsm["X_stalign_pred"][:, idx]
    assert np.corrcoef(Z[:, 0], head.X[:, 0])[0, 1] > 0.99 or head.X[:, 0].std() == 0

    missing = [g for g in r.tables["table"].var_names if sta.pp.gene_index([g], model.config.predict_genes)[0] < 0]
    with pytest.raises(ValueError, match="not predicted by the model's head"):
        sta.tl.predict_expression(q, [r], genes=missing[:3], method="head")


def test_head_method_needs_a_model_with_a_head(mob_pair):
    import stalign as sta

    ref, query, model = mob_pair
    plain = _model(model.genes, predict=[])
    with pytest.raises(ValueError, match="prediction head"):
        sta.tl.predict_expression(query, [ref], n_top_genes=5, method="head", model=plain)
    # ridge works on a model without a head: its image embedding
    pred = sta.tl.predict_expression(query, [ref], n_top_genes=5, model=plain)
    assert pred.shape[1] == 5 and np.isfinite(pred.X).all()


def test_self_supervised_term_matches_two_views_of_each_spot():
    """SimCLR on the spot crops (w_image_ssl): the engine adds a second augmented view, the loss matches the two."""
    from stalign.models import STAlign
    from stalign.train import TrainConfig
    from stalign.train._engine import _ssl_view

    torch.manual_seed(0)
    model = STAlign(toy_config(GENES, w_image_ssl=0.5))
    batch = _batch()
    assert "image_ssl" not in model.loss(batch).components  # no second view, no term
    cfg = TrainConfig(seed=3)
    rows = torch.arange(12)
    view = _ssl_view(model, batch, cfg, 5, rows, 12)
    assert view.shape == batch["spot_image"].shape and view.dtype == torch.uint8
    assert not torch.equal(view, batch["spot_image"])
    assert torch.equal(view, _ssl_view(model, batch, cfg, 5, rows, 12))  # a pure function of (seed, step)
    out = model.loss({**batch, "spot_image_view": view})
    assert "image_ssl" in out.components and out.counts["image_ssl"] == 12 and torch.isfinite(out.loss)
    # a model without the term gets no second view (no extra encoder pass)
    assert _ssl_view(_model(), batch, cfg, 5, rows, 12) is None
