"""Marker-gene prompts written from the literature (not tuned on any labels), for zero-shot annotation.

Each dictionary maps a label, spelled exactly as the dataset's manual labels in ``obs["annotation"]``, to human gene
symbols. Genes that a model or a section lacks are skipped at run time (with a warning from ``tl.annotate``).
Labels that no marker set can separate from another label (her2st "cancer in situ" vs "invasive cancer", and
"undetermined") have no prompt; their spots are left out of the scores and the results say so.
"""

from __future__ import annotations

#: Human DLPFC cortical layers and white matter (Visium, Maynard et al. 2021 labels L1–L6, WM).
DLPFC_LAYER_MARKERS: dict[str, list[str]] = {
    # L1: molecular layer; Reelin-expressing Cajal–Retzius / interneurons and the astrocytic glia limitans
    # (Zeng et al. 2012 Cell 149:483, RELN; Maynard et al. 2021 Nat Neurosci 24:425, AQP4 enriched in L1).
    "L1": ["RELN", "AQP4", "GFAP"],
    # L2: HPCAL1 (Maynard et al. 2021, layer-enriched gene), CUX2 and LAMP5 (upper-layer excitatory neurons,
    # Zeng et al. 2012; Hodge et al. 2019 Nature 573:61).
    "L2": ["HPCAL1", "CUX2", "LAMP5"],
    # L3: CUX2 (L2/3 intratelencephalic neurons) and FREM3 (Maynard et al. 2021; Hodge et al. 2019 L3 types).
    "L3": ["CUX2", "FREM3", "CARTPT"],
    # L4: RORB (granular layer 4, Zeng et al. 2012; Hodge et al. 2019), PVALB enriched in mid layers of primate cortex.
    "L4": ["RORB", "PVALB"],
    # L5: PCP4 (Maynard et al. 2021), FEZF2 / BCL11B (CTIP2) deep-layer projection neurons (Molyneaux et al. 2007
    # Nat Rev Neurosci 8:427), TRABD2A (Maynard et al. 2021).
    "L5": ["PCP4", "FEZF2", "BCL11B", "TRABD2A"],
    # L6: NR4A2, SEMA3E, SYT6, TLE4 (Zeng et al. 2012; Molyneaux et al. 2007), KRT17 (Maynard et al. 2021).
    "L6": ["NR4A2", "SEMA3E", "SYT6", "TLE4", "KRT17"],
    # White matter: myelin genes of oligodendrocytes (MBP, PLP1, MOBP, MOG; Maynard et al. 2021 Fig. 2).
    "WM": ["MBP", "PLP1", "MOBP", "MOG"],
}

#: HER2+ breast cancer pathologist regions (her2st, Andersson et al. 2021 Nat Commun 12:6012).
HER2ST_REGION_MARKERS: dict[str, list[str]] = {
    # Tumour epithelium of HER2+ cancer: the ERBB2 amplicon (ERBB2, GRB7) and luminal keratins / EPCAM
    # (Wu et al. 2021 Nat Genet 53:1334, breast cancer cell atlas).
    "invasive cancer": ["ERBB2", "GRB7", "KRT19", "KRT8", "KRT18", "EPCAM"],
    # Fibroblast / stromal extracellular matrix (Wu et al. 2021 CAF and fibroblast markers).
    "connective tissue": ["COL1A1", "COL1A2", "COL3A1", "DCN", "LUM"],
    # Leukocytes: pan-immune PTPRC, T cells (CD3E, CD2), B / plasma cells (MS4A1, CD79A, IGKC).
    "immune infiltrate": ["PTPRC", "CD3E", "CD2", "MS4A1", "CD79A", "IGKC"],
    # Adipocytes: adiponectin, perilipin, leptin, FABP4 (PanglaoDB / Tabula Sapiens adipocyte markers).
    "adipose tissue": ["ADIPOQ", "PLIN1", "LEP", "FABP4"],
    # Normal ducts and lobules: basal / myoepithelial keratins and TP63 (Nguyen et al. 2018 Nat Commun 9:2028).
    "breast glands": ["KRT5", "KRT14", "KRT17", "TP63"],
}

#: Mouse main olfactory bulb layers (Ståhl et al. 2016 labels), as human symbols (mouse symbols upper-cased).
STAHL_MOB_LAYER_MARKERS: dict[str, list[str]] = {
    # Olfactory ensheathing glia wrap the sensory axons of the nerve layer: S100B, p75 (NGFR), SOX10 and BLBP (FABP7)
    # (Ramón-Cueto & Avila 1998 Brain Res Bull 46:175; Murdoch & Roskams 2008 Glia 56:1751).
    "Olfactory nerve layer": ["S100B", "SOX10", "NGFR", "FABP7"],
    # Periglomerular interneurons: dopaminergic (TH, SLC6A3), calretinin (CALB2) and calbindin (CALB1) types
    # (Kosaka & Kosaka 2005 Anat Sci Int 80:80; Parrish-Aungst et al. 2007 J Comp Neurol 501:825).
    "Glomerular layer": ["TH", "SLC6A3", "CALB2", "CALB1"],
    # Tufted cells (cholecystokinin) and VIP interneurons of the external plexiform layer (Seroogy et al. 1985
    # J Comp Neurol 239:373; Kosaka et al. 1985 Brain Res 343:166).
    "Outer Plexiform Layer": ["CCK", "VIP"],
    # Mitral cells: TBX21, EOMES (TBR2), CDHR1 (PCDH21), VGLUT1 (SLC17A7) and reelin (Faedo et al. 2002 Mech Dev
    # 116:157; Nagai et al. 2005 J Neurosci 25:1413; Mizuguchi et al. 2012 Cell Rep 2:617).
    "Mitral Cell Layer": ["TBX21", "EOMES", "CDHR1", "SLC17A7", "RELN"],
    # GABAergic granule cells (GAD1, GAD2, preproenkephalin PENK) and the neuroblasts of the rostral migratory stream
    # at the bulb's core (DCX, SOX11) (Lledo et al. 2008 Trends Neurosci 31:392; Haskell & Brzezinski 2009).
    "Granular Cell Layer": ["GAD1", "GAD2", "PENK", "DCX", "SOX11"],
}

#: Marker sets by dataset name (the part of a section spec before the colon).
MARKERS: dict[str, dict[str, list[str]]] = {
    "dlpfc": DLPFC_LAYER_MARKERS,
    "her2st": HER2ST_REGION_MARKERS,
    "stahl_mob": STAHL_MOB_LAYER_MARKERS,
}
