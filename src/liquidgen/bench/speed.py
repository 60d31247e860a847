"""`liquidgen bench speed`: training and sampling throughput, peak memory and MFU per backbone preset.

Each case builds a preset at its native input size (`liquidgen models`) and times the real training
step (`train.train_step`: flow-matching loss, per-sample label dropout, bf16 autocast on CUDA, gradient
clipping, AdamW, EMA) on a fixed synthetic batch, so data loading is not measured. `--objective` times other
losses in the same step: e.g. `consistency:mode=ct` (sCT's JVP) against `flow` is the price of consistency
training; `consistency:mode=cd` distils from a frozen copy of the model (a teacher of the same cost). Then it
times the EMA model's sampling calls (Euler, no guidance: one network call per step), for the first objective of a
preset and mode only: sampling runs the same network whatever trained it.

MFU = counted FLOPs of a training step per image (forward + backward, `flops.count_flops`) x images/s
/ the GPU's dense bf16 peak. Counting runs the eager model at batch 2, averaged over a few steps (a
fixed-point model's training depth is random). On CUDA a profiled step splits the time into matrix
multiplies, attention, other kernels and GPU idle time: the reasons behind a low MFU.
"""
from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import Config, SampleConfig, parse_options
from ..ema import EMA
from ..flops import count_flops, forward_flops
from ..models import BACKBONES, BlockStack, build_model
from ..models.base import model_flops_mode
from ..objectives import build_objective
from ..optim import make_optimizer, make_scheduler
from ..generate import Pipeline
from ..runtime import autocast, compile_options
from ..spec import ModelSpec
from ..train import accumulate_gradients, train_step
from .records import append_record, environment, read_records

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, in TFLOP/s; the first name
# found in torch.cuda.get_device_name() wins, so the specific variants come before the families.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
                    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
                    ("A10", 125.0), ("RTX 4090", 165.2), ("RTX 3090", 71.0))
CONTEXT_TOKENS = 77  # synthetic text context for text-conditioned presets (CLIP's length)


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


@dataclass(frozen=True)
class Case:
    backbone: str
    preset: str
    compile: str  # eager, or a torch.compile mode (config.COMPILE_MODES)
    batch: int
    # "key=value,...": architecture options over the preset (e.g. kernels=torch), and `checkpointing=N`
    # (model.checkpointing: recomputed blocks)
    options: str = ""
    objective: str = "flow"  # "name[:key=value,...]": the loss of the timed step (`speed_objective`)

    @property
    def name(self) -> str:
        return f"{self.backbone}:{self.preset}" + (f":{self.options}" if self.options else "")

    @property
    def key(self) -> str:
        return f"{self.name}:{mode_label(self.compile)}:b{self.batch}" + (
            f":{self.objective}" if self.objective != "flow" else "")

    def build(self, channels: int, size: int, classes: int) -> torch.nn.Module:
        options = parse_options(filter(None, self.options.split(",")), f"preset {self.name!r}:")
        recompute = options.pop("checkpointing", 0)
        model = build_model(self.backbone, self.preset, channels, size, classes, **options)
        if recompute:
            if not isinstance(model, BlockStack):
                raise ValueError(f"preset {self.name!r}: checkpointing needs a block stack (liquid, dit)")
            model.set_checkpointing(recompute)
        return model


def speed_objective(spec: str, model: torch.nn.Module):
    """The objective of `spec` ("name[:key=value,...]"), ready for `model`'s training step: distillation
    (consistency's mode=cd) gets a frozen copy of the model as its teacher, whose cost is what is timed."""
    name, _, text = spec.partition(":")
    options = parse_options(filter(None, text.split(",")), f"objective {spec!r}:")
    distils = name == "consistency" and options.get("mode") == "cd"
    if distils:
        options.setdefault("teacher", "a frozen copy of the model")  # a name only: bound below, not loaded
    objective = build_objective(name, **options)
    if distils:
        objective.bind_teacher(copy.deepcopy(model).eval(), "v")
    return objective


def mode_label(mode: str | bool) -> str:
    if isinstance(mode, bool):  # records written before compile modes existed
        return "compiled" if mode else "eager"
    return "compiled" if mode == "default" else mode


def parse_presets(names: list[str]) -> list[tuple[str, str, str]]:
    """(backbone, preset, options) of each name: `liquid:S` -> one preset; `liquid:S:kernels=torch,checkpointing=-1`
    -> one preset with options (see `Case.options`); `liquid` -> its presets except tiny ones; `all` -> every
    such preset."""
    out = []
    for name in names:
        backbone, _, rest = name.partition(":")
        preset, _, options = rest.partition(":")
        for backbone in list(BACKBONES) if backbone == "all" else [backbone]:
            if backbone not in BACKBONES:
                raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
            presets = BACKBONES[backbone].presets
            if preset:
                if preset not in presets:
                    raise ValueError(f"unknown preset {preset!r} for {backbone}; choose from {list(presets)}")
                out.append((backbone, preset, options))
            elif options:
                raise ValueError(f"{name!r}: options need a preset (backbone:preset:key=value,...)")
            else:
                out += [(backbone, p, "") for p in presets if "tiny" not in p and p != "XS"]
    return list(dict.fromkeys(out))


