"""Running a cohort: each rank embeds its share of the plan, one section at a time, and reports as it goes."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._utils import get_table, write_data
from ._plan import is_spec

logger = logging.getLogger(__name__)


def _embed_one(entry: dict, item: Any, *, load: Callable, out: Path, embed_kwargs: dict) -> dict:
    """Read, embed and write one section; its status (``embedded``, ``n_spots``, ``seconds``)."""
    from ..tl import embed

    t0 = time.perf_counter()
    if is_spec(item):
        data = load(item)
        embed(data, show_progress_bar=False, **embed_kwargs)
    else:
        data = embed(item, copy=True, show_progress_bar=False, **embed_kwargs)  # never write into the caller's object
    write_data(data, out / entry["file"])  # the file's suffix is the format's; AnnData inputs were checked upfront
    return {"status": "embedded", "n_spots": int(get_table(data).n_obs), "seconds": time.perf_counter() - t0}


class Progress:
    """Rank 0's progress lines: one per section, ``[k/n]`` in the order sections finish, on any rank.

    In a multi-process run a background thread reports, as they arrive, the sections the other ranks finished
    (the small status files they post, :func:`_post`).
    """

    def __init__(self, plan: list[dict], emit: Callable[[str], None], folder: Path):
        import threading

        self.plan, self.emit, self.folder = plan, emit, folder
        self.seen: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def report(self, status: dict) -> None:
        with self._lock:
            i = status["index"]
            if i in self.seen:
                return
            self.seen.add(i)
            entry = self.plan[i]
            head = f"[{len(self.seen)}/{len(self.plan)}] {entry['label']}"
            if status["status"] == "embedded":
                self.emit(f"{head}  {status['n_spots']} spots  {status['seconds']:.1f} s")
            elif status["status"] == "skipped":
                self.emit(f"{head}  skipped: {entry['file']} exists, same model")
            else:
                self.emit(f"{head}  FAILED: {status['error']}")

    def drain(self) -> None:
        """Report the sections other ranks finished since the last call (their status files)."""
        found = []
        for p in self.folder.glob("*.json"):
            try:
                found.append(json.loads(p.read_text()))
            except (OSError, ValueError):  # being written: next time
                continue
        for st in sorted(found, key=lambda s: s.get("finished", 0.0)):
            self.report(st)

    def start(self, interval: float = 0.5) -> None:
        import threading

        def loop() -> None:
            while not self._stop.wait(interval):
                self.drain()

        self._thread = threading.Thread(target=loop, name="stalign-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.drain()


def post(folder: Path, status: dict) -> None:
    """A rank other than 0 tells rank 0 a section is done (a small file, renamed into place)."""
    path = folder / f"{status['index']:06d}.json"
    tmp = folder / f".{path.name}.{os.getpid()}"
    try:
        tmp.write_text(json.dumps(status))
        os.replace(tmp, path)
    except OSError as e:  # progress only: rank 0 gets every status at the barrier anyway
        logger.debug("Cannot post progress to %s: %s", folder, e)


def gather(info, mine: list[dict]) -> list[dict]:
    """Every rank's statuses on every rank (rank order); the gather waits for every rank, as a barrier would."""
    import torch.distributed as dist

    if not info.enabled:
        return mine
    everyone: list[Any] = [None] * info.world_size
    dist.all_gather_object(everyone, mine)
    return [st for part in everyone for st in part]


def broadcast(info, obj: Any) -> Any:
    import torch.distributed as dist

    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def planned_status(entry: dict) -> dict:
    st = {"index": entry["index"], "status": "skipped" if entry["action"] == "skip" else "failed"}
    if entry["action"] == "fail":
        st["error"] = entry["error"]
    return st


def run_section(entry: dict, item: Any, *, keep_going: bool, n: int, **kwargs) -> dict:
    """:func:`_embed_one`, with a failure named (raised, or a ``failed`` status with ``keep_going``)."""
    try:
        return _embed_one(entry, item, **kwargs)
    except Exception as e:  # a failing section is named (and skipped with keep_going)
        if not keep_going:
            msg = f"Section {entry['label']!r} ({entry['index'] + 1} of {n}) failed: {e}"
            try:
                err = type(e)(msg)
            except Exception:  # noqa: BLE001 - an exception type with another signature
                err = RuntimeError(msg)
            raise err from e
        logger.warning("Section %r failed: %s", entry["label"], e)
        return {"status": "failed", "error": f"{type(e).__name__}: {e}"}


def run(
    info, entries: list[dict], items: list, *, out: Path, load: Callable, emit: Callable[[str], None],
    keep_going: bool, embed_kwargs: dict,
) -> list[dict]:  # fmt: skip
    """Run the rank's share of the plan (round-robin), one section at a time; every section's status, on every rank.

    Rank 0 reports each section as it finishes, on any rank (the others post small status files); the statuses are
    gathered from every rank at the end, which waits for the slowest rank as a barrier would.
    """
    from ._plan import PROGRESS_DIR

    # what rank 0 knows before any work: the skipped sections, and those it could not even name
    known = [planned_status(e) for e in entries if e["action"] != "embed"] if info.is_main else []
    reporter = Progress(entries, emit, out / PROGRESS_DIR) if info.is_main else None
    try:
        for st in known:
            reporter.report(st)
        if reporter is not None and info.enabled:
            reporter.start()
        todo = [e for e in entries if e["action"] == "embed"][info.rank :: info.world_size]
        mine = []
        for entry in todo:  # one section at a time: memory holds one section's crops
            st = run_section(entry, items[entry["index"]], load=load, out=out, embed_kwargs=embed_kwargs,
                             keep_going=keep_going, n=len(entries))  # fmt: skip
            st |= {"index": entry["index"], "rank": info.rank, "finished": time.time()}
            mine.append(st)
            if reporter is not None:
                reporter.report(st)
            else:
                post(out / PROGRESS_DIR, st)
        return known + gather(info, mine)
    finally:
        if reporter is not None:
            reporter.stop()
