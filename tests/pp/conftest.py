from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

Image.MAX_IMAGE_PIXELS = None


def _dlpfc_files(data_dir: Path, sample: str):
    d = data_dir / "dlpfc_humanpilot" / "10X" / sample
    pos = pd.read_csv(
        d / "tissue_positions_list.txt",
        header=None,
        names=["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"],
    )
    pos = pos[pos["in_tissue"] == 1].set_index("barcode")
    sf = json.loads((d / "scalefactors_json.json").read_text())
    img = np.asarray(Image.open(d / "tissue_lowres_image.png").convert("RGB"))
    return pos, sf, img


def build_dlpfc(data_dir: Path, sample: str = "151673"):
    """DLPFC section from the loader when it exists, else straight from the files (no counts)."""
    try:
        from stalign.datasets import dlpfc
    except ImportError:  # pragma: no cover - before the loader existed
        dlpfc = None
    if dlpfc is not None:
        return dlpfc(sample, data_dir=data_dir)
    from stalign._build import build_sdata

    pos, sf, img = _dlpfc_files(data_dir, sample)
    coords = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    return build_sdata(
        sample=sample,
        coords_fullres=coords,
        obs_names=pos.index,
        microns_per_pixel=55.0 / sf["spot_diameter_fullres"],
        spot_diameter_fullres=sf["spot_diameter_fullres"],
        image=img,
        image_scalef=sf["tissue_lowres_scalef"],
    )


def her2st_c2_arrays(data_dir: Path):
    d = data_dir / "her2st" / "data"
    spots = pd.read_csv(d / "ST-spotfiles" / "C2_selection.tsv", sep="\t")
    spots.index = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"], strict=True)]
    img_path = next((d / "ST-imgs" / "C" / "C2").glob("*.jpg"))
    img = np.asarray(Image.open(img_path).convert("RGB"))
    return spots, img


@pytest.fixture(scope="session")
def dlpfc_sdata(data_dir):
    return build_dlpfc(data_dir, "151673")


@pytest.fixture(scope="session")
def her2st_c2(data_dir):
    """(spots, full-res image array) of her2st C2."""
    return her2st_c2_arrays(data_dir)


def build_st(spots, img, *, scalef: float = 1.0, sample: str = "C2", mpp: float = 0.7):
    from stalign._build import build_sdata

    coords = spots[["pixel_x", "pixel_y"]].to_numpy(float)
    return build_sdata(
        sample=sample,
        coords_fullres=coords,
        obs_names=spots.index,
        microns_per_pixel=mpp,
        spot_diameter_fullres=100.0 / mpp,
        image=img,
        image_scalef=scalef,
        technology="st",
    )


def dlpfc_anndata(data_dir: Path, sample: str = "151673"):
    """The same DLPFC section as an AnnData in the squidpy Visium convention (lowres image in uns)."""
    from anndata import AnnData

    pos, sf, img = _dlpfc_files(data_dir, sample)
    adata = AnnData(shape=(len(pos), 0))
    adata.obs_names = pos.index
    adata.obs[["in_tissue", "array_row", "array_col"]] = pos[["in_tissue", "array_row", "array_col"]]  # as scanpy
    adata.obsm["spatial"] = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    adata.uns["spatial"] = {sample: {"images": {"lowres": img}, "scalefactors": dict(sf)}}
    return adata


def st_anndata(spots, img, *, mpp: float = 0.7, sample: str = "C2"):
    """A full-resolution legacy-ST section as a squidpy-convention AnnData (one numpy image level)."""
    from anndata import AnnData

    adata = AnnData(shape=(len(spots), 0))
    adata.obs_names = spots.index
    adata.obsm["spatial"] = spots[["pixel_x", "pixel_y"]].to_numpy(float)
    adata.uns["spatial"] = {
        sample: {
            "images": {"fullres": img},
            "scalefactors": {"microns_per_pixel": mpp, "spot_diameter_fullres": 100.0 / mpp},
        }
    }
    return adata


@pytest.fixture(scope="session")
def helpers():
    """The builders above, for tests (pytest's importlib mode cannot import conftest)."""

    class H:
        pass

    h = H()
    h.build_st = staticmethod(build_st)
    h.st_anndata = staticmethod(st_anndata)
    h.dlpfc_anndata = staticmethod(dlpfc_anndata)
    h.dlpfc_files = staticmethod(_dlpfc_files)
    return h
