"""The interface every model family offers to training, scoring and evaluation.

The train loop, the scorer and the evaluation never ask which model they run:
  create_state(rng, image_shape) -> train state (a pytree with a `step`);
  train_step(state, batch, stage=0) -> (state, dict of scalar metrics); pure
    and jittable, its randomness a function of the seed and `state.step`;
    `batch` is a dict: "image" (B, H, W, C) float32 and "brain_mask"
    (B, H, W, 1) bool, so a model can corrupt or score the brain only; a family
    that does not need the mask reads "image" alone;
    `stage` is static: families trained in stages (f-AnoGAN) name the stage of
    each step with `stage_of(step)`, and each stage compiles once;
  reconstruct(state, images) -> deterministic reconstruction; the anomaly map
    is the residual against it;
  trainable: False for baselines with nothing to train;
  slice_score(state, images) -> one anomaly score per slice, where the family
    defines one beyond the mean residual (f-AnoGAN's feature term).
"""

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Model:
  name: str
  create_state: Callable[..., Any]
  train_step: Callable[..., Any] | None
  reconstruct: Callable[..., Any]
  trainable: bool = True
  slice_score: Callable[..., Any] | None = None
  stage_of: Callable[[int], int] = lambda step: 0
