"""Optimizers and learning-rate schedules.

`optim.name: adamw` (default): AdamW, decay on weight matrices and kernels only.
`optim.name: muon`: Muon (Keller Jordan, 2024) for the weights of linear layers - momentum orthogonalised
by a Newton-Schulz iteration, so every direction of a weight matrix moves at the same rate - beside AdamW
for everything else: embedding tables, norms, biases, 1-D parameters such as liquid retentions, and
convolution kernels. torch.optim.Muon is used where PyTorch has it (2.9+), a small Muon of our own
otherwise; both scale the update to AdamW's RMS (Liu et al. 2025, "Muon is scalable for LLM training"),
so optim.lr and optim.weight_decay mean the same for both parts.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

# Keller Jordan's quintic Newton-Schulz coefficients: they push singular values into roughly [0.7, 1.2]
# in 5 steps, faster than the cubic iteration that converges exactly to 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """An approximately orthogonal matrix with g's singular vectors: U V^T of g = U S V^T, by iterating
    X <- a X + b (X X^T) X + c (X X^T)^2 X from X = g / ||g||_F (its singular values are then <= 1)."""
    a, b, c = NS_COEFFICIENTS
    x = g.float() / (g.norm() + eps)
    wide = x.shape[0] <= x.shape[1]
    x = x if wide else x.t()  # X X^T on the smaller side
    for _ in range(steps):
        gram = x @ x.t()
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.t()).to(g.dtype)


class OwnMuon(torch.optim.Optimizer):
    """Muon for 2-D parameters where torch.optim.Muon is missing: Nesterov momentum, Newton-Schulz
    orthogonalisation, decoupled weight decay, and the update scaled by 0.2 sqrt(max(m, n)) to AdamW's RMS."""

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                update = newton_schulz(p.grad + group["momentum"] * buf)  # Nesterov
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * 0.2 * math.sqrt(max(p.shape)))


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer for the training loop (zero_grad, step, state_dict, an LR scheduler) over two: Muon
    for `matrices`, AdamW for `rest` (a list of param groups). Their param groups are shared, so a
    scheduler's lr changes reach both; the state dict numbers Muon's parameters first."""

    def __init__(self, matrices: list[nn.Parameter], rest: list[dict], lr: float, weight_decay: float,
                 betas: tuple[float, float], momentum: float):
        muon_cls = getattr(torch.optim, "Muon", None)
        if muon_cls is not None:
            self.muon = muon_cls(matrices, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                 adjust_lr_fn="match_rms_adamw")
        else:
            self.muon = OwnMuon(matrices, lr=lr, weight_decay=weight_decay, momentum=momentum)
        self.adamw = torch.optim.AdamW(rest, lr=lr, betas=betas)
        super().__init__([*matrices, *(p for g in rest for p in g["params"])], {"lr": lr})
        self.param_groups = self.muon.param_groups + self.adamw.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        self.muon.step()
        self.adamw.step()

    def state_dict(self) -> dict:
        muon, adamw = self.muon.state_dict(), self.adamw.state_dict()
        offset = sum(len(g["params"]) for g in muon["param_groups"])
        state = {**muon["state"], **{i + offset: s for i, s in adamw["state"].items()}}
        groups = muon["param_groups"] + [{**g, "params": [i + offset for i in g["params"]]}
                                         for g in adamw["param_groups"]]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        n = len(self.muon.param_groups)
        groups = state_dict["param_groups"]
        offset = sum(len(g["params"]) for g in groups[:n])
        self.muon.load_state_dict({"state": {i: s for i, s in state_dict["state"].items() if i < offset},
                                   "param_groups": groups[:n]})
        self.adamw.load_state_dict({"state": {i - offset: s for i, s in state_dict["state"].items() if i >= offset},
                                    "param_groups": [{**g, "params": [i - offset for i in g["params"]]}
                                                     for g in groups[n:]]})
        self.param_groups = self.muon.param_groups + self.adamw.param_groups


def split_for_muon(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights of linear layers, everything else)."""
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) in linear], [p for p in params if id(p) not in linear]


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    # No decay on biases, norm scales, liquid retentions (rho) and other 1-D parameters: decaying
    # rho would pull every channel's retention towards exp(-log 2) = 0.5.
    matrices, others = split_for_muon(model) if cfg.name == "muon" else ([], list(model.parameters()))
    groups = [{"params": [p for p in others if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in others if p.ndim < 2], "weight_decay": 0.0}]
    if cfg.name == "muon":
        return MuonWithAdamW(matrices, groups, cfg.lr, cfg.weight_decay, cfg.betas, cfg.muon_momentum)
    # Fused: one kernel for the whole update, and it can skip a step on the device (`skip_on_device`).
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fusable(model))


def fusable(model: nn.Module) -> bool:
    """Whether PyTorch's fused AdamW takes these parameters (floating point, on the CPU or CUDA)."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters())


def skip_on_device(optimizer: torch.optim.Optimizer, skip: Tensor) -> bool:
    """Arrange for the next step of `optimizer` to leave weights and moments untouched where `skip` (a bool
    tensor on the device) is set, without reading it on the host; False when the optimizer cannot (then
    the caller decides on the host). Fused Adam(W) reads `found_inf`, the flag AMP's GradScaler sets."""
    if not (isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and optimizer.defaults.get("fused")):
        return False
    optimizer.found_inf = skip.float()
    return True


def make_scheduler(optimizer, cfg, total_steps: int, budget_s: float = 0.0,
                   elapsed: Callable[[], float] | None = None):
    """Linear warm-up, then a constant rate or a cosine to 0 at the run's end: `total_steps`, or a run with a
    time budget (`budget_s` seconds of training, 0: none) at that budget if `elapsed()` (the training
    seconds so far, kept by the caller) reaches it first. So a run stopped by `train.minutes` decays
    fully even though its step count is never reached."""
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
        if cfg.schedule == "cosine":
            progress = min(step, total_steps) / total_steps
            if budget_s > 0 and elapsed is not None:
                progress = max(progress, min(elapsed() / budget_s, 1.0))
            return warm * 0.5 * (1 + math.cos(math.pi * progress))
        return warm

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
