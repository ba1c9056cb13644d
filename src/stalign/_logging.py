"""Package logger: a ``NullHandler`` until the user sets a verbosity (``stalign.settings.verbosity``, as scanpy's)."""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("stalign")
logger.addHandler(logging.NullHandler())

#: scanpy's verbosity levels (``sc.settings.verbosity``) and the logging level of each.
VERBOSITY_LEVELS = {
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "hint": 15,
    "debug": logging.DEBUG,
}
_NAMES = list(VERBOSITY_LEVELS)


def _level(verbosity: int | str) -> int:
    """A scanpy verbosity (0–4, or ``"error"`` … ``"debug"``) → a logging level."""
    if isinstance(verbosity, str) and verbosity.lower() in VERBOSITY_LEVELS:
        return VERBOSITY_LEVELS[verbosity.lower()]
    if isinstance(verbosity, int) and not isinstance(verbosity, bool):
        return VERBOSITY_LEVELS[_NAMES[min(max(verbosity, 0), len(_NAMES) - 1)]]
    msg = f"verbosity={verbosity!r}; use 0–4 or one of {', '.join(map(repr, _NAMES))} (as scanpy's settings.verbosity)."
    raise ValueError(msg)


def verbosity() -> int:
    """The current verbosity, 0 (errors) to 4 (debug), read from the ``stalign`` logger's level."""
    level = logger.getEffectiveLevel()
    return next((i for i, name in enumerate(_NAMES) if VERBOSITY_LEVELS[name] <= level), len(_NAMES) - 1)


def set_verbosity(level: int | str) -> None:
    """Set how much stalign logs, as ``scanpy.settings.verbosity``.

    Parameters
    ----------
    level
        ``0``/``"error"``, ``1``/``"warning"`` (the default), ``2``/``"info"``, ``3``/``"hint"``, ``4``/``"debug"``,
        or a :mod:`logging` level name (``"INFO"``) or number (``logging.DEBUG``, i.e. above 4).

    When nothing else shows log records (no handler on the root logger), stalign's records go to stderr from here on.
    """
    if isinstance(level, int) and not isinstance(level, bool) and level > len(_NAMES) - 1:
        logger.setLevel(level)  # a logging level such as logging.DEBUG
    else:
        logger.setLevel(_level(level))
    if not logging.getLogger().handlers and not any(getattr(h, "_stalign", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._stalign = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
