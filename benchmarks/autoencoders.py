"""Reconstruction quality and speed of a TAESD autoencoder (default: taef2, FLUX.2's) on small datasets.

    python benchmarks/autoencoders.py --data /work/shared/data --weights /work/shared/data/weights/taesd \\
        --out benchmarks/results/2026-11-22-autoencoders

Cases: MNIST test (first --mnist-limit images; 28 px resized to 32 and to 64) and CIFAR-10 (first
--cifar-limit images at the native 32 px and upsampled to 64). Resizing is liquidgen's own
(`load_dataset(image_size=...)`: bicubic, antialiased, rounded to uint8), and the resized uint8 image
is the reference. PSNR is in dB on [0, 1] pixels, per image, then averaged over images; the
reconstruction is the float decoder output (not re-quantised). MNIST goes in as grayscale (repeated to
RGB by `encode`) and its PSNR compares the RGB reconstruction with the gray image on every channel;
`psnr_gray_db` in results.json first averages the reconstruction's channels.
Throughput is images per second of encode, decode and both, timed per batch after one warm-up batch;
the table shows the fastest full batch (like timeit's best-of: the machine may be shared, and other
processes only ever slow a batch down), results.json also the overall rate (`*_overall`).
Writes results.json and results.md (the table, the command, the device and the date) into --out, and
prints the table last.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from liquidgen.autoencoders import build_autoencoder
from liquidgen.data import load_dataset
from liquidgen.latent_space import to_float

ROOT = Path(__file__).resolve().parents[1]

CASES = (("mnist", 32), ("mnist", 64), ("cifar10", 32), ("cifar10", 64))


def psnr(reconstruction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of [-1, 1] images, measured on [0, 1] pixels (peak 1)."""
    mse = ((reconstruction - reference) / 2).square().flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_case(ae, dataset: str, size: int, args) -> dict:
    if dataset == "mnist":
        data = load_dataset("mnist", args.data, image_size=size, split="test", limit=args.mnist_limit)
    else:
        data = load_dataset("cifar10", Path(args.data) / "cifar10", image_size=size, limit=args.cifar_limit)
    images = to_float(data.images)
    batches = list(images.split(args.batch))
    ae.decode(ae.encode(batches[0].to(args.device)))  # warm-up: allocator, kernel selection
    t_encode, t_decode = [], []  # seconds per full batch
    scores, gray_scores, latents = [], [], []
    for x in batches:
        x = x.to(args.device)
        t0 = time.perf_counter()
        z = ae.encode(x)
        t1 = time.perf_counter()
        y = ae.decode(z)
        t2 = time.perf_counter()
        if len(x) == args.batch:
            t_encode.append(t1 - t0)
            t_decode.append(t2 - t1)
        y, x = y.cpu(), x.cpu()
        scores.append(psnr(y, x.expand_as(y)))
        if x.shape[1] == 1:
            gray_scores.append(psnr(y.mean(1, keepdim=True), x))
        latents.append(z.cpu())
    scores_t, z_all = torch.cat(scores), torch.cat(latents)
    n = len(images)
    result = {
        "dataset": dataset, "size": size, "native_size": 28 if dataset == "mnist" else 32, "images": n,
        "latent_shape": list(z_all.shape[1:]),
        "psnr_db": scores_t.mean().item(), "psnr_db_median": scores_t.median().item(),
        "psnr_db_min": scores_t.min().item(),
        "encode_img_s": args.batch / min(t_encode), "decode_img_s": args.batch / min(t_decode),
        "roundtrip_img_s": args.batch / min(e + d for e, d in zip(t_encode, t_decode, strict=True)),
        "encode_img_s_overall": len(t_encode) * args.batch / sum(t_encode),
        "decode_img_s_overall": len(t_decode) * args.batch / sum(t_decode),
        "roundtrip_img_s_overall": len(t_encode) * args.batch / (sum(t_encode) + sum(t_decode)),
        # Per-channel latent statistics: what liquidgen's normalisation will divide out.
        "latent_mean": z_all.mean((0, 2, 3)).tolist(), "latent_std": z_all.std((0, 2, 3)).tolist(),
    }
    if gray_scores:
        result["psnr_gray_db"] = torch.cat(gray_scores).mean().item()
    return result


