"""Regenerate docs/benchmarks.md from the JSON/markdown results in benchmarks/results/.

    .venv/bin/python benchmarks/dev_eval.py --model stalign-base
    .venv/bin/python benchmarks/throughput.py                  # (+ --device cuda --tag gpu on a GPU machine)
    .venv/bin/python benchmarks/gpu_check.py                   # on a GPU machine (its CPU half elsewhere)
    .venv/bin/python benchmarks/memory.py
    .venv/bin/python benchmarks/ondisk.py
    .venv/bin/python benchmarks/import_time.py
    .venv/bin/python benchmarks/embed_before_after.py --before <commit>
    .venv/bin/python benchmarks/make_docs.py

profile.md (the pyinstrument summary of benchmarks/profile_embed.py) is written by hand from its output and has no
JSON; it is copied as is.

Every table in the page is copied from a result file; nothing is typed by hand. Missing results are listed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "docs" / "benchmarks.md"

SECTIONS = [
    (
        "dev_eval",
        "Development evaluation (issues 4, 13)",
        "Zero-shot domains, H&E-only gene prediction, marker-prompt annotation, cross-modal retrieval and the "
        "held-out `L_spot` on the development-evaluation sections (never trained on), with every baseline of "
        "DESIGN.md §4 computed in the same run. `stalign` is what a user gets from the `tl` functions with their "
        "defaults; every baseline gets the same spatial smoothing; every number is a mean ± sd over seeds (and "
        "training seeds when several models are given). `random_init` is an untrained model of the same "
        "architecture. The last table checks the issues' criteria on these numbers.",
    ),
    (
        "ablations",
        "Ablations of the stalign-base recipe (issues 13, 14)",
        "Each lever of `recipes/base.toml` on vs off on the development sections: the three training seeds of the "
        "recipe, and models trained with levers switched off (`recipes/ablations/`, one seed each): one-hot instead "
        "of soft targets; also 32 px spot crops; also per-image GroupNorm instead of BatchNorm in the image "
        "encoders; and the previous recipe (BatchNorm on the gene side too). Each with the section's own "
        "normalisation statistics (shipped) and with the running statistics; the fusion rules considered for "
        "`X_stalign` side by side. Command: `bash benchmarks/seeds.sh` (or `benchmarks/ablations.py` on trained "
        "models).",
    ),
    (
        "throughput",
        "Throughput (CPU)",
        "`tl.embed` end to end (crop reading, niche expression, forward) vs squidpy `calculate_image_features` on the "
        "same sections, and vs the `large` preset; ratios are measured in one run.",
    ),
    ("throughput_gpu", "Throughput (GPU)", "The same benchmark on a lent GPU, when one was available."),
    (
        "gpu",
        "GPU check (issue 25)",
        "`benchmarks/gpu_check.py` on a GPU machine: `tl.embed` on CUDA (bf16) vs the CPU with the cosine between the "
        "two embeddings, pretraining steps with AMP, `torchrun` on several GPUs, and a batch-size sweep that says "
        "whether reading crops or the model bounds the rate.",
    ),
    (
        "memory",
        "Memory while embedding growing slides",
        "Peak RSS of `tl.embed` on lazily backed synthetic slides with a fixed number of spots.",
    ),
    (
        "tiles_quality",
        "H&E-only slides: tiles vs real spots (issue 16)",
        "Pseudo-spots from `pp.tile_tissue` against the assay's own spots: image-only domains on Ståhl MOB 01–08 and "
        "expression predicted for her2st C5, read at each spot's nearest tile. Command: "
        "`python benchmarks/tiles_quality.py`.",
    ),
    (
        "hd_consistency",
        "Visium HD: bins summed back into spots (issue 24)",
        "DLPFC 151673's real counts split into the 8 µm bins of each 55 µm spot, written in the Space Ranger HD "
        "layout and read back with `io.read_visium_hd`; pseudo-spots at the spot centres and on a 50 µm grid "
        "(`pp.pseudospots`) embedded and clustered next to the Visium section. Command: "
        "`python benchmarks/hd_consistency.py`.",
    ),
    (
        "hd_scale",
        "Visium HD: a 6.5 mm slide (issue 24)",
        "A synthetic Visium HD slide from real data (her2st C3's H&E at 0.27 µm/px, ~660,000 8 µm bins with counts "
        "of the nearest real spot): `io.read_visium_hd`, `pp.bin`, `pp.pseudospots` and `tl.embed` in one timed "
        "process, per-bin embedding at 16 µm, squidpy features on the same pseudo-spots. Command: "
        "`python benchmarks/hd_scale.py`.",
    ),
    (
        "slide_throughput",
        "H&E-only slides: throughput and memory (issue 16)",
        "`io.read_image` + `pp.tile_tissue` + `tl.embed` on pyramidal OME-TIFFs of real H&E of growing size, next to "
        'squidpy `calculate_image_features(features="summary")` on the same tiles. Command: '
        "`python benchmarks/slide_throughput.py`.",
    ),
    (
        "ondisk",
        "On-disk slides: multiscale and single-scale zarr (issue 12)",
        "`tl.embed` on real H&E written as SpatialData zarr and read back lazily with `spatialdata.read_zarr`, "
        "multiscale and single-scale, with the crop reader's block cache on and off (the code path before it), next "
        'to squidpy `calculate_image_features(features="summary")` on the same spots from the same zarr, in one run.',
    ),
    (
        "import_time",
        "Import time",
        "`import stalign` vs `import scanpy` in fresh interpreters (`python -X importtime`), alternating, in one run.",
    ),
    (
        "embed_before_after",
        "tl.embed before and after the speed work",
        "The same `tl.embed` calls timed on two commits in alternating worker processes of one run.",
    ),
    (
        "cohort",
        "Embedding a cohort (issue 15)",
        "Cohort spots/s of `stalign embed SPEC... --out DIR` with 1 process vs 2 gloo processes under torchrun on the "
        "same sections, in one run (`benchmarks/cohort.py --repeats 3`).",
    ),
    ("profile", "Where tl.embed spends its time", "A pyinstrument profile of `tl.embed`, summarised."),
]


def main() -> int:
    parts = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/make_docs.py` from `benchmarks/results/*.json`; do not edit by hand. "
        "`bash benchmarks/run_all.sh` reruns every benchmark and regenerates this page. "
        "Each section names the command that produced it, its date and machine.",
        "",
    ]
    missing = []
    for stem, title, blurb in SECTIONS:
        js, md = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
        if not md.exists() or (not js.exists() and stem != "profile"):
            missing.append(stem)
            continue
        meta = json.loads(js.read_text()).get("meta", {}) if js.exists() else {}
        parts += [f"## {title}", "", blurb, ""]
        if meta.get("command"):
            parts += [f"Command: `{meta['command']}`", ""]
        # its "###" headings sit under this "##" (no level skipped); a table right after a list item needs a blank
        # line, or Markdown reads the table as part of the item
        parts += [re.sub(r"^(- .*)\n(?=\|)", r"\1\n\n", md.read_text().rstrip(), flags=re.M), ""]
    if missing:
        parts += ["## Not run yet", "", *[f"- `{m}`" for m in missing], ""]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(parts))
    sys.stdout.write(f"wrote {DOC}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
