"""A CPU-sized screen of how captions condition a text-to-image LiquidGen (issue 22), before a GPU call is spent:
does the model draw the prompted emoji, and which path of the pooled caption embedding into the network learns
that soonest? On the H200 (emoji_study.py, 4.5 minutes, about 93 epochs of 7,150 captions) LiquidGen-S drew the
right kind of emoji but rarely the prompted one (seen-prompt top-5 0.045 against the real images' 0.956).

    python benchmarks/emoji_conditioning_screen.py --emoji data/emoji --out /tmp/screen
    python benchmarks/emoji_conditioning_screen.py ... --variants linear mlp      # a subset of VARIANTS

A seeded pick of --captions training captions (every caption is a distinct image), downsized to --size, is trained
into a tiny LiquidGen (0.4M parameters, patch 4) for --minutes per variant, with a checkpoint every --ckpt-minutes.
Each checkpoint draws one sample per caption at each --cfg and is scored two ways:
- identity: the rank of the prompted image among the subset's images by pixel distance to the sample (top-1 /
  top-5 among --captions): whether the model draws *that* emoji, with no learned judge;
- prompt retrieval by the study's prompt matcher (--matcher; samples upsampled to its 64 px), among every caption
  it knows, as the study reports it (real images at half resolution: top-5 0.80).
Variants: the caption embedding into the conditioning vector through one linear map (the shipped configs), through
an MLP (`model.options.context_mlp`), through the linear map after z-scoring each embedding feature over the
captions (zscore: at initialisation the pooled MiniLM embeddings of different captions move LiquidGen-XS's
conditioning vector 0.25 apart, a class embedding about 11, z-scored ones 6), and an oracle that gives each caption
its own class embedding: what the network learns in the budget when the condition is perfectly separable. A screen,
not a result.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from liquidgen.bench.budget import budgeted_config, train_to_budget
from liquidgen.bench.records import append_record, read_records
from liquidgen.checkpoint import checkpoint_step, list_checkpoints
from liquidgen.data import load_precomputed
from liquidgen.evaluation.retrieval import load_matcher, wilson
from liquidgen.generate import Pipeline
from liquidgen.latent_space import to_uint8
from liquidgen.plots import save_grid

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.preset=tiny", "model.options.patch_size=4", "optim.lr=5e-4", "optim.warmup_steps=100",
         "train.ema_decay=0.995"]
VARIANTS = {"linear": ("text", []), "mlp": ("text", ["model.options.context_mlp=true"]),
            "zscore": ("zscore", []), "oracle": ("oracle", ["data.labels=true"])}


def make_subsets(emoji: Path, out: Path, n: int, size: int, seed: int) -> dict[str, Path]:
    """Two precomputed datasets of the same seeded pick of n training captions: "text" (category labels, MiniLM
    captions) and "oracle" (class k = the text dataset's caption k, no text); their image folders link to
    `emoji`'s files."""
    rows = [json.loads(line) for line in (emoji / "train/metadata.jsonl").read_text().splitlines()]
    rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n))]
    roots = {kind: out / f"subset-{kind}-{size}" for kind in ("text", "oracle")}
    folder = out / "subset-text"
    for row in rows:
        link(emoji / "train" / row["file_name"], folder / row["file_name"])
    (folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": r["file_name"], "text": r["text"]}) + "\n"
                                                   for r in rows))
    precompute(folder, roots["text"], size, "--text-encoder", "minilm")
    # the folder source orders images by its own rule: the oracle's classes follow the text dataset's order
    file_of = {r["text"]: r["file_name"] for r in rows}
    for k, caption in enumerate(load_precomputed(roots["text"]).captions):
        link(emoji / "train" / file_of[caption], out / "subset-oracle" / f"{k:04d}" / Path(file_of[caption]).name)
    precompute(out / "subset-oracle", roots["oracle"], size)
    roots["zscore"] = standardized(roots["text"], out / f"subset-zscore-{size}")
    return roots


def standardized(root: Path, out: Path) -> Path:
    """A copy of the precomputed `root` whose caption embeddings are z-scored per feature over its captions."""
    if not out.is_dir():
        shutil.copytree(root, out)
        files = sorted(out.glob("shard-*.context.npy"))
        context = np.concatenate([np.load(f).astype(np.float32) for f in files])
        mean, std = context.mean(0), context.std(0) + 1e-3  # a few features are constant over a small pick
        for f in files:
            np.save(f, ((np.load(f).astype(np.float32) - mean) / std).astype(np.float16))
    return out


def link(target: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.symlink_to(target.resolve())


def precompute(folder: Path, data: Path, size: int, *options: str) -> None:
    if not (data / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "liquidgen.cli", "precompute", "folder", "--root", str(folder),
                        "--size", str(size), "--out", str(data), *options], check=True)


