from __future__ import annotations

import pytest
import torch

from stalign._batch import BatchKey as K
from stalign.models import STAlign, gather_negatives, sample_negatives

from .conftest import make_batch, tiny_config

ALL = {"spot", "niche", "ns", "image_ns", "gene_ns"}


def test_paired_batch_has_all_terms(model, batch):
    out = model.loss(batch)
    assert set(out.components) == ALL
    assert torch.isfinite(out.loss)
    w = model.config.loss_weights
    torch.testing.assert_close(out.loss, sum(w[k] * v for k, v in out.components.items()))
    out.loss.backward()


def test_image_only_and_expression_only(model):
    b = make_batch(expr=False)
    out = model.loss(b)
    assert set(out.components) == {"image_ns"} and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.spot_image_encoder.to_tokens.weight.grad is not None
    assert model.spot_gene_encoder.embedding.weight.grad is None
    model.zero_grad()
    b = make_batch(image=False)
    out = model.loss(b)
    assert set(out.components) == {"gene_ns"} and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.spot_gene_encoder.embedding.weight.grad is not None


def test_rows_without_modality_are_masked_not_zero_filled(model):
    model.eval()
    b = make_batch(n=8)
    b[K.has_expr][:4] = False  # first half image-only
    out = model.loss(b)
    assert out.counts == {"spot": 4, "niche": 4, "ns": 4, "image_ns": 8, "gene_ns": 4}
    # the expression of image-only rows does not matter
    b2 = {k: v.clone() for k, v in b.items()}
    b2[K.spot_expr][:4] = 123.0
    b2[K.niche_expr][:4] = 0.0
    torch.testing.assert_close(model.loss(b2).loss, out.loss)


def test_hard_negatives_change_the_loss(model, batch):
    model.eval()
    with torch.no_grad():
        base = model.loss(batch)
        # padding and self-indices are ignored
        none = torch.full((8, 2), -1)
        none[:, 1] = torch.arange(8)
        same = model.loss(batch, negatives=none)
        torch.testing.assert_close(same.loss, base.loss)
        # extra negatives enlarge each softmax denominator: every term increases
        idx = (torch.arange(8)[:, None] + torch.tensor([1, 2, 3])) % 8
        harder = model.loss(batch, negatives=idx)
        for k in ALL:
            assert harder.components[k] > base.components[k]
        # negatives from an extra batch, encoded in one forward
        extra = make_batch(n=5, seed=1)
        ext = model.loss(batch, negatives=torch.randint(0, 5, (8, 4)), negative_batch=extra)
        for k in ALL:
            assert ext.components[k] > base.components[k]
        # an extra negative identical to the positive: each anchor's loss l rises by log(1 + exp(-l))
        dup = model.loss(batch, negatives=torch.arange(8)[:, None], negative_batch=batch)
        for k in ALL:
            b = base.components[k]
            assert dup.components[k] > b + 0.5 * torch.log1p(torch.exp(-b))
    with pytest.raises(ValueError, match="out of range"):
        model.loss(batch, negatives=torch.full((8, 1), 8))
    with pytest.raises(ValueError, match="without"):
        model.loss(batch, negative_batch=batch)


def test_gather_negatives_shapes(model, batch):
    model.eval()
    with torch.no_grad():
        emb = model.embed(batch)
    neg = gather_negatives(emb, torch.tensor([[1, -1], [0, 2]]))
    assert neg["image"].shape == (2, 2, 16)
    assert neg["has_image"].tolist() == [[True, False], [True, True]]


def test_loss_from_gathered_embeddings_matches_full_batch(model):
    """Two 'ranks' with local anchors and globally gathered candidates give the full-batch loss."""
    model.eval()
    b = make_batch(n=8)
    with torch.no_grad():
        full = model.embed(b)
        ref = model.loss_from_embeddings(full)
        parts = []
        for r in range(2):
            local = {k: v[4 * r : 4 * r + 4] for k, v in full.items()}
            parts.append(model.loss_from_embeddings(local, full, offset=4 * r))
    torch.testing.assert_close((parts[0].loss + parts[1].loss) / 2, ref.loss)


def test_learnable_temperature():
    m = STAlign(tiny_config(learn_temperature=True, temperature=0.07))
    assert m.log_logit_scale.requires_grad
    torch.testing.assert_close(m.logit_scale, torch.tensor(1 / 0.07))
    m.loss(make_batch()).loss.backward()
    assert m.log_logit_scale.grad is not None


def test_short_optimisation_lowers_each_loss():
    torch.manual_seed(0)
    m = STAlign(tiny_config())
    b = make_batch(n=8, seed=3)
    opt = torch.optim.AdamW(m.parameters(), lr=5e-3)
    m.train()
    with torch.no_grad():
        start = {k: float(v) for k, v in m.loss(b).components.items()}
    for _ in range(15):
        opt.zero_grad()
        out = m.loss(b)
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        end = {k: float(v) for k, v in m.loss(b).components.items()}
    for k in ("spot", "niche", "ns"):
        assert end[k] < 0.5 * start[k], (k, start[k], end[k])


def test_sample_negatives_same_section_other_cluster(model):
    section = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    cluster = torch.tensor([0, 0, 1, 2, 0, 1, -1, 1])
    g = torch.Generator().manual_seed(0)
    idx = sample_negatives(section, cluster, 3, generator=g)
    assert idx.shape == (8, 3)
    for i in range(8):
        got = {int(j) for j in idx[i] if j >= 0}
        want = {
            j
            for j in range(8)
            if section[j] == section[i] and cluster[j] != cluster[i] and min(cluster[i], cluster[j]) >= 0
        }
        assert got == want or (len(got) == 3 and got <= want)
    assert (idx[6] == -1).all()  # unknown cluster: no hard negatives
    again = sample_negatives(section, cluster, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    b = make_batch(n=8)
    b[K.section], b[K.cluster] = section, cluster
    assert torch.isfinite(model.loss(b, negatives=idx).loss)
