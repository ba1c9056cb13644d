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


# ------------------------------------------------------------------------------------------------ aggregation
def test_spot_infonce_known_inputs():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(300, 8))
    # 300 spots: two full batches of 128, the last 44 dropped; aligned pairs at a high scale cost almost nothing
    assert ev.spot_infonce(A, A, logit_scale=100.0) < 1e-3
    # unrelated pairs at a tiny scale: every candidate equally likely, ln(batch)
    assert ev.spot_infonce(A, rng.normal(size=A.shape), logit_scale=1e-6) == pytest.approx(np.log(128), abs=1e-4)
    assert ev.spot_infonce(A, A, logit_scale=1e-6, batch_size=16) == pytest.approx(np.log(16), abs=1e-4)
    assert np.isnan(ev.spot_infonce(A[:100], A[:100], logit_scale=10.0))  # no complete batch
    # the seed fixes the batches: same seed, same value; scaling rows does not matter (cosine)
    B = A + rng.normal(size=A.shape)
    assert ev.spot_infonce(A, B, logit_scale=10.0, random_state=1) == pytest.approx(
        ev.spot_infonce(3 * A, B, logit_scale=10.0, random_state=1)
    )
    assert ev.spot_infonce(A, B, logit_scale=10.0, random_state=1) != ev.spot_infonce(
        A, B, logit_scale=10.0, random_state=2
    )
    with pytest.raises(ValueError, match="paired rows"):
        ev.spot_infonce(A, A[:10], logit_scale=10.0)


