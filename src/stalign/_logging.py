"""Package logger: a ``NullHandler`` only; verbosity is set through :func:`stalign.settings`."""

from __future__ import annotations

import logging

logger = logging.getLogger("stalign")
logger.addHandler(logging.NullHandler())


def set_verbosity(level: int | str) -> None:
    """Set the log level of the ``stalign`` logger (e.g. ``"INFO"`` or ``logging.DEBUG``)."""
    logger.setLevel(level)
