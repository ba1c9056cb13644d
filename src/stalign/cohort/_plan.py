"""Planning a cohort: which sections, under which names, into which files, and what is already done."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._constants import Key
from .._utils import TMP_PREFIX, get_table, read_table_elem, unique_names

logger = logging.getLogger(__name__)

#: Files of an output folder besides the sections.
COHORT_FILE, MANIFEST_FILE = "cohort.h5ad", "manifest.json"
#: Hidden folder where ranks other than 0 report finished sections, for rank 0's progress lines.
PROGRESS_DIR = ".stalign-progress"
FORMATS = ("zarr", "h5ad")


def is_spec(item: Any) -> bool:
    return isinstance(item, str | os.PathLike)


def label(item: Any, name: str) -> str:
    return str(item) if is_spec(item) else name


def _safe_name(name: str) -> str:
    """A section name usable as a file name (no separators, no leading dot)."""
    name = re.sub(r"[^\w.+-]", "_", str(name)).lstrip(".")
    return name or "section"


def _object_name(item: Any, index: int) -> str:
    from .._section import get_section

    table = get_table(item)
    if Key.sample in table.obs:
        values = table.obs[Key.sample].astype(str).unique()
        if len(values) == 1:
            return str(values[0])
    try:
        return get_section(item).library_id
    except (ValueError, KeyError, TypeError):
        return f"section{index + 1}"


def _read_record(path: Path) -> dict | None:
    """``uns["stalign"]`` (the record of tl.embed) stored in an output file, read alone; None if unreadable."""
    try:
        return read_table_elem(path, f"uns/{Key.uns}")
    except (OSError, KeyError, ValueError, TypeError) as e:
        logger.debug("Cannot read the embedding record of %s: %s", path, e)
        return None


def _same_model(record: dict | None, model: dict) -> bool:
    if not isinstance(record, Mapping):
        return False
    return str(record.get("weights_fingerprint")) == str(model["weights_fingerprint"]) and str(
        record.get("weights_sha256")
    ) == str(model["weights_sha256"])


def plan(
    items: list, names: list[str] | None, out: Path, fmt: str, model: dict, *, overwrite: bool, keep_going: bool
) -> list[dict]:
    """One entry per section: its name, file and what to do (``embed``, ``skip`` or ``fail``). Runs on rank 0."""
    from anndata import AnnData

    from ..datasets import sample_name

    errors: dict[int, str] = {}
    if names is None:
        names = []
        for i, item in enumerate(items):
            try:
                names.append(sample_name(item) if is_spec(item) else _object_name(item, i))
            except (ValueError, TypeError, KeyError, OSError) as e:
                if not keep_going:
                    msg = f"Section {i + 1} of {len(items)} ({label(item, '?')}): {e}"
                    raise type(e)(msg) from e
                errors[i] = f"{type(e).__name__}: {e}"
                names.append(f"section{i + 1}")
    names = unique_names([_safe_name(n) for n in names])
    if fmt == "zarr":
        tables = [
            label(it, n)
            for it, n in zip(items, names, strict=True)
            if isinstance(it, AnnData) or (is_spec(it) and str(it).endswith(".h5ad"))
        ]
        if tables:
            msg = (
                f"{', '.join(tables)}: an AnnData (.h5ad) input can only be written as .h5ad, not as a SpatialData "
                ".zarr; pass --format h5ad (file_format='h5ad'), or give SpatialData inputs."
            )
            raise ValueError(msg)
    plan, conflicts = [], []
    for i, (item, name) in enumerate(zip(items, names, strict=True)):
        entry = {"index": i, "spec": str(item) if is_spec(item) else None, "label": label(item, name)}
        entry |= {"sample": name, "file": f"{name}.{fmt}", "action": "embed"}
        path = out / entry["file"]
        if i in errors:
            entry |= {"action": "fail", "error": errors[i]}
        elif path.exists() and not overwrite:
            record = _read_record(path)
            if _same_model(record, model):
                entry["action"] = "skip"
            else:
                who = (
                    f"model {record.get('model')!r} (weights sha256 {str(record.get('weights_sha256'))[:12]}…)"
                    if isinstance(record, Mapping)
                    else "no readable stalign embedding"
                )
                conflicts.append(f"{path} ({who})")
        plan.append(entry)
    if conflicts:
        msg = (
            f"{len(conflicts)} output(s) exist with other content than this model's embeddings: "
            f"{'; '.join(conflicts)}. Pass --overwrite (overwrite=True) to replace them, or choose another output "
            "folder."
        )
        raise FileExistsError(msg)
    return plan


def check_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        msg = f"Output {str(out)!r} is a file; a cohort is written into a folder: choose a folder path."
        raise NotADirectoryError(msg)


def prepare_folder(out: Path) -> None:
    """Create the output folder, check it can be written, remove what an interrupted run left behind."""
    import shutil
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        msg = f"Output folder {str(out)!r} cannot be written ({e.strerror}); choose a folder you can write to."
        raise PermissionError(msg) from e
    for p in [*out.glob(f"{TMP_PREFIX}*"), out / PROGRESS_DIR]:
        shutil.rmtree(p, ignore_errors=True)  # temporaries of an interrupted run: never under a final name
    (out / PROGRESS_DIR).mkdir()


def shared_plan(
    info, items: list, names: list[str] | None, out: Path, fmt: str, model: dict, *, overwrite: bool, keep_going: bool
) -> list[dict]:
    """:func:`plan` made on rank 0 (which also prepares the folder) and handed to every rank; its error on every rank."""
    from ._run import broadcast

    entries: Any = None
    if info.is_main:
        try:
            check_folder(out)
            entries = plan(items, names, out, fmt, model, overwrite=overwrite, keep_going=keep_going)
            prepare_folder(out)
        except Exception as e:  # told to the other ranks, then raised here
            broadcast(info, ("error", f"{type(e).__name__}: {e}"))
            raise
    entries = broadcast(info, entries)
    if isinstance(entries, tuple):
        msg = f"Rank 0 refused the cohort: {entries[1]}"
        raise ValueError(msg)
    return entries
