"""Continuous-time consistency training (sCT) and distillation (sCD): sCM (Lu & Song, "Simplifying,
Stabilizing and Scaling Continuous-Time Consistency Models", ICLR 2025), as sCM-mnist runs it on MNIST.

The consistency function of a TrigFlow model F is f(x, th) = cos(th) x - sin(th) sigma_d F(x, th)
(paths: the x0 of a "trigflow" prediction). sCM trains F so that f is constant along the
probability-flow ODE, using the tangent of the continuous-time limit (sCM eq. 8 and Alg. 1):

    g = -cos^2(th) (sigma_d F- - dx/dth) - r cos(th) sin(th) (x + sigma_d dF-/dth)
    loss = exp(-u) || F - F- - g / (||g|| + c) ||^2 / D + u           (F- = stop-gradient of F)

- dx/dth: sCT uses the path's own derivative cos(th) z - sin(th) x0; sCD a teacher's,
  sigma_d F_teacher(x, th). The teacher is any liquidgen checkpoint of any objective, converted
  to the TrigFlow velocity exactly (`paths.convert`), with optional guidance. The training loop loads
  it (`objective.teacher` names it) and hands it over with `bind_teacher`.
- dF-/dth is the total derivative along the trajectory: one `torch.func.jvp` of F with tangents
  (dx/dth, 1) - every liquidgen backbone supports it (attention falls back to its math path).
- r ramps from 0 to 1 over `tangent_warmup` steps (tangent warm-up); g is normalised per sample
  (`tangent_norm: normalize`, c = 0.1) or clamped to [-1, 1] (`clamp`).
- u is the student's learned log-variance (adaptive weighting; the backbone needs `logvar`).
- Everything runs in fp32 (the JVP is sensitive): autocast is switched off inside the loss. `tf32: true` lets
  fp32 matmuls use TF32 tensor cores (10-bit mantissa, fp32 range) inside the loss, as cuDNN's convolutions
  already do by default: several times the matmul throughput, for a precision to be checked per recipe.
  `fp32_tangent_only: true` keeps fp32 for the JVP alone (F-, dF-/dth and g, where differences of nearby
  values are taken) and runs the teacher's velocity and the student's gradient pass in the training's autocast
  (bf16): half of a step's model passes at bf16 speed. The bf16 rounding of F (about 0.4%) then enters the
  residual F - F- beside the normalised tangent; whether the recipe tolerates it is measured, not assumed.
Start a student from a pre-trained model with `train.init_from`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import jvp

from .. import paths
from ..kernels import compiled_jvp
from ..samplers import denoiser
from .trigflow import adaptive_loss, lognormal_times

MODES = ("ct", "cd")
TANGENT_NORMS = ("normalize", "clamp", "none")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


def consistency_tangent(student, x: Tensor, theta: Tensor, dx: Tensor, r: float | Tensor = 1.0
                        ) -> tuple[Tensor, Tensor]:
    """(F-, g) at TrigFlow point (x, th) moving with dx/dth = dx: sCM's g, which at r = 1 equals
    cos(th) df/dth, the change of the consistency function along the trajectory."""
    sd = paths.SIGMA_D
    c, s = paths.expand(torch.cos(theta), x), paths.expand(torch.sin(theta), x)
    f_minus, df = jvp(student, (x, theta), (dx, torch.ones_like(theta)))
    return f_minus, -c**2 * (sd * f_minus - dx) - r * c * s * (x + sd * df)


def trig_student(model: nn.Module, y: Tensor | None, cond: dict[str, Tensor]):
    """The backbone as a TrigFlow F(x, th): liquidgen's time t = theta_to_t(th) and its x_t, which is TrigFlow's
    x divided by (cos + sigma_d sin)."""
    def student(x_trig: Tensor, th: Tensor) -> Tensor:
        scale = paths.expand(torch.cos(th) + paths.SIGMA_D * torch.sin(th), x_trig)
        return model(x_trig / scale, paths.theta_to_t(th), y, **cond)
    return student


def student_tangent(model: nn.Module, x: Tensor, theta: Tensor, dx: Tensor, r: Tensor, y: Tensor | None,
                    cond: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """`consistency_tangent` of the backbone itself: one function of tensors, which torch.compile takes whole
    (`Consistency.compile_tangent`); r is a tensor so that its warm-up ramp does not recompile."""
    return consistency_tangent(trig_student(model, y, cond), x, theta, dx, r)


def guided_trigflow(teacher: nn.Module, kind: str, cfg: float, x_t: Tensor, t: Tensor, y: Tensor | None,
                    cond: dict[str, Tensor]) -> Tensor:
    """A teacher's TrigFlow F at liquidgen's (x_t, t), whatever it predicts (`kind`), guided at scale `cfg`: one
    function of tensors, which torch.compile takes whole (`Consistency.compile_tangent`)."""
    v = denoiser(teacher, kind, y, cfg, **cond)(x_t, t)
    return paths.convert(v, "v", "trigflow", x_t, t)


@contextlib.contextmanager
def matmul_precision(level: str):
    """fp32 matmuls at `level` ("highest": fp32; "high": TF32 where the GPU has it) inside the block only, so the
    rest of the step keeps the process's setting. torch.compile reads it when it compiles, inside the block."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(level)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@dataclass
