"""Property-based fuzzing: the ST reader's counts/positions join, and the parameter validation of public functions.

(a) ``io.read_st`` on generated counts tables and spot files written to disk (shuffled, missing, duplicated and
extra spots, float pixel coordinates, a ``selected`` column): the table holds exactly the spots present in both
files, in counts order, with their counts and positions, or the call raises a clear ValueError.

(b) Every public entry point given a random bad value for one parameter (negative, zero, NaN, ±inf, wrong type,
huge) raises ValueError/TypeError with a message, never another exception, and leaves its input unchanged.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import stalign as sta

from .._bad_input import assert_unchanged, snapshot

FUZZ = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True
)
GENES = ["Actb", "Gapdh", "Mbp", "Plp1"]

# ------------------------------------------------------------------------------------------- (a) read_st joins


@st.composite
def st_tables(draw):
    """Counts ids and spot-file ids drawn from one grid: overlapping, shuffled, with extras and duplicates."""
    grid = draw(
        st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=2, max_size=25, unique=True),
    )
    counts_ids = draw(st.lists(st.sampled_from(grid), min_size=1, max_size=25, unique=True))
    spot_ids = draw(st.lists(st.sampled_from(grid), min_size=1, max_size=25, unique=True))
    if draw(st.integers(0, 7)) == 0:  # now and then a duplicated spot in one of the files
        counts_ids.append(draw(st.sampled_from(counts_ids)))
    if draw(st.integers(0, 7)) == 0:
        spot_ids.append(draw(st.sampled_from(spot_ids)))
    counts_ids = draw(st.permutations(counts_ids))
    spot_ids = draw(st.permutations(spot_ids))
    values = draw(st.lists(st.integers(0, 50), min_size=len(counts_ids) * len(GENES), max_size=len(counts_ids) * 4))
    jitter = draw(st.lists(st.floats(-0.45, 0.45), min_size=len(spot_ids) * 2, max_size=len(spot_ids) * 2))
    flags = st.sampled_from([1, 1, 1, 0])
    selected = draw(st.one_of(st.none(), st.lists(flags, min_size=len(spot_ids), max_size=len(spot_ids))))
    return counts_ids, spot_ids, values, jitter, selected


def _write(d: Path, counts_ids, spot_ids, values, jitter, selected):
    counts = pd.DataFrame(
        np.asarray(values).reshape(len(counts_ids), len(GENES)),
        index=[f"{x}x{y}" for x, y in counts_ids],
        columns=GENES,
    )
    counts.index.name = "spot"
    counts.to_csv(d / "counts.tsv", sep="\t")
    j = np.asarray(jitter).reshape(-1, 2)
    spots = pd.DataFrame(
        {
            "x": [x for x, _ in spot_ids],
            "y": [y for _, y in spot_ids],
            "pixel_x": [100.0 * x + 10 * a for (x, _), a in zip(spot_ids, j[:, 0], strict=True)],
            "pixel_y": [100.0 * y + 10 * b for (_, y), b in zip(spot_ids, j[:, 1], strict=True)],
        }
    )
    if selected is not None:
        spots["selected"] = selected
    spots.to_csv(d / "spots.tsv", sep="\t", index=False)
    return counts, spots


@settings(FUZZ, max_examples=60)
@given(tables=st_tables(), pass_scale=st.booleans())
def test_read_st_join_matches_the_spots_in_both(tables, pass_scale):
    counts_ids, spot_ids, values, jitter, selected = tables
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        counts, spots = _write(d, *tables)
        files = [d / "counts.tsv", d / "spots.tsv"]
        before = [snapshot(f) for f in files]
        kw = {"sample": "fz", "microns_per_pixel": 2.0} if pass_scale else {"sample": "fz"}
        c_ids = [f"{x}x{y}" for x, y in counts_ids]
        keep = np.ones(len(spots), bool) if selected is None else np.asarray(selected) == 1
        s_ids = [f"{x}x{y}" for x, y in spot_ids]
        s_sel = [i for i, k in zip(s_ids, keep, strict=True) if k]
        expected_error = None
        if len(set(c_ids)) < len(c_ids) or len(set(s_ids)) < len(s_ids):
            expected_error = "duplicate spot ids"
        elif not pass_scale and len(set(s_ids)) < 2:
            expected_error = "fewer than 2 spots"
        elif not s_sel:
            expected_error = "no spot of the spot table is selected"
        elif not set(c_ids) & set(s_sel):
            expected_error = "no counts spot id"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # all-zero counts warn; tested elsewhere
                sd = sta.io.read_st(files[0], files[1], **kw)
        except ValueError as e:
            event(f"refused: {expected_error or 'spot pitch'}")
            if expected_error is None:
                # the one legitimate failure left: the spot pitch cannot be derived from these positions
                assert not pass_scale and "spot pitch" in str(e), str(e)
            else:
                assert expected_error in str(e), (expected_error, str(e))
            for b, f in zip(before, files, strict=True):
                assert_unchanged(b, f)
            return
        assert expected_error is None, f"expected {expected_error!r}, but the join succeeded"
        event("joined")
        t = sd.tables["table"]
        want = [i for i in c_ids if i in set(s_sel)]
        assert list(t.obs_names) == want
        np.testing.assert_array_equal(t.X.toarray(), counts.loc[want].to_numpy(dtype=np.float32))
        pos = spots.set_axis(s_ids).loc[want, ["pixel_x", "pixel_y"]].to_numpy()
        np.testing.assert_allclose(t.obsm["spatial"], pos)
        assert list(t.var_names) == GENES
        for b, f in zip(before, files, strict=True):
            assert_unchanged(b, f)


# ----------------------------------------------------------------------------------- (b) parameter validation

NAN, INF = math.nan, math.inf
_NOT_STR = st.sampled_from([[1], {"a": 1}, (1, 2), object(), b"x"])
_WRONG_TYPES = st.one_of(st.sampled_from(["abc", ""]), _NOT_STR)
#: invalid for a positive real parameter
BAD_POSITIVE = st.one_of(
    st.floats(max_value=0.0),
    st.sampled_from([NAN, INF, -INF, 0, -1, -(10**12), True, False]),
    _WRONG_TYPES,
)
#: invalid for a positive integer parameter
BAD_POSITIVE_INT = st.one_of(
    st.integers(max_value=0),
    st.floats(allow_nan=True, allow_infinity=True).filter(
        lambda v: not (math.isfinite(v) and v.is_integer() and v > 0)
    ),
    st.sampled_from([NAN, INF, True, False, 2.5]),
    _WRONG_TYPES,
)
#: the same without booleans: pp, train and tl.embed's batch_size take True/False as 1/0 (reported, not ours)
BAD_POSITIVE_NOBOOL = BAD_POSITIVE.filter(lambda v: not isinstance(v, bool))
BAD_POSITIVE_INT_NOBOOL = BAD_POSITIVE_INT.filter(lambda v: not isinstance(v, bool))
BAD_KEY = st.one_of(st.integers(), st.floats(), st.sampled_from(["", None, b"X", ["X"]]))


def _bad_choice(valid):
    return st.one_of(st.text(max_size=8).filter(lambda s: s not in valid), st.integers(), st.sampled_from([None, 1.5]))


@pytest.fixture(scope="module")
def fz(toy_section, toy_model):
    """The fuzzed calls' inputs: a 40-spot synthetic section (tests/_synthetic.py, no data folder), the tiny model."""
    sd, tiny_model = toy_section(n_rows=4, n_cols=10), toy_model
    ad = sta.io.to_anndata(sd)
    emb = ad.copy()
    sta.tl.embed(emb, model=tiny_model, device="cpu", show_progress_bar=False)
    emb.obs["lab"] = pd.Categorical(np.where(np.arange(emb.n_obs) % 2, "a", "b"))
    counts = pd.DataFrame([[1, 0], [2, 3], [0, 5]], index=["1x1", "2x1", "3x1"], columns=["Actb", "Gapdh"])
    spots = pd.DataFrame({"x": [1, 2, 3], "y": [1, 1, 1], "pixel_x": [10.0, 30, 50], "pixel_y": [10.0, 10, 10]})
    return {"sd": sd, "ad": ad, "emb": emb, "model": tiny_model, "counts": counts, "spots": spots}


