"""Pretrained weights by name: `--weights imagenet` (recipes: `model.weights: imagenet`; Python: `weights="imagenet"`).

The registry holds the ImageNet files torchvision publishes for the zoo models that share its module names (so they
load strictly, as they are), with the sha256 each is checked against, the top-1 its authors report and the
evaluation transform that top-1 was measured with. A file is downloaded once into the cache (`$EDGEKIT_HOME/weights`,
default `~/.local/share/edgekit/weights`), resumed where a download stopped, and checked before it is ever unpickled.

Offline: put the file in the cache under its published name (or give `--weights FILE`), or set `EDGEKIT_OFFLINE=1`
to refuse any download. `EDGEKIT_WEIGHTS_MIRROR=URL` fetches the same file names from a mirror of your own.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgekit.core.errors import EdgekitError, close_names
from edgekit.preprocess import SHORTER_SIDE, Preprocess

TORCHVISION = "https://download.pytorch.org/models/"
TAGS = {"imagenet": "IMAGENET1K_V1", "imagenet-v2": "IMAGENET1K_V2"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHUNK = 1 << 20  # bytes read per network call
TIMEOUT_S = 30  # per network operation: a stalled server ends the download instead of hanging


@dataclass(frozen=True)
class Published:
    """One published weights file and what its authors measured with it."""

    model: str  # the zoo name it loads into (at width 1.0)
    tag: str  # "imagenet" (torchvision's IMAGENET1K_V1) or "imagenet-v2"
    file: str
    top1: float  # ImageNet-1k validation top-1 (%), as torchvision reports it
    crop: int  # the evaluation transform: resize the short side to `resize` (interpolation), center-crop `crop`
    resize: int
    interpolation: str
    # The whole sha256 where known; by default the leading hex digits torchvision puts in the file name (what
    # torch.hub checks).
    sha256: str = ""
    url_base: str = TORCHVISION

    def __post_init__(self) -> None:
        if not self.sha256:
            object.__setattr__(self, "sha256", self.file.rsplit("-", 1)[1].removesuffix(".pth"))

    @property
    def url(self) -> str:
        mirror = os.environ.get("EDGEKIT_WEIGHTS_MIRROR")
        return f"{(mirror.rstrip('/') + '/') if mirror else self.url_base}{self.file}"

    def preprocess(self) -> Preprocess:
        """The evaluation preprocessing the top-1 was measured with: ImageNet statistics, the shorter side resized
        to `resize` and a `crop` px center crop (edgekit resizes bilinearly with antialiasing, as torchvision's
        default transform does; the bicubic files see slightly other pixels)."""
        return Preprocess(resolution=self.crop, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                          resize=SHORTER_SIDE, crop_ratio=self.crop / self.resize)

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "weights": self.tag, "file": self.file, "url": self.url, "sha256": self.sha256,
                "top1": self.top1, "crop": self.crop, "resize": self.resize, "interpolation": self.interpolation,
                "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def _entries() -> dict[tuple[str, str], Published]:
    # torchvision 0.29's Weights enums: model, tag, file, top-1, crop, resize, interpolation.
    rows = [
        ("mobilenet_v2", "imagenet", "mobilenet_v2-b0353104.pth", 71.878, 224, 256, "bilinear"),
        ("mobilenet_v2", "imagenet-v2", "mobilenet_v2-7ebf99e0.pth", 72.154, 224, 232, "bilinear"),
        ("mobilenet_v3_large", "imagenet", "mobilenet_v3_large-8738ca79.pth", 74.042, 224, 256, "bilinear"),
        ("mobilenet_v3_large", "imagenet-v2", "mobilenet_v3_large-5c1a4163.pth", 75.274, 224, 232, "bilinear"),
        ("mobilenet_v3_small", "imagenet", "mobilenet_v3_small-047dcff4.pth", 67.668, 224, 256, "bilinear"),
        ("shufflenet_v2_x0_5", "imagenet", "shufflenetv2_x0.5-f707e7126e.pth", 60.552, 224, 256, "bilinear"),
        ("shufflenet_v2_x1_0", "imagenet", "shufflenetv2_x1-5666bf0f80.pth", 69.362, 224, 256, "bilinear"),
        ("shufflenet_v2_x1_5", "imagenet", "shufflenetv2_x1_5-3c479a10.pth", 72.996, 224, 232, "bilinear"),
        ("shufflenet_v2_x2_0", "imagenet", "shufflenetv2_x2_0-8be3c8ee.pth", 76.230, 224, 232, "bilinear"),
        ("efficientnet_b0", "imagenet", "efficientnet_b0_rwightman-7f5810bc.pth", 77.692, 224, 256, "bicubic"),
        ("efficientnet_b1", "imagenet", "efficientnet_b1_rwightman-bac287d4.pth", 78.642, 240, 256, "bicubic"),
        ("efficientnet_b1", "imagenet-v2", "efficientnet_b1-c27df63c.pth", 79.838, 240, 255, "bilinear"),
        ("efficientnet_b2", "imagenet", "efficientnet_b2_rwightman-c35c1473.pth", 80.608, 288, 288, "bicubic"),
        ("efficientnet_b3", "imagenet", "efficientnet_b3_rwightman-b3899882.pth", 82.008, 300, 320, "bicubic"),
        ("efficientnet_b4", "imagenet", "efficientnet_b4_rwightman-23ab8bcd.pth", 83.384, 380, 384, "bicubic"),
        ("efficientnet_b5", "imagenet", "efficientnet_b5_lukemelas-1a07897c.pth", 83.444, 456, 456, "bicubic"),
        ("efficientnet_b6", "imagenet", "efficientnet_b6_lukemelas-24a108a5.pth", 84.008, 528, 528, "bicubic"),
        ("efficientnet_b7", "imagenet", "efficientnet_b7_lukemelas-c5b4e57e.pth", 84.122, 600, 600, "bicubic"),
    ]
    regnets = [("regnet_x_400mf", "adf1edd5", 72.834, "62229a5f", 74.864),
               ("regnet_y_400mf", "c65dace8", 74.046, "e6988f5f", 75.804),
               ("regnet_x_800mf", "ad17e45c", 75.212, "94a99ebd", 77.522),
               ("regnet_y_800mf", "1b27b58c", 76.420, "58fc7688", 78.828),
               ("regnet_x_1_6gf", "e3633e7f", 77.040, "a12f2b72", 79.668),
               ("regnet_y_1_6gf", "b11a554e", 77.950, "0d7bc02a", 80.876),
               ("regnet_x_3_2gf", "f342aeae", 78.364, "7071aa85", 81.196),
               ("regnet_y_3_2gf", "b5a9779c", 78.948, "9180c971", 81.982)]
    for name, v1, top1, v2, top1_v2 in regnets:
        rows.append((name, "imagenet", f"{name}-{v1}.pth", top1, 224, 256, "bilinear"))
        rows.append((name, "imagenet-v2", f"{name}-{v2}.pth", top1_v2, 224, 232, "bilinear"))
    entries = {(row[0], row[1]): Published(*row) for row in rows}
    # Whole digests where the file was checked here (MobileNetV2's, the tests' file) or several sources publish the
    # same one (MobileNetV3-Small's); the others are checked by the file name's digits, as torch.hub checks them.
    for key, digest in ((("mobilenet_v2", "imagenet"), WHOLE_MOBILENET_V2),
                        (("mobilenet_v3_small", "imagenet"), WHOLE_MOBILENET_V3_SMALL)):
        entries[key] = dataclasses.replace(entries[key], sha256=digest)
    return entries


WHOLE_MOBILENET_V2 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
WHOLE_MOBILENET_V3_SMALL = "047dcff4addef86ea5bc2eff13c9614dc11f47ab1160d0a71a25e7db994f4e1f"
REGISTRY = _entries()


def is_weights_name(value: str | Path | None) -> bool:
    """Whether `value` names published weights ("imagenet") rather than a file."""
    return value is not None and str(value) in TAGS and not Path(str(value)).exists()


def published(model: str, tag: str = "imagenet") -> Published:
    """The registry's entry, or one EdgekitError naming what exists."""
    if tag not in TAGS:
        raise EdgekitError(f"unknown weights name {tag!r}: use {' or '.join(TAGS)}, or give a weights file.")
    entry = REGISTRY.get((model, tag))
    if entry is None:
        from edgekit.models import get_entry

        get_entry(model)  # a name the zoo does not know is that error, with its suggestions
        have = sorted({m for m, t in REGISTRY if t == tag})
        close = close_names(model, have, n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise EdgekitError(f"{model} has no published {tag} weights: {hint}{len(have)} models have them "
                           "(`edgekit weights` lists them); or train from scratch, or give --weights FILE.")
    return entry


def cache_dir() -> Path:
    """Where downloaded weights are kept: the edgekit home's weights/ ($EDGEKIT_HOME, else ~/.local/share/edgekit)."""
    from edgekit.core.files import edgekit_home

    return edgekit_home() / "weights"


def _matches(path: Path, sha256: str) -> tuple[bool, str]:
    from edgekit.core.files import sha256_file

    actual = sha256_file(path)
    return actual.startswith(sha256), actual


Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


def _download(url: str, partial: Path, progress: Progress) -> None:
    """Into `partial`, resuming from its length where the server takes a Range request."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            resumed = have and response.status == 206
            size = response.headers.get("Content-Length")
            total = (int(size) + (have if resumed else 0)) if size else None
            done = have if resumed else 0
            with open(partial, "ab" if resumed else "wb") as out:
                while block := response.read(CHUNK):
                    out.write(block)
                    done += len(block)
                    progress(done, total)
            if total is not None and done < total:
                raise EdgekitError(f"the download of {url} ended at {done} of {total} bytes: run the command again "
                                   "to resume it.")
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already whole (or longer than the file)
            return
        raise EdgekitError(f"cannot download {url} (HTTP {exc.code} {exc.reason}): check the address "
                           "(EDGEKIT_WEIGHTS_MIRROR), or download the file yourself and give --weights FILE.") from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EdgekitError(f"the download of {url} failed ({reason}): run the command again to resume it, or "
                           "download the file yourself and give --weights FILE.") from None


def fetch(entry: Published, progress: Progress | None = None) -> Path:
    """The checked local file of `entry`: from the cache, else downloaded (resumably) and checked first. A file
    that does not match its sha256 is removed, never loaded."""
    from edgekit.core.files import waiting_lock

    folder = cache_dir()
    path = folder / entry.file
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = folder / f".{entry.file}.lock"
        with waiting_lock(lock):  # DDP ranks and parallel runs download once
            return _fetch_locked(entry, path, progress)
    except (PermissionError, FileExistsError, NotADirectoryError) as exc:
        raise EdgekitError(f"cannot write the weights cache {folder} ({exc.strerror}): set EDGEKIT_HOME to a "
                           "writable directory, or give --weights FILE.") from None


def _fetch_locked(entry: Published, path: Path, progress: Progress | None) -> Path:
    """fetch() under the cache's lock."""
    folder = path.parent
    if path.exists():
        ok, _ = _matches(path, entry.sha256)
        if ok:
            return path
        path.unlink()  # damaged or replaced since it was checked: fetched again
    if os.environ.get("EDGEKIT_OFFLINE", "") not in ("", "0"):
        raise EdgekitError(f"{entry.model} {entry.tag} weights are not in the cache and EDGEKIT_OFFLINE is "
                           f"set: put {entry.file} (from {entry.url}) in {folder}, or give --weights FILE.")
    partial = folder / f"{entry.file}.partial"
    if progress is not None:
        _download(entry.url, partial, progress)
    else:
        with _stderr_progress(entry.file) as bar:
            _download(entry.url, partial, bar)
    ok, actual = _matches(partial, entry.sha256)
    if not ok:
        partial.unlink()
        raise EdgekitError(f"the download of {entry.url} is not the published file (sha256 {actual[:16]}..., "
                           f"expected {entry.sha256[:16]}...): removed it; run the command again, or check "
                           "your mirror.")
    os.replace(partial, path)
    return path


@contextmanager
def _stderr_progress(name: str) -> Iterator[Progress]:
    """A download bar on stderr (plain lines when stderr is not a terminal), as torch.hub shows one; stopped
    however the download ends."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn

    from edgekit.core.ui import progress_bar

    with progress_bar(TextColumn(f"downloading {name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(name, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def weights_file(value: str | Path, model: str, width: float, progress: Progress | None = None) -> Path:
    """The file that `--weights VALUE` (or `model.weights`) names for `model`: published weights by name, checked
    and cached, or the user's own file."""
    if not is_weights_name(value):
        return Path(value).expanduser()
    return fetch(published_for(str(value), model, width), progress)


def published_for(tag: str, model: str, width: float) -> Published:
    """The entry `--weights TAG` names for this model and width (checked when a recipe is read, before any
    download or training)."""
    entry = published(model, tag)
    if abs(width - 1.0) > 1e-9:
        raise EdgekitError(f"{model} {entry.tag} weights are for width 1.0, not {width:g}: drop --width, or train "
                           "this width from scratch.")
    return entry


def listed(model: str | None = None, download: bool = False) -> list[dict[str, object]]:
    """The registry's entries (for `model` only, when given), each with whether its file is in the cache;
    `download` fetches the missing ones first."""
    entries = [e for e in REGISTRY.values() if model is None or e.model == model]
    if model is not None and not entries:
        published(model)  # the one message for a model without weights
    rows = []
    for entry in entries:
        if download:
            fetch(entry)
        rows.append({**entry.to_dict(), "cached": (cache_dir() / entry.file).is_file()})
    return rows
