from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from stalign._batch import BatchKey as K
from stalign.models import STAlign

from .conftest import GENES, make_batch, tiny_config


def test_encode_image_alone(model, batch):
    model.eval()
    out = model.encode_image(batch[K.spot_image])
    assert set(out) == {"image"}
    assert out["image"].shape == (8, 16)
    torch.testing.assert_close(out["image"].norm(dim=1), torch.ones(8))
    # other crop sizes are resampled; float input in [0, 1] is accepted
    out2 = model.encode_image(batch[K.spot_image].float() / 255, batch[K.niche_image][:, :, :20, :20].contiguous())
    torch.testing.assert_close(out2["image"], out["image"], atol=1e-5, rtol=1e-4)
    assert out2["niche_image"].shape == (8, 16)


def test_encode_gene_alone_and_marker_prompt(model, batch):
    model.eval()
    out = model.encode_gene(batch[K.spot_expr], batch[K.niche_expr], return_tokens=True)
    assert out["gene"].shape == out["niche_gene"].shape == (8, 16)
    assert out["gene_tokens"].shape == (8, 2, 16)
    prompt = torch.zeros(2, len(GENES))
    prompt[0, [1, 2, 3]] = torch.log1p(torch.tensor(100.0))
    prompt[1, [10, 20]] = torch.log1p(torch.tensor(100.0))
    p = model.encode_gene(prompt)["gene"]
    assert torch.isfinite(p).all()
    assert not torch.allclose(p[0], p[1])
    with pytest.raises(ValueError, match="vocabulary"):
        model.encode_gene(torch.zeros(2, len(GENES) + 1))


def test_fuse_and_embed(model, batch):
    model.eval()
    img = model.encode_image(batch[K.spot_image], return_tokens=True)
    gen = model.encode_gene(batch[K.spot_expr], return_tokens=True)
    f = model.fuse(img["image_tokens"], gen["gene_tokens"])
    emb = model.embed(batch)
    keys = {"image", "gene", "joint", "niche_image", "niche_gene", "niche_joint", "has_image", "has_expr"}
    assert set(emb) == keys
    torch.testing.assert_close(emb["joint"], f)
    with pytest.raises(ValueError, match="level"):
        model.fuse(img["image_tokens"], gen["gene_tokens"], level="tissue")


def test_embed_image_only_and_mixed(model):
    model.eval()
    b = make_batch(expr=False)
    for k in (K.spot_expr, K.niche_expr):
        del b[k]
    emb = model.embed(b)
    assert set(emb) == {"image", "niche_image", "has_image", "has_expr"}
    mixed = make_batch()
    mixed[K.has_expr][:3] = False
    mixed[K.has_image][5:] = False
    emb = model.embed(mixed)
    assert (emb["joint"][[0, 1, 2, 5, 6, 7]] == 0).all()
    assert (emb["joint"][[3, 4]].norm(dim=1) > 0.99).all()
    # rows are encoded independently of the masked rows (eval mode)
    full = model.embed(make_batch())
    torch.testing.assert_close(emb["image"][:5], full["image"][:5])


def test_shared_trunk_and_freeze():
    m = STAlign(tiny_config(share_image_encoder=True, freeze_spot_encoder=True))
    assert m.spot_image_encoder.trunk is m.niche_image_encoder.trunk
    assert not any(p.requires_grad for p in m.spot_image_encoder.trunk.parameters())
    m.train()
    assert not m.spot_image_encoder.trunk.training
    out = m.loss(make_batch())
    out.loss.backward()
    assert m.spot_image_encoder.to_tokens.weight.grad is not None


def test_unknown_architecture():
    with pytest.raises(ValueError, match="timm"):
        STAlign(tiny_config(spot_encoder="not_a_model"))


