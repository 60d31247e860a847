"""A peer recipe beside `liquidgen bench quality`: minRF's MNIST rectified flow (github:cloneofsimo/minRF,
rf.py + dit.py at commit 4fc10e0), trained for the same minutes of training steps on the same GPU and
scored with the same metric; its records go into the same quality.jsonl, so `liquidgen bench report`
puts it in the same tables.

    python benchmarks/peers/minrf_mnist.py --minrf .carry/peers/minRF --mnist-root .carry/data \
        --minutes 2 --classifier classifiers/mnist-28.safetensors --out benchmarks/results/<date>-bench-mnist

minRF's code is fetched into an ignored folder and imported from there, never copied. Its recipe, as
rf.py's __main__ writes it: DiT_Llama(1 channel, 32 px, dim 64, 6 layers, 4 heads, 10 classes with
10% label dropout), MNIST padded to 32 px and scaled to [-1, 1], Adam 5e-4, batch 256, fp32, logit-normal
t, no EMA; sampling with RF.sample (Euler, CFG 2). Only the data pipeline is liquidgen's (torchvision may
be absent): the same tensors as its ToTensor + Pad(2) + Normalize(0.5, 0.5). Samples are cropped back to
28 px for the reference classifier. As for liquidgen's runs, the budget counts training steps only, not
the first step (warm-up) or sampling.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from liquidgen.bench.quality import NFES, class_rows, record_key
from liquidgen.bench.records import append_record, environment, read_records
from liquidgen.bench.report import write_report
from liquidgen.data import load_dataset
from liquidgen.latent_space import to_float, to_uint8
from liquidgen.evaluation.evaluate import evaluate, load_reference
from liquidgen.plots import save_grid

ROOT = Path(__file__).resolve().parents[2]

NAME = "minRF (peer)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minrf", required=True, help="folder holding minRF's rf.py and dit.py")
    parser.add_argument("--mnist-root", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--minutes", type=float, required=True, help="training budget in minutes")
    parser.add_argument("--classifier", required=True, help="liquidgen reference classifier for MNIST 28 px")
    parser.add_argument("--out", required=True, help="the bench results folder (quality.jsonl)")
    parser.add_argument("--samples", type=int, default=2000, help="samples per score")
    parser.add_argument("--cfg", type=float, default=2.0, help="guidance scale (rf.py's default)")
    parser.add_argument("--cache", default="~/.cache/liquidgen/eval", help="reference feature cache")
    parser.add_argument("--device", default="cuda", help="minRF's code needs CUDA (it calls .cuda())")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.minrf).resolve()))
    from dit import DiT_Llama  # minRF's model
    from rf import RF  # minRF's loss and sampler

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "quality.jsonl"
    done = {r["key"] for r in read_records(path)}
    if all(record_key(NAME, args.minutes, "euler", n) in done for n in NFES):
        print("minRF: scored before, skipped")
        return
    device = torch.device(args.device)
    torch.manual_seed(0)
    data = load_dataset("mnist", args.mnist_root, split="train")
    images = F.pad(to_float(data.images), (2, 2, 2, 2), value=-1.0).to(device)  # Pad(2) pads black
    labels = data.labels.to(device)
    model = DiT_Llama(1, 32, dim=64, n_layers=6, n_heads=4, num_classes=10).to(device)
    rf = RF(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    batch, steps, seconds, first = 256, 0, 0.0, True
    loss = torch.zeros(())
    while seconds < 60 * args.minutes:
        for idx in torch.randperm(len(images), device=device).split(batch):
            if len(idx) < batch:  # drop_last=True
                continue
            t0 = time.perf_counter()
            optimizer.zero_grad()
            loss, _ = rf.forward(images[idx], labels[idx])
            loss.backward()
            optimizer.step()
            torch.cuda.synchronize(device)
            if not first:
                seconds += time.perf_counter() - t0
            first, steps = False, steps + 1
            if seconds >= 60 * args.minutes:
                break
    print(f"minRF: {steps} steps in {seconds:.0f} s of training, loss {loss.item():.4f}", flush=True)

    reference = load_reference("mnist", args.mnist_root, "test", None, None)
    model.eval()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(args.samples, 1, 32, 32, generator=g)
    y = torch.arange(args.samples) % 10
    summary = {"steps": steps, "train_seconds": seconds, "train_img_s": steps * batch / seconds,
               "loss": loss.item(), "params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    for nfe in NFES:
        key = record_key(NAME, args.minutes, "euler", nfe)
        if key in done:
            continue
        t0 = time.perf_counter()
        outs = []
        for zb, yb in zip(noise.split(500), y.split(500)):
            zb, yb = zb.to(device), yb.to(device)
            outs.append(rf.sample(zb, yb, torch.full_like(yb, 10), sample_steps=nfe, cfg=args.cfg)[-1].cpu())
        sample_seconds = time.perf_counter() - t0
        x = to_uint8(torch.cat(outs)[:, :, 2:30, 2:30].clamp(-1, 1))
        scores = evaluate(x, y, reference, f"mnist-{reference.size}px-{len(reference)}", classifier=args.classifier,
                          cache_dir=args.cache, device=device)
        record = {"key": key, "name": NAME, "backbone": "minRF DiT_Llama", "preset": "dim64-6x4", "options": {},
                  "config": "cloneofsimo/minRF rf.py @4fc10e0", "minutes": args.minutes, "sampler": "euler",
                  "nfe": nfe, "cfg": args.cfg, "samples": args.samples, "sample_seconds": sample_seconds,
                  **summary, **scores, **environment(device)}
        append_record(path, record)
        print(json.dumps(record), flush=True)
        if nfe == max(NFES):
            grid, nrow = class_rows(x, y)
            save_grid(grid, out / "samples-minRF.png", nrow=nrow)
    write_report(out)


if __name__ == "__main__":
    main()
