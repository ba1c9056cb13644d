"""Every public function that takes ``device=`` sends the model and its batches there (tested without a GPU).

:class:`tests._device.VirtualDevice` tracks a second device (``cpu:0``) on the CPU: each function runs with
``device=cpu:0``, and a spy on :meth:`STAlign.embed` (which every forward pass goes through, the losses included)
records where the model and the batch inputs were at each call. On a GPU, a model or a batch left on the host
would run on the wrong device or fail; here it shows as a recorded device or a mixed-device operation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stalign as sta
from stalign._batch import INPUT_KEYS
from stalign.models import STAlign

from ._device import HOST, VIRTUAL, VirtualDevice, device_of

#: A sync that only the CPU path makes (the gene encoder drops unexpressed columns when ``x.device.type == "cpu"``,
#: which the virtual ``cpu:0`` device is): on CUDA that branch does not run.
CPU_ONLY_SYNC = "models/nn/_gene.py"


@pytest.fixture
def spy(monkeypatch):
    """Where the model's parameters and each batch input were at every :meth:`STAlign.embed` call."""
    calls: list[dict] = []
    embed = STAlign.embed

    def recording_embed(self, batch):
        where = {k: device_of(batch[k]) for k in INPUT_KEYS if batch.get(k) is not None}
        calls.append({"model": {device_of(p) for p in self.parameters()}, "inputs": where})
        return embed(self, batch)

    monkeypatch.setattr(STAlign, "embed", recording_embed)
    return calls


@pytest.fixture
def model():
    """A fresh tiny model on the host (the shared ``toy_model`` may have been sent to the device by another test)."""
    from ._synthetic import toy_model

    return toy_model()


def _check_on_device(vd: VirtualDevice, calls: list[dict]) -> None:
    assert calls, "the model never ran"
    for c in calls:
        assert c["model"] == {VIRTUAL}, f"the model was on {c['model']}, not on the requested device"
        assert c["inputs"] and set(c["inputs"].values()) == {VIRTUAL}, f"batch inputs on {c['inputs']}"
    assert not vd.mismatches, f"tensors of two devices mixed: {vd.mismatches[:5]}"
    assert not vd.errors, vd.errors


def test_virtual_device_sees_what_a_gpu_would():
    """The checker itself: a host batch fed to a model on the device, a host read of a device tensor, numpy()."""
    lin = torch.nn.Linear(4, 2)
    with VirtualDevice() as vd:
        lin.to(VIRTUAL)
        assert {device_of(p) for p in lin.parameters()} == {VIRTUAL}
        assert next(lin.parameters()).device == VIRTUAL
        x = torch.ones(3, 4)
        lin(x)  # left on the host
        assert len(vd.mismatches) == 1
        y = lin(x.to(VIRTUAL))
        assert device_of(y) == VIRTUAL and len(vd.mismatches) == 1
        z = torch.zeros(3, device=y.device) + y[:, 0]  # created on the tensor's device: fine
        assert device_of(z) == VIRTUAL and len(vd.mismatches) == 1
        bool(y.sum() > 0)
        y.numpy(force=True)
        assert len(vd.syncs) == 2
        y.detach().numpy()
        assert len(vd.errors) == 1
        assert device_of(y.cpu()) == HOST