def _targets(f) -> dict[str, tuple[Callable, list, object]]:
    """name → (call(value), inputs to check unchanged, strategy of bad values)."""
    m, ad, emb, sd = f["model"], f["ad"], f["emb"], f["sd"]
    c, s = f["counts"], f["spots"]
    cpu = {"device": "cpu"}
    emb_kw = {"model": m, "show_progress_bar": False, **cpu}

    def read_st(kw):
        return lambda v: sta.io.read_st(c, s, **{"sample": "s", **kw(v)})

    return {
        "io.read_st(microns_per_pixel)": (read_st(lambda v: {"microns_per_pixel": v}), [c, s], BAD_POSITIVE),
        "io.read_st(image_scalef)": (read_st(lambda v: {"image_scalef": v}), [c, s], BAD_POSITIVE),
        "io.read_st(spot_diameter_um)": (read_st(lambda v: {"spot_diameter_um": v}), [c, s], BAD_POSITIVE),
        "io.read_st(pitch_um)": (read_st(lambda v: {"pitch_um": v}), [c, s], BAD_POSITIVE),
        "io.read_st(sample)": (read_st(lambda v: {"sample": v}), [c, s], BAD_KEY),
        "io.read_st(counts)": (lambda v: sta.io.read_st(v, s, sample="s"), [s], _NOT_STR),  # a str is a path
        "io.to_anndata(max_side)": (lambda v: sta.io.to_anndata(sd, max_side=v), [sd], BAD_POSITIVE_INT),
        "io.load(spec)": (lambda v: sta.io.load(v), [], st.one_of(st.integers(), st.none(), st.floats(), _NOT_STR)),
        "pp.spot_crops(size_um)": (lambda v: sta.pp.spot_crops(ad, size_um=v, copy=True), [ad], BAD_POSITIVE_NOBOOL),
        "pp.niche_crops(size_um)": (lambda v: sta.pp.niche_crops(ad, size_um=v, copy=True), [ad], BAD_POSITIVE_NOBOOL),
        "pp.niche_expression(radius_um)": (
            lambda v: sta.pp.niche_expression(ad, radius_um=v, copy=True),
            [ad],
            BAD_POSITIVE.filter(lambda v: not (isinstance(v, int | float) and v == 0)),  # 0: spot alone, valid
        ),
        "tl.embed(batch_size)": (lambda v: sta.tl.embed(ad, batch_size=v, **emb_kw), [ad], BAD_POSITIVE_INT_NOBOOL),
        "tl.embed(key_added)": (lambda v: sta.tl.embed(ad, key_added=v, **emb_kw), [ad], BAD_KEY),
        "tl.embed(model)": (
            lambda v: sta.tl.embed(ad, model=v, device="cpu"),
            [ad],
            st.one_of(st.integers(), st.floats(), st.sampled_from([[1], {"a": 1}, object()])),
        ),
        "tl.embed(device)": (
            lambda v: sta.tl.embed(ad, model=m, device=v, show_progress_bar=False),
            [ad],
            st.one_of(st.sampled_from(["gpu", "cuda:x", "tpu", "", "mps:9:9"]), st.floats(), st.sampled_from([[1]])),
        ),
        "tl.domains(n_domains)": (
            lambda v: sta.tl.domains(emb, n_domains=v, copy=True),
            [emb],
            st.one_of(BAD_POSITIVE_INT.filter(lambda v: v is not None), st.integers(41, 10**15)),
        ),
        "tl.domains(resolution)": (
            lambda v: sta.tl.domains(emb, method="leiden", resolution=v, copy=True),
            [emb],
            BAD_POSITIVE,
        ),
        "tl.domains(n_pcs)": (lambda v: sta.tl.domains(emb, n_domains=2, n_pcs=v, copy=True), [emb], BAD_POSITIVE_INT),
        "tl.domains(method)": (
            lambda v: sta.tl.domains(emb, n_domains=2, method=v, copy=True),
            [emb],
            _bad_choice({"gmm", "kmeans", "leiden"}),
        ),
        "tl.domains(random_state)": (
            lambda v: sta.tl.domains(emb, n_domains=2, random_state=v, copy=True),
            [emb],
            st.one_of(st.integers(max_value=-1), st.floats(), _WRONG_TYPES),
        ),
        "tl.domains(key_added)": (lambda v: sta.tl.domains(emb, n_domains=2, key_added=v, copy=True), [emb], BAD_KEY),
        "tl.annotate(temperature)": (
            lambda v: sta.tl.annotate(emb, reference=emb, labels_key="lab", temperature=v, copy=True, **cpu),
            [emb],
            BAD_POSITIVE,
        ),
        "tl.annotate(k)": (
            lambda v: sta.tl.annotate(emb, reference=emb, labels_key="lab", k=v, copy=True, **cpu),
            [emb],
            BAD_POSITIVE_INT,
        ),
        "tl.annotate(use)": (
            lambda v: sta.tl.annotate(emb, reference=emb, labels_key="lab", use=v, copy=True, **cpu),
            [emb],
            _bad_choice({"auto", "image", "gene", "fused"}),
        ),
        "tl.annotate(markers)": (
            lambda v: sta.tl.annotate(emb, markers=v, model=m, copy=True, **cpu),
            [emb],
            st.one_of(st.just({}), st.lists(st.text(max_size=3)), st.dictionaries(st.text(max_size=3), st.integers())),
        ),
        "tl.predict_expression(k)": (
            lambda v: sta.tl.predict_expression(emb, emb, k=v, **cpu),
            [emb],
            BAD_POSITIVE_INT,
        ),
        "tl.predict_expression(temperature)": (
            lambda v: sta.tl.predict_expression(emb, emb, temperature=v, **cpu),
            [emb],
            BAD_POSITIVE,
        ),
        "tl.predict_expression(n_top_genes)": (
            lambda v: sta.tl.predict_expression(emb, emb, n_top_genes=v, **cpu),
            [emb],
            BAD_POSITIVE_INT,
        ),
        "tl.predict_expression(alphas)": (
            lambda v: sta.tl.predict_expression(emb, emb, method="ridge", alphas=v, **cpu),
            [emb],
            st.one_of(st.lists(BAD_POSITIVE.filter(lambda v: not isinstance(v, list)), min_size=1), st.just([])),
        ),
        "tl.predict_expression(method)": (
            lambda v: sta.tl.predict_expression(emb, emb, method=v, **cpu),
            [emb],
            _bad_choice({"retrieval", "ridge", "head"}),
        ),
        "models.load(name_or_path)": (
            lambda v: sta.models.load(v, device="cpu"),
            [],
            st.one_of(st.integers(), st.floats(), st.none(), st.sampled_from([[1], {"a": 1}])),
        ),
        "models.load(sha256)": (
            lambda v: sta.models.load("stalign-base", device="cpu", sha256=v),
            [],
            st.one_of(st.text(max_size=70).filter(lambda s: s != ""), st.integers()),
        ),
        "models.STAlignConfig(embed_dim)": (
            lambda v: sta.models.STAlignConfig.base(["A", "B"], embed_dim=v),
            [],
            BAD_POSITIVE_INT,
        ),
        "models.STAlignConfig(spot_size)": (
            lambda v: sta.models.STAlignConfig.base(["A", "B"], spot_size=v),
            [],
            BAD_POSITIVE_INT,
        ),
        "train.pretrain(epochs)": (
            lambda v: sta.train.pretrain([sd], "base", output_dir=tempfile.mkdtemp(), epochs=v, **cpu),
            [sd],
            BAD_POSITIVE_INT_NOBOOL,
        ),
        "train.pretrain(batch_size)": (
            lambda v: sta.train.pretrain([sd], "base", output_dir=tempfile.mkdtemp(), batch_size=v, **cpu),
            [sd],
            st.one_of(BAD_POSITIVE_INT_NOBOOL, st.just(1)),
        ),
        "train.pretrain(gene_dropout)": (
            lambda v: sta.train.pretrain([sd], "base", output_dir=tempfile.mkdtemp(), gene_dropout=v, **cpu),
            [sd],
            st.one_of(st.floats(min_value=1.0), st.floats(max_value=-1e-9), st.sampled_from([NAN, INF, -INF])),
        ),
        # issue #7 follow-up: bools (an int subclass), keys, gene lists and the other training arguments
        "pp.spot_crops(size_um, bools too)": (
            lambda v: sta.pp.spot_crops(ad, size_um=v, copy=True),
            [ad],
            BAD_POSITIVE,
        ),
        "pp.spot_crops(key_added)": (lambda v: sta.pp.spot_crops(ad, key_added=v, copy=True), [ad], BAD_KEY),
        "pp.niche_crops(key_added)": (lambda v: sta.pp.niche_crops(ad, key_added=v, copy=True), [ad], BAD_KEY),
        "pp.niche_expression(key_added)": (
            lambda v: sta.pp.niche_expression(ad, key_added=v, copy=True),
            [ad],
            BAD_KEY,
        ),
        "pp.SpotDataset(batch_size)": (
            lambda v: sta.pp.SpotDataset([ad], genes=list(ad.var_names[:20]), batch_size=v),
            [ad],
            BAD_POSITIVE_INT,
        ),
        "pp.SpotDataset(genes)": (
            lambda v: sta.pp.SpotDataset([ad], genes=v),
            [ad],
            st.one_of(st.just([]), st.none(), st.integers(), st.floats(), st.text(max_size=5)),
        ),
        "pp.gene_index(var_names)": (
            lambda v: sta.pp.gene_index(v, GENES),
            [],
            st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=8), st.sampled_from([object(), b"x"])),
        ),
        "pp.ensembl_to_symbol(ids)": (
            lambda v: sta.pp.ensembl_to_symbol(v),
            [],
            st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=8), st.sampled_from([object(), b"x"])),
        ),
        "pp.build_vocabulary(min_sections)": (
            lambda v: sta.pp.build_vocabulary([ad, emb], min_sections=v),
            [ad, emb],
            st.one_of(st.integers(max_value=0), st.integers(min_value=3), st.sampled_from([True, 1.0, "2", None])),
        ),
        "tl.embed(batch_size, bools)": (
            lambda v: sta.tl.embed(ad, batch_size=v, **emb_kw),
            [ad],
            st.booleans(),
        ),
        "train.pretrain(sections)": (
            lambda v: _pretrain_nothing_made(v),
            [sd],
            st.sampled_from([None, [], 5, [sd, None], [sd, 5], {"a": sd}, object(), [b"dlpfc:151673"]]),
        ),
        "train.pretrain(epochs, bools)": (
            lambda v: _pretrain_nothing_made([sd], epochs=v),
            [sd],
            BAD_POSITIVE_INT,
        ),
        "train.pretrain(lr)": (
            lambda v: _pretrain_nothing_made([sd], lr=v),
            [sd],
            BAD_POSITIVE,
        ),
        "train.pretrain(warmup_epochs)": (
            lambda v: _pretrain_nothing_made([sd], warmup_epochs=v),
            [sd],
            st.one_of(st.floats(max_value=-1e-9), st.sampled_from([NAN, INF, True, False]), _WRONG_TYPES),
        ),
        "train.pretrain(checkpoint_every)": (
            lambda v: _pretrain_nothing_made([sd], checkpoint_every=v),
            [sd],
            BAD_POSITIVE_INT,
        ),
        "train.pretrain(grad_clip)": (
            lambda v: _pretrain_nothing_made([sd], grad_clip=v),
            [sd],
            BAD_POSITIVE,
        ),
        "train.pretrain(min_lr)": (
            lambda v: _pretrain_nothing_made([sd], min_lr=v),
            [sd],
            st.one_of(st.floats(max_value=-1e-9), st.sampled_from([NAN, INF, True, None]), _WRONG_TYPES),
        ),
        "train.pretrain(weight_decay)": (
            lambda v: _pretrain_nothing_made([sd], weight_decay=v),
            [sd],
            st.one_of(
                st.floats(max_value=-1e-9),
                st.sampled_from([NAN, INF, True, (0.1,), (0.1, 0.2, 0.3), (0.1, -1.0), (NAN, 0.1), ("a", 0.1)]),
                st.sampled_from(["abc", "", {"a": 1}, object(), b"x"]),  # (1, 2) of _WRONG_TYPES is a valid pair
            ),
        ),
        "train.TrainConfig(keep_checkpoints, max_steps, log_every)": (
            lambda v: [sta.train.TrainConfig(**{k: v}) for k in ("keep_checkpoints", "max_steps", "log_every")],
            [],
            st.one_of(st.integers(max_value=-1), st.sampled_from([NAN, True, 2.5]), _WRONG_TYPES),
        ),
        "train.pretrain(output_dir)": (
            lambda v: sta.train.pretrain([sd], "base", output_dir=v, **cpu),
            [sd],
            st.one_of(st.none(), st.integers(), st.floats(), st.just(""), st.sampled_from([[1], {"a": 1}])),
        ),
    }


#: output_dir of the training targets: every value is refused before any folder is made (checked after each call)
_NEVER_CREATED = Path(tempfile.gettempdir()) / "stalign-fuzz-output-never-created"


def _pretrain_nothing_made(sections, **kw):
    try:
        return sta.train.pretrain(sections, "base", output_dir=_NEVER_CREATED, device="cpu", **kw)
    finally:
        assert not _NEVER_CREATED.exists(), f"pretrain({kw}) created its output folder before failing"


TARGETS = list(_targets(dict.fromkeys(("model", "ad", "emb", "sd", "counts", "spots"))))


@pytest.mark.parametrize("target", TARGETS)
def test_bad_parameter_values_raise_clearly(fz, target):
    call, inputs, values = _targets(fz)[target]
    before = [snapshot(x) for x in inputs]

    @FUZZ
    @given(value=values)
    def check(value):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises((ValueError, TypeError)) as info:
                call(value)
        assert str(info.value).strip(), f"{target}={value!r}: empty message"
        assert "Traceback" not in str(info.value)

    check()
    for b, x in zip(before, inputs, strict=True):
        assert_unchanged(b, x)
