"""LiquidGen's fused Triton kernels against the plain PyTorch path, on one CUDA device.

    python benchmarks/liquid_kernels.py profile --out DIR      # one LiquidBlock, per-kernel time, ceilings
    python benchmarks/liquid_kernels.py train --out DIR [--presets S B] [--inputs native mnist]
                                                               # whole-model training img/s, MFU, peak memory
    python benchmarks/liquid_kernels.py curves --out DIR --mnist-root ROOT   # MNIST loss, fused vs reference
    python benchmarks/liquid_kernels.py sample --out DIR [--inputs native mnist] # sampling forwards, per kernel
    python benchmarks/liquid_kernels.py sample --out DIR --backbone unet --presets 28 --inputs mnist  # another

Each command takes `--depthwise conv matmul` to time the depthwise convs as cuDNN convs and as dense per-channel
matrices (models.toeplitz) side by side.

`profile` times one LiquidBlock forward + backward (bf16 autocast, batch 256, 16x16 tokens: LiquidGen-S and -B
after patch 2 of 32x32) eager (and compiled with --compiled), with each kernel path, and lists every CUDA kernel's
time per step (torch.profiler), plus the copy bandwidth and bf16 matrix rate the roofline is drawn against.
`train` runs the real training step (bench.speed.time_training: flow matching, AdamW, clipping, EMA, bf16
autocast, on a fixed synthetic batch) with `kernels=torch` and/or `kernels=triton` in one process, at the native
16x32x32 input or MNIST's 1x28x28, optionally with recomputed blocks (`--checkpointing`). `curves` trains
LiquidGen-S on MNIST with each path from one seed (`liquidgen.train`) and plots the loss curves together.
`sample` times the whole model's forward pass as sampling runs it (no grad, bf16 autocast, torch.compile in
each of --modes, a fixed batch with guidance's doubled rows) and splits it per kernel category.
Records are appended to DIR/*.jsonl with the device and date; tables are printed last.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from liquidgen.bench.records import append_record, environment
from liquidgen.bench.speed import cuda_median_ms, kernel_times, time_training
from liquidgen.config import COMPILE_TUNINGS, apply_override
from liquidgen.flops import count_flops, forward_flops
from liquidgen.models import build_model
from liquidgen.models.liquid import LiquidBlock
from liquidgen.models.toeplitz import CHOICES as DEPTHWISE
from liquidgen.runtime import compile_options

WIDTHS = {"S": 512, "B": 768}
MATMUL = ("gemm", "cutlass", "nvjet", "xmma", "mm_template", "triton_tem")
CONV = ("conv", "cudnn", "depthwise", "dgrad", "wgrad", "fprop")


def category(name: str) -> str:
    low = name.lower()
    if any(k in low for k in MATMUL):
        return "matmul"
    if low.startswith(("_adagn", "_glu", "_blend")):
        return "fused"
    if low.startswith("triton_"):  # before CONV: Inductor names kernels after every op fused in, "convolution" too
        return "inductor"
    if any(k in low for k in CONV):
        return "conv"
    return "other"


def ceilings() -> dict:
    """Measured copy bandwidth (bytes read + written) and bf16 matrix rate on random data."""
    src = torch.randn(2**30 // 2, device="cuda", dtype=torch.bfloat16)  # 1 GiB
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    copy_ms = cuda_median_ms(lambda: dst.copy_(src))
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    mm_ms = cuda_median_ms(lambda: a @ b, 10)
    return {"copy_tb_s": 2 * src.numel() * 2 / copy_ms / 1e9, "bf16_tflops": 2 * 8192**3 / mm_ms / 1e9}


def make_block(width: int, transpose: bool, kernels: str, depthwise: str) -> LiquidBlock:
    torch.manual_seed(0)
    return LiquidBlock(width, width, 32, 4.0, 7, 31, transpose_scan=transpose, kernels=kernels,
                       depthwise=depthwise).cuda()


def block_step(block, batch: int, width: int, tokens: int, compiled: bool):
    x = torch.randn(batch, width, tokens, tokens, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    c = torch.randn(batch, width, device="cuda", dtype=torch.bfloat16)
    grad = torch.randn_like(x)
    fn = torch.compile(block) if compiled else block

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            out = fn(x, c)
        out.backward(grad)
    return step


def kernel_table(step, repeats: int = 5) -> tuple[list[dict], float]:
    """Per-kernel rows (microseconds and calls per step, category), slowest first, and the GPU-busy microseconds."""
    _, kernels = kernel_times(step, torch.device("cuda"), repeats)
    rows = [{"kernel": k, "us": 1e6 * sec / repeats, "calls": calls // repeats, "category": category(k)}
            for k, (sec, calls) in kernels.items()]
    rows.sort(key=lambda r: -r["us"])
    return rows, sum(r["us"] for r in rows)


def split_ms(rows: list[dict]) -> dict[str, float]:
    """Milliseconds per kernel category of a kernel_table."""
    split: dict[str, float] = defaultdict(float)
    for r in rows:
        split[r["category"]] += r["us"] / 1e3
    return dict(split)


def split_text(record: dict, digits: int) -> str:
    return " ".join(f"{k}={v:.{digits}f}" for k, v in sorted(record["split_ms"].items()))


def print_kernels(rows: list[dict], top: int) -> None:
    for r in rows[:top]:
        print(f"{r['us']:9.1f} us {r['calls']:3d}x {r['category']:8s} {r['kernel'][:110]}")


def block_flops(width: int, batch: int, tokens: int) -> int:
    block = LiquidBlock(width, width, 32, 4.0, 7, 31, transpose_scan=False, depthwise="conv").to("meta")
    x = torch.randn(batch, width, tokens, tokens, device="meta", requires_grad=True)
    c = torch.randn(batch, width, device="meta")
    return count_flops(lambda: block(x, c).sum().backward())


def profile(out: Path, batch: int, tokens: int, paths: list[str], modes: tuple[bool, ...],
            depthwise_paths: list[str]) -> None:
    env = environment(torch.device("cuda"))
    roof = ceilings()
    append_record(out / "ceilings.jsonl", {**roof, **env})
    print(json.dumps(roof), flush=True)
    summary = []
    for size, width in WIDTHS.items():
        flops = block_flops(width, batch, tokens)
        for kernels, depthwise in itertools.product(paths, depthwise_paths):
            for compiled in modes:
                for transpose in (False, True) if not compiled else (False,):  # compiling costs minutes
                    torch._dynamo.reset()
                    step = block_step(make_block(width, transpose, kernels, depthwise), batch, width, tokens,
                                      compiled)
                    for _ in range(3):
                        step()
                    ms = cuda_median_ms(step)
                    rows, busy = kernel_table(step)
                    record = {"size": size, "width": width, "batch": batch, "tokens": tokens, "kernels": kernels,
                              "depthwise": depthwise, "compiled": compiled, "transpose_scan": transpose,
                              "step_ms": ms, "busy_ms": busy / 1e3,
                              "gflop": flops / 1e9, "tflops": flops / ms / 1e9,
                              "split_ms": split_ms(rows), "kernels_top": rows[:40], **env}
                    append_record(out / "profile.jsonl", record)
                    summary.append(record)
                    print(f"\n== {size} kernels={kernels} depthwise={depthwise} compiled={compiled} "
                          f"transpose={transpose}: {ms:.3f} ms "
                          f"(busy {busy / 1e3:.3f}), {flops / ms / 1e9:.0f} TFLOP/s", flush=True)
                    print_kernels(rows, 25)
    print("\nsize kernels depthwise compiled transpose step_ms busy_ms TFLOP/s split_ms")
    for r in summary:
        print(f"{r['size']} {r['kernels']} {r['depthwise']} {r['compiled']} {r['transpose_scan']} {r['step_ms']:.3f} "
              f"{r['busy_ms']:.3f} {r['tflops']:.0f} {split_text(r, 3)}")


INPUTS = {"native": (16, 32, 27), "mnist": (1, 28, 10)}  # channels, size, classes
# Inductor settings to time, each against its defaults: coordinate descent tunes each Triton kernel's block sizes
# and warps (a longer compile); aggressive_fusion fuses nodes that share no read, benchmark_fusion times a fusion
# against its parts before keeping it (both aimed at the memory-bound chains that hold LiquidGen and UNet-28 back).
TUNINGS = {**COMPILE_TUNINGS, "aggressive": {"aggressive_fusion": True}, "benchmark": {"benchmark_fusion": True}}
TUNINGS_HELP = ("Inductor settings: its defaults (default) and/or coordinate descent on each Triton kernel's launch "
                "configuration (coordinate; a longer compile), fusion of nodes sharing no read (aggressive), fusions "
                "timed against their parts (benchmark)")


def measure(preset: str, geometry: tuple[int, int, int], kernels: str, mode: str, batch: int, steps: int,
            device: torch.device, checkpointing: int = 0, depthwise: str = "auto", tuning: str = "default") -> dict:
    """One case's time_training record, or its error (a failed case must not stop the others)."""
    torch.manual_seed(0)
    try:
        model = build_model("liquid", preset, *geometry, kernels=kernels, depthwise=depthwise).to(device)
        if checkpointing:
            model.set_checkpointing(checkpointing)
        return time_training(model, batch, device, steps, 3, 1, mode, inductor=TUNINGS[tuning], top_kernels=30)[0]
    except (RuntimeError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"[:500]}


def train(out: Path, presets: list[str], inputs: list[str], modes: list[str], batch: int, steps: int,
          device: torch.device, kernel_paths: list[str], checkpointing: list[int], label: str,
          depthwise_paths: list[str], tunings: tuple[str, ...] = ("default",)) -> None:
    """Training img/s, MFU, peak memory and the 30 costliest kernels of a step of each (input, preset, mode, kernel
    path, depthwise path, recomputed blocks, Inductor tuning as in `sample`), one after the other in this process;
    `label` tags the records (e.g. the code version). Coordinate descent is asked of the training step because its
    4.0 ms of memory-bound Inductor and other kernels per compiled S block are 2.7x the block's byte bound on an H100
    (results/2026-12-07-sampling-modes-and-liquid-h100)."""
    records = []
    for data in inputs:
        channels, size, classes = INPUTS[data]
        for preset in presets:
            for mode, kernels, depthwise, recompute, tuning in itertools.product(
                    modes, kernel_paths, depthwise_paths, checkpointing, tunings):
                torch._dynamo.reset()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                key = {"label": label, "input": data, "shape": f"{channels}x{size}x{size}", "preset": preset,
                       "mode": mode, "kernels": kernels, "depthwise": depthwise, "checkpointing": recompute,
                       "tuning": tuning, "batch": batch}
                record = {**key, **measure(preset, (channels, size, classes), kernels, mode, batch, steps, device,
                                           recompute, depthwise, tuning), **environment(device)}
                append_record(out / "train.jsonl", record)
                records.append(record)
                print(json.dumps(record), flush=True)
    print("\nlabel input preset mode kernels depthwise recomputed tuning img/s MFU peak_GB step: matmul/other/idle")
    for r in records:
        case = (f"{r['label']} {r['input']} {r['preset']} {r['mode']} {r['kernels']} {r['depthwise']} "
                f"{r['checkpointing']} {r.get('tuning', 'default')}")
        if "error" in r:
            print(case, r["error"])
            continue
        split = (r.get("matmul_share", 0), r.get("other_share", 0), 1 - r.get("gpu_busy", 1))
        print(f"{case} {r['train_img_s']:.0f} {100 * (r['mfu'] or 0):.1f}% {r.get('train_peak_gb', 0):.2f} "
              + "/".join(f"{100 * v:.0f}" for v in split))


def curves(out: Path, steps: int, batch: int, mnist_root: str, runs: Path, device: str, paths: list[str],
           compile_mode: str, depthwise_paths: list[str]) -> None:
    """LiquidGen-S trained on MNIST from one seed with each kernel path in `paths` and depthwise path (eager, or
    torch.compile'd in `compile_mode`), each curve written to out/curve-<path>.jsonl; once two or more such
    files are there (paths may run as separate processes side by side), they are plotted and compared
    (`compare_curves`)."""
    from liquidgen.config import load_config
    from liquidgen.plots import plot_curves
    from liquidgen.train import train as train_run

    for kernels, depthwise in itertools.product(paths, depthwise_paths):
        overrides = [f"data.root={mnist_root}", f"train.steps={steps}", f"train.batch_size={batch}",
                     "train.log_every=20", "train.sample_every=0", "train.ckpt_every=0", f"train.device={device}",
                     f"model.options.kernels={kernels}", f"model.options.depthwise={depthwise}"]
        if compile_mode != "eager":
            overrides += ["train.compile=true", f"train.compile_mode={compile_mode}"]
        name = kernels if depthwise == "auto" else f"{kernels}-{depthwise}"
        run = runs / f"curve-{name}"
        t0 = time.perf_counter()
        train_run(load_config("configs/mnist-liquid-S.yaml", overrides), run, overwrite=True)
        rows = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
        (out / f"curve-{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{name}: {len(rows)} logged steps in {time.perf_counter() - t0:.0f} s", flush=True)
    found = {f.stem.removeprefix("curve-"): [json.loads(line) for line in f.read_text().splitlines()]
             for f in sorted(out.glob("curve-*.jsonl"))}
    if len(found) < 2:
        return
    plot_curves(out / "curves.png", {f"kernels={k}": ([r["step"] for r in rows], [r["loss"] for r in rows])
                                     for k, rows in found.items()},
                title=f"LiquidGen-S, MNIST, batch {batch}, {compile_mode}: each kernel path",
                ylabel="flow-matching loss", logy=True, smooth=0.9)
    record = {"steps": steps, "batch": batch, "compile_mode": compile_mode, **compare_curves(found),
              **environment(torch.device(device))}
    append_record(out / "curves.jsonl", record)
    print(json.dumps(record))


def compare_curves(found: dict[str, list[dict]]) -> dict:
    """Mean loss of each curve over the last quarter of the logged steps that every curve reached, and their
    relative spread. Only shared steps count: a run cut short (a device call's timeout) must not be compared
    with another's later, lower losses."""
    common = set.intersection(*({r["step"] for r in rows} for rows in found.values()))
    if not common:
        raise SystemExit(f"the curves {sorted(found)} share no logged step")
    steps = sorted(common)[len(common) // 4 * 3:]
    tails = {k: statistics.mean(r["loss"] for r in rows if r["step"] in steps) for k, rows in found.items()}
    return {"compared_steps": [steps[0], steps[-1]], "tail_loss": tails,
            "tail_spread": (max(tails.values()) - min(tails.values())) / min(tails.values())}


def sample(out: Path, presets: list[str], inputs: list[str], modes: list[str], batch: int,
           depthwise_paths: list[str], backbone: str = "liquid", layouts: tuple[str, ...] = ("nchw",),
           cudnn: tuple[str, ...] = ("heuristic",), inductor_layouts: tuple[str, ...] = ("auto",),
           tunings: tuple[str, ...] = ("default",), kernel_paths: tuple[str, ...] = ("torch",),
           weights: tuple[str, ...] = ("fp32",), options: dict | None = None) -> None:
    """Sampling-forward milliseconds, image-NFEs per second and MFU of each (input, preset, mode, depthwise path,
    layout), with the compile time and the profiled kernel split. Another `backbone` (the UNet, say) runs as built,
    its preset at each input, for the same per-kernel view. `layouts`: nchw, and/or nhwc (weights and input
    channels-last: cuDNN's bf16 convolutions are NHWC kernels, so NCHW tensors pay a transpose around each).
    `cudnn`: how cuDNN picks convolution algorithms, "heuristic" (PyTorch's default, as liquidgen runs) and/or
    "timed" (cudnn.benchmark): no gain for UNet-28 (results/2026-12-05-cudnn-and-emoji-latent-h100).
    `inductor_layouts`: "auto" lets Inductor turn convolution activations channels-last inside the compiled graph
    (its `layout_optimization`, the default), "off" keeps the tensors' own layout. Asked whether UNet-28's GroupNorm
    kernels (2 channels per group, 6x slower than the memory bound) were slow because of channels-last: no. Off,
    they were 11% faster and cuDNN's transposes cost 10 ms more (results/2026-12-05-unet-layouts-and-curves-h100).
    `tunings`: "default" takes Inductor's heuristic launch configurations, "coordinate" lets it tune each Triton
    kernel's block sizes and warps by coordinate descent (its `coordinate_descent_tuning`; a longer compile), asked
    for the same GroupNorm kernels. `kernel_paths` (the backbone's `kernels` option): "torch" (Inductor's code),
    "auto" (what liquidgen samples with; for LiquidGen, "torch" with the channel MLP's GELU in its first GEMM's
    epilogue, `kernels.use_gelu_gemm`) and/or "triton": the UNet's GroupNorms as kernels.group_norm (each norm,
    its scale and SiLU as one opaque op; 23% slower, results/2026-12-06-unet-norm-kernel-h100), LiquidGen's fused
    block ops and that MLP, forced under torch.compile too (in training they lose to Inductor's code by 6-8%,
    results/2026-12-07-sampling-modes-and-liquid-h100; sampling runs their forward alone). `options`: more of the
    backbone's architecture keys (e.g. patch_size 4, the shipped MNIST LiquidGen-S). `weights`: "fp32" (fp32
    weights under bf16 autocast, as liquidgen samples) and/or "bf16" (weights and input cast to bf16, no autocast).
    Asked because CUDA's autocast runs norms in fp32: wherever a norm's output is kept rather than fused into its
    consumer's bf16 input, it is written and read as fp32 by the memory-bound kernels. UNet-28: no gain (26.43 against
    26.27 ms, results/2026-12-07-sampling-modes-and-liquid-h100)."""
    if backbone != "liquid":
        depthwise_paths = ["-"]  # LiquidGen's options only
    if backbone not in ("liquid", "unet"):
        kernel_paths = ("-",)
    env = environment(torch.device("cuda"))
    records = []
    for data, preset in itertools.product(inputs, presets):
        channels, size, classes = INPUTS[data]
        for mode, depthwise, layout, algo, inductor_layout, tuning, kernels, dtype in itertools.product(
                modes, depthwise_paths, layouts, cudnn, inductor_layouts, tunings, kernel_paths, weights):
            torch._dynamo.reset()
            torch.backends.cudnn.benchmark = algo == "timed"
            inductor = {**TUNINGS[tuning], **({"layout_optimization": False} if inductor_layout == "off" else {})}
            torch.cuda.empty_cache()
            torch.manual_seed(0)
            chosen = {**({"kernels": kernels} if kernels != "-" else {}),
                      **({"depthwise": depthwise} if depthwise != "-" else {}), **(options or {})}
            model = build_model(backbone, preset, channels, size, classes, **chosen).cuda().eval()
            flops = forward_flops(model, channels, size, classes) * batch
            x = torch.randn(batch, channels, size, size, device="cuda")
            t = torch.rand(batch, device="cuda")
            if dtype == "bf16":
                model, x, t = model.bfloat16(), x.bfloat16(), t.bfloat16()
            if layout == "nhwc":
                model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, classes, (batch,), device="cuda")
            fn = model if mode == "eager" else torch.compile(model, **compile_options(mode, inductor))

            def forward():
                with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=dtype == "fp32"):
                    return fn(x, t, y)
            t0 = time.perf_counter()
            for _ in range(3):
                forward()
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
            ms = cuda_median_ms(forward)
            rows, busy = kernel_table(forward)
            record = {"backbone": backbone, "input": data, "preset": preset, "mode": mode, "depthwise": depthwise,
                      "layout": layout, "cudnn": algo, "inductor_layout": inductor_layout, "tuning": tuning,
                      "kernels": kernels, "options": options or {}, "weights": dtype, "batch": batch,
                      "forward_ms": ms, "img_nfe_s": batch / ms * 1e3, "mfu": flops / ms / 1e9 / 989,
                      "gflop_per_img": flops / batch / 1e9, "compile_s": compile_s, "busy_ms": busy / 1e3,
                      "split_ms": split_ms(rows), "kernels_top": rows[:30], **env}
            append_record(out / "sample.jsonl", record)
            records.append(record)
            print(f"\n== {data} {preset} {mode} depthwise={depthwise} {layout} cudnn={algo} "
                  f"inductor-layout={inductor_layout} tuning={tuning} kernels={kernels} weights={dtype}: {ms:.1f} ms",
                  flush=True)
            print_kernels(rows, 15)
    print("\ninput preset mode depthwise layout cudnn inductor-layout tuning kernels weights batch forward_ms "
          "img*NFE/s MFU compile_s split_ms")
    for r in records:
        print(f"{r['input']} {r['preset']} {r['mode']} {r['depthwise']} {r['layout']} {r['cudnn']} "
              f"{r['inductor_layout']} {r['tuning']} {r['kernels']} {r['weights']} {r['batch']} "
              f"{r['forward_ms']:.1f} {r['img_nfe_s']:,.0f} {100 * r['mfu']:.1f}% {r['compile_s']:.0f} "
              f"{split_text(r, 1)}")


