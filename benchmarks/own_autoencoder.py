"""Your own autoencoder on one GPU: KL-VAE and VQ-VAE on MNIST and CIFAR-10, then a latent generator
trained on your own MNIST latents.

    python benchmarks/own_autoencoder.py --mnist-root .carry/data --cifar-root .carry/cifar10 --out $OUT

1. `train_autoencoder` with configs/{mnist,cifar10}-{kl,vq}-vae.yaml for --ae-steps steps each: held-out
   reconstruction PSNR (MNIST's test split, CIFAR's last 500 images), codebook usage and perplexity, and
   a grid of held-out originals above their reconstructions.
2. MNIST encoded by the KL-VAE (`precompute ... --autoencoder own`), LiquidGen-S trained on the 4x8x8
   latents with configs/mnist-liquid-S.yaml for --fm-steps steps; 1,000 samples decoded to 32 px pixels
   and scored by an offline reference classifier fitted on MNIST at 32 px (class accuracy = share of
   samples that show the digit they were asked for; classifier FD against the test split).
Writes results.json, results.md (printed last) and the grids into --out.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from liquidgen.config import load_config
from liquidgen.data import load_dataset, load_split
from liquidgen.evaluation.classifier import fit_classifier, save_classifier
from liquidgen.evaluation.evaluate import evaluate
from liquidgen.generate import Pipeline
from liquidgen.precompute import Request, precompute
from liquidgen.train import train
from liquidgen.train_autoencoder import AutoencoderConfig, train_autoencoder

ROOT = Path(__file__).resolve().parents[1]


def autoencoder(name: str, root: str, steps: int, runs: Path, out: Path, extra: list[str]) -> dict:
    dataset, kind = name.split("-")
    config = load_config(ROOT / "configs" / f"{dataset}-{kind}-vae.yaml",
                         [f"data.root={root}", f"train.steps={steps}", f"train.sample_every={steps}",
                          f"train.ckpt_every={steps}", *extra], cls=AutoencoderConfig)
    run = runs / name
    t0 = time.perf_counter()
    final = train_autoencoder(config, run, overwrite=True)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    shutil.copy(run / "samples" / f"step-{steps:06d}.png", out / f"{name}-reconstructions.png")
    speeds = [r["images_per_s"] for r in lines if "images_per_s" in r]
    return {"name": name, "run": str(final), "steps": steps, "wall_s": time.perf_counter() - t0,
            "train_img_s": statistics.median(speeds[2:] or speeds),
            "latent": f"{config.model.latent_channels}x{32 // 4}x{32 // 4}",
            **{k.removeprefix("heldout_"): v for k, v in lines[-1].items() if k.startswith("heldout_")}}


def latent_generator(kl_run: str, mnist_root: str, steps: int, runs: Path, out: Path, device: torch.device,
                     limit: int | None, extra: list[str]) -> dict:
    latents = runs / "mnist-kl-latents"
    t0 = time.perf_counter()
    precompute(Request("mnist", mnist_root, 32, limit=limit, autoencoder={"name": "own", "path": kl_run}), latents,
               device=device, batch_size=1024, progress=False)
    encode_s = time.perf_counter() - t0
    config = load_config(ROOT / "configs" / "mnist-liquid-S.yaml",
                         ["data.name=precomputed", f"data.root={latents}", f"train.steps={steps}",
                          "train.compile=true", f"train.sample_every={steps}", f"train.ckpt_every={steps}", *extra])
    run = runs / "mnist-liquid-S-own-latents"
    final = train(config, run, overwrite=True)
    shutil.copy(run / "samples" / f"step-{steps:06d}.png", out / "latent-liquid-S-samples.png")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_set = load_dataset("mnist", mnist_root, 32, limit=limit)
    test_set = load_split("mnist", mnist_root, 32, "test", limit)
    net, info = fit_classifier(train_set, test_set, device, progress=False)
    save_classifier(net, info, runs / "mnist-32-classifier.safetensors")
    images, labels = Pipeline.load(final, device=device).generate(1000, progress=False)
    scores = evaluate(images, labels, test_set, "mnist-test-32", classifier=runs / "mnist-32-classifier.safetensors",
                      cache_dir=runs / "cache", device=device)
    return {"name": "LiquidGen-S on own KL latents", "steps": steps, "encode_s": encode_s,
            "train_img_s": statistics.median(r["images_per_s"] for r in lines[2:] or lines),
            "final_loss": lines[-1]["loss"], "class_accuracy": scores.get("class_accuracy"),
            "classifier_fd": scores["classifier_fd"], "classifier_test_accuracy": info["test_accuracy"]}


def table(results: list[dict], generator: dict | None) -> str:
    rows = ["| autoencoder | latents | steps | train img/s | held-out PSNR dB | codebook usage | perplexity |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        usage = f"{r['codebook_usage']:.0%}" if "codebook_usage" in r else "-"
        perplexity = f"{r['codebook_perplexity']:.0f}" if "codebook_perplexity" in r else "-"
        rows.append(f"| {r['name']} | {r['latent']} | {r['steps']} | {r['train_img_s']:,.0f} | {r['psnr']:.2f} | "
                    f"{usage} | {perplexity} |")
    if generator:
        rows += ["", f"{generator['name']}, {generator['steps']} steps ({generator['train_img_s']:,.0f} img/s): "
                     f"class accuracy {generator['class_accuracy']:.3f} of 1,000 samples (the classifier: "
                     f"{generator['classifier_test_accuracy']:.3f} on real test digits), classifier FD "
                     f"{generator['classifier_fd']:.2f}"]
    return "\n".join(rows) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist-root", required=True, help="MNIST folder (torchvision layout or idx files)")
    p.add_argument("--cifar-root", help="CIFAR-10 folder (skip CIFAR without it)")
    p.add_argument("--ae-steps", type=int, default=2000, help="training steps per autoencoder")
    p.add_argument("--fm-steps", type=int, default=3000, help="training steps of the latent generator")
    p.add_argument("--which", nargs="+", default=["mnist-kl", "mnist-vq", "cifar10-kl", "cifar10-vq"],
                   help="autoencoders to train (dataset-kind)")
    p.add_argument("--limit", type=int, help="use only the first N images of each dataset (a quick check)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides for the latent generator's config (e.g. train.compile=false)")
    p.add_argument("--runs", default="/tmp/own-autoencoder-runs", help="where the run folders go")
    p.add_argument("--out", required=True, help="folder for results and grids")
    args = p.parse_args()
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results, generator = [], None
    for name in args.which:
        root = args.mnist_root if name.startswith("mnist") else args.cifar_root
        if root:
            limit = [f"data.limit={args.limit}"] if args.limit else []
            results.append(autoencoder(name, root, args.ae_steps, runs, out, limit))
            (out / "results.json").write_text(json.dumps({"autoencoders": results}, indent=1))
    kl = next((r for r in results if r["name"] == "mnist-kl"), None)
    if kl and args.fm_steps:
        generator = latent_generator(kl["run"], args.mnist_root, args.fm_steps, runs, out, device, args.limit,
                                     args.set)
    (out / "results.json").write_text(json.dumps({"autoencoders": results, "generator": generator,
                                                  "device": torch.cuda.get_device_name() if device.type == "cuda"
                                                  else "cpu", "torch": torch.__version__}, indent=1))
    text = table(results, generator)
    (out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
