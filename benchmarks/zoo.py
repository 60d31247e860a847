"""Backbone zoo on MNIST, one GPU: train each backbone with the same recipe, then measure speed,
memory and sample quality; for fixed-point models also the residual / quality / iteration trade-off.

    python benchmarks/zoo.py --mnist-root .carry/data --out $OUT liquid-S dit-S unet fp-dit-S

Quality is measured offline with a small MNIST classifier trained here with a fixed recipe and seed
(no Inception weights exist offline): `acc` is the fraction of class-conditional samples it assigns
to their class, `fd` the Frechet distance between its 128-d features of the samples and of the 10k
MNIST test images (lower is better; like FID, but in this classifier's feature space, and with
1,000 samples, so only comparable within this table).
Writes <name>.json, <name>-samples.png and <name>-metrics.jsonl per backbone into --out, and prints
a table last.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from liquidgen import checkpoint as ckpt_io  # noqa: E402
from liquidgen.config import load_config  # noqa: E402
from liquidgen.data import load_dataset, to_float  # noqa: E402
from liquidgen.plots import save_grid  # noqa: E402
from liquidgen.samplers import sample  # noqa: E402
from liquidgen.train import train  # noqa: E402

CONFIGS = {"liquid-S": "mnist-liquid-S.yaml", "dit-S": "mnist-dit-S.yaml", "unet": "mnist-unet.yaml",
           "fp-dit-S": "mnist-fixed-point-dit-S.yaml"}


class Probe(nn.Module):
    """A small MNIST classifier whose penultimate layer is the feature space for `fd`."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 64, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.GELU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(128 * 7 * 7, 128), nn.GELU())
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        f = self.body(x)
        return self.head(f), f


