"""Command-line interface: thin wrappers over the Python API (``stalign info|embed|pretrain|evaluate``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

logger = logging.getLogger(__name__)


def _summary(sdata) -> str:
    from ._section import get_section

    sec = get_section(sdata)
    t = sec.table
    lines = [
        f"section        {sec.library_id}",
        f"spots          {t.n_obs}"
        + (f" (tiles every {t.uns['stalign_tiles']['params']['spacing_um']:g} µm)" if "stalign_tiles" in t.uns else ""),
        f"genes          {t.n_vars}",
        f"µm / full-res px {sec.microns_per_pixel:.4f}",
        f"spot diameter  {sec.spot_diameter_fullres:.1f} full-res px",
    ]
    if sec.images:
        lv = sec.images[0]
        lines.append(
            f"image          {len(sec.images)} levels, finest {lv.shape[1]}x{lv.shape[0]} px "
            f"({lv.fullres_per_px * sec.microns_per_pixel:.2f} µm/px)"
        )
    else:
        lines.append("image          none")
    if "annotation" in t.obs:
        counts = t.obs["annotation"].value_counts()
        lines.append("annotation     " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if "stalign_domain" in t.obs:
        counts = t.obs["stalign_domain"].value_counts()
        lines.append("domains        " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    for key in t.obsm:
        if key.startswith("X_stalign"):
            lines.append(f"obsm[{key!r}]  {t.obsm[key].shape}")
    return "\n".join(lines)


def _cmd_info(args) -> int:
    sdata = _load_input(args.input, args)  # an image file is tiled at 100 µm, so its summary counts tiles
    sys.stdout.write(_summary(sdata) + "\n")
    return 0


def _check_output(out: str, *, overwrite: bool, table_only: bool = False) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    import tempfile
    from pathlib import Path

    path = Path(out)
    if path.suffix not in (".h5ad", ".zarr"):
        msg = (
            f"Output {str(path)!r} must end in .h5ad (the table) or .zarr (the whole SpatialData); a folder path "
            "(no suffix) gets one file per section."
        )
        raise ValueError(msg)
    if table_only and path.suffix == ".zarr":
        msg = f"Output {str(path)!r}: an AnnData input can only be written as .h5ad; use an .h5ad path."
        raise ValueError(msg)
    if path.exists() and not overwrite:
        msg = f"Output {str(path)!r} exists; choose another path or pass --overwrite."
        raise FileExistsError(msg)
    parent = path.parent
    if not parent.exists():
        msg = f"Output folder {str(parent)!r} does not exist; create it first."
        raise FileNotFoundError(msg)
    if not parent.is_dir():
        msg = f"Output folder {str(parent)!r} is not a folder; choose an --out path inside an existing folder."
        raise NotADirectoryError(msg)
    try:  # the one reliable test (root ignores permission bits; read-only mounts ignore os.access)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        msg = (
            f"Output folder {str(parent)!r} is not writable ({e.strerror}); choose an --out path in a folder you "
            "can write to."
        )
        raise PermissionError(msg) from e


def _write(data, out: str, *, overwrite: bool) -> None:
    from anndata import AnnData

    from ._utils import write_data

    _check_output(out, overwrite=overwrite, table_only=isinstance(data, AnnData))
    write_data(data, out)


def _cohort_mode(args) -> bool:
    """Whether ``stalign embed`` writes a folder (several sections, or ``--out DIR``) rather than one file."""
    from pathlib import Path

    if len(args.input) > 1:
        return True
    if not args.out or Path(args.out).suffix in (".zarr", ".h5ad"):
        return False
    return not Path(args.out).suffix or Path(args.out).is_dir()


def _cmd_embed_cohort(args) -> int:
    import warnings
    from pathlib import Path

    from . import cohort

    if not args.out:
        msg = f"{len(args.input)} sections need an output folder: pass --out DIR (one file per section goes there)."
        raise ValueError(msg)
    if Path(args.out).suffix in (".zarr", ".h5ad"):
        msg = (
            f"--out {args.out}: several sections are written into a folder, one file per section; pass a folder "
            "path without .zarr/.h5ad (and --format zarr|h5ad for the files)."
        )
        raise ValueError(msg)

    def emit(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*sections failed.*", category=UserWarning)  # said below
        result = cohort.embed(
            args.input,
            args.out,
            model=args.model,
            n_domains=args.domains,
            file_format=args.format or "zarr",
            overwrite=args.overwrite,
            keep_going=args.keep_going,
            loader=lambda spec: _load_input(spec, args),
            device=args.device,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            progress=(lambda line: None) if args.quiet else emit,
            return_manifest=True,
        )
    if result is None:  # a rank other than 0: rank 0 reports
        return 0
    _, manifest = result
    emit(f"written        {args.out}/ ({len(manifest['sections'])} sections, cohort.h5ad, manifest.json)")
    if manifest["failures"]:
        for f in manifest["failures"]:
            sys.stderr.write(f"stalign embed: section {f['spec'] or f['sample']} failed: {f['error']}\n")
        return 1
    return 0


def _load_input(spec: str, args):
    """Read one SPEC of ``stalign embed``/``info``: an H&E image tiled at ``--tile-um``, or what ``datasets.load`` reads."""
    from ._utils import is_image_path

    tile_um = getattr(args, "tile_um", None)
    mpp = getattr(args, "microns_per_pixel", None)
    for flag, val, example in (("--tile-um", tile_um, 100), ("--microns-per-pixel", mpp, 0.5)):
        if val is not None and not (val > 0 and val < float("inf")):
            msg = f"{flag} {val}: it must be a positive number of micrometres (e.g. {flag} {example})."
            raise ValueError(msg)
    if not is_image_path(spec):
        if tile_um is not None or mpp is not None:
            msg = (
                f"--tile-um / --microns-per-pixel apply to an H&E image file (.svs, .ndpi, .tif, .tiff, .jpg, .png); "
                f"{spec!r} is not one."
            )
            raise ValueError(msg)
        return _points_input(spec, args)
    from .io import read_image
    from .pp import tile_tissue

    sdata = read_image(spec, microns_per_pixel=mpp)
    tile_tissue(sdata, spacing_um=100.0 if tile_um is None else tile_um)
    return sdata


def _points_input(spec: str, args):
    """``datasets.load``'s section; a Visium HD output at ``--bin-um``; with ``--pseudospot-um``, pseudo-spots as the table.

    The pseudo-spots (``pp.pseudospots``) become table ``"table"``, the one embedded and written; the bins or cells
    they sum stay beside them as table ``"bins"`` (with the map to their pseudo-spots).
    """
    from pathlib import Path

    from .datasets import load

    bin_um = getattr(args, "bin_um", None)
    ps_um = getattr(args, "pseudospot_um", None)
    for flag, val in (("--bin-um", bin_um), ("--pseudospot-um", ps_um)):
        if val is not None and not (val > 0 and val < float("inf")):
            msg = f"{flag} {val}: it must be a positive number of micrometres (e.g. {flag} 16)."
            raise ValueError(msg)
    if bin_um is not None:
        from .io import read_visium_hd

        if not Path(spec).expanduser().is_dir():
            msg = (
                f"--bin-um applies to a Visium HD output (an `outs` folder with binned_outputs/); {spec!r} is not one."
            )
            raise ValueError(msg)
        data = read_visium_hd(spec, bin_size_um=bin_um)
    else:
        data = load(spec, data_dir=args.data_dir)
    if ps_um is None:
        return data
    from spatialdata import SpatialData

    from .pp import pseudospots

    if not isinstance(data, SpatialData):
        msg = f"--pseudospot-um needs bins or cells read into a SpatialData (a Visium HD or Xenium folder); {spec!r} is not."
        raise ValueError(msg)
    pseudospots(data, spacing_um=ps_um, key_added="pseudospots")
    data.tables["bins"] = data.tables.pop("table")
    data.tables["table"] = data.tables.pop("pseudospots")
    return data


def _cmd_embed(args) -> int:
    from . import tl

    if args.domains is not None and args.domains < 1:
        msg = f"--domains {args.domains}: the number of domains must be a positive integer (e.g. --domains 7)."
        raise ValueError(msg)
    if _cohort_mode(args):
        return _cmd_embed_cohort(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        msg = (
            "Several processes (torchrun) write one file per section into a folder: pass --out DIR. One output "
            "file (--out x.zarr|x.h5ad) is written by a single process."
        )
        raise ValueError(msg)
    (spec,) = args.input
    if args.format is not None and args.out and not args.out.endswith(f".{args.format}"):
        msg = f"--format {args.format} names the files of --out DIR; with --out {args.out} its suffix sets the format."
        raise ValueError(msg)
    if args.out:  # fail before the (long) embedding, not after
        _check_output(args.out, overwrite=args.overwrite, table_only=str(spec).endswith(".h5ad"))
    data = _load_input(spec, args)
    tl.embed(
        data,
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        show_progress_bar=not args.quiet,
    )
    if args.domains:
        tl.domains(data, n_domains=args.domains)
    if args.out:
        _write(data, args.out, overwrite=args.overwrite)
    sys.stdout.write(_summary(data) + "\n")
    if args.out:
        sys.stdout.write(f"written        {args.out}\n")
    return 0


def _cmd_pretrain(args) -> int:
    from .train import pretrain_from_config

    overrides = {}
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.device:
        overrides["device"] = args.device
    pretrain_from_config(args.config, **overrides)
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluation import evaluate, format_markdown

    ablations = {}
    for item in args.ablation or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            msg = f"--ablation {item!r}: use NAME=PATH (e.g. --ablation no_niche=runs/no_niche)."
            raise ValueError(msg)
        ablations[name] = path
    res = evaluate(
        args.task,
        model=args.model[0] if len(args.model) == 1 else list(args.model),
        sections=args.sections or None,
        query=args.query or None,
        reference=args.reference or None,
        baselines=not args.no_baselines,
        ablations=ablations or None,
        split=args.split,
        image_features=args.image_features,
        smooth_um=args.smooth_um,
        seeds=args.seeds,
        data_dir=args.data_dir,
        out=args.out,
        device=args.device,
    )
    sys.stdout.write(format_markdown(res))
    if args.out:
        sys.stdout.write(f"written {args.out} and its .md\n")
    return 0


def _set_command(parser: argparse.ArgumentParser, func) -> None:
    """Bind a sub-command's function, and its flags by the Python names they stand for (for :func:`cli_wording`)."""
    flags = {
        a.dest: max(a.option_strings, key=len)
        for a in parser._actions
        if any(o.startswith("--") for o in a.option_strings) and a.dest != "help"
    }
    parser.set_defaults(func=func, flags=flags)


