"""The Triton depthwise conv (liquidgen.kernels.depthwise) against cuDNN's channels-last depthwise conv, on one
CUDA device.

    python benchmarks/depthwise.py --out DIR [--no-compile] [--sweep]

LiquidGen's two depthwise convs at bf16, batch 256: the 7x7 local conv on a 16x16 grid and the scan's 1x31
conv on the 1x256 sequence, at LiquidGen-S's and -B's widths (512, 768). Each is timed forward only and
forward + backward (x, weight and bias gradients), median of CUDA events, eager and under torch.compile.
`--sweep` also times the Triton op's tile choices (eager). Records are appended to DIR/depthwise.jsonl with
the device, the torch and Triton versions and the date; the table is printed last. About a minute on an H200.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from liquidgen.bench.records import append_record, environment
from liquidgen.bench.speed import cuda_median_ms

CASES = [(c, h, w, k) for c in (512, 768) for h, w, k in ((16, 16, (7, 7)), (1, 256, (1, 31)))]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def time_conv(conv, x, weight, bias, dy) -> tuple[float, float]:
    """(forward ms, forward + backward ms) of conv(x, weight, bias)."""
    def fwd():
        with torch.no_grad():
            conv(x, weight, bias)

    def fwd_bwd():
        torch.autograd.grad(conv(x, weight, bias), (x, weight, bias), dy)

    return cuda_median_ms(fwd, 30, 5), cuda_median_ms(fwd_bwd, 30, 5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--sweep", action="store_true", help="also time the Triton op's tile choices (eager)")
    args = p.parse_args()
    import triton  # only here: --help must work where Triton is not installed

    from liquidgen.kernels import depthwise

    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    env = {**environment(device), "triton": triton.__version__}
    rows = []
    for c, h, w, (kh, kw) in CASES:
        torch.manual_seed(0)
        padding = (kh // 2, kw // 2)
        x = torch.randn(args.batch, c, h, w, device=device, dtype=torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        weight = (torch.randn(c, 1, kh, kw, device=device) / (kh * kw) ** 0.5).bfloat16().requires_grad_()
        bias = torch.randn(c, device=device, dtype=torch.bfloat16, requires_grad=True)
        dy = torch.randn_like(x)

        def cudnn(x, weight, bias, padding=padding, groups=c):
            return F.conv2d(x, weight, bias, padding=padding, groups=groups)

        def ours(x, weight, bias, padding=padding):
            return depthwise.depthwise_conv(x, weight, bias, padding)

        # The fused op's results next to cuDNN's (both bf16; a sanity check, the tests measure accuracy)
        ref = [cudnn(x, weight, bias), *torch.autograd.grad(cudnn(x, weight, bias), (x, weight, bias), dy)]
        got = [ours(x, weight, bias), *torch.autograd.grad(ours(x, weight, bias), (x, weight, bias), dy)]
        diffs = [round(rel(a, b), 5) for a, b in zip(got, ref)]
        impls = [("cudnn", False, cudnn), ("triton", False, ours)]
        if not args.no_compile:
            impls += [("cudnn", True, torch.compile(cudnn)), ("triton", True, torch.compile(ours))]
        if args.sweep:
            for blocks in ((32, 64, 64, 64), (64, 64, 64, 64), (16, 64, 64, 64), (32, 32, 32, 64), (32, 64, 32, 64),
                           (32, 128, 32, 128), (64, 32, 64, 32)):
                def tiled(x, weight, bias, blocks=blocks, padding=padding):
                    (depthwise.FWD_P_BLOCK, depthwise.FWD_C_BLOCK, depthwise.WGT_P_BLOCK,
                     depthwise.WGT_C_BLOCK) = blocks
                    return depthwise.depthwise_conv(x, weight, bias, padding)
                impls.append((f"triton{blocks}", False, tiled))
        defaults = depthwise.FWD_P_BLOCK, depthwise.FWD_C_BLOCK, depthwise.WGT_P_BLOCK, depthwise.WGT_C_BLOCK
        for name, compiled, conv in impls:
            fwd, fwd_bwd = time_conv(conv, x, weight, bias, dy)
            (depthwise.FWD_P_BLOCK, depthwise.FWD_C_BLOCK, depthwise.WGT_P_BLOCK, depthwise.WGT_C_BLOCK) = defaults
            record = {"bench": "depthwise", "impl": name, "compiled": compiled, "batch": args.batch, "channels": c,
                      "h": h, "w": w, "kernel": [kh, kw], "dtype": "bfloat16", "fwd_ms": round(fwd, 4),
                      "fwd_bwd_ms": round(fwd_bwd, 4), "rel_diff_vs_cudnn": diffs, **env}
            append_record(args.out / "depthwise.jsonl", record)
            rows.append(record)
            print(f"{c:>5} {h}x{w} k{kh}x{kw} {name:<28} {'compiled' if compiled else 'eager':<9}"
                  f"fwd {fwd:7.3f} ms  fwd+bwd {fwd_bwd:7.3f} ms", flush=True)
    print(f"\n{env['device']}, torch {env['torch']}, triton {env['triton']}, batch {args.batch}, bf16; "
          "relative difference of the fused op from cuDNN (y, dx, dw, db) in the records")
    print(f"{'C':>5} {'grid':>6} {'kernel':>6} {'impl':<28} {'mode':<9} {'fwd ms':>8} {'fwd+bwd ms':>11} "
          f"{'vs cudnn':>9}")
    for r in rows:
        base = next(b for b in rows if b["impl"] == "cudnn" and b["compiled"] == r["compiled"]
                    and b["channels"] == r["channels"] and b["w"] == r["w"])
        print(f"{r['channels']:>5} {r['h']:>2}x{r['w']:<3} {r['kernel'][0]:>2}x{r['kernel'][1]:<3} {r['impl']:<28} "
              f"{'compiled' if r['compiled'] else 'eager':<9} {r['fwd_ms']:8.3f} {r['fwd_bwd_ms']:11.3f} "
              f"{base['fwd_bwd_ms'] / r['fwd_bwd_ms']:8.2f}x")


if __name__ == "__main__":
    main()
