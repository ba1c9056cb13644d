"""Registry of bundled weights: name → files under ``stalign/models/weights/<name>/``, sha256, version.

To bundle trained weights: ``stalign.models.save(model, "src/stalign/models/weights/stalign-base")``, then
copy the printed ``weights_sha256`` from its ``config.json`` into ``sha256`` below and set ``version``.
"""

from __future__ import annotations

from typing import TypedDict


class RegistryEntry(TypedDict):
    """One bundled model."""

    #: weights file, relative to ``stalign/models/`` (importlib.resources)
    file: str
    #: config file, relative to ``stalign/models/``
    config: str
    #: sha256 of ``file`` (``None`` while the weights are not bundled)
    sha256: str | None
    #: stalign version that produced the weights (``None`` while not bundled)
    version: str | None
    description: str


#: The model ``tl.embed`` and ``cohort.embed`` use when none is given.
DEFAULT_MODEL = "stalign-base"

REGISTRY: dict[str, RegistryEntry] = {
    "stalign-base": {
        "file": "weights/stalign-base/model.safetensors",
        "config": "weights/stalign-base/config.json",
        "sha256": "4c60eb1ff6a259c29d4d806647f41dc99ea7cfcf654a8de0451b8060ea77b5d9",
        "version": "0.1.0.dev0",
        "description": "STAlignConfig.base pretrained from scratch on the public sections of the shared data.",
    },
}


def available_models() -> list[str]:
    """Names of the registered models.

    Returns
    -------
    Sorted names accepted by :func:`stalign.models.load` (whether or not their weights are bundled yet).

    Examples
    --------
    >>> import stalign as sta
    >>> sta.models.available_models()
    ['stalign-base']
    """
    return sorted(REGISTRY)
