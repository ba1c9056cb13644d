"""tl with a small random model: keys, copy/key_added and modalities on the synthetic section (no data folder);
what needs real tissue (smoothing, marker scores) on DLPFC 151673. Bad input: ``test_bad_input.py``.
"""

from __future__ import annotations

import copy as _copy

import numpy as np
import pandas as pd
import pytest

import stalign as sta

from .._bad_input import assert_unchanged, snapshot


@pytest.fixture(scope="module")
def toy_sd_embedded(toy_section, toy_model):
    """The synthetic section as SpatialData, embedded in place (the same data as ``toy_embedded``)."""
    sd = toy_section()
    sta.tl.embed(sd, model=toy_model, show_progress_bar=False)
    return sd


def test_embed_writes_all_keys(toy_sd_embedded, toy_model):
    t = toy_sd_embedded.tables["table"]
    d = toy_model.config.embed_dim
    for key in ("X_stalign", "X_stalign_image", "X_stalign_gene", "X_stalign_niche"):
        assert t.obsm[key].shape == (t.n_obs, d)
        assert np.isfinite(t.obsm[key]).all()
        np.testing.assert_allclose(np.linalg.norm(t.obsm[key], axis=1), 1.0, atol=1e-4)
    rec = t.uns["stalign"]
    assert rec["stalign_version"] == sta.__version__
    assert rec["params"]["batch_size"] == 256
    # the image embedding differs from the gene embedding (two encoders), and spots differ from each other
    assert not np.allclose(t.obsm["X_stalign_image"], t.obsm["X_stalign_gene"])
    assert np.std(t.obsm["X_stalign_image"], axis=0).mean() > 1e-4


def test_embed_batch_size_invariant(toy_embedded, toy_model):
    ad = toy_embedded.copy()
    ref = {k: ad.obsm[k].copy() for k in ("X_stalign_image", "X_stalign_gene")}
    sta.tl.embed(ad, model=toy_model, batch_size=7, show_progress_bar=False)
    for k, v in ref.items():
        # crops are resampled per batch window; a different window can flip a uint8 rounding (issue 7 tracks <=1e-5)
        np.testing.assert_allclose(ad.obsm[k], v, atol=1e-3)


def test_embed_copy_and_key_added(toy_sd_embedded, toy_model):
    sd = toy_sd_embedded
    t = sd.tables["table"]
    snap = snapshot(sd)
    out = sta.tl.embed(sd, model=toy_model, key_added="X_mine", copy=True, show_progress_bar=False)
    assert_unchanged(snap, sd)
    ot = out.tables["table"]
    assert {"X_mine", "X_mine_image", "X_mine_gene", "X_mine_niche"} <= set(ot.obsm)
    assert "mine" in ot.uns
    # crops are read per batch window; batch composition moves float rounding slightly (tracked for issue 7)
    np.testing.assert_allclose(ot.obsm["X_mine_image"], t.obsm["X_stalign_image"], atol=1e-3)


def test_embed_anndata_matches_spatialdata(toy_sd_embedded, toy_model):
    sd = toy_sd_embedded
    ad = sta.io.to_anndata(sd)
    assert sta.tl.embed(ad, model=toy_model, show_progress_bar=False) is None
    # a different (downsampled) background image level may be used: embeddings agree closely, not bitwise
    a, b = ad.obsm["X_stalign_gene"], sd.tables["table"].obsm["X_stalign_gene"]
    np.testing.assert_allclose(a, b, atol=1e-5)
    cos = np.sum(ad.obsm["X_stalign_image"] * sd.tables["table"].obsm["X_stalign_image"], axis=1)
    assert np.median(cos) > 0.95


def test_image_only_section(toy_section, toy_model):
    sd = toy_section(n_genes=0)
    t = sd.tables["table"]
    assert t.n_vars == 0
    sta.tl.embed(sd, model=toy_model, show_progress_bar=False)
    # the fused spot + niche embedding comes from the H&E alone; no gene or joint (image + gene) niche embedding
    assert "X_stalign_image" in t.obsm and "X_stalign" in t.obsm
    assert "X_stalign_gene" not in t.obsm and "X_stalign_niche" not in t.obsm
    sta.tl.domains(sd, n_domains=3)
    assert t.obs["stalign_domain"].nunique() == 3
    assert t.uns["stalign_domain"]["params"]["use_rep"] == "X_stalign"  # the fused embedding, whatever it is made of


def test_expression_only_section(toy_section, toy_model):
    sd = toy_section(image=False)
    t = sd.tables["table"]
    assert len(sd.images) == 0
    sta.tl.embed(sd, model=toy_model, show_progress_bar=False)
    assert "X_stalign_gene" in t.obsm and "X_stalign" in t.obsm  # fused spot + niche, from expression alone
    assert "X_stalign_image" not in t.obsm and "X_stalign_niche" not in t.obsm


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"batch_size": 0}, "batch_size=0"), ({"num_workers": -2}, "num_workers=-2")]
)
def test_loop_settings_checked_before_the_model_loads(toy_adata, kwargs, match, monkeypatch):
    from stalign.tl import _embed

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(_embed, "resolve_model", no_load)
    with pytest.raises(ValueError, match=match):
        sta.tl.embed(toy_adata.copy(), model="stalign-base", show_progress_bar=False, **kwargs)