def test_local_encoder_weights(tmp_path):
    src = STAlign(tiny_config())
    state = src.spot_image_encoder.trunk.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "trunk.safetensors")
    m = STAlign(tiny_config(spot_encoder_weights=str(tmp_path / "trunk.safetensors")))
    for k, v in m.spot_image_encoder.trunk.state_dict().items():
        assert torch.equal(v, state[k])
    torch.save(state, tmp_path / "trunk.pt")
    with pytest.raises(ValueError, match="allow_torch_load"):
        STAlign(tiny_config(spot_encoder_weights=str(tmp_path / "trunk.pt")))
    m = STAlign(tiny_config(spot_encoder_weights=str(tmp_path / "trunk.pt"), allow_torch_load=True))
    assert torch.equal(m.spot_image_encoder.trunk.conv1[0].weight, state["conv1.0.weight"])
    save_file({"foo": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="match"):
        STAlign(tiny_config(spot_encoder_weights=str(tmp_path / "other.safetensors")))
    with pytest.raises(FileNotFoundError):
        STAlign(tiny_config(niche_encoder_weights=str(tmp_path / "missing.safetensors")))


def test_section_statistics_normalise_with_the_sections_own_and_restore():
    import copy

    from stalign.models import STAlign, STAlignConfig

    torch.manual_seed(0)
    cfg = STAlignConfig.base(["A", "B", "C", "D"], spot_size=16, niche_size=16, token_dim=16, n_heads=2, gene_dim=16,
                             embed_dim=16)  # fmt: skip
    m = STAlign(cfg).eval()
    B = 12
    batch = {
        "spot_image": torch.randint(0, 255, (B, 3, 16, 16), dtype=torch.uint8),
        "niche_image": torch.randint(0, 255, (B, 3, 16, 16), dtype=torch.uint8),
        "spot_expr": torch.rand(B, 4) * 3,
        "niche_expr": torch.rand(B, 4) * 3,
        "has_image": torch.ones(B, dtype=torch.bool),
        "has_expr": torch.ones(B, dtype=torch.bool),
    }
    before = copy.deepcopy(m.state_dict())
    running = m.embed(batch)["image"]
    with m.section_statistics([batch]) as mm:
        assert not mm.training
        own = mm.embed(batch)["image"]
    assert not torch.allclose(own, running)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running statistics restored
    torch.testing.assert_close(m.embed(batch)["image"], running)
    # the statistics of the section are those of its spots: one pass in train mode gives the same output
    m.train()
    with torch.no_grad():
        trained = m.embed(batch)["image"]
    m.eval()
    # (the statistics store the unbiased variance, training normalises by the biased one: 12 spots differ by ~4 %)
    torch.testing.assert_close(own, trained, atol=0.05, rtol=0.05)


def test_soft_targets_spread_the_image_gene_targets():
    from stalign.models import contrastive_loss

    torch.manual_seed(0)
    g = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    emb = {"image": g.clone(), "gene": g.clone(), "has_image": torch.ones(8, dtype=torch.bool),
           "has_expr": torch.ones(8, dtype=torch.bool)}  # fmt: skip
    scale = torch.tensor(10.0)
    soft = contrastive_loss(emb, weights={"spot": 1.0}, logit_scale=scale, soft_targets=0.1).components["spot"]
    # identical embeddings: the model's distribution is the soft target (temperature 1 / scale = 0.1), so the loss is
    # the target's entropy (cross-entropy = entropy + KL, with KL = 0)
    p = torch.softmax(g @ g.T / 0.1, dim=1)
    entropy = -(p * p.log()).sum(dim=1).mean()
    torch.testing.assert_close(soft, entropy, atol=1e-5, rtol=1e-5)
    hard = contrastive_loss(emb, weights={"spot": 1.0}, logit_scale=scale).components["spot"]
    assert hard < soft  # one-hot targets: only the matching pair counts
    from stalign.models import STAlignConfig

    with pytest.raises(ValueError, match="soft_targets"):
        STAlignConfig.base(["A"], soft_targets=-1)
