"""Evaluation harness: metrics on known inputs, every task end to end on small real subsets, the markdown table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stalign import evaluation as ev

FAST_IMAGE = ("summary",)  # squidpy texture features run at ~10 spots/s; the full set is used by benchmarks/


# ------------------------------------------------------------------------------------------------ metrics
def test_clustering_scores_known_inputs():
    y = np.array(["a", "a", "b", "b", "c", "c"])
    assert ev.clustering_scores(y, y)["ari"] == pytest.approx(1.0)
    # relabelling does not matter
    assert ev.clustering_scores(y, np.array([2, 2, 0, 0, 1, 1]))["nmi"] == pytest.approx(1.0)
    # unlabelled spots are excluded from the score
    y2 = np.array(["a", "a", None, "b", "b", np.nan], dtype=object)
    p2 = np.array([0, 0, 5, 1, 1, 7])
    s = ev.clustering_scores(y2, p2)
    assert s["ari"] == pytest.approx(1.0) and s["n"] == 4
    with pytest.raises(ValueError, match="length"):
        ev.clustering_scores(y, y[:3])


def test_classification_and_expression_scores():
    y = np.array(["a", "b", "a", "b"])
    s = ev.classification_scores(y, np.array(["a", "a", "a", "b"]))
    assert s["accuracy"] == pytest.approx(0.75)
    assert s["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    rng = np.random.default_rng(0)
    t = rng.normal(size=(50, 4))
    r = ev.pearson_per_gene(2 * t + 1, t)
    np.testing.assert_allclose(r, 1.0)
    e = ev.expression_scores(t, t)
    assert e["pearson"] == pytest.approx(1.0) and e["mse"] == 0
    const = t.copy()
    const[:, 0] = 3.0
    assert np.isnan(ev.pearson_per_gene(const, t)[0])


def test_recall_at_k_on_permutation():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(40, 8))
    assert ev.recall_at_k(A, A)["R@1"] == 1.0
    perm = rng.permutation(40)
    while (perm == np.arange(40)).any():
        perm = rng.permutation(40)
    r = ev.recall_at_k(A, A[perm], ks=(1, 40))
    assert r["R@1"] == 0.0  # every key is someone else's
    assert r["R@40"] == 1.0
    # identical keys (ties) do not count as hits for the wrong row
    assert ev.recall_at_k(A, np.ones_like(A), ks=(1, 40)) == {"R@1": 0.0, "R@40": 1.0}


def test_patient_of():
    assert ev.patient_of("her2st:C6") == ev.patient_of("her2st:C2") == "her2st:C"
    assert ev.patient_of("dlpfc:151673") == ev.patient_of("dlpfc:151674")
    assert ev.patient_of("dlpfc:151508") != ev.patient_of("dlpfc:151673")
    assert ev.patient_of("stahl_mob:11") is None


# ------------------------------------------------------------------------------------------------ baselines
def test_niche_smoothed_pca_baseline_on_dlpfc(dlpfc73):
    """Measured here: PCA 0.31, niche-smoothed PCA 0.38 ARI on 151673 (7-component GMM)."""
    from stalign.pp import spatial_smooth
    from stalign.tl._domains import cluster_embedding

    t = dlpfc73.tables["table"]
    P = ev.expression_pca(t)
    N = spatial_smooth(dlpfc73, P, radius_um=None)  # the niche radius: 110 µm on Visium
    assert P.shape == N.shape == (t.n_obs, 30)
    ari_n = ev.clustering_scores(t.obs["annotation"], cluster_embedding(N, n_domains=7, method="gmm"))["ari"]
    assert ari_n > 0.2
    np.testing.assert_array_equal(spatial_smooth(dlpfc73, P, radius_um=110.0), N)
    with pytest.raises(ValueError, match="one row per spot"):
        spatial_smooth(dlpfc73, P[:10], radius_um=None)


def test_pixel_features_shapes(dlpfc_small):
    sd = next(iter(dlpfc_small.values()))
    f = ev.pixel_features(sd)
    n = sd.tables["table"].n_obs
    assert f["pixels"].shape == (n, 3 * 8 * 8) and f["color_hist"].shape == (n, 48)
    np.testing.assert_allclose(f["color_hist"][:, :16].sum(axis=1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ tasks
def test_domains_end_to_end(dlpfc_small, tiny_model):
    t = next(iter(dlpfc_small.values())).tables["table"]
    before = set(t.obsm), set(t.obs.columns)
    res = ev.eval_domains(dlpfc_small, model=tiny_model, image_features=FAST_IMAGE)
    sec = res["sections"]["dlpfc:151673[300]"]
    assert sec["n_domains"] == 7
    assert set(sec["methods"]) == {
        "stalign", "stalign_no_niche", "stalign_no_fusion", "random_init", "pca", "pca_niche", "squidpy",
    }  # fmt: skip
    assert sec["methods"]["stalign"]["use"] == "fused"
    assert sec["methods"]["stalign_no_niche"]["use"] == "fused_spot"
    assert sec["methods"]["stalign_no_fusion"]["use"] == "image+gene"
    for m in sec["methods"].values():
        assert -1 <= m["ari"] <= 1 and 0 <= m["nmi"] <= 1
    assert (set(t.obsm), set(t.obs.columns)) == before  # the user's data is untouched


def test_genes_end_to_end(her2st_c, tiny_model):
    res = ev.eval_genes(
        {"her2st:C3": her2st_c["her2st:C3"]},
        {"her2st:C2": her2st_c["her2st:C2"]},
        model=tiny_model,
        image_features=FAST_IMAGE,
        n_top_genes=20,
    )
    r = res["sections"]["her2st:C3"]
    assert r["patient_overlap"] is True and len(r["genes"]) == 20
    expected = {
        "stalign_retrieval",
        "stalign_ridge",
        "random_init_retrieval",
        "random_init_ridge",
        "ref_mean",
        "squidpy_ridge",
        "pixels_retrieval",
        "color_hist_retrieval",
    }
    assert set(r["methods"]) == expected
    for m in r["methods"].values():
        assert m["mse"] >= 0 and (np.isnan(m["pearson"]) or -1 <= m["pearson"] <= 1)
    with pytest.raises(ValueError, match="patient"):
        ev.eval_genes(
            {"her2st:C3": her2st_c["her2st:C3"]},
            {"her2st:C2": her2st_c["her2st:C2"]},
            model=tiny_model,
            split="patient",
        )


def test_annotate_end_to_end(dlpfc_small, tiny_model):
    res = ev.eval_annotate(dlpfc_small, model=tiny_model)
    r = res["sections"]["dlpfc:151673[300]"]
    assert set(r["methods"]) == {
        "stalign_gene",
        "stalign_image",
        "random_init_gene",
        "random_init_image",
        "score_genes",
    }
    assert r["labels"] == list(ev.DLPFC_LAYER_MARKERS)
    for m in r["methods"].values():
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1
    assert res["pooled"]["score_genes"]["n_spots"] == r["n_scored"]


def test_retrieval_end_to_end(dlpfc_small, tiny_model):
    res = ev.eval_retrieval(dlpfc_small, model=tiny_model)
    r = res["sections"]["dlpfc:151673[300]"]["methods"]
    assert set(r) == {"stalign", "random_init", "chance"}
    assert r["chance"]["i2g_R@10"] == pytest.approx(10 / 300)
    assert 0 <= r["stalign"]["g2i_R@5"] <= 1


def test_evaluate_writes_json_and_markdown(dlpfc_small, tiny_model, tmp_path):
    out = tmp_path / "res.json"
    res = ev.evaluate(
        ["domains", "retrieval"],
        model=tiny_model,
        sections=dlpfc_small,
        ablations={"same_model": tiny_model},
        image_features=FAST_IMAGE,
        out=out,
    )
    assert json.loads(out.read_text())["domains"]["sections"]["dlpfc:151673[300]"]["n_domains"] == 7
    md = out.with_suffix(".md").read_text()
    assert "| ari (↑) |" in md and "| pca_niche |" in md and "| same_model |" in md
    assert md == ev.format_markdown(res)
    # the ablation is the same model: same numbers
    d = res["domains"]["sections"]["dlpfc:151673[300]"]["methods"]
    assert d["same_model"]["ari"] == pytest.approx(d["stalign"]["ari"])


def test_evaluate_bad_input(tiny_model):
    with pytest.raises(ValueError, match="Unknown task"):
        ev.evaluate("clustering", model=tiny_model, sections=["dlpfc:151673"])
    with pytest.raises(ValueError, match="sections="):
        ev.evaluate("domains", model=tiny_model)
    with pytest.raises(TypeError, match="specs"):
        ev.evaluate("domains", model=tiny_model, sections=[3], baselines=False)


def test_cli_evaluate(tiny_model, dlpfc_small, tmp_path, capsys):
    """A saved model and a section as a squidpy-convention .h5ad path."""
    import stalign as sta
    from stalign.cli import main
    from stalign.models import save

    path = save(tiny_model, tmp_path / "m")
    h5ad = tmp_path / "sec.h5ad"
    sta.io.to_anndata(next(iter(dlpfc_small.values()))).write_h5ad(h5ad)
    out = tmp_path / "r.json"
    argv = ["evaluate", "--task", "retrieval", "--sections", str(h5ad), "--model", str(path), "--out", str(out)]
    assert main(argv) == 0
    assert "i2g_R@1" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert set(res["retrieval"]["sections"][str(h5ad)]["methods"]) == {"stalign", "random_init", "chance"}
    assert main(["evaluate", "--task", "domains", "--model", str(path)]) == 2  # no sections: clear error
    assert "sections=" in capsys.readouterr().err
