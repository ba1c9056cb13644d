"""Default key names used across the package (the single source of truth)."""

from __future__ import annotations


class Key:
    """Default names of the slots stalign reads and writes."""

    table = "table"
    # obsm
    X = "X_stalign"
    X_image = "X_stalign_image"
    X_gene = "X_stalign_gene"
    X_niche = "X_stalign_niche"
    #: the prediction head's expression of the model's ``predict_genes`` from the H&E (standardised within a section)
    X_pred = "X_stalign_pred"
    niche_expr = "stalign_niche"  # obsm: niche-aggregated expression (sparse, same columns as X)
    spot_bbox = "stalign_spot_bbox"
    niche_bbox = "stalign_niche_bbox"
    # obs
    sample = "sample"
    label = "stalign_label"
    label_score = "stalign_label_score"
    domain = "stalign_domain"
    # layers
    pred = "stalign_pred"
    # uns
    uns = "stalign"
    #: parameters of pp.tile_tissue (the pseudo-spots of an H&E-only slide)
    tiles = "stalign_tiles"
    spatial = "spatial"
    #: µm per pixel of the full-resolution image, stored in ``uns["spatial"][library]["scalefactors"]``
    microns_per_pixel = "microns_per_pixel"
    spot_diameter_fullres = "spot_diameter_fullres"


#: Physical spot diameter (µm) of the technologies we read.
VISIUM_SPOT_UM = 55.0
#: Visium centre-to-centre spot distance (µm): the hardware fact that calibrates µm per pixel.
VISIUM_PITCH_UM = 100.0
ST_SPOT_UM = 100.0
ST_PITCH_UM = 200.0

#: Image files read by ``io.read_image`` with tiffslide (TIFF-based whole-slide formats).
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".tif", ".tiff")
#: Image files read with Pillow (no random access: decoded once).
FLAT_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGE_SUFFIXES = SLIDE_SUFFIXES + FLAT_SUFFIXES

#: Default crop geometry (µm), as in the ST-Align paper.
SPOT_UM = 100.0
NICHE_UM = 200.0
