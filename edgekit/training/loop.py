"""Training: a recipe in, the best checkpoint by validation accuracy out.

One loop serves one CPU, one GPU and `torchrun --nproc_per_node N` (DistributedDataParallel over gloo or
nccl). Every epoch ends with an atomic `last.pt`; `--resume` continues from it and, for a fixed seed,
reaches the same weights as an uninterrupted run because every source of randomness is seeded per epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from edgekit.checkpoint import KeyFit, load_checkpoint, load_state_dict, non_finite_keys, save_checkpoint
from edgekit.core.errors import EdgekitError
from edgekit.core.files import clean_stale, output_lock, write_json_atomic, write_text_atomic
from edgekit.core.threads import ThreadGovernor
from edgekit.core.ui import Reporter
from edgekit.data import DataSource, ImageSet, Preprocess, augment, default_hflip, load_split, preprocess_for
from edgekit.evaluation import Evaluation, evaluate
from edgekit.imagefolder import FolderImages
from edgekit.models import build, resolve_spec
from edgekit.models._registry import ModelSpec
from edgekit.models.depthwise_grad import use_fast_depthwise_backward
from edgekit.recipe import Recipe

LAST, BEST, METRICS, SUMMARY = "last.pt", "best.pt", "metrics.jsonl", "summary.json"


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the torchrun process group when launched by torchrun, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return Distributed(rank, world, torch.device("cuda", local))
    return Distributed(rank, world, torch.device("cpu"))


class _Batches(Dataset):
    """An ImageSet as a map-style dataset that DataLoader fetches a whole batch at a time."""

    def __init__(self, data: ImageSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.images[i], self.data.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.data.images[idx], self.data.labels[idx]


class ModelEma:
    """Exponential moving average of weights and buffers, with TF's warm-up of the decay."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.state[key].lerp_(value.detach(), 1 - decay)
            else:
                self.state[key].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "state": self.state}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.updates = int(saved["updates"])
        for key, value in saved["state"].items():
            self.state[key].copy_(value)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only; BatchNorm parameters and biases are not decayed."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def warmup_cosine(warmup_steps: int, total_steps: int):  # noqa: ANN201 (a LambdaLR factor)
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, what: str, where: str, fix: str) -> None:
    """Backpropagate `loss` and step; a non-finite loss stops training with where it happened and what to change."""
    if not torch.isfinite(loss):
        raise EdgekitError(f"the {what} became {loss.item()} at {where}: {fix}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63)


class _DeviceRunner:
    """A Runner over a live module on the training device (numpy in, numpy out)."""

    name = "torch"

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(batch).to(self.device, memory_format=torch.channels_last)
            return self.model(x).float().cpu().numpy()


def evaluate_sharded(model: nn.Module, data: ImageSet, preprocess: Preprocess, ctx: Distributed,
                     batch_size: int = 256) -> Evaluation:
    """Each rank evaluates its share of the validation set; the counts are summed across ranks. Training passes
    its own batch size: a batch of 256 at 224 px needs gigabytes of activations even without gradients."""
    model.eval()
    shard = data.subset(torch.arange(ctx.rank, len(data), ctx.world)) if ctx.world > 1 else data
    result = evaluate(_DeviceRunner(model, ctx.device), shard, preprocess, batch_size)
    if ctx.world > 1:
        counts = torch.tensor(np.append(result.confusion.ravel(), result.top5_correct))
        dist.all_reduce(counts)
        n = len(data.classes)
        result = Evaluation(counts[:-1].view(n, n).numpy(), int(counts[-1]), result.classes)
    return result


@dataclass
class TrainResult:
    out: Path
    best_checkpoint: Path
    best_epoch: int
    best_top1: float
    final_top1: float
    epochs: int
    seconds: float
    images_per_second: float
    params: int
    spec: ModelSpec
    resumed_from: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    rank_weight_sha256: list[str] = field(default_factory=list)
    threads: dict[str, Any] = field(default_factory=dict)
    data_loader: dict[str, str] = field(default_factory=dict)  # per split: memory or stream
    weights: dict[str, Any] | None = None  # the pretrained start (pretrained_record), when there was one

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out), "best_checkpoint": str(self.best_checkpoint), "best_epoch": self.best_epoch,
            "best_top1": self.best_top1, "final_top1": self.final_top1, "epochs": self.epochs,
            "seconds": round(self.seconds, 2), "images_per_second": round(self.images_per_second, 1),
            "params": self.params, "model": self.spec.to_dict(), "resumed_from": self.resumed_from,
            "world_size": len(self.rank_weight_sha256), "rank_weight_sha256": self.rank_weight_sha256,
            "threads": self.threads, "data_loader": self.data_loader, "weights": self.weights,
        }