def synthetic_batches(model, batch: int, device: torch.device):
    """A `BatchSampler`-like source: the same random batch at the model's native shape for every step."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, model.in_channels, model.input_size, model.input_size, generator=g).to(device)
    y = torch.randint(0, max(model.num_classes, 1), (batch,), generator=g).to(device)
    cond = {}
    if model.context_dim:
        cond["context"] = torch.randn(batch, CONTEXT_TOKENS, model.context_dim, generator=g).to(device)
    def batches(step: int, part: int = 0, parts: int = 1):
        rows = slice(part * batch // parts, (part + 1) * batch // parts)
        return x[rows], y[rows], {k: v[rows] for k, v in cond.items()}

    return batches


def cuda_median_ms(fn, repeats: int = 20, warmup: int = 0) -> float:
    """Median milliseconds of `fn()` on the current CUDA stream (CUDA events), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return time.perf_counter() - t0


# Kernel-name fragments of the tensor-core matrix multiplies (cuBLAS / CUTLASS / Triton mm templates).
MATMUL_KERNELS = ("gemm", "cutlass", "nvjet", "sm90_xmma", "sm80_xmma", "triton_tem_fused_mm", "mm_template")
ATTENTION_KERNELS = ("flash", "fmha", "attention", "sdpa")


def kernel_times(step, device: torch.device, repeats: int = 1) -> tuple[float, dict[str, list]]:
    """`repeats` calls of `step` under the profiler: (their wall seconds, {CUDA kernel name: [GPU seconds, calls]})."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        wall = timed(step, repeats, device)
    kernels: dict[str, list] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = kernels.setdefault(event.name, [0.0, 0])
            entry[0] += event.time_range.elapsed_us() / 1e6
            entry[1] += 1
    return wall, kernels


def profile_step(step, device: torch.device, repeats: int = 3, top: int = 0) -> dict:
    """Where the time of a training step goes: GPU busy time split into matrix multiplies, attention and
    everything else (elementwise, norms, reductions, optimizer), against the wall time of the step.
    What the busy share leaves is GPU idle time: kernel launches and host work the GPU waits for.
    `top` > 0 adds the `top` kernels by GPU time: [name, calls, ms] per step."""
    timed(step, 1, device)
    wall, kernels = kernel_times(step, device, repeats)
    parts = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for name, (seconds, _) in kernels.items():
        low = name.lower()
        kind = ("matmul" if any(k in low for k in MATMUL_KERNELS)
                else "attention" if any(k in low for k in ATTENTION_KERNELS) else "other")
        parts[kind] += seconds
    busy = sum(parts.values())
    record = {"step_ms": 1e3 * wall / repeats, "gpu_busy": busy / wall,
              **{f"{k}_share": v / wall for k, v in parts.items()}}
    if top:
        ranked = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]
        record["top_kernels"] = [[name[:120], calls / repeats, 1e3 * sec / repeats] for name, (sec, calls) in ranked]
    return record


def time_training(model, batch: int, device: torch.device, steps: int, warmup: int, flop_steps: int = 3,
                  compile_mode: str = "eager", precision: str = "auto", label_dropout: float | None = 0.1,
                  weight_decay: float = 0.01, objective: str = "flow", inductor: dict | None = None,
                  top_kernels: int = 0) -> tuple[dict, EMA]:
    """Time `steps` training steps of `model` (any module with liquidgen's call signature and geometry
    attributes) after `warmup` untimed ones, compiled in `compile_mode` with the Inductor settings `inductor` (as
    `train` compiles with its `compile_tuning`); returns the timing record (with the `top_kernels` kernels of a
    step by GPU time, on CUDA) and the EMA (for sampling)."""
    config = Config()
    config.optim.grad_clip, config.optim.weight_decay, config.train.precision = 1.0, weight_decay, precision
    loss = speed_objective(objective, model)
    optimizer = make_optimizer(model, config.optim)
    scheduler = make_scheduler(optimizer, config.optim, 10**9)
    ema = EMA(model, 0.9999)

    def amp():
        return autocast(device, precision)

    small = synthetic_batches(model, 2, device)
    with model_flops_mode(model):  # model FLOPs: no recomputed forwards, depthwise convs as convs
        flops = statistics.mean(count_flops(lambda: accumulate_gradients(model, loss, small, i, 1, label_dropout,
                                                                         amp=amp)) for i in range(flop_steps)) / 2
    optimizer.zero_grad(set_to_none=True)
    if compile_mode != "eager":
        model.compile(**compile_options(compile_mode, inductor), dynamic=False)  # as `train` does
        if hasattr(loss, "compile_tangent"):  # as `train` does: consistency's JVP compiled too
            loss.compile_tangent()
    batches = synthetic_batches(model, batch, device)
    counter = iter(range(10**9))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        train_step(model, loss, batches, next(counter), optimizer, scheduler, ema, config, label_dropout, amp)

    warmup_s = timed(step, warmup, device)
    img_s = steps * batch / timed(step, steps, device)
    peak = peak_tflops(device)
    record = {"params_M": model.num_params() / 1e6, "train_gflops_per_img": flops / 1e9, "train_img_s": img_s,
              "warmup_s": warmup_s, "train_tflops": flops * img_s / 1e12, "peak_tflops": peak,
              "mfu": flops * img_s / (peak * 1e12) if peak else None}
    if device.type == "cuda":
        record["train_peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        try:
            record.update(profile_step(step, device, top=top_kernels))
        except RuntimeError as e:  # the profiler is a diagnosis: its failure must not lose the measurement
            record["profile_error"] = str(e)
    return record, ema


def measure_training(case: Case, device: torch.device, steps: int, warmup: int, flop_steps: int
                     ) -> tuple[dict, EMA]:
    """`time_training` of a preset at its native size; returns the record and the EMA (for sampling)."""
    channels, size, classes = BACKBONES[case.backbone].native[case.preset]
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    model = case.build(channels, size, classes).to(device)
    record, ema = time_training(model, case.batch, device, steps, warmup, flop_steps, case.compile,
                                label_dropout=0.1 if classes else None, objective=case.objective)
    return {"key": case.key, **asdict(case), "input": f"{channels}x{size}x{size}", "classes": classes,
            **record}, ema


@torch.no_grad()
def measure_sampling(case: Case, model, device: torch.device, batch: int, steps: int) -> dict:
    """Network calls per second x batch of Euler sampling without guidance (one call per step)."""
    channels, size, classes = model.in_channels, model.input_size, model.num_classes
    spec = ModelSpec(case.backbone, case.preset, {}, channels, size, [str(k) for k in range(classes)])
    pipe = Pipeline(model, spec, "v", SampleConfig(sampler="euler", cfg=1.0), precision="auto", compile="off")
    flops = forward_flops(model, channels, size, classes) if not model.context_dim else None
    if case.compile != "eager":
        model.compile(mode=case.compile, dynamic=False)  # a new batch size: recompiled static, not symbolic
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(batch, channels, size, size, generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device) if classes else None
    context = (torch.randn(batch, CONTEXT_TOKENS, model.context_dim, generator=g).to(device)
               if model.context_dim else None)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    def draw(n: int):
        pipe.sample(noise, y, pipe.settings.with_(steps=n), **({} if context is None else {"context": context}))

    draw(2)  # compiles
    nfe_img_s = batch * steps / timed(lambda: draw(steps), 1, device)
    peak = peak_tflops(device)
    record = {"sample_batch": batch, "sample_img_nfe_s": nfe_img_s,
              "sample_gflops_per_nfe": None if flops is None else flops / 1e9,
              "sample_mfu": flops * nfe_img_s / (peak * 1e12) if peak and flops else None}
    if device.type == "cuda":
        record["sample_peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return record


def measure(case: Case, device: torch.device, steps: int = 20, warmup: int = 3, sample_batch: int = 256,
            sample_steps: int = 8, flop_steps: int = 3, sampling: bool = True) -> dict:
    """Time one case; returns its record (see the module docstring for what each number means)."""
    record, ema = measure_training(case, device, steps, warmup, flop_steps)
    return {**record, **(measure_sampling(case, ema.model, device, sample_batch, sample_steps) if sampling else {})}


def run_speed(presets: list[str], out: str | Path, batch: int = 128, modes: tuple[str, ...] = ("eager", "default"),
              device: str = "cuda", steps: int = 20, warmup: int = 3, sample_batch: int = 256,
              sample_steps: int = 8, objectives: tuple[str, ...] = ("flow",)) -> list[dict]:
    """Measure every (preset, compile mode) not yet in `out/speed.jsonl`, appending each record as it
    finishes, so a command cut short (a time limit, a crash) continues where it stopped when rerun."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "speed.jsonl"
    done = {r["key"] for r in read_records(path)}
    dev = torch.device(device)
    for backbone, preset, options in parse_presets(presets):
        for mode, objective in ((m, o) for o in objectives for m in modes):
            case = Case(backbone, preset, mode, batch, options, objective)
            if case.key in done:
                print(f"{case.key}: done before, skipped", flush=True)
                continue
            t0 = time.perf_counter()
            try:
                record = measure(case, dev, steps, warmup, sample_batch, sample_steps,
                                 sampling=objective == objectives[0])
            except torch.OutOfMemoryError:
                record = {"key": case.key, **asdict(case), "error": "out of memory"}
            record.update(environment(dev), wall_s=time.perf_counter() - t0)
            append_record(path, record)
            print(json.dumps(record), flush=True)
            torch._dynamo.reset()  # compiled graphs of this case are not reused; free them
    return read_records(path)
