"""Training: a recipe in, the best checkpoint by validation accuracy out.

One loop serves one CPU, one GPU and `torchrun --nproc_per_node N` (DistributedDataParallel over gloo or
nccl). Every epoch ends with an atomic `last.pt`; `--resume` continues from it and, for a fixed seed,
reaches the same weights as an uninterrupted run because every source of randomness is seeded per epoch.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from edgekit.checkpoint import save_checkpoint
from edgekit.core.errors import EdgekitError
from edgekit.core.files import write_json_atomic
from edgekit.core.threads import ThreadGovernor, deterministic_threads
from edgekit.core.ui import Reporter
from edgekit.data import augment, default_hflip
from edgekit.evaluation import Evaluation
from edgekit.folder_images import FolderImages
from edgekit.models import build
from edgekit.models._registry import ModelSpec
from edgekit.models.training_kernels import use_fast_training_kernels
from edgekit.recipe import Recipe
from edgekit.training.distributed import (
    Distributed,
    broadcast_from_main,
    evaluate_sharded,
    init_distributed,
    rank_weight_hashes,
)
from edgekit.training.finetune import classifier_name, load_pretrained, set_frozen
from edgekit.training.optim import ModelEma, make_optimizer, optimizer_step, warmup_cosine
from edgekit.training.prepare import Batches, Prepared, loader_line, prepare_training
from edgekit.training.rundir import (
    BEST,
    LAST,
    METRICS,
    SUMMARY,
    append_metrics,
    open_run_dir,
    read_metrics,
    resume_point,
)
from edgekit.weights import weights_file


@contextlib.contextmanager
def _deterministic_kernels() -> Iterator[None]:
    """torch's deterministic algorithms for the run (warn-only: an op without one says so and runs anyway)."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_before)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63)


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


def train_recipe(recipe: Recipe, out: Path, *, resume: bool = False, data_override: str | None = None,
          reporter: Reporter | None = None, threads: int | None = None,
          deterministic: bool | None = None) -> TrainResult:
    """Train `recipe` into the run directory `out` (see `edgekit train --help`). `threads` fixes torch's thread
    count; by default it follows the cores other processes leave free (edgekit.core.threads). `deterministic`
    (default: the recipe's train.deterministic) fixes the thread count and asks torch for deterministic kernels,
    so that two runs give the same weights whatever else the machine runs."""
    if threads is not None and threads < 1:
        raise EdgekitError(f"--threads {threads}: give at least 1.")
    deterministic = recipe.train.deterministic if deterministic is None else deterministic
    if deterministic:
        threads = deterministic_threads(threads, int(os.environ.get("WORLD_SIZE", "1")))
    ctx = init_distributed()
    try:
        with contextlib.ExitStack() as held:
            if deterministic:
                held.enter_context(_deterministic_kernels())
            return _train(ctx, recipe, out, resume, data_override, reporter, held,
                          ThreadGovernor(threads, deterministic=deterministic))
    finally:
        # Left to interpreter exit, gloo's worker threads can be torn down while joinable and abort the process
        # ("terminate called without an active exception") after a successful run.
        if ctx.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(ctx: Distributed, recipe: Recipe, out: Path, resume: bool, data_override: str | None,
           reporter: Reporter | None, held: contextlib.ExitStack, governor: ThreadGovernor) -> TrainResult:
    reporter = reporter if reporter is not None and ctx.main else Reporter(enabled=False)
    out = out.resolve()
    start_epoch, saved = resume_point(out, recipe, resume, reporter)
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
        open_run_dir(out, held, saved, start_epoch)
    reporter.header(prep.spec, params, prep, ctx.world, start_epoch, cfg.epochs)

    history = read_metrics(out / METRICS) if ctx.main else []
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
        weights = weights_file(recipe.model.weights, spec.name, spec.width)
        pretrained = load_pretrained(model, weights, spec.num_classes)
    model = model.to(ctx.device, memory_format=torch.channels_last)
    if ctx.device.type == "cpu":  # oneDNN is slow on small maps: depthwise weight gradients, 1x1 convolutions
        use_fast_training_kernels(model)
    optimizer = make_optimizer(model, cfg)
    sampler = DistributedSampler(Batches(prep.train), num_replicas=ctx.world, rank=ctx.rank, shuffle=True,
                                 seed=cfg.seed)
    hflip = default_hflip(prep.source)
    streamed = None
    if isinstance(prep.train.images, FolderImages):  # RandomResizedCrop + flip in the decoding workers
        streamed = prep.train.images.with_(train=True, hflip=hflip)
        streamed.workers = prep.train.images.workers
        loader = streamed.loader(cfg.batch_size, sampler)
    else:
        loader = DataLoader(Batches(prep.train), batch_size=cfg.batch_size, sampler=sampler,
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
        broadcast_from_main(list(run.model.buffers()) + (list(run.ema.state.values()) if run.ema else []))
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
    append_metrics(out / METRICS, row)


def _finish(out: Path, run: _Run, ctx: Distributed, epochs: int, best: dict[str, Any],
            history: list[dict[str, Any]], start_epoch: int, params: int, started: float, *,
            images_per_second: float, data_loader: dict[str, str] | None = None) -> TrainResult:
    """The run's result, with every rank's weight hash; rank 0 writes it to summary.json."""
    rank_hashes = rank_weight_hashes(run.model, ctx)
    elapsed = time.perf_counter() - started
    final = history[-1]["val_top1"] if history else best["top1"]
    result = TrainResult(out, out / BEST, best["epoch"], best["top1"], final, epochs, elapsed, images_per_second,
                         params, run.spec, start_epoch, history, rank_hashes,
                         run.governor.record() if run.governor else {}, data_loader or {},
                         {k: v for k, v in run.pretrained.items() if k != "note"} if run.pretrained else None)
    if ctx.main:
        write_json_atomic(out / SUMMARY, result.to_dict())
    return result
