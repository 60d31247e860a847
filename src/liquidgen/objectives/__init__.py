"""Objective registry. An objective turns a clean batch into a scalar loss (`loss(model, x0, y)`)
and names what the backbone predicts (`prediction`: "v", "x0" or "eps"; see `liquidgen.paths`),
which is all a sampler needs to use any objective's model. Adding one = one file + one line."""
from __future__ import annotations

import dataclasses
from typing import Protocol

from torch import Tensor, nn

from .flow import FlowMatching


class Objective(Protocol):
    prediction: str

    def loss(self, model: nn.Module, x0: Tensor, y: Tensor | None) -> Tensor: ...


OBJECTIVES: dict[str, type] = {
    "flow": FlowMatching,
}


def build_objective(name: str, **options) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)}")
    allowed = [f.name for f in dataclasses.fields(OBJECTIVES[name])]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for objective {name!r}; allowed: {', '.join(allowed)}")
    return OBJECTIVES[name](**options)


__all__ = ["OBJECTIVES", "Objective", "build_objective"]