@dataclass
class Prepared:
    """What a recipe resolves to before any training: the spec, data and preprocessing."""

    spec: ModelSpec
    source: DataSource
    preprocess: Preprocess
    train: ImageSet
    val: ImageSet


def prepare_training(recipe: Recipe, data_override: str | None = None) -> Prepared:
    """Resolve a recipe's data and model: load both splits and fix the spec's class count to the data's.

    An image folder's splits are decoded into memory when they fit, else streamed (`ImageSet.streamed`)."""
    source = DataSource.parse(data_override or recipe.data.source)
    source = DataSource(source.kind, source.path,
                        tuple(recipe.data.mean) if recipe.data.mean else None,
                        tuple(recipe.data.std) if recipe.data.std else None, recipe.data.hflip,
                        {"crop_ratio": recipe.data.crop_ratio, "loader": recipe.data.loader})
    m = recipe.model
    probe = resolve_spec(m.name, width=m.width, resolution=m.resolution, num_classes=m.num_classes or 10,
                         in_channels=m.in_channels, **m.options)
    train_set = load_split(source, "train", probe.resolution, probe.in_channels)
    val_set = load_split(source, "val", probe.resolution, probe.in_channels)
    for split in (train_set, val_set):
        if isinstance(split.images, FolderImages) and recipe.data.workers is not None:
            split.images.workers = recipe.data.workers
    classes = len(train_set.classes)
    if m.num_classes is not None and m.num_classes != classes:
        raise EdgekitError(
            f"{recipe.source}: model.num_classes is {m.num_classes} but {source.label} has {classes} classes: "
            "set num_classes to match the data (or leave it out)."
        )
    spec = resolve_spec(m.name, width=m.width, resolution=probe.resolution, num_classes=classes,
                        in_channels=m.in_channels, **m.options)
    return Prepared(spec, source, preprocess_for(source, spec.resolution, spec.in_channels), train_set, val_set)


def train_recipe(recipe: Recipe, out: Path, *, resume: bool = False, data_override: str | None = None,
          reporter: Reporter | None = None, threads: int | None = None) -> TrainResult:
    """Train `recipe` into the run directory `out` (see `edgekit train --help`). `threads` fixes torch's thread
    count; by default it follows the cores other processes leave free (edgekit.core.threads)."""
    if threads is not None and threads < 1:
        raise EdgekitError(f"--threads {threads}: give at least 1.")
    ctx = init_distributed()
    try:
        with contextlib.ExitStack() as held:
            return _train(ctx, recipe, out, resume, data_override, reporter, held, ThreadGovernor(threads))
    finally:
        # Left to interpreter exit, gloo's worker threads can be torn down while joinable and abort the process
        # ("terminate called without an active exception") after a successful run.
        if ctx.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(ctx: Distributed, recipe: Recipe, out: Path, resume: bool, data_override: str | None,
           reporter: Reporter | None, held: contextlib.ExitStack, governor: ThreadGovernor) -> TrainResult:
    reporter = reporter if reporter is not None and ctx.main else Reporter(enabled=False)
    out = out.resolve()
    start_epoch, saved = _resume_point(out, recipe, resume, reporter)
    cfg = recipe.train
    with reporter.status("loading data"):
        prep = prepare_training(recipe, data_override)
    if prep.train.skipped or prep.val.skipped:
        reporter.warn(f"skipped {prep.train.skipped + prep.val.skipped} unreadable image(s) in {prep.source.label}")
    if prep.source.kind == "imagefolder":
        reporter.note(loader_line(prep))
    run = _build_run(ctx, recipe, prep)
    if run.pretrained is not None:
        reporter.note(run.pretrained["note"])
    run.governor = governor
    best = _restore_state(run, saved)
    run.ddp = (nn.parallel.DistributedDataParallel(run.model, find_unused_parameters=run.freeze_epochs > 0)
               if ctx.world > 1 else run.model)
    record = _checkpoint_record(recipe, prep, run)
    params = sum(p.numel() for p in run.model.parameters())
    if ctx.main:
        _open_run_dir(out, held, saved, start_epoch)
    reporter.header(prep.spec, params, prep, ctx.world, start_epoch, cfg.epochs)

    history = _read_metrics(out / METRICS) if ctx.main else []
    started = time.perf_counter()
    images_seen, train_seconds = 0, 0.0
    with reporter.progress(cfg.epochs, run.steps) as bar:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            stats = _train_epoch(run, prep, ctx, cfg.seed, epoch, bar)
            train_seconds += stats.seconds
            images_seen += stats.seen * ctx.world
            validation = _validate(run, prep, ctx)
            row = _metrics_row(epoch, stats, validation, run, ctx)
            improved = validation.chosen.top1 > best["top1"]
            if improved:
                best = {"top1": validation.chosen.top1, "epoch": epoch}
            if ctx.main:
                _save_epoch(out, record, run, epoch, row, validation, best, improved)
                history.append(row)
            bar.end_epoch(row, validation.chosen.top1, validation.weights, improved)
    return _finish(out, run, ctx, cfg.epochs, best, history, start_epoch, params, started,
                   images_per_second=images_seen / train_seconds if train_seconds else 0.0,
                   data_loader={"train": "stream" if prep.train.streamed else "memory",
                                "val": "stream" if prep.val.streamed else "memory"})


