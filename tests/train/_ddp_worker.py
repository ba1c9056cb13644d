"""Run by the DDP test under ``torchrun`` (and as one plain process): train the toy model and save the weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from safetensors.torch import save_file
from toy import ToyModel, ToySpots

from stalign.train import TrainConfig
from stalign.train._distributed import cleanup, init_distributed
from stalign.train._engine import fit


def main(out: str, steps: int, augment: str) -> None:
    torch.set_num_threads(1)
    info, device = init_distributed(torch.device("cpu"))
    torch.manual_seed(0)
    model = ToyModel()
    ds = ToySpots(n=128, batch_size=32, seed=0, rank=info.rank, world_size=info.world_size)
    config = TrainConfig(
        epochs=2,
        batch_size=32,
        lr=5e-3,
        warmup_epochs=0.5,
        max_steps=steps,
        augment={"1": True, "0": False}[augment],
        show_progress_bar=False,
        checkpoint_every=None,
    )
    fit(model, ds, config, output_dir=Path(out), lr=config.peak_lr(), device=device, info=info)
    if info.is_main:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "final.safetensors"))
    cleanup(info)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
