"""GPU-memory estimate of one training step from a model's config: `estimate` (meta-device counts and a
fake-tensor replay), `measure_peak` (its CPU validation), the `memory` command and its report data."""

from __future__ import annotations

from .configs import is_causal, load_config, shipped_models
from .estimate import GIB, Breakdown, accelerate_estimate, estimate
from .measure import PeakTracker, measure_peak
from .setup import ATTENTIONS, MIXED_PRECISIONS, OPTIMIZERS, TORCH_DTYPES, Setup, build, make_batch

__all__ = ["ATTENTIONS", "Breakdown", "GIB", "MIXED_PRECISIONS", "OPTIMIZERS", "PeakTracker", "Setup",
           "TORCH_DTYPES", "accelerate_estimate", "build", "estimate", "is_causal", "load_config",
           "make_batch", "measure_peak", "shipped_models"]