def test_domains_methods_and_copy(toy_embedded):
    ad = toy_embedded.copy()
    out = sta.tl.domains(ad, n_domains=5, copy=True, key_added="dom")
    assert "dom" not in ad.obs
    assert isinstance(out.obs["dom"].dtype, pd.CategoricalDtype)
    assert out.obs["dom"].nunique() == 5
    assert list(out.obs["dom"].cat.categories) == sorted(out.obs["dom"].cat.categories, key=int)
    sta.tl.domains(ad, n_domains=4, method="kmeans")
    assert ad.obs["stalign_domain"].nunique() == 4
    sta.tl.domains(ad, method="leiden", resolution=0.5, key_added="leid")
    assert ad.obs["leid"].nunique() >= 2
    # deterministic
    sta.tl.domains(ad, n_domains=5, key_added="dom2")
    assert np.array_equal(ad.obs["dom2"].to_numpy(), out.obs["dom"].to_numpy())


def test_domains_spatial_smoothing(embedded):
    sd = embedded
    t = sd.tables["table"]
    sta.tl.domains(sd, n_domains=5, smooth_um=150.0, key_added="dom_s")
    assert t.uns["dom_s"]["params"]["smooth_um"] == 150.0
    sta.tl.domains(sd, n_domains=5, smooth_um=0, key_added="dom_raw")
    # smoothing over neighbours makes neighbouring spots agree more often
    from stalign._section import get_section
    from stalign.pp._niche import niche_graph

    G = niche_graph(get_section(sd), radius_um=150.0).tocoo()
    off = G.row != G.col

    def agree(key):
        lab = t.obs[key].to_numpy()
        return float(np.mean(lab[G.row[off]] == lab[G.col[off]]))

    assert agree("dom_s") > agree("dom_raw")


def test_annotate_markers(embedded, tiny_model):
    ad = embedded.tables["table"].copy()
    # symbols or Ensembl ids (ENSG00000197971 is MBP); a marker the section lacks is listed and warned about
    markers = {"WM": ["ENSG00000197971", "PLP1", "MOBP", "NOTAGENE1"], "neuron": ["SNAP25", "NRGN"]}
    with pytest.warns(UserWarning, match="NOTAGENE1"):
        sta.tl.annotate(ad, markers=markers, model=tiny_model, key_added="lab")
    assert set(ad.obs["lab"].cat.categories) == set(markers)
    scores = ad.obsm["lab_scores"]
    assert list(scores.columns) == list(markers)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(ad.obs["lab_score"], scores.max(axis=1), atol=1e-6)
    params = ad.uns["lab"]["params"]
    assert params["use"] == "gene" and params["scores"] == "expression"
    assert params["markers_not_found"] == {"WM": ["NOTAGENE1"]}
    # white matter scores follow the myelin genes
    mbp = np.asarray(ad[:, "MBP"].X.todense()).ravel()
    assert np.corrcoef(mbp, scores["WM"])[0, 1] > 0.2
    with pytest.warns(UserWarning, match="NOTAGENE1"):
        sta.tl.annotate(ad, markers=markers, model=tiny_model, use="image", propagate=0.0, key_added="lab_img")
    assert ad.uns["lab_img"]["params"]["use"] == "image"


def test_annotate_label_transfer_recovers_reference_labels(toy_embedded):
    ad = toy_embedded.copy()
    ref = ad.copy()
    sta.tl.annotate(ad, reference=ref, labels_key="zone", k=1)
    # k=1 transfer onto the reference's own spots returns their labels
    same = ad.obs["stalign_label"].astype(str).to_numpy() == ref.obs["zone"].astype(str).to_numpy()
    assert same.mean() > 0.99


def test_predict_expression_retrieval_and_ridge(toy_embedded, toy_model):
    ad = toy_embedded
    q, r = ad[:30].copy(), ad[30:].copy()
    q_before = _copy.deepcopy(q.obs)
    pred = sta.tl.predict_expression(q, r, n_top_genes=10, model=toy_model, k=5)
    assert pred.shape == (30, 10)
    assert list(pred.obs_names) == list(q.obs_names)
    assert np.isfinite(pred.X).all() and (pred.X >= 0).all()
    assert pred.X.max() < 12  # log1p(1e4) ~ 9.2 bounds any average of log-normalised values
    pd.testing.assert_frame_equal(q.obs, q_before)
    ridge = sta.tl.predict_expression(q, [r], genes=list(pred.var_names[:5]), method="ridge", model=toy_model)
    assert ridge.shape == (30, 5) and "alpha" in ridge.uns["stalign_pred"]["params"]