class Consistency:
    mode: str = "ct"
    teacher: str = ""  # checkpoint (folder) of the teacher, for mode: cd
    teacher_cfg: float = 1.0
    teacher_ema: bool = True
    p_mean: float = -2.0  # sCM's values for sCT / sCD
    p_std: float = 1.6
    tangent_warmup: int = 1000
    tangent_norm: str = "normalize"
    tangent_norm_c: float = 0.1
    adaptive_weighting: bool = True
    tf32: bool = False
    fp32_tangent_only: bool = False
    # torch.compile's mode for the tangent and the teacher (train.compile): "reduce-overhead" replays them as CUDA
    # graphs, for small models whose step is launch-bound. With fp32_tangent_only, sCT on UNet-28 then trains at
    # 0.63 of flow matching's speed (benchmarks/results/2026-12-05-consistency-speed). configs/mnist-unet-scm.yaml
    # sets both (fp32_tangent_only's quality: a CPU screen, results/2026-12-05-consistency-screen-bf16); the
    # dataclass keeps the conservative defaults, since "default" mode is not timed beside them
    compile_mode: str = "default"

    prediction = "trigflow"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"objective.mode must be one of {MODES}, got {self.mode!r}")
        if self.tangent_norm not in TANGENT_NORMS:
            raise ValueError(f"objective.tangent_norm must be one of {TANGENT_NORMS}, got {self.tangent_norm!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"objective.compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        if self.mode == "cd" and not self.teacher:
            raise ValueError("objective.mode: cd needs objective.teacher, a checkpoint folder of a trained model")
        self.step = 0
        self._teacher: tuple[nn.Module, str] | None = None
        self._tangent = student_tangent
        self._velocity = guided_trigflow

    def compile_tangent(self, backend: str = "inductor") -> None:
        """Run the tangent - the JVP, sCM's cost - and the teacher's guided velocity (sCD: two more forwards per
        step, CFG's pair) through torch.compile (train.compile). `kernels.compiled_jvp` steers the models onto the
        primitive paths that compile under forward-mode AD."""
        mode = None if self.compile_mode == "default" or backend != "inductor" else self.compile_mode
        compiled = torch.compile(student_tangent, backend=backend, dynamic=False, mode=mode)
        self._velocity = torch.compile(guided_trigflow, backend=backend, dynamic=False, mode=mode)

        def run(*args) -> tuple[Tensor, Tensor]:
            with compiled_jvp():
                return compiled(*args)
        self._tangent = run

    def set_step(self, step: int) -> None:
        self.step = step

    def bind_teacher(self, model: nn.Module, prediction: str) -> None:
        """The teacher of distillation: a frozen model and what it predicts."""
        self._teacher = model.requires_grad_(False), prediction

    def teacher_velocity(self, x_t: Tensor, t: Tensor, y: Tensor | None, **cond: Tensor) -> Tensor:
        """The teacher's TrigFlow F at (x_t, t), whatever it predicts, guided if teacher_cfg != 1."""
        if self._teacher is None:
            raise ValueError("distillation needs its teacher: bind_teacher(model, prediction) first")
        teacher, kind = self._teacher
        if y is not None and getattr(teacher, "num_classes", 0) == 0:
            y = None
        return self._velocity(teacher, kind, self.teacher_cfg, x_t, t, y, cond)

    def loss(self, model: nn.Module, x0: Tensor, y: Tensor | None = None, **cond: Tensor) -> Tensor:
        with self._fp32(x0.device.type, not self.fp32_tangent_only), \
                matmul_precision("high" if self.tf32 else "highest"):
            cond = {k: v.float() if v.is_floating_point() else v for k, v in cond.items()}  # masks stay bool
            return self._loss(model, x0.float(), y, cond)

    @staticmethod
    def _fp32(device_type: str, enabled: bool = True):
        """The training's autocast switched off inside the block (a no-op when not `enabled`)."""
        return torch.autocast(device_type, enabled=False) if enabled else contextlib.nullcontext()

    def _loss(self, model: nn.Module, x0: Tensor, y: Tensor | None, cond: dict[str, Tensor]) -> Tensor:
        sd = paths.SIGMA_D
        t = lognormal_times(x0.shape[0], self.p_mean, self.p_std, x0.device)
        theta = paths.t_to_theta(t)
        c, s = paths.expand(torch.cos(theta), x0), paths.expand(torch.sin(theta), x0)
        z = sd * torch.randn_like(x0)
        x = c * x0 + s * z  # TrigFlow's x: liquidgen's x_t times (cos + sigma_d sin)

        with torch.no_grad():
            if self.mode == "ct":
                dx = c * z - s * x0
            else:
                dx = sd * self.teacher_velocity(x / (c + sd * s), t, y, **cond)
            r = min(1.0, self.step / self.tangent_warmup) if self.tangent_warmup > 0 else 1.0
            with self._fp32(x.device.type):
                f_minus, g = self._tangent(model, x, theta, dx.float(), torch.full((), r, device=x.device), y, cond)
            if self.tangent_norm == "normalize":
                g = g / (g.flatten(1).norm(dim=1).reshape(-1, *[1] * (g.ndim - 1)) + self.tangent_norm_c)
            elif self.tangent_norm == "clamp":
                g = g.clamp(-1, 1)
            target = f_minus + g
        per_sample = (trig_student(model, y, cond)(x, theta).float() - target).square().flatten(1).mean(1)
        return adaptive_loss(model, per_sample, t) if self.adaptive_weighting else per_sample.mean()