def loader_line(prep: Prepared) -> str:
    """How an image folder's splits are read, as the run says it: in memory, or streamed by how many workers."""
    parts = []
    for name, split in (("train", prep.train), ("val", prep.val)):
        if isinstance(split.images, FolderImages):
            how = "random-resized-crop + flip" if name == "train" else "resize + center crop"
            parts.append(f"{name} streamed from disk by {split.images.workers} worker(s) ({how})")
        else:
            parts.append(f"{name} decoded into memory")
    pre = prep.preprocess
    return (f"{prep.source.label}: {'; '.join(parts)}; evaluation resizes the shorter side to "
            f"{round(pre.resolution / pre.crop_ratio)} px and center-crops {pre.resolution} px "
            f"(crop ratio {pre.crop_ratio:g})")


def classifier_name(model: nn.Module, num_classes: int) -> str:
    """The module name of the model's output layer: its last Linear with `num_classes` outputs."""
    found = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and module.out_features == num_classes]
    if not found:
        raise EdgekitError(f"{type(model).__name__} has no Linear layer with {num_classes} outputs to train.")
    return found[-1]


def load_pretrained(model: nn.Module, path: Path, num_classes: int) -> dict[str, Any]:
    """Start `model` from the weights at `path` (a torchvision-style state_dict or an edgekit checkpoint).

    Every key must fit except the classifier's: a classifier for another class count is left freshly initialised.
    Returns the record the checkpoint and summary keep ({path, classifier: loaded | re-initialised, note})."""
    state = load_state_dict(path)
    ours = model.state_dict()
    head = classifier_name(model, num_classes)
    head_keys = {f"{head}.weight", f"{head}.bias"}
    fit = KeyFit.of(state, ours)
    reinit = bool(fit.wrong_shape) and set(fit.wrong_shape) <= head_keys and not fit.missing and not fit.unexpected
    if not fit.fits and not reinit:
        name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
        raise EdgekitError(f"model.weights {path} does not fit {name} ({fit.describe()}): give weights of the "
                           "same model and width (model.weights in the recipe, or --weights).")
    broken = non_finite_keys(state)
    if broken:
        raise EdgekitError(f"model.weights {path} holds NaN or infinite values in {', '.join(broken[:3])}: "
                           "give weights from a run that did not diverge.")
    if reinit:
        theirs = int(state[f"{head}.weight"].shape[0])
        state = {**state, **{k: ours[k] for k in head_keys if k in ours}}
        note = (f"fine-tuning from {path}: its classifier predicts {theirs} classes, the data has {num_classes}: "
                f"classifier ({head}) re-initialised")
    else:
        note = f"fine-tuning from {path}: every layer loaded, the classifier included"
    model.load_state_dict(state, strict=True)
    return {"path": str(path), "classifier": "re-initialised" if reinit else "loaded", "note": note}


def set_frozen(model: nn.Module, head: str, frozen: bool) -> None:
    """Freeze (or thaw) everything but the classifier `head`; a frozen backbone's BatchNorms keep their
    statistics (evaluation mode), as Keras' and timm's fine-tuning recipes do."""
    for name, param in model.named_parameters():
        param.requires_grad_(not frozen or name.startswith(head + "."))
    if frozen:
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not name.startswith(head + "."):
                module.eval()


