"""How far a quantized tensor is from its float reference, accumulated over images without keeping them.

SQNR is reported two ways. Over the whole tensor (as ONNX Runtime's qdq_loss_debug and AI Edge Quantizer report
it) it is dominated by the widest channels; the median over channels shows what a per-tensor activation scale does
to the narrow ones, which is where an outlier channel hurts. Clipped: the share of float values outside the range
the quantized tensor can represent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FLOOR = 1e-30  # keeps a perfect match finite: SQNR then reads as a large number, not inf
CAP_DB = 120.0


def db(signal: float, noise: float) -> float:
    return min(CAP_DB, 10 * math.log10(max(signal, FLOOR) / max(noise, FLOOR)))


@dataclass
class TensorError:
    """Running sums of reference and quantized values of one tensor (channel axis 1, as NCHW and (N, C) are)."""

    signal: float = 0.0
    noise: float = 0.0
    dot: float = 0.0
    quantized_energy: float = 0.0
    clipped: int = 0
    values: int = 0
    low: float = math.inf
    high: float = -math.inf
    channel_signal: np.ndarray | None = None
    channel_noise: np.ndarray | None = None
    images: int = 0

    def add(self, reference: np.ndarray, quantized: np.ndarray, representable: tuple[float, float] | None,
            channels_last: bool = False) -> None:
        ref = np.asarray(reference, dtype=np.float64)
        q = np.asarray(quantized, dtype=np.float64)
        if channels_last and ref.ndim == 4:  # TFLite's NHWC: channels on the last axis
            ref, q = np.moveaxis(ref, -1, 1), np.moveaxis(q, -1, 1)
        finite = np.isfinite(ref) & np.isfinite(q)
        if not finite.all():  # an FP32 value that overflowed float32 compares with nothing
            ref, q = np.where(finite, ref, 0.0), np.where(finite, q, 0.0)
        err = ref - q
        self.signal += float((ref * ref).sum())
        self.noise += float((err * err).sum())
        self.dot += float((ref * q).sum())
        self.quantized_energy += float((q * q).sum())
        self.values += ref.size
        self.low, self.high = min(self.low, float(ref.min())), max(self.high, float(ref.max()))
        if representable is not None:
            low, high = representable
            self.clipped += int(((ref < low) | (ref > high)).sum())
        if ref.ndim >= 2:
            axes = tuple(i for i in range(ref.ndim) if i != 1)
            signal, noise = (ref * ref).sum(axis=axes), (err * err).sum(axis=axes)
            if self.channel_signal is None or self.channel_noise is None:
                self.channel_signal, self.channel_noise = signal, noise
            else:
                self.channel_signal, self.channel_noise = self.channel_signal + signal, self.channel_noise + noise
        self.images += len(ref)

    @property
    def sqnr_db(self) -> float | None:
        """None for a tensor that is zero on every image (nothing to compare)."""
        return db(self.signal, self.noise) if self.signal > FLOOR else None

    @property
    def channel_sqnr_db(self) -> float | None:
        """The median over channels of each channel's SQNR (channels that are zero on every image left out)."""
        if self.channel_signal is None or self.channel_noise is None:
            return self.sqnr_db
        live = self.channel_signal > FLOOR
        if not live.any():
            return None
        ratios = [db(s, n) for s, n in zip(self.channel_signal[live], self.channel_noise[live], strict=True)]
        return float(np.median(ratios))

    @property
    def cosine(self) -> float:
        return self.dot / max(math.sqrt(self.signal * self.quantized_energy), FLOOR)

    @property
    def clipped_share(self) -> float:
        return self.clipped / max(self.values, 1)

    def to_dict(self) -> dict[str, Any]:
        tensor, channel = self.sqnr_db, self.channel_sqnr_db
        return {"sqnr_db": None if tensor is None else round(tensor, 2),
                "channel_sqnr_db": None if channel is None else round(channel, 2),
                "cosine": round(self.cosine, 6), "clipped": round(self.clipped_share, 6)}


