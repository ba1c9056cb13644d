"""Weights safety: only verified safetensors load by default; pickles never run, even with the opt-ins."""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import pickle
import re
import warnings

import pytest
import torch

import stalign as sta
from stalign import _genes as genes_mod
from stalign.models import STAlign, load, save
from stalign.models import _io as mio
from stalign.models._registry import REGISTRY

from .._synthetic import toy_config

GENES = [f"GENE{i}" for i in range(40)]


def _tiny(genes=GENES) -> STAlign:
    torch.manual_seed(0)
    return STAlign(toy_config(genes)).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny model: (directory, model, state dict)."""
    d = tmp_path_factory.mktemp("saved") / "m"
    m = _tiny()
    save(m, d)
    return d, m


def _copy_dir(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _meta(d):
    return json.loads((d / "config.json").read_text())


def _write_meta(d, meta):
    (d / "config.json").write_text(json.dumps(meta))


def _same_weights(a: STAlign, b: STAlign) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _torch_dir(tmp_path, saved, *, sha: bool) -> pathlib.Path:
    """A model directory whose weights are a torch.save state dict (``model.pt``)."""
    src, m = saved
    d = tmp_path / "pt"
    d.mkdir()
    torch.save(mio._unique_state(m), d / "model.pt")
    meta = _meta(src)
    meta["weights_file"] = "model.pt"
    if sha:
        meta["weights_sha256"] = mio.sha256_file(d / "model.pt")
    else:
        meta.pop("weights_sha256")
    _write_meta(d, meta)
    return d


# ----------------------------------------------------------------------------------------------------- default path


def test_verified_safetensors_load_by_default(saved):
    d, m = saved
    _same_weights(m, load(d, device="cpu"))
    meta = _meta(d)
    assert meta["weights_sha256"] == hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()


def test_registry_entries_carry_sha256():
    for name, entry in REGISTRY.items():
        assert entry["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), name
        assert entry["file"].endswith(".safetensors"), name


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth"])
def test_torch_file_refused_without_opt_in(tmp_path, saved, suffix):
    d = _torch_dir(tmp_path, saved, sha=True)
    target = d / f"model{suffix}"
    (d / "model.pt").rename(target)
    meta = _meta(d)
    meta["weights_file"] = target.name
    _write_meta(d, meta)
    for spec in (d, target):
        with pytest.raises(ValueError, match=r"not a safetensors file.*allow_torch_load=True"):
            load(spec, device="cpu")


def test_torch_file_with_opt_in_loads_with_weights_only(tmp_path, saved, monkeypatch):
    d = _torch_dir(tmp_path, saved, sha=True)
    seen = {}
    real = torch.load

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    got = load(d, device="cpu", allow_torch_load=True)
    assert seen.get("weights_only") is True
    _same_weights(saved[1], got)


def test_torch_file_without_sha_needs_trust_unverified(tmp_path, saved):
    d = _torch_dir(tmp_path, saved, sha=False)
    with pytest.raises(ValueError, match=r"records no 'weights_sha256'.*trust_unverified=True"):
        load(d, device="cpu", allow_torch_load=True)
    _same_weights(saved[1], load(d, device="cpu", allow_torch_load=True, trust_unverified=True))


def test_missing_sha256_refused_unless_given_or_trusted(tmp_path, saved, caplog):
    d = _copy_dir(saved[0], tmp_path / "m")
    meta = _meta(d)
    sha = meta.pop("weights_sha256")
    _write_meta(d, meta)
    with pytest.raises(ValueError, match=rf"records no 'weights_sha256'.*sha256 is {sha}.*trust_unverified=True"):
        load(d, device="cpu")
    _same_weights(saved[1], load(d, device="cpu", sha256=sha))  # an explicit expected value verifies it
    with pytest.raises(ValueError, match="sha256"):
        load(d, device="cpu", sha256="0" * 64)
    with caplog.at_level(logging.WARNING, logger="stalign"):
        _same_weights(saved[1], load(d, device="cpu", trust_unverified=True))
    assert "unverified" in caplog.text


def test_mismatched_sha256_refused_even_when_trusted(tmp_path, saved):
    d = _copy_dir(saved[0], tmp_path / "m")
    meta = _meta(d)
    meta["weights_sha256"] = "f" * 64
    _write_meta(d, meta)
    for kw in ({}, {"trust_unverified": True}, {"trust_unverified": True, "allow_torch_load": True}):
        with pytest.raises(ValueError, match=r"sha256 .* records f{64}.*modified"):
            load(d, device="cpu", **kw)


def test_tampered_tensor_bytes_refused(tmp_path, saved):
    d = _copy_dir(saved[0], tmp_path / "m")
    raw = bytearray((d / "model.safetensors").read_bytes())
    raw[-3] ^= 0x01  # one bit of one weight
    (d / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="truncated, corrupted or was modified"):
        load(d, device="cpu")


# ------------------------------------------------------------------------------------------------ malicious pickles


class _Payload:
    """Unpickling this creates ``marker``: stands for arbitrary code in a weights file."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _malicious(path: pathlib.Path, marker: pathlib.Path, kind: str) -> None:
    if kind == "torch.save":
        torch.save({"spot_gene_encoder.weight": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"x": _Payload(marker)}))