def table(results: list[dict], variant: str) -> str:
    lines = [f"| dataset | size (native) | images | {variant} latent | PSNR dB (mean / median / min) | "
             "encode img/s | decode img/s | enc+dec img/s |",
             "| --- | --- | ---: | --- | --- | ---: | ---: | ---: |"]
    for r in results:
        c, h, w = r["latent_shape"]
        lines.append(f"| {r['dataset']} | {r['size']} ({r['native_size']}) | {r['images']:,} | {c}x{h}x{w} | "
                     f"{r['psnr_db']:.2f} / {r['psnr_db_median']:.2f} / {r['psnr_db_min']:.2f} | "
                     f"{r['encode_img_s']:.0f} | {r['decode_img_s']:.0f} | {r['roundtrip_img_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True,
                        help="folder holding MNIST/ (idx files, as load_dataset('mnist') expects) and cifar10/")
    parser.add_argument("--weights", default=None,
                        help="folder with the TAESD weight files (default: $LIQUIDGEN_TAESD, then "
                             "~/.cache/liquidgen/taesd)")
    parser.add_argument("--variant", default="taef2", help="TAESD variant (taesd, taesdxl, taesd3, taef1, taef2)")
    parser.add_argument("--dtype", default="float32", help="compute dtype: float32, float16 or bfloat16")
    parser.add_argument("--device", default="cpu", help="torch device to run on")
    parser.add_argument("--batch", type=int, default=100,
                        help="images per encode / decode call (only full batches are timed)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--mnist-limit", type=int, default=1000, help="first N MNIST test images")
    parser.add_argument("--cifar-limit", type=int, default=4000, help="first N CIFAR-10 training images")
    parser.add_argument("--cases", nargs="*", default=[f"{d}-{s}" for d, s in CASES],
                        help="subset of cases to run, as dataset-size (default: all four)")
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()

    ae = build_autoencoder("taesd", variant=args.variant, weights=args.weights, dtype=args.dtype).to(args.device)
    results = []
    for dataset, size in CASES:
        if f"{dataset}-{size}" not in args.cases:
            continue
        t0 = time.perf_counter()
        results.append(run_case(ae, dataset, size, args))
        r = results[-1]
        print(f"{dataset}-{size}: {r['psnr_db']:.2f} dB, {r['roundtrip_img_s']:.1f} img/s "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    device = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
              else f"CPU, {cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    meta = {"command": command, "date": started.strftime("%Y-%m-%d %H:%M UTC"), "device": device,
            "torch": torch.__version__, "variant": args.variant, "dtype": args.dtype, "batch": args.batch,
            "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "autoencoder": ae.spec()}
    (out / "results.json").write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    md = table(results, args.variant)
    mnist_gray = [f"{r['size']} px {r['psnr_gray_db']:.2f} dB" for r in results if "psnr_gray_db" in r]
    notes = [
        f"- **Command:** `{command}`",
        f"- **Device:** {device}; torch {torch.__version__}; {args.dtype}, batch {args.batch}. "
        f"1-minute load average before / after: {meta['load_average_1min'][0]} / {meta['load_average_1min'][1]} "
        "(the machine is shared, so throughput is indicative).",
        f"- **Date:** {meta['date']}",
        "- PSNR on [0, 1] pixels, per image then averaged; reference = the (resized) uint8 image; "
        "reconstruction = float decoder output.",
        "- Throughput: images per second of the fastest full batch (best-of, robust to other processes on "
        "the machine); the overall rates are in results.json.",
    ]
    if mnist_gray:
        notes.append("- MNIST PSNR compares the RGB reconstruction with the gray image on each channel; "
                     f"averaging the reconstruction's channels first gives {', '.join(mnist_gray)}.")
    (out / "results.md").write_text(f"# TAESD {args.variant} reconstruction and speed\n\n" + "\n".join(notes)
                                    + "\n\n" + md + "\n")
    print("\n" + md)


if __name__ == "__main__":
    main()
