"""A peer recipe beside `liquidgen bench quality`: minRF's MNIST rectified flow (github:cloneofsimo/minRF,
rf.py + dit.py at commit 4fc10e0), trained for the same minutes of training steps on the same GPU and
scored with the same metric; its records go into the same quality.jsonl, so `liquidgen bench report`
puts it in the same tables.

    python benchmarks/peers/minrf_mnist.py --minrf .carry/peers/minRF --mnist-root .carry/data \
        --minutes 3.3333 --cfg 1 1.25 1.5 2 --nfe-at-best --out benchmarks/results/<date>-bench-mnist

minRF's code is fetched into an ignored folder and imported from there, never copied. Its recipe, as
rf.py's __main__ writes it: DiT_Llama(1 channel, 32 px, dim 64, 6 layers, 4 heads, 10 classes with
10% label dropout), MNIST padded to 32 px and scaled to [-1, 1], Adam 5e-4, batch 256, fp32, logit-normal
t, no EMA; sampling with RF.sample (Euler; rf.py guides at 2, here swept like liquidgen's contenders).
Only the data pipeline is liquidgen's (torchvision may be absent): the same tensors as its ToTensor +
Pad(2) + Normalize(0.5, 0.5). Samples are cropped back to 28 px and scored by the package's `Scorer`
(both reference networks), as `bench quality` scores. As for liquidgen's runs, the budget counts training
steps only, not the first step (warm-up) or sampling. The curve's points are copies of the weights taken
as the training clock passes each mark.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from liquidgen.bench.quality import NFES, QualityStudy, class_rows, record_key, score_in_order, score_plan
from liquidgen.bench.records import append_record, environment, read_records
from liquidgen.bench.report import write_report
from liquidgen.data import load_dataset
from liquidgen.evaluation.evaluate import Scorer
from liquidgen.latent_space import to_float, to_uint8
from liquidgen.plots import save_grid

NAME = "minRF (peer)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minrf", required=True, help="folder holding minRF's rf.py and dit.py")
    parser.add_argument("--mnist-root", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--minutes", type=float, required=True, help="training budget in minutes")
    parser.add_argument("--classifier", help="reference classifier .safetensors (default: the cached MNIST one, "
                        "with the second network beside it, as `bench quality` uses)")
    parser.add_argument("--out", required=True, help="the bench results folder (quality.jsonl)")
    parser.add_argument("--samples", type=int, default=10_000, help="samples per score at the full budget")
    parser.add_argument("--curve-every", type=float, default=0.25, help="score the weights at every this fraction "
                        "of the budget (the quality-vs-minutes curve)")
    parser.add_argument("--curve-nfe", type=int, default=50, help="NFE scored at the curve's points")
    parser.add_argument("--curve-samples", type=int, default=2000, help="samples per score on the curve")
    parser.add_argument("--cfg", type=float, nargs="+", default=[2.0], help="guidance scales (rf.py's: 2)")
    parser.add_argument("--nfe-at-best", action="store_true", help="as in `bench quality`: sweep the scales at "
                        "the top NFE, score the rest at the best of them")
    parser.add_argument("--cache", default="~/.cache/liquidgen/eval", help="reference feature and classifier cache")
    parser.add_argument("--device", default="cuda", help="minRF's code needs CUDA (it calls .cuda())")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.minrf).resolve()))
    from dit import DiT_Llama  # minRF's model
    from rf import RF  # minRF's loss and sampler

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "quality.jsonl"
    study = QualityStudy(config="", contenders=[], out=out, minutes=args.minutes, curve_every=args.curve_every,
                         curve_nfe=args.curve_nfe, samples=args.samples, curve_samples=args.curve_samples,
                         cfgs=tuple(args.cfg), nfe_at_best=args.nfe_at_best)
    marks = [round(args.minutes * args.curve_every * i, 6) for i in range(1, round(1 / args.curve_every) + 1)]
    steps = [("euler", n) for n in NFES]
    plan = score_plan(study, NAME, marks, steps, read_records(path))
    done = {r["key"] for r in read_records(path)}
    if plan is not None and all(record_key(NAME, m, *x) in done for m, todo in plan.items() for x in todo):
        print("minRF: scored before, skipped")
        return
    device = torch.device(args.device)
    scorer = Scorer("mnist", args.mnist_root, args.classifier, device, 28, cache_dir=args.cache)
    for n in sorted({args.samples, args.curve_samples}):
        if f"floor|{n}" not in done:
            append_record(path, {"key": f"floor|{n}", **scorer.floor(n), **environment(device)})

    torch.manual_seed(0)
    data = load_dataset("mnist", args.mnist_root, split="train")
    images = F.pad(to_float(data.images), (2, 2, 2, 2), value=-1.0).to(device)  # Pad(2) pads black
    labels = data.labels.to(device)
    model = DiT_Llama(1, 32, dim=64, n_layers=6, n_heads=4, num_classes=10).to(device)
    rf = RF(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    batch, step, seconds, first = 256, 0, 0.0, True
    loss = torch.zeros(())
    weights = {}  # mark -> (weights on the CPU, steps, seconds)
    while len(weights) < len(marks):
        for idx in torch.randperm(len(images), device=device).split(batch):
            if len(idx) < batch:  # drop_last=True
                continue
            t0 = time.perf_counter()
            optimizer.zero_grad()
            loss, _ = rf.forward(images[idx], labels[idx])
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if not first:
                seconds += time.perf_counter() - t0
            first, step = False, step + 1
            while len(weights) < len(marks) and seconds >= 60 * marks[len(weights)]:
                weights[marks[len(weights)]] = ({k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                                                step, seconds)
            if len(weights) == len(marks):
                break
    print(f"minRF: {step} steps in {seconds:.0f} s of training, loss {loss.item():.4f}", flush=True)
    model.eval()
    summary = {"steps": step, "train_seconds": seconds, "train_img_s": step * batch / seconds,
               "loss": loss.item(), "params_M": sum(p.numel() for p in model.parameters()) / 1e6}

    def score(mark: float, nfe: int, cfg: float) -> None:
        state, at_step, at_seconds = weights[mark]
        model.load_state_dict(state)
        n = args.samples if mark == marks[-1] else args.curve_samples
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(n, 1, 32, 32, generator=g)
        y = torch.arange(n) % 10
        t0 = time.perf_counter()
        outs = []
        with torch.no_grad():
            for zb, yb in zip(noise.split(500), y.split(500)):
                zb, yb = zb.to(device), yb.to(device)
                null = None if cfg == 1 else torch.full_like(yb, 10)  # cfg 1 is the conditional model alone
                outs.append(rf.sample(zb, yb, null, sample_steps=nfe, cfg=cfg)[-1].cpu())
        sample_seconds = time.perf_counter() - t0
        x = to_uint8(torch.cat(outs)[:, :, 2:30, 2:30].clamp(-1, 1))
        record = {"key": record_key(NAME, mark, "euler", nfe, cfg), "name": NAME, "backbone": "minRF DiT_Llama",
                  "preset": "dim64-6x4", "options": {}, "config": "cloneofsimo/minRF rf.py @4fc10e0",
                  "minutes": mark, "checkpoint_step": at_step, "checkpoint_train_seconds": at_seconds,
                  "sampler": "euler", "nfe": nfe, "cfg": cfg, "samples": n, "sample_seconds": sample_seconds,
                  **summary, **scorer(x, y), **environment(device)}
        append_record(path, record)
        print(json.dumps(record), flush=True)
        if mark == marks[-1] and nfe == max(NFES):
            grid, nrow = class_rows(x, y)
            save_grid(grid, out / f"samples-minRF{f'-cfg{cfg:g}' if len(args.cfg) > 1 else ''}.png", nrow=nrow)

    score_in_order(study, NAME, marks, steps, weights,
                   lambda mark, todo: [score(mark, nfe, cfg) for _, nfe, cfg in todo])
    write_report(out)


if __name__ == "__main__":
    main()