def test_predict_expression_ignores_query_counts(toy_embedded, toy_model):
    ad = toy_embedded
    q, r = ad[:20].copy(), ad[20:].copy()
    a = sta.tl.predict_expression(q, r, n_top_genes=10, model=toy_model)
    q2 = q.copy()
    q2.X = q2.X[np.random.default_rng(0).permutation(q2.n_obs)]  # different counts, same image embedding
    q2.obsm["X_stalign_gene"] = np.roll(q2.obsm["X_stalign_gene"], 1, axis=0)
    b = sta.tl.predict_expression(q2, r, n_top_genes=10, model=toy_model)
    np.testing.assert_allclose(a.X, b.X)


def test_log_normalised_input_is_named(toy_adata, toy_model):
    """Log-normalised expression where raw counts are expected is refused with the fix, the input unchanged."""
    import scanpy as sc

    ad = toy_adata.copy()
    sc.pp.normalize_total(ad, target_sum=1e4)
    sc.pp.log1p(ad)
    before = ad.X.copy()
    with pytest.raises(ValueError, match=r"look log-normalised.*layers\['counts'\]"):
        sta.tl.embed(ad, model=toy_model, show_progress_bar=False)
    assert (ad.X != before).nnz == 0 if hasattr(before, "nnz") else np.array_equal(ad.X, before)
    assert "X_stalign" not in ad.obsm


def _finetuned(model):
    """``model`` with its weights changed in memory, as after fine-tuning (recorded as ``"custom"``)."""
    import torch

    ft = _copy.deepcopy(model)
    with torch.no_grad():
        next(ft.parameters()).add_(0.01)
    return ft


MARKERS = {"glia": ["Mbp", "Plp1"], "neuron": ["Snap25", "Gad1"]}


def test_annotate_and_predict_use_the_model_that_embedded_or_raise(toy_adata, toy_model):
    """Issue 12: after tl.embed(model=<fine-tuned>), the analysis uses that model's embeddings, or raises."""
    ft = _finetuned(toy_model)
    ad = toy_adata.copy()
    sta.tl.embed(ad, model=ft, device="cpu", show_progress_bar=False)
    assert ad.uns["stalign"]["model"] == "custom"

    # another model passed: refused, the object left as it was
    snap = snapshot(ad)
    with pytest.raises(ValueError, match="is not the model the stored embeddings were computed with"):
        sta.tl.annotate(ad, markers=MARKERS, model=toy_model)
    with pytest.raises(ValueError, match="is not the model the stored embeddings were computed with"):
        sta.tl.predict_expression(ad[:20].copy(), ad[20:].copy(), n_top_genes=5, model=toy_model)
    assert_unchanged(snap, ad)

    # the fine-tuned model passed again, or no model where the stored embeddings suffice: the stored ones are used
    a, b = ad.copy(), ad.copy()
    sta.tl.annotate(a, markers=MARKERS, model=ft)
    sta.tl.annotate(b, markers=MARKERS)
    pd.testing.assert_frame_equal(a.obsm["stalign_label_scores"], b.obsm["stalign_label_scores"])
    q, r = ad[:20].copy(), ad[20:].copy()
    np.testing.assert_allclose(
        sta.tl.predict_expression(q, r, n_top_genes=5, model=ft).X, sta.tl.predict_expression(q, r, n_top_genes=5).X
    )


def test_he_only_annotate_needs_the_in_memory_model_passed_again(toy_adata, toy_model):
    """Marker prompts need the model's gene encoder: an in-memory model is not guessed, nor replaced by the default."""
    ft = _finetuned(toy_model)
    he = toy_adata[:, []].copy()  # H&E only: no counts
    sta.tl.embed(he, model=ft, device="cpu", show_progress_bar=False)
    snap = snapshot(he)
    with pytest.raises(ValueError, match="in-memory model .* pass it again as model="):
        sta.tl.annotate(he, markers=MARKERS)
    with pytest.raises(ValueError, match="is not the model the stored embeddings were computed with"):
        sta.tl.annotate(he, markers=MARKERS, model=toy_model)
    assert_unchanged(snap, he)
    sta.tl.annotate(he, markers=MARKERS, model=ft)
    assert he.uns["stalign_label"]["params"]["scores"] == "prompts"


def test_annotate_finds_a_custom_embedding_key(toy_adata, toy_model):
    """A custom tl.embed(key_added=) is found through its uns record, not recomputed under the default keys."""
    ad = toy_adata.copy()
    sta.tl.embed(ad, model=toy_model, key_added="X_mine", device="cpu", show_progress_bar=False)
    sta.tl.annotate(ad, markers=MARKERS, model=toy_model)
    assert not any(k.startswith("X_stalign") for k in ad.obsm)
    assert ad.uns["stalign_label"]["params"]["use"] == "gene"
