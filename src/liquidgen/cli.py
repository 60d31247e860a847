"""The `liquidgen` command: train, sample, models."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from .samplers import GRIDS, SAMPLERS


def cmd_train(args) -> None:
    from .config import load_config
    from .train import train

    config = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    final = train(config, out, resume=args.resume)
    print(f"done: {final}\nsample with: liquidgen sample {out}")


def parse_labels(values: list[str] | None, class_names: list[str]) -> list[int] | None:
    """Labels given as indices or class names."""
    if not values:
        return None
    labels = []
    for v in values:
        if v.lstrip("-").isdigit():
            labels.append(int(v))
        elif v in class_names:
            labels.append(class_names.index(v))
        else:
            raise SystemExit(f"error: label {v!r} is neither an index nor one of {class_names}")
    bad = [l for l in labels if not 0 <= l < len(class_names)]
    if bad:
        raise SystemExit(f"error: label {bad[0]} out of range: this model has {len(class_names)} classes "
                         f"(0..{len(class_names) - 1})")
    return labels


def cmd_sample(args) -> None:
    from .checkpoint import load_model
    from .objectives import build_objective
    from .plots import save_grid
    from .samplers import sample
    from .train import autocast, grid_labels, pick_device

    device = pick_device(args.device)
    model, config, spec = load_model(args.checkpoint, ema=not args.no_ema, device=device)
    objective = build_objective(config.objective.name, **config.objective.options)
    steps = args.steps or config.sample.steps
    cfg = config.sample.cfg if args.cfg is None else args.cfg
    names = spec["class_names"]
    labels = parse_labels(args.labels, names)
    if model.num_classes == 0:
        if labels:
            raise SystemExit("error: this model is unconditional; --labels does not apply")
        n = args.n or 64
        y, nrow = grid_labels(0, 0, n, device)
    elif labels is None:  # a class grid: one row per class
        per_class = max(1, (args.n or 8 * len(names)) // len(names))
        y, nrow = grid_labels(len(names), per_class, 0, device)
        n = len(y)
    else:
        n = args.n or 8 * len(labels)
        y = torch.tensor(labels, device=device).repeat(n // len(labels) + 1)[:n]
        nrow = None
    state = fixed_point_state(model, args)
    g = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(n, spec["in_channels"], spec["input_size"], spec["input_size"], generator=g).to(device)
    with autocast(device, config.train.precision):
        x = sample(model, objective.prediction, noise, y, steps, cfg, args.sampler or config.sample.sampler,
                   progress=True, state=state, grid=args.grid or config.sample.grid or None,
                   cfg_interval=tuple(args.cfg_interval) if args.cfg_interval else None)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        from .data import to_uint8

        images = to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()
        labels_out = (y.cpu().numpy() if y is not None else np.zeros(n)).astype(np.int64)
        np.savez(out, images=images, labels=labels_out, class_names=np.array(names, dtype=str))
    else:
        save_grid(x, out, nrow=nrow)
    print(f"wrote {n} samples ({steps} steps, cfg {cfg}) to {out}")
    if state is not None:
        r = state.residuals
        print(f"fixed point: {sum(state.used)} iterations over {len(state.used)} calls ({state.used[0]} first, "
              f"{state.used[-1]} last); relative residual ||z_k+1 - z_k|| / ||z_k|| mean {sum(r) / len(r):.2e}, "
              f"max {max(r):.2e}")


def fixed_point_state(model, args):
    """The per-batch solver state of a fixed-point model, with the command line's overrides."""
    flags = {"--iters": args.iters, "--budget": args.budget, "--schedule": args.schedule,
             "--no-reuse": args.no_reuse or None}
    if not hasattr(model, "sampling_state"):
        given = [k for k, v in flags.items() if v is not None]
        if given:
            raise SystemExit(f"error: {given[0]} applies to fixed-point models only")
        return None
    state = model.sampling_state()
    state.iters = args.iters or state.iters
    state.budget = args.budget or state.budget
    state.schedule = args.schedule or state.schedule
    state.reuse = state.reuse and not args.no_reuse
    return state


def cmd_models(args) -> None:
    from .flops import forward_flops
    from .models import BACKBONES, build_model

    print(f"{'backbone':<12} {'preset':<12} {'input':<9} {'classes':>7} {'params':>9} {'GFLOPs':>8}")
    for name, (_, presets, native) in BACKBONES.items():
        for preset in presets:
            channels, size, classes = native[preset]
            channels, size = args.channels or channels, args.size or size
            classes = classes if args.classes is None else args.classes
            with torch.device("meta"):  # count parameters and FLOPs without allocating anything
                model = build_model(name, preset, channels, size, classes)
                flops = forward_flops(model, channels, size, classes)
            print(f"{name:<12} {preset:<12} {f'{channels}x{size}x{size}':<9} {classes:>7} "
                  f"{model.num_params() / 1e6:>8.2f}M {flops / 1e9:>8.2f}")
    print("GFLOPs: one forward pass per image (matmuls, convolutions, attention; 2 per multiply-add)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liquidgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="YAML config, e.g. configs/digits-liquid-tiny.yaml")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. --set train.steps=500 optim.lr=3e-4")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate images from a checkpoint")
    p.add_argument("checkpoint", help="a checkpoint folder (checkpoints/step-XXXXXX) or a run folder (newest)")
    p.add_argument("--n", type=int, help="number of samples (default: 8 per class, or 64)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the config's sample.steps)")
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale, 1 = off (default: config's)")
    p.add_argument("--labels", nargs="*", help="class indices or names to sample (cycled); default: a class grid")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), help="sampler (default: the config's sample.sampler)")
    p.add_argument("--grid", choices=sorted(GRIDS), help="time grid (default: the config's, else the sampler's)")
    p.add_argument("--cfg-interval", nargs=2, type=float, metavar=("T_LOW", "T_HIGH"),
                   help="apply guidance only for flow times t in [T_LOW, T_HIGH] (t = 1 is noise)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same images)")
    p.add_argument("--out", default="samples.png", help="output .png grid, or .npz of uint8 images + labels")
    p.add_argument("--no-ema", action="store_true", help="use the live weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--iters", type=int, help="fixed-point models: iterations per step (default: the model's)")
    p.add_argument("--budget", type=int, help="fixed-point models: total iterations spread over the steps")
    p.add_argument("--schedule", choices=["constant", "increasing", "decreasing"],
                   help="fixed-point models: how --budget is spread over the steps (default: constant)")
    p.add_argument("--no-reuse", action="store_true",
                   help="fixed-point models: start every step from scratch, not from the last solution")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("models", help="list backbone presets with parameters and forward GFLOPs per image")
    p.add_argument("--channels", type=int, help="input channels (default: each preset's native setting)")
    p.add_argument("--size", type=int, help="input size (default: each preset's native setting)")
    p.add_argument("--classes", type=int, help="number of classes (default: each preset's native setting)")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        # Configuration and input errors are the user's to fix: a message, not a traceback.
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
