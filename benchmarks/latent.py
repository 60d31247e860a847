"""Latent space and text conditioning on one GPU (issue 5's measurements).

    # CIFAR-10 (4,000 images): taef2 latents (64 px -> 8x8x32) vs pixels (32 px), same backbone and budget
    python benchmarks/latent.py cifar --cifar-root .carry/cifar10 --taesd .carry/taesd --out $OUT
    # MNIST text-to-image: follow prompts such as "a handwritten seven"
    python benchmarks/latent.py embed-prompts --out .carry/prompts.npz            # on a machine with MiniLM
    python benchmarks/latent.py mnist-text --data .carry/mnist-text --prompts .carry/prompts.npz \
        --mnist-root .carry/data --out $OUT

`mnist-text` needs the precomputed MNIST captions (`liquidgen precompute mnist ... --text-encoder minilm`,
see configs/mnist-text-liquid-S.yaml) and the prompts' MiniLM embeddings, both made where MiniLM is
installed, so the GPU machine needs neither. Prompt-following is judged by liquidgen's reference MNIST
classifier (--classifier, fitted there if missing; offline, not an Inception metric): `class_accuracy` is the
fraction of samples for "... seven" it reads as 7. Before 2026-12-02 a private probe classifier judged
(`acc` / `fd`), so older records are not comparable.
Each command prints a table last and writes JSON and grids into --out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from liquidgen.config import load_config
from liquidgen.evaluation.evaluate import Scorer
from liquidgen.generate import Pipeline
from liquidgen.latent_space import to_uint8
from liquidgen.plots import save_grid
from liquidgen.precompute import Request, precompute
from liquidgen.train import train

ROOT = Path(__file__).resolve().parents[1]

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TRAIN_TEMPLATES = ["a handwritten {}", "the digit {}", "a picture of the number {}"]
# Prompts never seen in training: a new phrasing, and numerals instead of words.
EVAL_PROMPTS = {"seen: a handwritten {word}": "a handwritten {word}",
                "unseen: an image showing {word}": "an image showing {word}",
                "unseen: a handwritten {digit}": "a handwritten {digit}"}


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_and_measure(config_path: Path, overrides: list[str], run: Path) -> tuple[dict, Path]:
    config = load_config(config_path, overrides)
    t0 = time.perf_counter()
    final = train(config, run, overwrite=True)
    wall = time.perf_counter() - t0
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"train_img_s": statistics.median(r["images_per_s"] for r in log[2:] or log),
            "peak_gb": max(r.get("max_memory_gb", 0) for r in log), "final_loss": log[-1]["loss"],
            "train_wall_s": wall}, final


def common(args) -> list[str]:
    return [f"train.steps={args.steps}", f"train.batch_size={args.batch}", f"train.compile={not args.no_compile}",
            "train.log_every=100", "train.sample_every=0", "train.ckpt_every=0", "train.keep_checkpoints=1",
            f"train.device={args.device}"]


def cmd_cifar(args) -> None:
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    latents = Path(args.runs) / "cifar10-taef2-64"
    t0 = time.perf_counter()
    req = Request("cifar10", args.cifar_root, 64, autoencoder={"name": "taesd", "variant": "taef2",
                                                                 "weights": args.taesd})
    precompute(req, latents, device=device, batch_size=256, progress=False)
    sync(device)
    precompute_s = time.perf_counter() - t0
    results = []
    for name, config, extra in (
            ("pixels 32px", "cifar10-liquid-S.yaml", [f"data.root={args.cifar_root}"]),
            ("taef2 latents 64px", "cifar10-liquid-S-latent.yaml", [f"data.root={latents}"])):
        run = Path(args.runs) / name.split()[0]
        result, final = train_and_measure(ROOT / "configs" / config, common(args) + extra, run)
        pipe = Pipeline.load(final, device=device)
        y = torch.arange(10).repeat_interleave(10)
        sync(device)
        t0 = time.perf_counter()
        images = pipe.decode(pipe.sample(pipe.noise(len(y), seed=0), y,
                                         pipe.settings.with_(steps=args.sample_steps, cfg=3.0)))
        sync(device)
        c, size, _ = pipe.spec.shape
        result.update(name=name, config=config, tokens=(size // pipe.model.patch_size) ** 2,
                      model_input=f"{c}x{size}x{size}", image=f"{images.shape[-1]}px",
                      params_M=pipe.model.num_params() / 1e6,
                      sample_100_s=time.perf_counter() - t0, sample_steps=args.sample_steps)
        slug = name.split()[0]
        save_grid(images.cpu(), out / f"cifar10-{slug}-samples.png", nrow=10)
        (out / f"cifar10-{slug}-metrics.jsonl").write_text((run / "metrics.jsonl").read_text())
        results.append(result)
        print(json.dumps(result), flush=True)
    summary = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "steps": args.steps, "batch": args.batch,
               "precompute_4000_images_s": precompute_s, "results": results}
    (out / "cifar10.json").write_text(json.dumps(summary, indent=1))
    print(f"\nprecompute: 4,000 CIFAR-10 images -> taef2 latents in {precompute_s:.1f} s (incl. loading)")
    print(f"{'space':<20} {'input':<9} {'tokens':>6} {'img/s':>7} {'peak GB':>8} {'loss':>7} {'train s':>8} "
          f"{'sample 100 s':>12}")
    for r in results:
        print(f"{r['name']:<20} {r['model_input']:<9} {r['tokens']:>6} {r['train_img_s']:>7.0f} {r['peak_gb']:>8.2f} "
              f"{r['final_loss']:>7.4f} {r['train_wall_s']:>8.0f} {r['sample_100_s']:>12.1f}")


def cmd_embed_prompts(args) -> None:
    from liquidgen.text import build_text_encoder

    encoder = build_text_encoder("minilm")
    prompts = {key: [template.format(word=w, digit=d) for d, w in enumerate(WORDS)]
               for key, template in EVAL_PROMPTS.items()}
    arrays = {f"emb{i}": encoder.encode(p).pooled.numpy() for i, p in enumerate(prompts.values())}
    np.savez(args.out, keys=np.array(list(prompts)), prompts=np.array(sum(prompts.values(), [])), **arrays)
    print(f"wrote {args.out}: {sum(map(len, prompts.values()))} prompts")


def cmd_mnist_text(args) -> None:
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scorer = Scorer("mnist", args.mnist_root, args.classifier, device)
    run = Path(args.runs) / "mnist-text"
    result, final = train_and_measure(ROOT / "configs" / "mnist-text-liquid-S.yaml",
                                      common(args) + [f"data.root={args.data}"], run)
    pipe = Pipeline.load(final, device=device)
    saved = np.load(args.prompts)
    rows = []
    for i, key in enumerate(saved["keys"].tolist()):
        context = torch.from_numpy(saved[f"emb{i}"])  # (10, 384), one prompt per digit
        y = torch.arange(10).repeat_interleave(args.per_prompt)  # the digit each prompt names
        for cfg in args.cfg:
            settings = pipe.settings.with_(steps=args.sample_steps, cfg=cfg)
            x = pipe.decode(pipe.sample(pipe.noise(len(y), seed=0), None, settings, batch_size=500,
                                        context=context[y]))
            scores = scorer(to_uint8(x).cpu(), y)
            rows.append({"prompts": key, "cfg": cfg, "class_accuracy": scores["class_accuracy"],
                         "classifier_fd": scores["classifier_fd"]})
            print(json.dumps(rows[-1]), flush=True)
            if cfg == args.cfg[-1]:
                k = min(10, args.per_prompt)
                shown = torch.arange(10).repeat_interleave(k) * args.per_prompt + torch.arange(k).repeat(10)
                slug = key.split(":")[0] + "-" + str(i)
                save_grid(x[shown].cpu(), out / f"mnist-text-{slug}.png", nrow=k)
    result.update(params_M=pipe.model.num_params() / 1e6, prompts=rows, classifier=str(scorer.classifier),
                  device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", steps=args.steps,
                  batch=args.batch)
    (out / "mnist-text.json").write_text(json.dumps(result, indent=1))
    (out / "mnist-text-metrics.jsonl").write_text((run / "metrics.jsonl").read_text())
    print(f"\ntrain: {result['train_img_s']:.0f} img/s, peak {result['peak_gb']:.2f} GB, "
          f"{result['train_wall_s']:.0f} s for {args.steps} steps at batch {args.batch}")
    print(f"{'prompts':<34} {'cfg':>4} {'acc':>6} {'classifier FD':>13}")
    for r in rows:
        print(f"{r['prompts']:<34} {r['cfg']:>4.1f} {r['class_accuracy']:>6.3f} {r['classifier_fd']:>13.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("cifar", cmd_cifar), ("mnist-text", cmd_mnist_text), ("embed-prompts", cmd_embed_prompts)):
        p = sub.add_parser(name, help=func.__doc__ or name)
        p.set_defaults(func=func)
        p.add_argument("--out", required=True, help="results folder (embed-prompts: the .npz to write)")
        if name == "embed-prompts":
            continue
        p.add_argument("--runs", default="/tmp/latent-runs", help="scratch folder for runs and latents")
        p.add_argument("--steps", type=int, default=2000, help="training steps")
        p.add_argument("--batch", type=int, default=128, help="batch size")
        p.add_argument("--no-compile", action="store_true", help="train eagerly")
        p.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
        p.add_argument("--sample-steps", type=int, default=50, help="Euler steps per sample")
    p = sub.choices["cifar"]
    p.add_argument("--cifar-root", required=True, help="folder with CIFAR-10 (binary batches or WebP tiles)")
    p.add_argument("--taesd", required=True, help="folder with taef2_encoder.pth and taef2_decoder.pth")
    p = sub.choices["mnist-text"]
    p.add_argument("--data", required=True, help="precomputed MNIST with MiniLM caption embeddings")
    p.add_argument("--prompts", required=True, help="the .npz written by embed-prompts")
    p.add_argument("--mnist-root", required=True, help="folder holding MNIST/raw (for the reference classifier)")
    p.add_argument("--classifier", default="classifiers/mnist-28.safetensors",
                   help="reference MNIST classifier (.safetensors); fitted there first if missing")
    p.add_argument("--per-prompt", type=int, default=100, help="samples per prompt")
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 2.0], help="guidance scales to evaluate")
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