def test_embed(spy, toy_adata, model):
    with VirtualDevice() as vd:
        out = sta.tl.embed(toy_adata, model=model, device=VIRTUAL, batch_size=16, show_progress_bar=False, copy=True)
    _check_on_device(vd, spy)
    assert len(spy) == -(-toy_adata.n_obs // 16)
    assert out.uns["stalign"]["params"]["device"] == "cpu:0"
    # the same numbers as on the host
    ref = sta.tl.embed(toy_adata, model=model, device="cpu", show_progress_bar=False, copy=True)
    np.testing.assert_allclose(out.obsm["X_stalign"], ref.obsm["X_stalign"], atol=1e-5)


def test_embed_arrays_moves_a_host_model(spy, toy_adata, model):
    """``embed_arrays(device=)`` used to run on the model's device, whatever ``device`` said."""
    from stalign.tl._embed import embed_arrays

    with VirtualDevice() as vd:
        arrays = embed_arrays(toy_adata, model, device=VIRTUAL, show_progress_bar=False)
    _check_on_device(vd, spy)
    assert arrays["fused"].shape[0] == toy_adata.n_obs


def test_embed_syncs_once_per_call_not_per_batch(spy, toy_adata, model):
    """No host read of a device tensor inside the loop: the syncs are the same for 1 batch as for 8."""
    counts = []
    for batch_size in (8, 64):
        with VirtualDevice() as vd:
            sta.tl.embed(toy_adata, model=model, device=VIRTUAL, batch_size=batch_size, show_progress_bar=False,
                         copy=True)  # fmt: skip
        counts.append([s for s in vd.syncs if CPU_ONLY_SYNC not in s])
    assert len(spy) == 8 + 1
    assert len(counts[0]) == len(counts[1]), counts[0]
    # what is left: the single copy of each output to the host (and hashing the weights for the record)
    assert all("tl/_embed.py" in s or "models/_io.py" in s for s in counts[0]), counts[0]


def test_predict_expression(spy, toy_adata, model):
    with VirtualDevice() as vd:
        pred = sta.tl.predict_expression(toy_adata, reference=toy_adata, model=model, device=VIRTUAL, n_top_genes=10)
    _check_on_device(vd, spy)
    assert np.isfinite(pred.X).all()


def test_annotate(spy, toy_adata, model):
    adata = toy_adata.copy()
    genes = list(adata.var_names)
    with VirtualDevice() as vd:
        sta.tl.annotate(adata, markers={"a": genes[:3], "b": genes[3:6]}, model=model, device=VIRTUAL)
    _check_on_device(vd, spy)
    assert adata.obs["stalign_label"].notna().all()


def test_pretrain(spy, toy_section, tmp_path):
    from ._synthetic import GENES, toy_config

    with VirtualDevice() as vd:
        model = sta.train.pretrain([toy_section()], toy_config(GENES), output_dir=tmp_path, epochs=1, max_steps=2,
                                   batch_size=16, show_progress_bar=False, device=VIRTUAL)  # fmt: skip
    _check_on_device(vd, spy)
    assert len(spy) == 2
    assert {device_of(p) for p in model.parameters()} == {VIRTUAL}


def test_finetune(spy, toy_section, model, tmp_path):
    with VirtualDevice() as vd:
        sta.train.finetune(model, [toy_section()], output_dir=tmp_path, epochs=1, max_steps=2, batch_size=16,
                           show_progress_bar=False, device=VIRTUAL)  # fmt: skip
    _check_on_device(vd, spy)
    assert len(spy) == 2


def test_finetune_frozen_trunk_cached_features(spy, toy_section, tmp_path):
    """The frozen trunk's feature pass runs on the device; the cached features reach it with every batch."""
    from ._synthetic import GENES, toy_config

    torch.manual_seed(0)
    model = STAlign(toy_config(GENES, freeze_spot_encoder=True, share_image_encoder=True))
    with VirtualDevice() as vd:
        sta.train.finetune(model, [toy_section()], output_dir=tmp_path, epochs=1, max_steps=2, batch_size=16,
                           show_progress_bar=False, device=VIRTUAL)  # fmt: skip
    _check_on_device(vd, spy)
    assert len(spy) == 2 and all("spot_features" in c["inputs"] for c in spy)


def test_evaluation_runner(spy, toy_adata, model):
    from stalign import evaluation

    with VirtualDevice() as vd:
        res = evaluation.evaluate("domains", model=model, sections={"toy": toy_adata.copy()}, labels_key="zone",
                                  baselines=False, seeds=1, device=VIRTUAL)  # fmt: skip
    _check_on_device(vd, spy)
    assert res["meta"]["device"] == "cpu:0"