def test_payload_is_live(tmp_path):
    """Sanity: unpickling the payload really creates the marker (so its absence below means it never ran)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))  # deliberate: our own payload
    assert marker.exists()


@pytest.mark.parametrize("kind", ["torch.save", "raw pickle"])
@pytest.mark.parametrize("name", ["model.pt", "model.bin", "model.safetensors"])
@pytest.mark.parametrize(
    "opts",
    [{}, {"allow_torch_load": True}, {"allow_torch_load": True, "trust_unverified": True}],
    ids=["default", "allow_torch_load", "allow_torch_load+trust_unverified"],
)
def test_malicious_pickle_never_runs(tmp_path, saved, kind, name, opts):
    d = tmp_path / "evil"
    d.mkdir()
    marker = tmp_path / "pwned"
    _malicious(d / name, marker, kind)
    meta = _meta(saved[0])
    meta["weights_file"] = name
    meta["weights_sha256"] = mio.sha256_file(d / name)  # the attacker controls config.json too
    _write_meta(d, meta)
    with pytest.raises(ValueError, match=r"not a safetensors file|was not unpickled|not a readable safetensors"):
        load(d, device="cpu", **opts)
    assert not marker.exists()
    with pytest.raises(ValueError):
        load(d / name, device="cpu", **opts)
    assert not marker.exists()


# -------------------------------------------------------------------------------------------- vocabulary overlap


def test_overlap_constant_documented():
    assert 0 < genes_mod.MIN_VOCABULARY_OVERLAP < 1
    assert "MIN_VOCABULARY_OVERLAP" in genes_mod.check_vocabulary.__doc__


def test_vocabulary_overlap_reported_and_warned(caplog):
    vocab = [f"GENE{i}" for i in range(100)]
    with caplog.at_level(logging.INFO, logger="stalign"), warnings.catch_warnings():
        warnings.simplefilter("error")  # full overlap: no warning
        n, frac = genes_mod.check_vocabulary(vocab[:60], vocab, what="section 'a'")
    assert (n, frac) == (60, 1.0)
    assert "Gene overlap of section 'a'" in caplog.text and "60 shared genes" in caplog.text
    low = [*vocab[:10], *(f"OTHER{i}" for i in range(90))]
    with pytest.warns(UserWarning, match=r"shares only 10 genes.*threshold 50%.*gene symbols"):
        n, frac = genes_mod.check_vocabulary(low, vocab, what="section 'b'")
    assert (n, frac) == (10, 0.1)
    with pytest.raises(ValueError, match="None of the 3 genes .* vocabulary.*ensembl_to_symbol"):
        genes_mod.check_vocabulary(["X1", "X2", "X3"], vocab)


def test_embed_warns_on_low_overlap_and_reports(mob1, make_subset, caplog):
    sd = make_subset(mob1, 48)
    genes = list(sd.tables["table"].var_names[:20]) + [f"NOTAGENE{i}" for i in range(80)]
    model = _tiny(genes)
    with caplog.at_level(logging.INFO, logger="stalign"), pytest.warns(UserWarning, match="shares only 20 genes"):
        sta.tl.embed(sd, model=model, device="cpu", show_progress_bar=False)
    assert "Gene overlap of section 'MOB1'" in caplog.text
    assert "X_stalign_gene" in sd.tables["table"].obsm
