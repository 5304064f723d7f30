"""Image-folder loading at 224 px: edgekit's streaming loader against torchvision's ImageFolder + DataLoader, and the
peak memory of training on a 20,000-image folder.

    python tools/bench_data.py                 # images/s, training and evaluation transforms, 2 workers
    python tools/bench_data.py --rss           # peak RSS of `edgekit train` on 20,000 PNGs at 224 px

torchvision cannot be installed here, so the reference is its pipeline written out with the same calls torchvision
makes on PIL images: `Image.open(f).convert("RGB")`, RandomResizedCrop (get_params, then a bilinear resize of the
crop) + RandomHorizontalFlip, or Resize(256) + CenterCrop(224), then ToTensor and Normalize, in a map-style Dataset
whose items the DataLoader's default collate stacks: what `ImageFolder(root, transform)` + `DataLoader` do.
edgekit's loader (edgekit.folder_images.FolderImages) yields uint8 batches; the time of normalising them in the
training process (Preprocess.tensor) is included in its figure.

The folders: Fashion-MNIST written as PNG files at 224 px (800 images), and the scikit-image / scikit-learn sample
photos with 40 random crops of each (25-100% of its area) as JPEG (492 images; tests/fixtures/image_folders.py).
The machine may be shared: each loader is measured `--repeats` times, alternating, and the best run is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the tests' fixtures (photo folders)

from fixtures.image_folders import fashion_mnist_folder, photo_folder  # noqa: E402

from edgekit.data import DataSource, preprocess_for  # noqa: E402
from edgekit.folder_images import FolderImages  # noqa: E402
from edgekit.imagefolder import Transform, list_split, random_resized_crop_box  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TorchvisionStyle(Dataset):
    """ImageFolder's loader and torchvision's transforms, as torchvision applies them to PIL images."""

    def __init__(self, files: list[Path], labels: list[int], size: int, train: bool) -> None:
        self.files, self.labels, self.size, self.train = files, labels, size, train
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with open(self.files[index], "rb") as f:  # torchvision.datasets.folder.pil_loader
            img = Image.open(f).convert("RGB")
        if self.train:  # RandomResizedCrop(size) + RandomHorizontalFlip()
            w, h = img.size
            left, top, cw, ch = random_resized_crop_box(w, h, np.random.default_rng())
            img = img.crop((left, top, left + cw, top + ch)).resize((self.size, self.size),
                                                                     Image.Resampling.BILINEAR)
            if torch.rand(1) < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:  # Resize(round(size / 0.875)) + CenterCrop(size)
            w, h = img.size
            short = round(self.size / 0.875)
            nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
            img = img.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = int(round((nw - self.size) / 2)), int(round((nh - self.size) / 2))
            img = img.crop((left, top, left + self.size, top + self.size))
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div(255)  # ToTensor
        return (x - self.mean) / self.std, self.labels[index]  # Normalize


def _rate(batches: object, normalise: object | None, limit: int) -> float:
    seen, start = 0, time.perf_counter()
    for batch in batches:  # type: ignore[attr-defined]
        images = batch[0]
        if normalise is not None:
            images = normalise(images)  # type: ignore[operator]
        seen += len(images)
        if seen >= limit:
            break
    return seen / (time.perf_counter() - start)


def throughput(folder: Path, size: int, workers: int, batch_size: int, repeats: int, limit: int) -> dict:
    files, labels, _ = list_split(folder, "train")
    pre = preprocess_for(DataSource("imagefolder", folder), size, 3)
    torch.set_num_threads(1)
    out: dict[str, dict[str, float]] = {}
    for mode in ("train", "eval"):
        ours = FolderImages(files, labels, Transform(size, train=mode == "train"), workers=workers)
        theirs = TorchvisionStyle(files, labels, size, train=mode == "train")
        best = {"edgekit": 0.0, "torchvision-style": 0.0}
        for _ in range(repeats):
            sampler = torch.randperm(len(files)).tolist()
            best["edgekit"] = max(best["edgekit"], _rate(ours.loader(batch_size, sampler), pre.tensor, limit))
            loader = DataLoader(theirs, batch_size=batch_size, sampler=sampler, num_workers=workers)
            best["torchvision-style"] = max(best["torchvision-style"], _rate(loader, None, limit))
        out[mode] = {k: round(v, 1) for k, v in best.items()}
    return out


def rss_child(folder: Path, steps: int, batch_size: int, width: float) -> None:
    """Train in this process and print its peak RSS and its decoding workers' (the largest one's)."""
    from edgekit.recipe import parse_recipe
    from edgekit.training.loop import train_recipe

    recipe = parse_recipe(
        f"name: rss\nmodel: {{name: mobilenet_v2, width: {width}, resolution: 224}}\n"
        f"data: {{source: 'imagefolder:{folder}', loader: auto}}\n"
        f"train: {{epochs: 1, batch_size: {batch_size}, limit_batches: {steps}, lr: 0.01}}\n")
    with tempfile.TemporaryDirectory() as out:
        result = train_recipe(recipe, Path(out) / "run")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"trainer_mib": round(own), "largest_worker_mib": round(workers),
                      "data_loader": result.data_loader, "images_per_second": round(result.images_per_second, 1),
                      "steps": steps, "batch_size": batch_size, "width": width}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rss", action="store_true", help="Peak RSS of training on a 20,000-image folder.")
    parser.add_argument("--images", type=int, default=20_000, help="--rss: images in the training folder.")
    parser.add_argument("--steps", type=int, default=200, help="--rss: training steps.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=float, default=1.0, help="--rss: MobileNetV2 width.")
    parser.add_argument("--workers", type=int, default=2, help="Decoding processes (both loaders).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=640, help="Images timed per run.")
    parser.add_argument("--folder", type=Path, help="Use this image folder (ROOT/train/CLASS/*) instead.")
    parser.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.steps, args.batch_size, args.width)
        return
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "python": platform.python_version(), "torch": torch.__version__,
               "pillow": Image.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        if args.rss:
            per_class = math.ceil(args.images / 10)
            folder = args.folder or fashion_mnist_folder(Path(tmp) / "fm", per_class, 50, size=224)
            child = subprocess.run([sys.executable, __file__, "--rss-child", str(folder), "--steps",
                                    str(args.steps), "--batch-size", str(args.batch_size), "--width",
                                    str(args.width)], capture_output=True, text=True, check=False)
            if child.returncode:
                sys.exit(child.stderr[-3000:])
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            print(json.dumps({"machine": machine, "train_images": len(list_split(folder, "train")[0]),
                              **figures}, indent=1))
            return
        folders = {"fashion-mnist-png-224": args.folder or fashion_mnist_folder(Path(tmp) / "fm", 80, 1, size=224)}
        if args.folder is None:
            photos = photo_folder(Path(tmp) / "photos-raw", crops_per_photo=40, crop_suffix=".jpg")
            train = Path(tmp) / "photos" / "train" / "photos"
            train.parent.mkdir(parents=True)
            photos.rename(train)
            folders = {**folders, "photos-jpeg": train.parents[1]}
        results = {name: throughput(folder, 224, args.workers, args.batch_size, args.repeats, args.limit)
                   for name, folder in folders.items()}
    print(json.dumps({"machine": machine, "workers": args.workers, "batch_size": args.batch_size,
                      "images_per_second": results}, indent=1))


if __name__ == "__main__":
    main()
