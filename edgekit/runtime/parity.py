"""Numerical agreement between a reference's logits and a converted model's."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# FP32 conversions must agree to this: max |diff| relative to the reference's largest logit, and cosine.
FP32_MAX_REL_DIFF = 1e-3
FP32_MIN_COSINE = 0.9999


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    max_rel_diff: float
    min_cosine: float
    top1_agreement: float
    samples: int

    @property
    def fp32_ok(self) -> bool:
        return self.max_rel_diff <= FP32_MAX_REL_DIFF and self.min_cosine >= FP32_MIN_COSINE

    def to_dict(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "passed": self.fp32_ok}


def compare(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    """Compare two (N, classes) logit arrays."""
    if reference.shape != candidate.shape:
        raise ValueError(f"output shapes differ: {reference.shape} vs {candidate.shape}")
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    diff = np.abs(ref - cand)
    scale = max(float(np.abs(ref).max()), 1e-12)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = np.where(norms > 0, (ref * cand).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
    return Parity(
        max_abs_diff=float(diff.max()),
        max_rel_diff=float(diff.max() / scale),
        min_cosine=float(cosine.min()),
        top1_agreement=float((ref.argmax(1) == cand.argmax(1)).mean()),
        samples=int(ref.shape[0]),
    )