@dataclass
class LayerErrors:
    """One quantized layer's figures in one file: its own error (inputs from the float model) and the error
    accumulated up to it (the quantized model end to end), against the float file's same tensor."""

    name: str  # the PyTorch module path where the file records it, else the file's node name
    op: str
    node: str  # the node (ONNX) or op (TFLite) in the file
    index: int  # its position in the file's execution order
    accumulated: TensorError = field(default_factory=TensorError)
    alone: TensorError | None = None
    activation_range: tuple[float, float] | None = None  # what the output's scale and zero point represent
    weight_spread: float | None = None  # largest / smallest per-output-channel weight range

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.name, "op": self.op, "node": self.node, "index": self.index,
                "alone": self.alone.to_dict() if self.alone is not None else None,
                "accumulated": self.accumulated.to_dict(),
                "float_range": [round(self.accumulated.low, 6), round(self.accumulated.high, 6)],
                "activation_range": [round(v, 6) for v in self.activation_range] if self.activation_range else None,
                "weight_spread": round(self.weight_spread, 2) if self.weight_spread is not None else None}


def weight_spread(weights: np.ndarray) -> float | None:
    """Largest over smallest per-output-channel absolute maximum (axis 0): how unequal the channels are, which
    per-tensor weight scales pay for. None for a tensor with one channel or an all-zero channel."""
    w = np.abs(np.asarray(weights, dtype=np.float64)).reshape(len(weights), -1).max(axis=1)
    if w.size < 2 or w.min() <= 0:
        return None
    return float(w.max() / w.min())


def representable(scale: float, zero_point: int, dtype: np.dtype) -> tuple[float, float]:
    """The values a quantized tensor rounds to rather than clips: its range, widened by half a step (a sigmoid's
    0.999 in a [0, 255/256] tensor is rounded, not clipped)."""
    info = np.iinfo(dtype)
    return (info.min - zero_point - 0.5) * scale, (info.max - zero_point + 0.5) * scale


# The ops both files share under different names, for layers named by kind (no module path recorded).
KINDS = {"ReduceMean": "mean", "MEAN": "mean", "GlobalAveragePool": "mean", "AveragePool": "avgpool",
         "AVERAGE_POOL_2D": "avgpool", "MaxPool": "maxpool", "MAX_POOL_2D": "maxpool", "Add": "add", "ADD": "add",
         "Mul": "mul", "MUL": "mul", "Concat": "cat", "CONCATENATION": "cat", "HardSwish": "hardswish",
         "HARD_SWISH": "hardswish", "Sigmoid": "sigmoid", "LOGISTIC": "sigmoid", "HardSigmoid": "hardsigmoid"}


def kind(op: str) -> str:
    return KINDS.get(op, op.lower())


def name_unnamed(layers: list[LayerErrors], unnamed: set[int]) -> None:
    """Layers without a module path (`unnamed`: their indices) are named by kind and count, `mean 1`, the same
    in every format's file."""
    counts: dict[str, int] = {}
    for layer in layers:
        if layer.index in unnamed:
            k = kind(layer.op)
            counts[k] = counts.get(k, 0) + 1
            layer.name = f"{k} {counts[k]}"


RESCALED = 0.02  # a channel's weights this far (in scale) from the FP32 file's: the export rescaled the layer


def channel_gain(ours: np.ndarray, theirs: np.ndarray, input_gain: np.ndarray | None) -> np.ndarray | None:
    """Per output channel, how much larger a layer of the INT8 file computes than its FP32 twin, from their
    weights (`ours` dequantized, both [out, in, ...]; a depthwise kernel [out, 1, ...]) and the gain its input
    already carries. Cross-layer equalization rescales a pair of layers joined by a ReLU (exact in float): the
    first layer's output channels by s, the second's input channels by 1/s, so the tensor between them differs
    from the FP32 file's by s. None where every channel is within rounding of 1 (nothing was rescaled)."""
    if ours.shape != theirs.shape or ours.ndim < 2:
        return None
    theirs = theirs.astype(np.float64)
    if input_gain is not None:
        tail = (1,) * (theirs.ndim - 2)
        if theirs.shape[1] == len(input_gain):
            theirs = theirs / input_gain.reshape((1, -1, *tail))
        elif theirs.shape[1] == 1 and len(theirs) == len(input_gain):
            theirs = theirs / input_gain.reshape((-1, 1, *tail))
    a, b = ours.reshape(len(ours), -1).astype(np.float64), theirs.reshape(len(theirs), -1)
    ratio = (a * b).sum(axis=1) / np.maximum((b * b).sum(axis=1), FLOOR)
    return ratio if np.abs(ratio - 1).max() > RESCALED else None
