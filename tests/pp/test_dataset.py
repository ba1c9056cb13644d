"""SpotDataset on a synthetic 256-spot section (no data folder): batches, determinism, sharding, modalities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anndata import AnnData
from scipy import sparse

import stalign as sta
from stalign._batch import BatchKey
from stalign._constants import Key
from stalign.pp import SpotDataset


@pytest.fixture(scope="module")
def sdata(toy_section):
    return toy_section(n_rows=16, n_cols=16)


@pytest.fixture(scope="module")
def genes(sdata):
    names = [str(g) for g in sdata.tables["table"].var_names]
    return ["NOT_A_GENE", *names[::-1]]


@pytest.fixture(scope="module")
def ds_kwargs(genes):
    return {"genes": genes, "spot_px": 16, "niche_px": 24, "batch_size": 64, "seed": 3}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_shapes_dtypes_and_values(sdata, genes, ds_kwargs):
    table = sdata.tables["table"]
    keys_before = (set(table.obsm), set(table.uns), set(table.obsp))
    ds = SpotDataset([sdata], **ds_kwargs)
    assert (set(table.obsm), set(table.uns), set(table.obsp)) == keys_before  # niche computed on the side
    b = ds[0]
    B, V = 64, len(genes)
    assert b[BatchKey.spot_image].shape == (B, 3, 16, 16) and b[BatchKey.spot_image].dtype == torch.uint8
    assert b[BatchKey.niche_image].shape == (B, 3, 24, 24) and b[BatchKey.niche_image].dtype == torch.uint8
    for k in (BatchKey.spot_expr, BatchKey.niche_expr):
        assert b[k].shape == (B, V) and b[k].dtype == torch.float32
    for k in (BatchKey.has_image, BatchKey.has_expr):
        assert b[k].dtype == torch.bool and b[k].all()
    for k in (BatchKey.section, BatchKey.index, BatchKey.cluster):
        assert b[k].dtype == torch.int64 and b[k].shape == (B,)
    assert (b[BatchKey.cluster] == -1).all() and (b[BatchKey.section] == 0).all()
    # expression: log1p(normalize_total 1e4) over the whole panel, mapped onto the vocabulary
    idx = b[BatchKey.index].numpy()
    X = table.X[idx].toarray()
    expect = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    col = table.var_names.get_indexer(genes[1:])
    np.testing.assert_allclose(b[BatchKey.spot_expr][:, 1:].numpy(), expect[:, col], rtol=1e-5, atol=1e-5)
    assert (b[BatchKey.spot_expr][:, 0] == 0).all()  # unmeasured gene
    # niche: same transform of the niche's mean raw counts
    ref = sta.pp.niche_expression(table.copy(), copy=True).obsm[Key.niche_expr][idx].toarray()
    expect_n = np.log1p(ref / ref.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(b[BatchKey.niche_expr][:, 1:].numpy(), expect_n[:, col], rtol=1e-4, atol=1e-4)
    # images: the crops of read_crops
    from stalign._section import get_section
    from stalign.pp import read_crops

    sec = get_section(sdata)
    np.testing.assert_array_equal(
        b[BatchKey.spot_image].numpy(), read_crops(sec, sec.coords[idx], size_um=100, out_px=16)
    )


def test_determinism_epochs_and_workers(sdata, ds_kwargs):
    ds = SpotDataset([sdata], **ds_kwargs)
    ds2 = SpotDataset([sdata], **ds_kwargs)
    ds.set_epoch(1)
    ds2.set_epoch(1)
    assert _equal(ds[2], ds2[2])
    ds2.set_epoch(2)
    assert not torch.equal(ds[2][BatchKey.index], ds2[2][BatchKey.index])
    ds.set_epoch(0)
    a = list(ds.dataloader(num_workers=0))
    b = list(ds.dataloader(num_workers=2))
    assert len(a) == len(b) == len(ds)
    assert all(_equal(x, y) for x, y in zip(a, b, strict=True))
    # training: every spot at most once per epoch, batches of batch_size except the last of the section
    idx = np.concatenate([x[BatchKey.index].numpy() for x in a])
    assert len(np.unique(idx)) == len(idx) == sdata.tables["table"].n_obs


def test_sharding(sdata, ds_kwargs):
    full = SpotDataset([sdata], **{**ds_kwargs, "batch_size": 64})
    shards = [SpotDataset([sdata], **{**ds_kwargs, "batch_size": 32, "rank": r, "world_size": 2}) for r in (0, 1)]
    for s in shards:
        s.set_epoch(4)
    full.set_epoch(4)
    b0, b1 = (s.batch_indices() for s in shards)
    assert len(b0) == len(b1) and all(len(x[1]) == len(y[1]) for x, y in zip(b0, b1, strict=True))
    i0 = np.concatenate([r for _, r in b0])
    i1 = np.concatenate([r for _, r in b1])
    assert not set(i0) & set(i1)
    # the two ranks split the same global batches as one process with twice the batch size
    gl = full.batch_indices()
    assert len(gl) == len(b0)
    for (_, g), (_, r0), (_, r1) in zip(gl, b0, b1, strict=True):
        # an incomplete global batch is trimmed to a multiple of world_size
        assert set(r0) | set(r1) <= set(g) and len(g) - len(r0) - len(r1) < 2
    n = sdata.tables["table"].n_obs
    assert len(i0) + len(i1) == n - n % 2
    assert shards[0].shard_layout == "strided"


def test_inference_set_start_transform_clusters(sdata, genes, ds_kwargs):
    n = sdata.tables["table"].n_obs
    cl = np.arange(n) % 5
    seen = []

    def transform(batch):
        seen.append(1)
        return {**batch, "extra": torch.ones(1)}

    ds = SpotDataset(
        [sdata, sdata], **{**ds_kwargs, "gene_dropout": 0.5}, inference=True, clusters=[cl, None], transform=transform
    )
    assert ds.gene_dropout == 0.0
    sec_idx = [(s, r) for s, r in ds.batch_indices()]
    for s in (0, 1):
        rows = np.concatenate([r for t, r in sec_idx if t == s])
        assert np.array_equal(np.sort(rows), np.arange(n))  # every spot exactly once
    b = ds[0]
    assert "extra" in b and seen
    np.testing.assert_array_equal(b[BatchKey.cluster].numpy(), cl[b[BatchKey.index].numpy()])
    ds.set_start(3)
    assert len(ds) == len(sec_idx) - 3
    assert torch.equal(ds[0][BatchKey.index], torch.from_numpy(sec_idx[3][1]))


def test_gene_dropout(sdata, ds_kwargs):
    b = SpotDataset([sdata], **{**ds_kwargs, "gene_dropout": 0.5})[0]
    ref = SpotDataset([sdata], **ds_kwargs)[0]
    assert torch.equal(b[BatchKey.index], ref[BatchKey.index])
    measured = (ref[BatchKey.spot_expr] != 0).any(0)
    dropped = measured & (b[BatchKey.spot_expr] == 0).all(0)
    assert 0.3 < dropped.sum() / measured.sum() < 0.7
    assert (b[BatchKey.niche_expr][:, dropped] == 0).all()  # same columns dropped in the niche
    kept = ~dropped
    assert torch.equal(b[BatchKey.spot_expr][:, kept], ref[BatchKey.spot_expr][:, kept])


def test_image_only_and_expression_only(sdata, genes):
    # image only: the section without counts
    table = sdata.tables["table"]
    img_only = AnnData(shape=(table.n_obs, 0), obsm={"spatial": table.obsm["spatial"]})
    from stalign._section import get_section

    lv = get_section(sdata).images[0]
    img_only.uns["spatial"] = {
        "x": {
            "images": {"lowres": np.moveaxis(np.asarray(lv.data), 0, -1)},
            "scalefactors": {
                **table.uns["spatial"]["toy"]["scalefactors"],
                "tissue_lowres_scalef": 1 / lv.fullres_per_px,
            },
        }
    }
    # expression only: counts without an image
    expr_only = AnnData(X=sparse.csr_matrix(table.X), obsm={"spatial": table.obsm["spatial"]}, var=table.var.copy())
    expr_only.uns["spatial"] = {"y": {"scalefactors": dict(table.uns["spatial"]["toy"]["scalefactors"])}}
    ds = SpotDataset([img_only, expr_only], genes=genes, spot_px=8, niche_px=8, batch_size=500, inference=True)
    batches = {int(b[BatchKey.section][0]): b for b in (ds[0], ds[len(ds) - 1])}
    a, e = batches[0], batches[1]
    assert a[BatchKey.has_image].all() and not a[BatchKey.has_expr].any() and (a[BatchKey.spot_expr] == 0).all()
    assert e[BatchKey.has_expr].all() and not e[BatchKey.has_image].any() and (e[BatchKey.spot_image] == 0).all()