def architecture_options(assignments: list[str]) -> dict:
    """--options KEY=VALUE ... as a dict, values read as `--set` reads them (patch_size=4 is an int)."""
    options: dict = {}
    for assignment in assignments:
        apply_override(options, assignment)
    return options


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    prof = sub.add_parser("profile", help="one LiquidBlock, per-kernel time")
    prof.add_argument("--out", type=Path, required=True)
    prof.add_argument("--batch", type=int, default=256)
    prof.add_argument("--tokens", type=int, default=16)
    prof.add_argument("--kernels", nargs="+", default=["torch", "triton"], choices=["torch", "triton"])
    prof.add_argument("--compiled", action="store_true", help="also the torch.compile'd block (minutes)")
    prof.add_argument("--depthwise", nargs="+", default=["conv"], choices=list(DEPTHWISE),
                      help="depthwise conv paths to time (models.toeplitz)")
    tr = sub.add_parser("train", help="whole-model training throughput, reference vs fused")
    tr.add_argument("--out", type=Path, required=True)
    tr.add_argument("--presets", nargs="+", default=["S", "B"])
    tr.add_argument("--inputs", nargs="+", default=["native"], choices=list(INPUTS))
    tr.add_argument("--modes", nargs="+", default=["reduce-overhead"], help="torch.compile modes (or eager)")
    tr.add_argument("--batch", type=int, default=256)
    tr.add_argument("--steps", type=int, default=20)
    tr.add_argument("--device", default="cuda", help="cpu runs the reference path twice (a dry run of this script)")
    tr.add_argument("--kernels", nargs="+", default=["torch", "triton"], choices=["torch", "triton"],
                    help="kernel paths to time")
    tr.add_argument("--checkpointing", nargs="+", type=int, default=[0],
                    help="recomputed blocks per case (model.checkpointing; 0: none, -1: all)")
    tr.add_argument("--label", default="", help="tag for the records, e.g. the code version")
    tr.add_argument("--depthwise", nargs="+", default=["auto"], choices=list(DEPTHWISE),
                    help="depthwise conv paths to time (models.toeplitz)")
    tr.add_argument("--tunings", nargs="+", default=["default"], choices=list(TUNINGS), help=TUNINGS_HELP)
    cu = sub.add_parser("curves", help="MNIST training curves of LiquidGen-S with each kernel path, eager")
    cu.add_argument("--out", type=Path, required=True)
    cu.add_argument("--mnist-root", required=True, help="folder holding MNIST/raw (torchvision's layout)")
    cu.add_argument("--steps", type=int, default=2000)
    cu.add_argument("--batch", type=int, default=64)
    cu.add_argument("--runs", type=Path, default=Path("/tmp/liquid-kernel-curves"), help="run folders (large)")
    cu.add_argument("--device", default="cuda", help="cpu: a dry run of this script (every path is the reference)")
    cu.add_argument("--paths", nargs="+", default=["triton", "torch"], choices=["triton", "torch", "auto"],
                    help="kernel paths to train with, one after the other")
    cu.add_argument("--compile-mode", default="eager", help="eager, or a torch.compile mode for both runs")
    cu.add_argument("--depthwise", nargs="+", default=["auto"], choices=list(DEPTHWISE),
                    help="depthwise conv paths to train with (each with each kernel path)")
    sa = sub.add_parser("sample", help="whole-model sampling forward passes, per depthwise path and compile mode")
    sa.add_argument("--out", type=Path, required=True)
    sa.add_argument("--presets", nargs="+", default=["S"], help="presets of --backbone")
    sa.add_argument("--backbone", default="liquid", help="another backbone for the same per-kernel view (e.g. unet "
                    "--presets 28 --inputs mnist)")
    sa.add_argument("--inputs", nargs="+", default=["native", "mnist"], choices=list(INPUTS))
    sa.add_argument("--modes", nargs="+", default=["reduce-overhead"], help="torch.compile modes (or eager)")
    sa.add_argument("--batch", type=int, default=2000, help="rows per forward (guidance doubles a sampler's batch)")
    sa.add_argument("--depthwise", nargs="+", default=["conv", "matmul"], choices=list(DEPTHWISE),
                    help="depthwise conv paths to time (models.toeplitz)")
    sa.add_argument("--layouts", nargs="+", default=["nchw"], choices=["nchw", "nhwc"],
                    help="memory layouts of weights and input to time (nhwc: channels-last)")
    sa.add_argument("--cudnn", nargs="+", default=["heuristic"], choices=["timed", "heuristic"],
                    help="cuDNN's choice of convolution algorithms: timed per shape (cudnn.benchmark) or heuristic")
    sa.add_argument("--inductor-layouts", nargs="+", default=["auto"], choices=["auto", "off"],
                    help="Inductor's layout optimisation (auto: convolution activations channels-last inside the "
                    "compiled graph, its default; off: the tensors' own layout)")
    sa.add_argument("--tunings", nargs="+", default=["default"], choices=list(TUNINGS), help=TUNINGS_HELP)
    sa.add_argument("--kernels", nargs="+", default=["torch"], choices=["torch", "auto", "triton"],
                    help="the backbone's kernels option to time: Inductor's code (torch), the default (auto: for "
                    "LiquidGen, the MLP's GELU in its first GEMM's epilogue) and/or the fused kernels (triton: the "
                    "UNet's GroupNorm sampling kernel, LiquidGen's block ops and that MLP)")
    sa.add_argument("--options", nargs="*", default=[], metavar="KEY=VALUE",
                    help="more architecture keys of the backbone, e.g. patch_size=4 (the shipped MNIST LiquidGen-S)")
    sa.add_argument("--weights", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                    help="fp32 weights under bf16 autocast (as liquidgen samples) and/or the model cast to bf16")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "profile":
        profile(args.out, args.batch, args.tokens, args.kernels, (False, True) if args.compiled else (False,),
                args.depthwise)
    elif args.command == "sample":
        sample(args.out, args.presets, args.inputs, args.modes, args.batch, args.depthwise, args.backbone,
               tuple(args.layouts), tuple(args.cudnn), tuple(args.inductor_layouts), tuple(args.tunings),
               tuple(args.kernels), tuple(args.weights),
               architecture_options(args.options))
    elif args.command == "curves":
        curves(args.out, args.steps, args.batch, args.mnist_root, args.runs, args.device, args.paths,
               args.compile_mode, args.depthwise)
    else:
        train(args.out, args.presets, args.inputs, args.modes, args.batch, args.steps, torch.device(args.device),
              args.kernels, args.checkpointing, args.label, args.depthwise, tuple(args.tunings))


if __name__ == "__main__":
    main()
