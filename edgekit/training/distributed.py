"""One process, one GPU or `torchrun --nproc_per_node N`: the process group, evaluation sharded across ranks, and
the checks that every rank holds the same weights.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from edgekit.data import ImageSet, Preprocess
from edgekit.evaluation import Evaluation, evaluate


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


def broadcast_from_main(tensors: list[torch.Tensor]) -> None:
    for tensor in tensors:
        dist.broadcast(tensor, src=0)


def rank_weight_hashes(model: nn.Module, ctx: Distributed) -> list[str]:
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