def _resume_point(out: Path, recipe: Recipe, resume: bool, reporter: Reporter) -> tuple[int, dict[str, Any] | None]:
    """The epoch to continue after and the `last.pt` to continue from (0 and None for a new run).

    A run directory that already holds a run needs --resume, and then the same recipe."""
    last_path = out / LAST
    if not last_path.exists():
        if resume:
            reporter.note(f"nothing to resume in {out}: starting a new run")
        return 0, None
    saved = load_checkpoint(last_path)
    if not resume:
        raise EdgekitError(
            f"{out} already holds a training run (epoch {saved['epoch']}/{saved['epochs']}): "
            "pass --resume to continue it, or --out DIR to train elsewhere."
        )
    if saved.get("recipe_hash") != recipe.training_hash():
        raise EdgekitError(
            f"{out} was trained from a different recipe (model, data or train settings changed): "
            "use --out DIR for the new recipe, or restore the old one to resume."
        )
    start_epoch = int(saved["epoch"])
    if start_epoch >= recipe.train.epochs:
        reporter.note(f"{out} is already trained for all {recipe.train.epochs} epochs: nothing to resume")
    return start_epoch, saved


@dataclass
class _Run:
    """The live objects the epoch loop works with, built once from the recipe."""

    spec: ModelSpec
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: ModelEma | None
    sampler: DistributedSampler
    loader: DataLoader
    steps: int  # batches per epoch (train.limit_batches caps it)
    criterion: nn.Module
    padding: int  # random-crop padding
    hflip: bool
    ddp: nn.Module | None = None  # the model wrapped for DistributedDataParallel (the model itself on one process)
    governor: ThreadGovernor | None = None  # torch's thread count, kept to the cores other processes leave free
    streamed: FolderImages | None = None  # training images decoded (and augmented) by DataLoader workers
    pretrained: dict[str, Any] | None = None  # load_pretrained's record
    head: str = ""  # the classifier's module name (train.freeze_epochs)
    freeze_epochs: int = 0