def fit_probe(root: str, device, limit: int | None) -> Probe:
    torch.manual_seed(0)
    data = load_dataset("mnist", root, split="train", limit=limit)
    x, y = to_float(data.images).to(device), data.labels.to(device)
    probe = Probe().to(device)
    opt = torch.optim.Adam(probe.parameters(), 1e-3)
    for epoch in range(2):
        for idx in torch.randperm(len(x), device=device).split(256):
            loss = F.cross_entropy(probe(x[idx])[0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe.eval()


@torch.no_grad()
def features(probe: Probe, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits, feats = zip(*(probe(b) for b in images.split(1000)))
    return torch.cat(logits).argmax(1), torch.cat(feats).double()


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(Ca + Cb - 2 (Ca Cb)^(1/2)), via the eigenvalues of Ca Cb."""
    mu = (a.mean(0) - b.mean(0)).square().sum()
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    sqrt_trace = torch.linalg.eigvals(ca @ cb).real.clamp_min(0).sqrt().sum()
    return float(mu + ca.trace() + cb.trace() - 2 * sqrt_trace)


class Judge:
    def __init__(self, root: str, device, limit: int | None = None):
        self.probe = fit_probe(root, device, limit)
        test = load_dataset("mnist", root, split="test", limit=limit)
        pred, self.ref = features(self.probe, to_float(test.images).to(device))
        self.probe_acc = float((pred.cpu() == test.labels).float().mean())

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        pred, feats = features(self.probe, images.clamp(-1, 1).float())
        return {"acc": float((pred == labels).float().mean()), "fd": frechet(feats, self.ref)}


def generate(model, n_per_class: int, steps: int, cfg: float, device, seed: int = 0, state=None,
             prediction: str = "v", sampler: str = "euler", grid: str | None = None):
    """Class-conditional samples, `n_per_class` per class, in batches of 500 (the state restarts per
    batch); with `state`, also the residuals and iteration counts of every call."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(10, device=device).repeat_interleave(n_per_class)
    noise = torch.randn(len(y), 1, 28, 28, generator=g).to(device)
    out, residuals, used = [], [], []
    with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
        for nb, yb in zip(noise.split(500), y.split(500)):
            out.append(sample(model, prediction, nb, yb, steps=steps, cfg=cfg, state=state, sampler=sampler,
                              grid=grid))
            if state is not None:
                residuals += state.residuals
                used = state.used
    result = torch.cat(out).float(), y
    return (*result, (residuals, used)) if state is not None else result


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fixed_point_study(model, judge, device, per_class: int) -> dict:
    """Residual and quality against iterations per step, with and without reuse; budget schedules."""
    rows = []
    for reuse in (False, True):
        for iters in (1, 2, 3, 4, 6, 8, 10, 14):
            state = model.sampling_state()
            state.iters, state.reuse, state.budget = iters, reuse, None
            sync(device)
            t0 = time.perf_counter()
            x, y, (res, used) = generate(model, per_class, 20, 2.0, device, state=state)
            sync(device)
            rows.append({"reuse": reuse, "iters": iters, "residual": statistics.mean(res),
                         "seconds": time.perf_counter() - t0, **judge(x, y)})
    schedules = []
    for schedule in ("constant", "increasing", "decreasing"):
        state = model.sampling_state()
        state.budget, state.schedule, state.reuse = 60, schedule, True
        x, y, (res, used) = generate(model, per_class, 20, 2.0, device, state=state)
        schedules.append({"schedule": schedule, "budget": 60, "plan": used, "residual": statistics.mean(res),
                          **judge(x, y)})
    return {"steps": 20, "cfg": 2.0, "samples": 10 * per_class, "iterations": rows, "budget": schedules}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=sorted(CONFIGS), help="backbones to run")
    parser.add_argument("--mnist-root", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--out", required=True, help="where results go")
    parser.add_argument("--runs", default="/tmp/zoo-runs", help="scratch folder for run folders")
    parser.add_argument("--steps", type=int, default=2000, help="training steps per backbone")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--no-compile", action="store_true", help="train eagerly")
    parser.add_argument("--per-class", type=int, default=100, help="samples per class for the metrics")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--limit", type=int, help="use only this many MNIST images (smoke tests)")
    args = parser.parse_args()
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("torch", torch.__version__, torch.cuda.get_device_name() if device.type == "cuda" else "cpu", flush=True)
    t0 = time.perf_counter()
    judge = Judge(args.mnist_root, device, args.limit)
    print(f"probe classifier: test accuracy {judge.probe_acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    results = []
    for name in args.names:
        run = Path(args.runs) / name
        config = load_config(ROOT / "configs" / CONFIGS[name], [
            f"data.root={args.mnist_root}", f"train.steps={args.steps}", f"train.batch_size={args.batch}",
            f"train.compile={not args.no_compile}", "train.log_every=100", "train.sample_every=0",
            "train.ckpt_every=0", "train.keep_checkpoints=1", f"train.device={args.device}",
            *([f"data.limit={args.limit}"] if args.limit else [])])
        t0 = time.perf_counter()
        final = train(config, run)
        wall = time.perf_counter() - t0
        log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        model, _, _ = ckpt_io.load_model(final, ema=True, device=device)
        sync(device)
        t0 = time.perf_counter()
        x, y = generate(model, args.per_class, 50, 2.0, device)
        sync(device)
        sample_s = time.perf_counter() - t0
        shown = min(10, args.per_class)  # a grid of one row per class
        grid = torch.arange(10).repeat_interleave(shown) * args.per_class + torch.arange(shown).repeat(10)
        save_grid(x[grid].cpu(), out / f"{name}-samples.png", nrow=shown)
        result = {
            "name": name, "config": CONFIGS[name], "steps": args.steps, "batch": args.batch,
            "compile": not args.no_compile, "params_M": model.num_params() / 1e6,
            # steady state: the median logged window after the first two (compilation, warm-up)
            "train_img_s": statistics.median(r["images_per_s"] for r in log[2:] or log),
            "peak_gb": max(r.get("max_memory_gb", 0) for r in log), "final_loss": log[-1]["loss"],
            "train_wall_s": wall, "samples": len(x), "sample_s_50_steps": sample_s, **judge(x, y),
        }
        if name.startswith("fp-"):
            result["fixed_point"] = fixed_point_study(model, judge, device, args.per_class)
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
        (out / f"{name}-metrics.jsonl").write_text((run / "metrics.jsonl").read_text())
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "fixed_point"}), flush=True)
        del model

    for r in results:
        for row in r.get("fixed_point", {}).get("iterations", []):
            print(f"  {r['name']} reuse={row['reuse']!s:<5} iters={row['iters']:>2}  residual {row['residual']:.3e}"
                  f"  acc {row['acc']:.3f}  fd {row['fd']:7.2f}  {row['seconds']:.1f}s")
        for row in r.get("fixed_point", {}).get("budget", []):
            print(f"  {r['name']} budget {row['budget']} {row['schedule']:<10} residual {row['residual']:.3e}"
                  f"  acc {row['acc']:.3f}  fd {row['fd']:7.2f}  plan {row['plan']}")
    print(f"\n{'backbone':<10} {'params':>8} {'img/s':>7} {'peak GB':>8} {'loss':>7} {'acc':>6} {'fd':>7} "
          f"{'train s':>8} {'sample s':>8}")
    for r in results:
        print(f"{r['name']:<10} {r['params_M']:>7.1f}M {r['train_img_s']:>7.0f} {r['peak_gb']:>8.2f} "
              f"{r['final_loss']:>7.4f} {r['acc']:>6.3f} {r['fd']:>7.2f} {r['train_wall_s']:>8.0f} "
              f"{r['sample_s_50_steps']:>8.1f}")


if __name__ == "__main__":
    main()