def cli_wording(message: str, flags: dict[str, str]) -> str:
    """An error of the Python API in the words of the command line: ``microns_per_pixel=`` → ``--microns-per-pixel``.

    Each argument of the Python API that the command exposes as a flag (``flags``: ``{"data_dir": "--data-dir"}``) is
    renamed where the message asks for it (```data_dir=```, ``data_dir=<value>``, ``data_dir=``); other mentions
    (``stalign.settings.data_dir``) stay as they are.
    """
    import re

    for dest, flag in flags.items():
        name = re.escape(dest)
        message = re.sub(rf"`{name}=`", f"`{flag}`", message)
        message = re.sub(rf"(?<![\w.]){name}=(?=[^\s,;.)])", f"{flag} ", message)
        message = re.sub(rf"(?<![\w.]){name}=", flag, message)
    return message


def build_parser() -> argparse.ArgumentParser:
    """The ``stalign`` argument parser."""
    p = argparse.ArgumentParser(prog="stalign", description=__doc__)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="read a section and print its summary")
    info.add_argument(
        "input",
        help="dlpfc:151673, her2st:C2, stutility_mob:MOB1, stahl_mob:11, a Space Ranger "
        "outs folder, a .zarr, an .h5ad or an H&E image file (tiled every 100 µm)",
    )
    info.add_argument("--data-dir", default=None, help="shared data folder (default $STALIGN_DATA_DIR)")
    info.add_argument(
        "--tile-um", type=float, default=None, help="H&E image input: pseudo-spot spacing in µm (default 100)"
    )
    info.add_argument(
        "--microns-per-pixel", type=float, default=None, help="H&E image input: µm per pixel, if the file lacks it"
    )
    _set_command(info, _cmd_info)

    emb = sub.add_parser(
        "embed",
        help="embed sections with a model; write .zarr or .h5ad (several sections: a folder, under torchrun too)",
        description="Embed one section into --out FILE.zarr|FILE.h5ad, or several into --out DIR: one file per "
        "section, DIR/cohort.h5ad (every spot, the embeddings, joint --domains) and DIR/manifest.json. Under "
        "`torchrun --nproc-per-node N -m stalign embed ...` the sections are shared out over the processes.",
    )
    emb.add_argument("input", nargs="+", help="one or more SPECs, as `stalign info` accepts")
    emb.add_argument(
        "--out", default=None, help="output .zarr (SpatialData) or .h5ad (table) of one section, or a folder"
    )
    emb.add_argument(
        "--tile-um", type=float, default=None, help="H&E image input: pseudo-spot spacing in µm (default 100)"
    )
    emb.add_argument(
        "--microns-per-pixel", type=float, default=None, help="H&E image input: µm per pixel, if the file lacks it"
    )
    emb.add_argument(
        "--bin-um", type=float, default=None, help="Visium HD output: the bin size to read (2, 8 or 16; default 8)"
    )
    emb.add_argument(
        "--pseudospot-um",
        type=float,
        default=None,
        help="Visium HD or Xenium: embed 55 µm pseudo-spots every this many µm instead of every bin/cell",
    )
    emb.add_argument("--model", default="stalign-base", help="registry name or path of saved weights")
    emb.add_argument("--device", default=None)
    emb.add_argument(
        "--batch-size", type=int, default=None, help="spots per forward pass (default 256 on the CPU, 1024 on CUDA)"
    )
    emb.add_argument("--num-workers", type=int, default=0)
    emb.add_argument("--domains", type=int, default=None, help="also cluster into this many (joint) domains")
    emb.add_argument(
        "--format", choices=["zarr", "h5ad"], default=None, help="file per section in --out DIR (default zarr)"
    )
    emb.add_argument("--data-dir", default=None)
    emb.add_argument("--overwrite", action="store_true", help="replace outputs that exist (a folder: recompute)")
    emb.add_argument(
        "--keep-going", action="store_true", help="finish the other sections when one fails; list it in manifest.json"
    )
    emb.add_argument("--quiet", action="store_true", help="no progress bar / per-section lines")
    _set_command(emb, _cmd_embed)

    pre = sub.add_parser("pretrain", help="pretrain a model from a TOML/JSON config")
    pre.add_argument("--config", required=True, help="TOML or JSON file with [data], [model], [train]")
    pre.add_argument("--output-dir", default=None)
    pre.add_argument("--epochs", type=int, default=None)
    pre.add_argument("--seed", type=int, default=None, help="training seed (overrides the config's)")
    pre.add_argument("--device", default=None)
    _set_command(pre, _cmd_pretrain)

    ev = sub.add_parser("evaluate", help="evaluate a model against the baselines; write JSON + markdown")
    ev.add_argument(
        "--task", nargs="+", required=True, choices=["domains", "genes", "annotate", "retrieval"], help="task(s)"
    )
    ev.add_argument("--sections", nargs="*", default=[], help="evaluated sections, e.g. dlpfc:151674 her2st:C6")
    ev.add_argument("--query", nargs="*", default=[], help="held-out sections for --task genes")
    ev.add_argument("--reference", nargs="*", default=[], help="reference sections for --task genes")
    ev.add_argument(
        "--model",
        nargs="+",
        default=["stalign-base"],
        help="registry name or path of saved weights; several: training seeds of one recipe, aggregated",
    )
    ev.add_argument(
        "--seeds", type=int, default=3, help="clustering / sampling seeds per model (results: mean ± sd over runs)"
    )
    ev.add_argument(
        "--smooth-um",
        type=float,
        default=None,
        help="smoothing radius (µm) of every method of domains and annotate (default: the tl defaults; 0: none)",
    )
    ev.add_argument("--ablation", action="append", help="NAME=PATH of another model to evaluate (repeatable)")
    ev.add_argument("--split", choices=["section", "patient"], default="section")
    ev.add_argument(
        "--image-features", nargs="+", default=["summary", "histogram", "texture"], help="squidpy feature groups"
    )
    ev.add_argument("--no-baselines", action="store_true")
    ev.add_argument("--out", default=None, help="results .json (a .md table is written next to it)")
    ev.add_argument("--device", default=None)
    ev.add_argument("--data-dir", default=None)
    _set_command(ev, _cmd_evaluate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stalign`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("stalign").setLevel(level)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, TypeError, OSError) as e:  # OSError: missing/existing/unwritable paths
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        sys.stderr.write(f"stalign {args.command}: error: {cli_wording(str(msg), args.flags)}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