def _build_run(ctx: Distributed, recipe: Recipe, prep: Prepared) -> _Run:
    """Model, optimizer, warm-up + cosine schedule, EMA and the sharded loader. A smoke run (train.limit_batches)
    also trims prep.val to as many images as it trains on."""
    cfg, spec = recipe.train, prep.spec
    torch.manual_seed(cfg.seed)
    # channels-last doubles CPU training throughput for these depthwise-heavy nets (tools/bench_train.py)
    model = build(spec)
    pretrained = None
    if recipe.model.weights:
        pretrained = load_pretrained(model, Path(recipe.model.weights).expanduser(), spec.num_classes)
    model = model.to(ctx.device, memory_format=torch.channels_last)
    if ctx.device.type == "cpu":  # oneDNN's depthwise weight gradient on 2x2 maps and smaller is 20-40x slow
        use_fast_depthwise_backward(model)
    optimizer = make_optimizer(model, cfg)
    sampler = DistributedSampler(_Batches(prep.train), num_replicas=ctx.world, rank=ctx.rank, shuffle=True,
                                 seed=cfg.seed)
    hflip = default_hflip(prep.source)
    streamed = None
    if isinstance(prep.train.images, FolderImages):  # RandomResizedCrop + flip in the decoding workers
        streamed = prep.train.images.with_(train=True, hflip=hflip)
        streamed.workers = prep.train.images.workers
        loader = streamed.loader(cfg.batch_size, sampler)
    else:
        loader = DataLoader(_Batches(prep.train), batch_size=cfg.batch_size, sampler=sampler,
                            collate_fn=lambda batch: batch)
    steps = len(loader) if cfg.limit_batches is None else min(len(loader), cfg.limit_batches)
    if cfg.limit_batches is not None:  # a smoke run: validate on as many images as it trains on
        prep.val = prep.val.subset(torch.arange(min(len(prep.val), cfg.limit_batches * cfg.batch_size)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(round(cfg.warmup_epochs * steps), steps * cfg.epochs))
    return _Run(
        spec=spec, model=model, optimizer=optimizer, scheduler=scheduler,
        ema=ModelEma(model, cfg.ema_decay) if cfg.ema_decay else None, sampler=sampler, loader=loader, steps=steps,
        criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        padding=recipe.data.crop_padding if recipe.data.crop_padding is not None else spec.resolution // 8,
        hflip=hflip, streamed=streamed, pretrained=pretrained,
        head=classifier_name(model, spec.num_classes) if cfg.freeze_epochs else "", freeze_epochs=cfg.freeze_epochs,
    )


def _restore_state(run: _Run, saved: dict[str, Any] | None) -> dict[str, Any]:
    """Load a resumed run's weights, optimizer, schedule and EMA; returns the best epoch so far."""
    if saved is None:
        return {"top1": -1.0, "epoch": 0}
    state = saved["state"]
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.ema is not None and state.get("ema") is not None:
        run.ema.load_state_dict(state["ema"])
    return dict(state["best"])


def _checkpoint_record(recipe: Recipe, prep: Prepared, run: _Run) -> dict[str, Any]:
    """What every checkpoint of this run carries besides its weights."""
    return {"spec": run.spec.to_dict(), "preprocess": prep.preprocess.to_dict(), "classes": prep.train.classes,
            "data": prep.source.label, "recipe": recipe.to_dict(), "recipe_hash": recipe.training_hash(),
            "epochs": recipe.train.epochs,
            "augment": {"random_resized_crop": True, "hflip": run.hflip} if run.streamed is not None
            else {"crop_padding": run.padding, "hflip": run.hflip},
            "pretrained": {k: v for k, v in run.pretrained.items() if k != "note"} if run.pretrained else None}


def _open_run_dir(out: Path, held: contextlib.ExitStack, saved: dict[str, Any] | None, start_epoch: int) -> None:
    """Lock the run directory (one trainer per directory), clear a killed run's temporaries and cut the metrics
    back to the epoch resumed from. Rank 0 only."""
    held.enter_context(output_lock(out))  # a second trainer fails at once
    if saved is None and (out / LAST).exists():
        raise EdgekitError(f"{out} got a training run while this one loaded its data: pass --resume to "
                           "continue it, or --out DIR to train elsewhere.")
    out.mkdir(parents=True, exist_ok=True)
    clean_stale(out)  # temporary files a killed run left
    _trim_metrics(out / METRICS, start_epoch, (saved or {}).get("state", {}).get("metrics"))


@dataclass
class _EpochStats:
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0  # images this rank trained on
    seconds: float = 0.0


def _train_epoch(run: _Run, prep: Prepared, ctx: Distributed, seed: int, epoch: int, bar: Any) -> _EpochStats:
    """One pass over the (sharded) training set. Every source of randomness is seeded from (seed, epoch, rank),
    which is what makes a resumed run reach the same weights as an uninterrupted one."""
    torch.manual_seed(_epoch_seed(seed, epoch, ctx.rank))
    generator = torch.Generator().manual_seed(_epoch_seed(seed + 1, epoch, ctx.rank))
    run.sampler.set_epoch(epoch)
    if run.streamed is not None:
        run.streamed.seed = _epoch_seed(seed + 2, epoch, ctx.rank)
    run.ddp.train()
    if run.freeze_epochs:
        set_frozen(run.model, run.head, epoch <= run.freeze_epochs)
    bar.start_epoch(epoch)
    stats = _EpochStats()
    epoch_start = time.perf_counter()
    for step, batch in enumerate(run.loader):
        if step >= run.steps:
            break
        images, labels = batch[0], batch[1]
        if not len(labels):  # a streamed batch whose every image failed to decode
            continue
        if run.streamed is None:
            images = augment(images, generator, run.padding, run.hflip)
        x = prep.preprocess.tensor(images).to(ctx.device, memory_format=torch.channels_last)
        y = labels.to(ctx.device)
        if run.governor is not None:
            run.governor.poll()
        logits = run.ddp(x)
        loss = run.criterion(logits, y)
        optimizer_step(run.optimizer, loss, "loss", f"epoch {epoch}, step {step + 1}",
                       "lower train.lr or raise train.warmup_epochs in the recipe.")
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update(run.model)
        stats.loss_sum += loss.item() * len(y)
        stats.correct += int((logits.argmax(1) == y).sum())
        stats.seen += len(y)
        bar.step(stats.loss_sum / stats.seen, stats.correct / stats.seen,
                 stats.seen * ctx.world / (time.perf_counter() - epoch_start))
    stats.seconds = time.perf_counter() - epoch_start
    if ctx.world > 1:  # BN statistics drift per rank after the last forward: adopt rank 0's
        _broadcast_from_main(list(run.model.buffers()) + (list(run.ema.state.values()) if run.ema else []))
    return stats


@dataclass
class _Validation:
    val: Evaluation  # the trained weights
    ema_val: Evaluation | None  # the EMA weights, when the recipe keeps an EMA
    weights: str  # "raw" or "ema": the better of the two, which the checkpoint keeps
    chosen: Evaluation


def _validate(run: _Run, prep: Prepared, ctx: Distributed) -> _Validation:
    """Validation top-1 of the weights and of their EMA; the EMA is chosen when it is at least as good."""
    batch = max(run.loader.batch_size or 1, 1)
    val = evaluate_sharded(run.model, prep.val, prep.preprocess, ctx, batch)
    if run.ema is None:
        return _Validation(val, None, "raw", val)
    ema_model = build(run.spec).to(ctx.device, memory_format=torch.channels_last)
    ema_model.load_state_dict(run.ema.state)
    ema_val = evaluate_sharded(ema_model, prep.val, prep.preprocess, ctx, batch)
    if ema_val.top1 >= val.top1:
        return _Validation(val, ema_val, "ema", ema_val)
    return _Validation(val, ema_val, "raw", val)


def _metrics_row(epoch: int, stats: _EpochStats, validation: _Validation, run: _Run,
                 ctx: Distributed) -> dict[str, Any]:
    """The epoch's line in metrics.jsonl."""
    seen = max(stats.seen, 1)
    return {"epoch": epoch, "loss": stats.loss_sum / seen, "train_top1": stats.correct / seen,
            "val_top1": validation.val.top1, "val_top5": validation.val.top5,
            "ema_top1": validation.ema_val.top1 if validation.ema_val else None,
            "lr": run.optimizer.param_groups[0]["lr"], "images_per_second": stats.seen * ctx.world / stats.seconds,
            "seconds": stats.seconds}


def _save_epoch(out: Path, record: dict[str, Any], run: _Run, epoch: int, row: dict[str, Any],
                validation: _Validation, best: dict[str, Any], improved: bool) -> None:
    """best.pt when the epoch improved, then last.pt (everything --resume needs), then the metrics line.
    Rank 0 only; the order keeps a kill between any two of them resumable."""
    weights = run.ema.state if validation.weights == "ema" and run.ema else run.model.state_dict()
    checkpoint = {**record, "epoch": epoch, "model": weights, "weights": validation.weights,
                  "val": validation.chosen.to_dict(confusion=False)}
    if improved:
        save_checkpoint(checkpoint, out / BEST)
    save_checkpoint({**checkpoint, "state": {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "ema": run.ema.state_dict() if run.ema else None,
        "best": best, "metrics": row}}, out / LAST)
    _append_metrics(out / METRICS, row)


def _finish(out: Path, run: _Run, ctx: Distributed, epochs: int, best: dict[str, Any],
            history: list[dict[str, Any]], start_epoch: int, params: int, started: float, *,
            images_per_second: float, data_loader: dict[str, str] | None = None) -> TrainResult:
    """The run's result, with every rank's weight hash; rank 0 writes it to summary.json."""
    rank_hashes = _rank_weight_hashes(run.model, ctx)
    elapsed = time.perf_counter() - started
    final = history[-1]["val_top1"] if history else best["top1"]
    result = TrainResult(out, out / BEST, best["epoch"], best["top1"], final, epochs, elapsed, images_per_second,
                         params, run.spec, start_epoch, history, rank_hashes,
                         run.governor.record() if run.governor else {}, data_loader or {},
                         {k: v for k, v in run.pretrained.items() if k != "note"} if run.pretrained else None)
    if ctx.main:
        write_json_atomic(out / SUMMARY, result.to_dict())
    return result


def _broadcast_from_main(tensors: list[torch.Tensor]) -> None:
    for tensor in tensors:
        dist.broadcast(tensor, src=0)


def _rank_weight_hashes(model: nn.Module, ctx: Distributed) -> list[str]:
    """sha256 of every rank's final weights: DDP keeps replicas identical, and this records that it did."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    mine = digest.hexdigest()
    if ctx.world == 1:
        return [mine]
    gathered: list[Any] = [None] * ctx.world
    dist.all_gather_object(gathered, mine)
    return [str(h) for h in gathered]


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def _trim_metrics(path: Path, last_epoch: int, last_row: dict[str, Any] | None = None) -> None:
    """Make the metrics end at the checkpoint we resume from: a kill can land between the checkpoint and the
    metrics line, so drop lines past it and restore its own line (kept in the checkpoint) when it is missing."""
    rows = [r for r in _read_metrics(path) if r.get("epoch", 0) <= last_epoch]
    if last_row is not None and not any(r.get("epoch") == last_epoch for r in rows):
        rows.append(last_row)
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))

