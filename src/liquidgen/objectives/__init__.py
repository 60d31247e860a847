"""Objective registry. An objective turns a clean batch into a scalar loss (`loss(model, x0, y, **cond)`,
where `cond` holds the backbone's other conditioning inputs, `context` and `concat`, passed through as is)
and names what the backbone predicts (`prediction`: one of `liquidgen.paths.PREDICTIONS`), which
is all a sampler needs to use any objective's model. Objectives whose loss depends on the training
step (tangent warm-up) also have `set_step(step)`. Adding one = one file + one line."""
from __future__ import annotations

import dataclasses
from typing import Protocol

from torch import Tensor, nn

from ..config import ObjectiveConfig

from .consistency import Consistency
from .diffusion import Diffusion
from .flow import FlowMatching
from .tld import TLD
from .trigflow import TrigFlow


class Objective(Protocol):
    prediction: str

    def loss(self, model: nn.Module, x0: Tensor, y: Tensor | None = None, **cond: Tensor) -> Tensor: ...


OBJECTIVES: dict[str, type] = {
    "flow": FlowMatching,
    "tld": TLD,
    "diffusion": Diffusion,
    "trigflow": TrigFlow,
    "consistency": Consistency,
}


def build_objective(name: str, **options) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)}")
    allowed = [f.name for f in dataclasses.fields(OBJECTIVES[name])]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for objective {name!r}; allowed: {', '.join(allowed)}")
    return OBJECTIVES[name](**options)


def objective_from(config: ObjectiveConfig) -> Objective:
    """A run's objective, from its config section."""
    return build_objective(config.name, **config.options)


__all__ = ["OBJECTIVES", "Objective", "build_objective", "objective_from"]