def test_summarise_and_pooled():
    from stalign.evaluation._aggregate import merge, pooled, summarise

    r = summarise([{"ari": 0.2}, {"ari": 0.4}], [("m", 0), ("m", 1)])
    assert r["ari"] == pytest.approx(0.3) and r["sd"]["ari"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert r["values"]["ari"] == [0.2, 0.4] and r["runs"] == [["m", 0], ["m", 1]]
    assert summarise([{"ari": 0.2}], [("m", 0)])["sd"]["ari"] is None  # one run: no sd
    # pooled run by run: run 0 averages the sections' run 0
    per = {"a": {"methods": {"x": r}}, "b": {"methods": {"x": summarise([{"ari": 0.0}, {"ari": 0.2}], r["runs"])}}}
    p = pooled(per, ["ari"])["x"]
    assert p["values"]["ari"] == pytest.approx([0.1, 0.3]) and p["n_sections"] == 2
    m = merge(summarise([{"l": 1.0}, {"l": 2.0}], [("m", 0), ("m", 1)]), summarise([{"r": 0.5}], [("m", None)]))
    assert m["runs"] == {"l": [["m", 0], ["m", 1]], "r": [["m", None]]} and m["l"] == 1.5 and m["r"] == 0.5


# ------------------------------------------------------------------------------------------------ tasks
DLPFC = "dlpfc:151673[300]"


def test_domains_end_to_end(dlpfc_small, tiny_model):
    t = next(iter(dlpfc_small.values())).tables["table"]
    before = set(t.obsm), set(t.obs.columns), set(t.uns)
    res = ev.eval_domains(dlpfc_small, model=tiny_model, image_features=FAST_IMAGE, seeds=2)
    sec = res["sections"][DLPFC]
    assert sec["n_domains"] == 7 and sec["smooth_um"] == 150.0 and sec["seeds"] == [0, 1]
    assert list(sec["methods"]) == [
        "stalign", "stalign_gene", "stalign_image", "stalign_niche", "stalign_image_gene", "random_init",
        "pca", "pca_niche", "squidpy",
    ]  # fmt: skip
    m = sec["methods"]
    assert m["stalign"]["use_rep"] == "X_stalign" and m["stalign_gene"]["use_rep"] == "X_stalign_gene"
    assert m["stalign_image_gene"]["use_rep"] == "image+gene"
    assert m["stalign"]["runs"] == [["stalign", 0], ["stalign", 1]]
    assert m["pca"]["runs"] == [[None, 0], [None, 1]]
    for r in m.values():
        assert len(r["values"]["ari"]) == 2 and r["ari"] == pytest.approx(np.mean(r["values"]["ari"]))
        assert -1 <= r["ari"] <= 1 and 0 <= r["nmi"] <= 1
    assert (set(t.obsm), set(t.obs.columns), set(t.uns)) == before  # the user's data is untouched
    assert res["pooled"]["stalign"]["ari"] == pytest.approx(m["stalign"]["ari"])


def test_domains_score_what_a_user_gets(dlpfc_small, tiny_model):
    """stalign's number is tl.embed + tl.domains with defaults; baselines go through the same smoothing."""
    import stalign as sta
    from stalign.evaluation._domains import cluster

    sd = next(iter(dlpfc_small.values()))
    res = ev.eval_domains(dlpfc_small, model=tiny_model, baselines=False, parts=False, seeds=[3])
    user = sta.tl.embed(sd, model=tiny_model, copy=True, show_progress_bar=False)
    sta.tl.domains(user, n_domains=7, random_state=3)
    t = user.tables["table"]
    expected = ev.clustering_scores(t.obs["annotation"], t.obs["stalign_domain"])["ari"]
    assert res["sections"][DLPFC]["methods"]["stalign"]["ari"] == pytest.approx(expected)
    # the baselines' route (spatial_smooth, then tl.domains unsmoothed) gives tl.domains' own labels
    (labels,) = cluster(user, t.obsm["X_stalign"], n_domains=7, smooth_um=150.0, seeds=[3])
    np.testing.assert_array_equal(labels.astype(str), t.obs["stalign_domain"].to_numpy().astype(str))
    # smooth_um=0 turns smoothing off for every method
    res0 = ev.eval_domains(dlpfc_small, model=tiny_model, baselines=False, parts=False, seeds=[3], smooth_um=0)
    sta.tl.domains(user, n_domains=7, random_state=3, smooth_um=0, key_added="d0")
    expected0 = ev.clustering_scores(t.obs["annotation"], t.obs["d0"])["ari"]
    assert res0["sections"][DLPFC]["methods"]["stalign"]["ari"] == pytest.approx(expected0)
    with pytest.raises(ValueError, match="smooth_um"):
        ev.eval_domains(dlpfc_small, model=tiny_model, baselines=False, smooth_um=-1)
    with pytest.raises(ValueError, match="seeds"):
        ev.eval_domains(dlpfc_small, model=tiny_model, baselines=False, seeds=0)


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
        "stalign",
        "stalign_retrieval",
        "stalign_ridge",
        "random_init",
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
    # the default of tl.predict_expression is its ridge: the same numbers
    assert r["methods"]["stalign"]["mse"] == pytest.approx(r["methods"]["stalign_ridge"]["mse"])
    with pytest.raises(ValueError, match="patient"):
        ev.eval_genes(
            {"her2st:C3": her2st_c["her2st:C3"]},
            {"her2st:C2": her2st_c["her2st:C2"]},
            model=tiny_model,
            split="patient",
        )


def test_score_genes_labels_smoothing_and_zscores(dlpfc_small):
    sd = next(iter(dlpfc_small.values()))
    t = sd.tables["table"]
    mk = ev.DLPFC_LAYER_MARKERS
    smoothed = ev.score_genes_labels(sd, mk, random_state=0)  # 150 µm by default, like tl.annotate
    raw = ev.score_genes_labels(t, mk, smooth_um=0, random_state=0)  # no positions needed without smoothing
    assert smoothed.shape == raw.shape == (t.n_obs,) and set(smoothed) <= set(mk)
    assert (smoothed != raw).any()
    # by hand: scanpy's score per label on the log-normalised counts, z-scored over spots, argmax
    import scanpy as sc
    from anndata import AnnData

    from stalign.pp import log_normalize

    few = {k: mk[k] for k in ("L1", "L5", "WM")}
    keep = np.asarray(t.X.sum(axis=0)).ravel() > 0
    tmp = AnnData(log_normalize(t.X)[:, keep], var={"g": t.var_names[keep]})
    tmp.var_names = t.var_names[keep]
    Z = []
    for genes in few.values():
        present = [g for g in genes if g in tmp.var_names]
        sc.tl.score_genes(tmp, present, score_name="s", random_state=0, ctrl_size=50)
        z = tmp.obs["s"].to_numpy()
        Z.append((z - z.mean()) / z.std())
    expected = np.asarray(list(few), dtype=object)[np.argmax(np.stack(Z, axis=1), axis=1)]
    np.testing.assert_array_equal(ev.score_genes_labels(t, few, smooth_um=0, random_state=0), expected)
    with pytest.raises(ValueError, match="no genes"):
        ev.score_genes_labels(t[:, []], mk, smooth_um=0)


def test_annotate_end_to_end(dlpfc_small, tiny_model):
    res = ev.eval_annotate(dlpfc_small, model=tiny_model, seeds=2)
    r = res["sections"][DLPFC]
    assert list(r["methods"]) == ["stalign", "stalign_image", "random_init", "score_genes"]
    assert r["labels"] == list(ev.DLPFC_LAYER_MARKERS) and r["smooth_um"] == 150.0
    for m in r["methods"].values():
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1
    assert len(r["methods"]["score_genes"]["values"]["accuracy"]) == 2
    assert res["pooled"]["score_genes"]["n_spots"] == res["pooled"]["stalign"]["n_spots"] == r["n_scored"]


def test_annotate_image_only_section_has_no_expression_baseline(dlpfc_small, tiny_model):
    from spatialdata import SpatialData

    sd = next(iter(dlpfc_small.values()))
    t = sd.tables["table"]
    image_only = SpatialData(images=dict(sd.images), shapes=dict(sd.shapes), tables={"table": t[:, []].copy()})
    res = ev.eval_annotate({"dlpfc:he": image_only}, model=tiny_model, seeds=1, baselines=True)
    assert list(res["sections"]["dlpfc:he"]["methods"]) == ["stalign", "random_init"]


def test_retrieval_end_to_end(dlpfc_small, tiny_model):
    res = ev.eval_retrieval(dlpfc_small, model=tiny_model, seeds=2)
    sec = res["sections"][DLPFC]
    r = sec["methods"]
    assert set(r) == {"stalign", "random_init", "chance"}
    assert r["chance"]["i2g_R@10"] == pytest.approx(10 / 300)
    assert r["chance"]["l_spot"] == sec["l_spot_chance"] == pytest.approx(np.log(128))
    assert sec["l_spot_target"] == pytest.approx(0.85 * np.log(128))
    assert 0 <= r["stalign"]["g2i_R@5"] <= 1
    # recall: one value per model; the held-out loss: one per model and shuffling seed, at the model's temperature
    assert r["stalign"]["runs"]["i2g_R@1"] == [["stalign", None]]
    assert r["stalign"]["runs"]["l_spot"] == [["stalign", 0], ["stalign", 1]]
    t = next(iter(dlpfc_small.values()))
    emb = __import__("stalign").tl.embed(t, model=tiny_model, copy=True, show_progress_bar=False).tables["table"]
    expected = ev.spot_infonce(
        emb.obsm["X_stalign_image"],
        emb.obsm["X_stalign_gene"],
        logit_scale=float(tiny_model.logit_scale),
        random_state=1,
    )
    assert r["stalign"]["values"]["l_spot"][1] == pytest.approx(expected)


def test_several_models_are_training_seeds(dlpfc_small, tiny_model):
    """Two models (training seeds): runs over models × seeds, one random-init model per trained one."""
    res = ev.evaluate("retrieval", model=[tiny_model, tiny_model], sections=dlpfc_small, seeds=2)
    assert res["meta"]["groups"] == {
        "stalign": ["stalign[0]", "stalign[1]"],
        "random_init": ["random_init[0]", "random_init[1]"],
    }
    m = res["retrieval"]["sections"][DLPFC]["methods"]["stalign"]
    assert len(m["values"]["l_spot"]) == 4 and len(m["values"]["i2g_R@1"]) == 2
    assert m["sd"]["i2g_R@1"] == pytest.approx(0.0)  # the same model twice
    for info in res["meta"]["models"].values():
        assert len(info["weights_fingerprint"]) == 64


def test_evaluate_writes_json_and_markdown(dlpfc_small, tiny_model, tmp_path):
    out = tmp_path / "res.json"
    res = ev.evaluate(
        ["domains", "retrieval"],
        model=tiny_model,
        sections=dlpfc_small,
        ablations={"same_model": tiny_model},
        image_features=FAST_IMAGE,
        seeds=2,
        out=out,
    )
    back = json.loads(out.read_text())
    assert back["domains"]["sections"][DLPFC]["n_domains"] == 7
    assert back["meta"]["stalign_version"] and back["meta"]["machine"]
    md = out.with_suffix(".md").read_text()
    assert "| ari (↑) |" in md and "| pca_niche |" in md and "| same_model |" in md and "| l_spot (↓) |" in md
    assert " ± " in md and "smoothed over 150 µm" in md
    assert md == ev.format_markdown(res)
    # the ablation is the same model: same numbers
    d = res["domains"]["sections"][DLPFC]["methods"]
    assert d["same_model"]["ari"] == pytest.approx(d["stalign"]["ari"])


def test_format_markdown_done_when():
    res = {
        "done_when": [
            {"criterion": "a ≥ b", "measured": "0.5 vs 0.4", "pass": True},
            {"criterion": "c ≤ d", "measured": "5.1 vs 4.1", "pass": False},
        ]
    }
    md = ev.format_markdown(res)
    assert "### Done when" in md and "| a ≥ b | 0.5 vs 0.4 | PASS |" in md and "| **FAIL** |" in md
    assert md.rstrip().endswith("1 of 2 criteria pass.")


def test_evaluate_bad_input(tiny_model):
    with pytest.raises(ValueError, match="Unknown task"):
        ev.evaluate("clustering", model=tiny_model, sections=["dlpfc:151673"])
    with pytest.raises(ValueError, match="sections="):
        ev.evaluate("domains", model=tiny_model)
    with pytest.raises(TypeError, match="specs"):
        ev.evaluate("domains", model=tiny_model, sections=[3], baselines=False)
    with pytest.raises(TypeError, match="registry name"):
        ev.evaluate("domains", model=3.0, sections=["dlpfc:151673"], baselines=False)


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
    assert main([*argv, "--seeds", "2", "--smooth-um", "0"]) == 0
    assert "i2g_R@1" in capsys.readouterr().out
    res = json.loads(out.read_text())
    methods = res["retrieval"]["sections"][str(h5ad)]["methods"]
    assert set(methods) == {"stalign", "random_init", "chance"}
    assert methods["stalign"]["runs"]["l_spot"] == [["stalign", 0], ["stalign", 1]]
    assert main(["evaluate", "--task", "domains", "--model", str(path)]) == 2  # no sections: clear error
    assert "--sections" in capsys.readouterr().err  # the command line names its flag


def test_write_results_undefined_metric_is_null_not_nan(tmp_path):
    """A constant prediction has no Pearson r: the JSON holds null (standard JSON) and the markdown shows "–"."""
    truth = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
    undefined = ev.expression_scores(np.ones_like(truth), truth)
    assert np.isnan(undefined["pearson"])
    res = {"task": "genes", "sections": {"s": {"methods": {"ref_mean": undefined}}}, "values": np.array([np.nan, 1.0])}
    path, md = ev.write_results(res, tmp_path / "r.json")

    def refuse(constant):
        raise ValueError(constant)

    back = json.loads(path.read_text(), parse_constant=refuse)
    assert back["sections"]["s"]["methods"]["ref_mean"]["pearson"] is None
    assert back["values"] == [None, 1.0]
    assert "nan" not in md.read_text().lower()
    assert np.isnan(undefined["pearson"])  # the caller's dict is left unchanged
