"""Bundle a trained run as the package's `stalign-base` weights.

    .venv/bin/python recipes/bundle.py runs/stalign-base/model

Saves safetensors + config.json under src/stalign/models/weights/stalign-base/ and writes the sha256 and the
package version into src/stalign/models/_registry.py, then checks that `stalign.models.load("stalign-base")`
loads it offline and verifies the hash.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "src" / "stalign" / "models" / "weights" / "stalign-base"
REGISTRY = ROOT / "src" / "stalign" / "models" / "_registry.py"
MAX_BYTES = 30 * 1024 * 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_model", help="folder written by stalign.train.pretrain (…/model)")
    args = p.parse_args()

    import json

    import stalign
    from stalign.models import load, save

    model = load(args.run_model)
    DEST.mkdir(parents=True, exist_ok=True)
    save(model, DEST)
    cfg = json.loads((DEST / "config.json").read_text())
    sha = cfg.get("weights_sha256") or cfg.get("sha256")
    size = (DEST / "model.safetensors").stat().st_size
    if size > MAX_BYTES:
        msg = f"weights are {size / 2**20:.1f} MiB, over the 30 MiB package budget"
        raise SystemExit(msg)
    text = REGISTRY.read_text()
    block = re.search(r'"stalign-base": \{.*?\n    \}', text, flags=re.S).group(0)
    new = re.sub(r'"sha256": [^,]+,', f'"sha256": "{sha}",', block)
    new = re.sub(r'"version": [^,]+,', f'"version": "{stalign.__version__}",', new)
    REGISTRY.write_text(text.replace(block, new))
    (DEST / "model.safetensors").chmod(0o644)
    # check in a fresh interpreter: the registry is read at import time
    import subprocess
    import sys

    code = "from stalign.models import load; print(load('stalign-base').weights_sha256)"
    got = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    if got != sha:
        msg = f"load('stalign-base') verified sha256 {got!r}, expected {sha!r}"
        raise SystemExit(msg)
    print(f"bundled stalign-base: {size / 2**20:.1f} MiB, sha256 {sha}")


if __name__ == "__main__":
    main()
