"""The model on a real section (her2st C3: legacy ST, full-res H&E, ~15k genes): crops in µm, real expression."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stalign._batch import BatchKey as K
from stalign._section import get_section
from stalign.models import STAlign

from .conftest import tiny_config


def _crop(section, level, image, xy, side_um: float) -> np.ndarray | None:
    half = side_um / section.microns_per_pixel / level.fullres_per_px / 2
    cx, cy = xy / level.fullres_per_px
    y0, y1, x0, x1 = int(cy - half), int(cy + half), int(cx - half), int(cx + half)
    h, w = image.shape[1:]
    if y0 < 0 or x0 < 0 or y1 > h or x1 > w:
        return None
    return image[:, y0:y1, x0:x1]


@pytest.fixture(scope="module")
def real_batch(data_dir):
    import scanpy as sc

    import stalign as sta

    sdata = sta.datasets.load("her2st:C3", data_dir=data_dir)
    sec = get_section(sdata, require_image=True)
    adata = sec.table.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    genes = [str(g).upper() for g in adata.var_names]
    keep = np.unique(genes, return_index=True)[1]
    level = sec.level_for(100.0 / 32)
    image = np.asarray(level.data)  # one read of one pyramid level (a few MB)
    spots, niches, rows = [], [], []
    for i in range(adata.n_obs):
        s, n = _crop(sec, level, image, sec.coords[i], 100.0), _crop(sec, level, image, sec.coords[i], 200.0)
        if s is None or n is None:
            continue
        t = torch.from_numpy
        spots.append(torch.nn.functional.interpolate(t(s)[None].float(), size=32, mode="area")[0])
        niches.append(torch.nn.functional.interpolate(t(n)[None].float(), size=32, mode="area")[0])
        rows.append(i)
        if len(rows) == 24:
            break
    X = adata.X[rows][:, keep]
    X = np.asarray(X.todense() if hasattr(X, "todense") else X, dtype=np.float32)
    # niche expression: mean over the 6 nearest spots (ST 200 µm grid)
    d = np.linalg.norm(sec.coords[:, None] - sec.coords[rows][None], axis=2)
    nn_idx = np.argsort(d, axis=0)[:7].T
    Xall = adata.X[:, keep]
    Xall = np.asarray(Xall.todense() if hasattr(Xall, "todense") else Xall, dtype=np.float32)
    niche = Xall[nn_idx].mean(1)
    n = len(rows)
    batch = {
        K.spot_image: torch.stack(spots).round().clamp(0, 255).to(torch.uint8),
        K.niche_image: torch.stack(niches).round().clamp(0, 255).to(torch.uint8),
        K.spot_expr: torch.from_numpy(X),
        K.niche_expr: torch.from_numpy(niche),
        K.has_image: torch.ones(n, dtype=torch.bool),
        K.has_expr: torch.ones(n, dtype=torch.bool),
    }
    return [genes[j] for j in keep], batch


def test_real_section_embed_and_loss(real_batch):
    genes, batch = real_batch
    assert batch[K.spot_image].shape[0] >= 16
    torch.manual_seed(0)
    model = STAlign(tiny_config().replace(genes=genes))
    out = model.loss(batch)
    assert set(out.components) == {"spot", "niche", "ns", "image_ns", "gene_ns"}
    assert torch.isfinite(out.loss)
    out.loss.backward()
    model.eval()
    with torch.no_grad():
        emb = model.embed(batch)
        for k in ("image", "gene", "joint", "niche_image", "niche_gene", "niche_joint"):
            torch.testing.assert_close(emb[k].norm(dim=1), torch.ones(len(emb[k])))
        # zero-shot prompts: marker genes of tumour vs stroma give different gene embeddings
        prompts = torch.zeros(2, len(genes))
        for r, markers in enumerate((["ERBB2", "KRT19", "EPCAM"], ["COL1A1", "DCN", "LUM"])):
            prompts[r, [genes.index(g) for g in markers if g in genes]] = float(np.log1p(1e3))
        p = model.encode_gene(prompts)["gene"]
        assert torch.isfinite(p).all() and (p[0] - p[1]).abs().max() > 1e-3
        # the gene encoder accepts any panel: drop half the genes (unmeasured = 0)
        half = batch[K.spot_expr].clone()
        half[:, ::2] = 0
        assert torch.isfinite(model.encode_gene(half)["gene"]).all()
