"""Hold every model with published weights (edgekit/weights.py) to torchvision's own definition: the same state_dict
keys and shapes, and, with torchvision's module loaded with the same random weights (BatchNorm statistics
perturbed), the same outputs. So torchvision's files load strictly and compute what torchvision computes.

    python tools/check_torchvision_layout.py             # fetches torchvision's wheel (no install), prints a table

torchvision is not installed (its wheels pin another torch): its wheel is downloaded with `pip download`, unpacked
into a temporary folder, and only its pure-Python model definitions are imported (the compiled operators, which the
classification models do not use, are left out).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch

from edgekit.models import create
from edgekit.weights import REGISTRY


def unpacked_torchvision(version: str, into: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"torchvision=={version}", "-d",
                    str(into)], check=True)
    wheel = next(into.glob("torchvision-*.whl"))
    root = into / "site"
    zipfile.ZipFile(wheel).extractall(root)
    # registers fake kernels for the compiled operators, which this torch does not have; the models need none
    (root / "torchvision" / "_meta_registrations.py").write_text("")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torchvision", default="0.29.1", help="torchvision version whose definitions to compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tv-layout-") as tmp:
        sys.path.insert(0, str(unpacked_torchvision(args.torchvision, Path(tmp))))
        warnings.filterwarnings("ignore")
        import torchvision.models as tvm

        failed = 0
        print(f"{'model':<20} {'keys and shapes':<16} {'max |output diff|':>18}")
        for name in sorted({model for model, _ in REGISTRY}):
            torch.manual_seed(0)
            theirs = getattr(tvm, name)(weights=None).eval()
            for module in theirs.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.5, 0.5)
                    module.running_var.uniform_(0.5, 2.0)
            state = theirs.state_dict()
            ours = create(name).eval()
            mine = ours.state_dict()
            same = state.keys() == mine.keys() and all(state[k].shape == mine[k].shape for k in mine)
            diff = float("nan")
            if same:
                ours.load_state_dict(state, strict=True)
                x = torch.randn(2, 3, 224, 224)
                with torch.no_grad():
                    diff = float((theirs(x) - ours(x)).abs().max())
            failed += not same or not diff <= 1e-5
            print(f"{name:<20} {'same' if same else 'DIFFER':<16} {diff:>18.2e}")
        print(f"{len({m for m, _ in REGISTRY}) - failed} of {len({m for m, _ in REGISTRY})} models match "
              f"torchvision {args.torchvision}")
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
