"""Global settings (device, batch size, workers, seed)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Settings:
    device: str | None = None
    batch_size: int = 256
    num_workers: int = 0
    seed: int = 0


settings = _Settings()
