"""A new user's first hour, run as they would run it (issue 22's "Done when").

The README's ``export STALIGN_DATA_DIR=...`` line is evaluated by bash in the project folder; every command then runs
as a child process from another folder (a temporary one): ``stalign info``, the main job written as ``.zarr`` and as
``.h5ad`` (stderr holds the progress bar and no warning), a JPEG without a scale (the error names the flag), the
README's slide example as written, and a Python session that plots the results with scanpy, squidpy and
spatialdata-plot.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
#: stderr words a quiet run never prints
NOISE = re.compile(r"warn|deprecat", re.IGNORECASE)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def user(tmp_path_factory, data_dir):
    """``run(args, cwd=...)``: a child process with the README's environment, started in a folder of its own."""
    (line,) = [ln for ln in README.splitlines() if ln.startswith("export STALIGN_DATA_DIR=")]
    folder = subprocess.run(
        ["bash", "-c", f'{line} && printf %s "$STALIGN_DATA_DIR"'], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert Path(folder).is_absolute() and Path(folder).resolve() == data_dir.resolve(), folder
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "STALIGN_DATA_DIR")}
    env.update(STALIGN_DATA_DIR=folder, MPLBACKEND="agg", HF_HUB_OFFLINE="1")
    home = tmp_path_factory.mktemp("elsewhere")

    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=home, env=env, capture_output=True, text=True, timeout=1200)

    run.home = home
    return run


STALIGN = [sys.executable, "-m", "stalign"]


def _lines(stderr: str) -> list[str]:
    """stderr split into what a terminal shows: progress-bar redraws (``\\r``) and lines."""
    return [p.strip() for p in re.split(r"[\r\n]+", stderr) if p.strip()]


def _check_quiet(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = _lines(proc.stderr)
    assert not [ln for ln in lines if NOISE.search(ln)], proc.stderr[-3000:]
    bars = {ln.split(":", 1)[0] for ln in lines}
    assert bars == {"embedding"}, lines[-10:]  # one progress bar, and nothing else


def test_info_from_another_folder(user):
    proc = user([*STALIGN, "info", "dlpfc:151673"])
    assert proc.returncode == 0, proc.stderr
    assert "spots          3639" in proc.stdout and not proc.stderr


@pytest.fixture(scope="module")
def main_job(user):
    """The README's main job, written as ``x.zarr`` and as ``x.h5ad``."""
    procs = [
        user([*STALIGN, "embed", "dlpfc:151673", "--domains", "7", "--out", f"x.{ext}"]) for ext in ("zarr", "h5ad")
    ]
    return procs


def test_main_job_writes_zarr_and_h5ad_quietly(user, main_job):
    for proc, ext in zip(main_job, ("zarr", "h5ad"), strict=True):
        _check_quiet(proc)
        assert (user.home / f"x.{ext}").exists()
        assert f"written        x.{ext}" in proc.stdout


def test_jpeg_without_a_scale_names_the_flag(user, data_dir):
    jpg = data_dir / "stahl_mob_splotch" / "splotch" / "tutorials" / "olfactory_bulb_st" / "images" / "01.jpg"
    shutil.copy(jpg, user.home / "some.jpg")
    proc = user([*STALIGN, "embed", "some.jpg"])
    assert proc.returncode == 2
    assert "--microns-per-pixel" in proc.stderr and "microns_per_pixel" not in proc.stderr, proc.stderr


def test_readme_slide_example_works_as_written_on_a_jpeg(user, data_dir):
    (line,) = [ln for ln in README.splitlines() if re.search(r"stalign embed slide\.jpg", ln)]
    args = shlex.split(line)
    assert Path(args[0]).name == "stalign"
    jpg = data_dir / "stahl_mob_splotch" / "splotch" / "tutorials" / "olfactory_bulb_st" / "images" / "01.jpg"
    shutil.copy(jpg, user.home / "slide.jpg")
    _check_quiet(user([*STALIGN, *args[1:]]))
    assert (user.home / "slide.zarr").is_dir()


def test_results_plot_in_scanpy_squidpy_and_spatialdata_plot(user, main_job):
    """The h5ad, the zarr's table and an in-memory table after ``tl.embed``, as a scverse user plots them."""
    assert all(p.returncode == 0 for p in main_job)
    script = textwrap.dedent(
        """
        import anndata as ad
        import matplotlib.pyplot as plt
        import scanpy as sc
        import spatialdata as sd
        import spatialdata_plot
        import squidpy as sq

        import stalign as sta

        def both(table, name):
            sc.pl.spatial(table, color="stalign_domain", show=False)
            assert len(plt.gca().images) == 1, name  # the H&E under the spots
            sq.pl.spatial_scatter(table, color="stalign_domain")
            assert len(plt.gcf().axes[0].images) == 1, name
            plt.close("all")
            print("plotted", name)

        both(ad.read_h5ad("x.h5ad"), "h5ad")
        sdata = sd.read_zarr("x.zarr")
        both(sdata.tables["table"], "zarr table")
        sdata.pl.render_images().pl.render_shapes(color="stalign_domain").pl.show()
        assert len(plt.gca().images) >= 1 and len(plt.gca().collections) >= 1
        plt.close("all")
        print("rendered zarr")

        mob = sta.datasets.stutility_mob("MOB1")
        sta.tl.embed(mob)
        sta.tl.domains(mob, n_domains=5)
        both(mob.tables["table"], "in-memory table")
        """
    )
    proc = user([sys.executable, "-c", script])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("h5ad", "zarr table", "in-memory table"):
        assert f"plotted {name}" in proc.stdout
    assert "rendered zarr" in proc.stdout