def identity_ranks(samples: Tensor, images: Tensor, truth: Tensor) -> Tensor:
    """Rank (0 = nearest) of each sample's prompted image among `images`, by pixel distance."""
    d = torch.cdist(samples.flatten(1).float(), images.flatten(1).float())
    return (d < d[torch.arange(len(samples)), truth][:, None]).sum(1)


def score(run: Path, name: str, tag: str, text, conditions: dict, matcher, args, out: Path) -> None:
    """Score each checkpoint of `run` (variant `name`; `tag` names it in records and grids: the variant and a
    training seed other than 0)."""
    path = out / "screen.jsonl"
    done = {r["key"] for r in read_records(path)}
    captions = text.captions
    for ckpt in list_checkpoints(run):
        step = checkpoint_step(ckpt)
        pipe = None
        for cfg in args.cfg:
            key = f"{tag}|step{step}|cfg{cfg:g}"
            if key in done:
                continue
            pipe = pipe or Pipeline.load(ckpt, device="cpu")
            n = len(captions)
            cond = ({"labels": torch.arange(n)} if name == "oracle" else {"context": conditions[name].context.float()})
            labels = cond.pop("labels", None)
            x = pipe.sample(pipe.noise(n, seed=0), labels, pipe.settings.with_(cfg=cfg, steps=args.steps),
                            batch_size=256, **cond)
            images = to_uint8(pipe.decode(x)).cpu()
            ranks = identity_ranks(images, text.images, torch.arange(n))
            big = F.interpolate(images.float(), size=64, mode="bilinear", antialias=False).round().clamp(0, 255)
            record = {"key": key, "variant": name, "train_seed": args.train_seed, "step": step,
                      "epochs": step * args.batch / n, "cfg": cfg,
                      "captions": n, "identity_top1": float((ranks < 1).float().mean()),
                      "identity_top1_ci95": wilson(ranks < 1), "identity_top5": float((ranks < 5).float().mean()),
                      **matcher.retrieval(big.to(torch.uint8), captions)}
            append_record(path, record)
            print(f"{key}: identity top-1 {record['identity_top1']:.3f} top-5 {record['identity_top5']:.3f}  "
                  f"prompt top-5 {record['prompt_top5']:.3f}", flush=True)
            shown = 16
            pairs = torch.stack([text.images[:shown], images[:shown]], 1).flatten(0, 1)
            save_grid(pairs.float() / 127.5 - 1, out / f"grid-{tag}-cfg{cfg:g}.png", nrow=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emoji", required=True, help="`liquidgen data emoji`'s folder (train/ with metadata.jsonl)")
    parser.add_argument("--matcher", required=True, help="the study's prompt-matcher safetensors")
    parser.add_argument("--out", required=True, help="subsets, runs, screen.jsonl and grids")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="variants")
    parser.add_argument("--captions", type=int, default=256, help="training captions (images) in the subset")
    parser.add_argument("--size", type=int, default=32, help="image size")
    parser.add_argument("--minutes", type=float, default=15.0, help="training minutes per variant")
    parser.add_argument("--ckpt-minutes", type=float, default=5.0, help="a scored checkpoint every this many")
    parser.add_argument("--batch", type=int, default=32, help="training batch")
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0], help="guidance scales")
    parser.add_argument("--steps", type=int, default=20, help="Euler steps per sample")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (run variants side by side)")
    parser.add_argument("--seed", type=int, default=0, help="the subset's pick")
    parser.add_argument("--train-seed", type=int, default=0, help="the runs' seed (initial weights, batch order)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    roots = make_subsets(Path(args.emoji), out, args.captions, args.size, args.seed)
    text = load_precomputed(roots["text"])
    conditions = {name: load_precomputed(roots[kind]) for name, (kind, _) in VARIANTS.items() if kind != "oracle"}
    matcher = load_matcher(args.matcher)
    for name in args.variants:
        kind, overrides = VARIANTS[name]
        config = budgeted_config(ROOT / "configs/emoji-liquid-S-text.yaml", args.minutes, "cpu",
                                 [f"data.root={roots[kind]}", *SMALL, f"train.batch_size={args.batch}",
                                  f"train.seed={args.train_seed}", *overrides],
                                 compiled=False, keep_checkpoints=0, ckpt_minutes=args.ckpt_minutes)
        tag = f"{name}-seed{args.train_seed}" if args.train_seed else name
        run = out / f"run-{tag}"
        train_to_budget(config, run)
        score(run, name, tag, text, conditions, matcher, args, out)


if __name__ == "__main__":
    main()
