"""Per-step learning-rate and weight-decay schedules (linear warm-up, then cosine)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class CosineSchedule:
    """Learning rate: linear warm-up to ``lr`` then cosine to ``min_lr``; weight decay: cosine ``wd_start → wd_end``.

    Both are pure functions of the global step, so the schedule's state is just its parameters (stored in
    checkpoints as JSON and checked on resume).

    Examples
    --------
    >>> import stalign as sta
    >>> sched = sta.train.CosineSchedule(
    ...     lr=1e-3,
    ...     min_lr=1e-6,
    ...     total_steps=100,
    ...     warmup_steps=10,
    ...     wd_start=0.04,
    ...     wd_end=0.4,
    ... )
    """

    lr: float
    min_lr: float
    total_steps: int
    warmup_steps: int
    wd_start: float
    wd_end: float

    def lr_at(self, step: int) -> float:
        """Learning rate for the optimiser step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        t = min(max(step - self.warmup_steps, 0), span) / span
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * t))

    def wd_at(self, step: int) -> float:
        """Weight decay for the optimiser step ``step`` (0-based)."""
        t = min(max(step, 0), max(self.total_steps - 1, 1)) / max(self.total_steps - 1, 1)
        return self.wd_end + 0.5 * (self.wd_start - self.wd_end) * (1.0 + math.cos(math.pi * t))

    def apply(self, optimizer, step: int) -> tuple[float, float]:
        """Set ``lr`` on every param group and the weight decay on groups that decay; return both."""
        lr, wd = self.lr_at(step), self.wd_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            if group.get("apply_wd", True):
                group["weight_decay"] = wd
            else:
                group["weight_decay"] = 0.0
        return lr, wd

    def state_dict(self) -> dict:
        """JSON-serialisable parameters."""
        return asdict(self)
