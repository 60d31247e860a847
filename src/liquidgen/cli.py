"""The `liquidgen` command: train, distill, train-autoencoder, sample, interpolate, precompute, data, eval, bench,
models, serve.

Each command is a pair of functions here, `add_<command>` (its arguments) and `cmd_<command>` (what it
does, through the library's own functions). Sampling settings default to the run's config (`sample:`):
a flag left out keeps the config's value.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from safetensors import SafetensorError

from .api import parse_labels
from .config import (
    AT_LEAST_ONE,
    COMPILE_MODES,
    NONNEGATIVE,
    POSITIVE,
    PROBABILITY,
    SEED,
    Bound,
    SampleConfig,
    load_config,
    parse_options,
)
from .checkpoint import resolve
from .distributed import check_device_name, main_process, pick_device, setup, shutdown
from .plots import save_gif, save_grid
from .precompute import SOURCES
from .run_folder import default_folder
from .samplers import GRIDS, SAMPLERS, parse_grid

# --- argument types: range-checked where parsed, so argparse names the flag ----------------------------


def bounded(kind: type, bound: Bound) -> Callable[[str], int | float]:
    """An argparse type: an int or float that `bound` admits (0 is never a stand-in for "the default")."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not bound.admits(value):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    return parse


COUNT = bounded(int, AT_LEAST_ONE)
NONNEGATIVE_INT = bounded(int, NONNEGATIVE)
SEED_INT = bounded(int, SEED)


def grid_spec(text: str) -> str:
    """An argparse type: a time grid spec ("karras", "consistency:theta_mid=0.9"), checked here."""
    try:
        parse_grid(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def device_name(text: str) -> str:
    """An argparse type: a device name liquidgen knows (whether this machine has it is checked on use)."""
    try:
        return check_device_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class OrderedPair(argparse.Action):
    """Two numbers that must be given low first (--cfg-interval T_LOW T_HIGH)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if not values[0] < values[1]:
            parser.error(f"argument {option_string}: expected T_LOW < T_HIGH, got {values[0]:g} {values[1]:g}")
        setattr(namespace, self.dest, values)


class TwoDifferent(argparse.Action):
    """An interpolation's two ends (--seeds A B, --prompts P0 P1): the same twice would walk nowhere."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values[0] == values[1]:
            parser.error(f"argument {option_string}: both ends are {values[0]!r}; give two different ones")
        setattr(namespace, self.dest, values)


# --- arguments shared by several commands ---------------------------------------------------------


def add_run_args(p: argparse.ArgumentParser, example: str, set_example: str) -> None:
    """A training command: a config, a run folder, overrides, resume."""
    p.add_argument("config", help=f"YAML config, e.g. {example}")
    add_run_folder_args(p, "runs/<config name>", set_example)


def add_run_folder_args(p: argparse.ArgumentParser, default_out: str, set_example: str) -> None:
    """A training command's run folder, overrides and resume."""
    p.add_argument("--out", help=f"run folder (default: {default_out})")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help=f"override config keys, e.g. --set {set_example}")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run already in the run folder and start afresh (without --resume or "
                        "--overwrite, a folder holding a run is refused)")


def _classifier2_help(ranked: str) -> str:
    return (f"second, independent reference classifier (another architecture and seed): classifier-2 FD beside the "
            f"first, and whether the two rank {ranked} alike; fitted there if missing; default for the built-in "
            "datasets without --classifier: fitted into --cache; 'none' to skip")


def add_device_arg(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", default=default, type=device_name, help="auto | cpu | cuda | cuda:N | mps")


def add_sampling_args(p: argparse.ArgumentParser, seed_help: str = "noise seed (same seed, same images)",
                      sweep: bool = False) -> None:
    """The settings of `sample:` in a run's config, each overriding it when given; `sweep`: --cfg takes several
    scales."""
    p.add_argument("--steps", type=COUNT, help="sampling steps (default: the run's sample.steps)")
    p.add_argument("--cfg", type=bounded(float, NONNEGATIVE), nargs="+" if sweep else None,
                   help="classifier-free guidance scale" + ("s, each scored (e.g. --cfg 1 1.25 1.5 2)" if sweep else "")
                   + ", 1 = off (default: the run's sample.cfg)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), help="sampler (default: the run's sample.sampler)")
    p.add_argument("--grid", type=grid_spec, help=f"time grid, one of {', '.join(sorted(GRIDS))}, optionally with its "
                   "parameters (karras:rho=5, consistency:theta_mid=0.9; default: the run's, else the sampler's)")
    p.add_argument("--cfg-interval", nargs=2, type=bounded(float, PROBABILITY), action=OrderedPair,
                   metavar=("T_LOW", "T_HIGH"),
                   help="apply guidance only for flow times t in [T_LOW, T_HIGH] (t = 1 is noise)")
    p.add_argument("--seed", type=SEED_INT, default=0, help=seed_help)
    p.add_argument("--batch", type=COUNT, default=500,
                   help="samples per network call (doubled with guidance); lower it if the GPU runs out of memory")
    p.add_argument("--compile", choices=["auto", "on", "off", "aot"], default="auto",
                   help="run the network through torch.compile (auto: on CUDA, for jobs of 200,000 samples x "
                        "steps or more; the first batch then takes longer), or aot: through ahead-of-time "
                        "compiled packages kept in the checkpoint's aot/ folder (built on first use, per batch "
                        "size; later calls load them without compiling)")
    add_device_arg(p)


def sampling_settings(args, base: SampleConfig) -> SampleConfig:
    cfg = args.cfg[0] if isinstance(args.cfg, list) else args.cfg  # a sweep's scales are set one by one
    return base.with_(steps=args.steps, cfg=cfg, sampler=args.sampler, grid=args.grid, cfg_interval=args.cfg_interval)


def check_writable(path: Path, flag: str) -> None:
    """Refuse a file path that cannot be written (a folder, a folder not made or not writable) before the work
    whose result goes there. Missing folders are made, as the writers would make them."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot make the folder {path.parent} ({e.strerror or e})") from None
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise ValueError(f"{flag} {path}: no permission to write there")


def run_folder(args) -> Path:
    return Path(args.out) if args.out else default_folder(args.config)


# --- train, train-autoencoder ---------------------------------------------------------------------


def add_train(p: argparse.ArgumentParser) -> None:
    add_run_args(p, "configs/digits-liquid-tiny.yaml", "train.steps=500 optim.lr=3e-4")


def cmd_train(args) -> None:
    from .train import run

    out = run(args.config, args.out, overrides=args.set, resume=args.resume, overwrite=args.overwrite)
    if main_process():
        print(f"done: {resolve(out)}\nsample with: liquidgen sample {out}")


def add_distill(p: argparse.ArgumentParser) -> None:
    p.add_argument("teacher", help="the model to distil: a run folder (its newest checkpoint) or a checkpoint "
                   "folder, trained with any objective but consistency")
    p.add_argument("--recipe",
                   help="an sCD config whose objective, optimiser, training length and sampler the student takes "
                        "(model, data and hardware settings come from the teacher); default: the preset measured "
                        "for the teacher's backbone, configs/mnist-liquid-S-scm.yaml for LiquidGen, else "
                        "configs/mnist-unet-scm.yaml")
    add_run_folder_args(p, "runs/<teacher run>-scd", "train.minutes=10 train.batch_size=64")


def cmd_distill(args) -> None:
    from .distill import advice, default_out, student_config
    from .train import run

    config = student_config(args.teacher, args.recipe)
    if main_process():
        for line in advice(args.teacher):
            print(line)
    out = run(config, args.out or default_out(args.teacher), overrides=args.set, resume=args.resume,
              overwrite=args.overwrite)
    if main_process():
        print(f"done: {resolve(out)}\nsample with: liquidgen sample {out} --steps 1   (or --steps 2)")


def add_train_autoencoder(p: argparse.ArgumentParser) -> None:
    add_run_args(p, "configs/mnist-vq-vae.yaml", "model.kind=vq train.steps=2000")


def cmd_train_autoencoder(args) -> None:
    from .train_autoencoder import AutoencoderConfig, train_autoencoder

    config = load_config(args.config, args.set, cls=AutoencoderConfig)
    final = train_autoencoder(config, run_folder(args), resume=args.resume, overwrite=args.overwrite)
    print(f"done: {final}\nencode a dataset with it: liquidgen precompute SOURCE --autoencoder own "
          f"--ae-option path={final} --size {config.data.image_size or 'SIZE'} --out DIR")


# --- sample, interpolate ----------------------------------------------------------------------------


def add_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder (checkpoints/step-XXXXXX) or a run folder (newest)")
    # --num-samples: under torchrun / accelerate launch, whose parsers take "--n" for an abbreviation of theirs
    p.add_argument("--n", "--num-samples", type=COUNT, dest="n",
                   help="number of samples (default: 8 per class, or 64)")
    p.add_argument("--labels", nargs="*", help="class indices or names to sample (cycled); default: a class grid")
    p.add_argument("--prompt", nargs="+", help="text-conditioned models: one or more prompts, a row of samples each")
    p.add_argument("--init", help="inpainting models: the image to complete (resized and center-cropped)")
    p.add_argument("--mask", help="inpainting models: mask image, white = generate, black = keep from --init "
                   "(resized and center-cropped as --init is)")
    add_sampling_args(p)
    p.add_argument("--out", default="samples.png", help="output .png grid, or .npz of uint8 images + labels")
    p.add_argument("--no-ema", action="store_true", help="use the live weights instead of the EMA weights")
    p.add_argument("--trajectory", metavar="GIF",
                   help="also write the denoising trajectory as an animated GIF: the estimate of the clean grid "
                        "at every model evaluation, then the result")
    p.add_argument("--iters", type=COUNT, help="fixed-point models: iterations per step (default: the model's)")
    p.add_argument("--budget", type=COUNT, help="fixed-point models: total iterations spread over the steps")
    p.add_argument("--schedule", choices=["constant", "increasing", "decreasing"],
                   help="fixed-point models: how --budget is spread over the steps (default: constant)")
    p.add_argument("--no-reuse", action="store_true",
                   help="fixed-point models: start every step from scratch, not from the last solution")


def fixed_point_state(model, args):
    """The per-batch solver state of a fixed-point model, with the command line's overrides."""
    flags = {"--iters": args.iters, "--budget": args.budget, "--schedule": args.schedule,
             "--no-reuse": args.no_reuse or None}
    if not hasattr(model, "sampling_state"):
        given = [k for k, v in flags.items() if v is not None]
        if given:
            raise ValueError(f"{given[0]} applies to fixed-point models only")
        return None
    state = model.sampling_state()
    state.iters = state.iters if args.iters is None else args.iters
    state.budget = state.budget if args.budget is None else args.budget
    state.schedule = args.schedule or state.schedule
    state.reuse = state.reuse and not args.no_reuse
    return state


def check_sample_paths(args) -> None:
    """sample's --out and --trajectory, checked before the model loads: a bad path found after sampling
    would throw the samples away."""
    if Path(args.out).suffix.lower() not in (".png", ".npz"):
        raise ValueError(f"--out {args.out}: give a .png (a grid) or a .npz (uint8 images and labels)")
    check_writable(Path(args.out), "--out")
    if not args.trajectory:
        return
    trajectory = Path(args.trajectory)
    if trajectory.resolve() == Path(args.out).resolve():
        raise ValueError(f"--trajectory {args.trajectory} is the --out file too; give them different paths")
    if trajectory.suffix.lower() != ".gif":
        raise ValueError(f"--trajectory {args.trajectory}: give a .gif (the trajectory is an animated GIF)")
    check_writable(trajectory, "--trajectory")


def cmd_sample(args) -> None:
    from .generate import Pipeline
    from .latent_space import to_uint8

    check_sample_paths(args)
    dist, device = setup(args.device, "--device")
    pipe = Pipeline.load(args.checkpoint, ema=not args.no_ema, device=device, dist=dist, compile=args.compile)
    settings = sampling_settings(args, pipe.settings)
    names = pipe.spec.class_names
    y, cond, n, nrow = pipe.conditions(args.n, parse_labels(args.labels, names), args.prompt)
    if args.n is not None and n != args.n:  # a grid has as many samples per row (class or prompt) in every row
        rows = f"{len(args.prompt)} prompts" if args.prompt else f"{pipe.model.num_classes} classes"
        print(f"note: --n {args.n} is drawn as {n} samples, {nrow} for each of the {rows}; give --labels to draw "
              f"exactly --n", file=sys.stderr)
    if pipe.spec.text_encoder and not args.prompt:
        print("note: a text-conditioned model sampled without --prompt generates from the null (empty) context")
    init = None
    if args.init or args.mask:
        if not (args.init and args.mask):
            raise ValueError("inpainting needs both --init IMAGE and --mask MASK")
        init, pixel_mask, cond["concat"] = pipe.inpainting(args.init, args.mask, n)
    if args.trajectory and dist.world > 1:
        raise ValueError("--trajectory runs in one process; start sample without a launcher")
    state = fixed_point_state(pipe.model, args)
    estimates: list[torch.Tensor] = []
    # A trajectory and a fixed-point solver's statistics need every row in one call.
    batch = None if args.trajectory or state is not None else args.batch
    x = pipe.sample(pipe.noise(n, args.seed), y, settings, batch_size=batch, state=state, progress=True, seed=args.seed,
                    callback=(lambda t, x0: estimates.append(x0.float())) if args.trajectory else None, **cond)
    if not dist.main:
        return
    x = pipe.decode(x)
    if init is not None:  # keep the given pixels exactly where the mask says keep
        x = pixel_mask * x + (1 - pixel_mask) * init
    if args.trajectory:
        frames = [pipe.decode(e).clamp(-1, 1) for e in estimates] + [x]
        save_gif(frames, args.trajectory, nrow=nrow, duration_ms=max(40, 3000 // len(frames)))
        print(f"wrote the trajectory ({len(frames)} frames) to {args.trajectory}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npz":
        labels = (y.numpy() if y is not None else np.zeros(n)).astype(np.int64)
        with out.open("wb") as f:  # a file object: np.savez would append ".npz" to a name ending in ".NPZ"
            np.savez(f, images=to_uint8(x).permute(0, 2, 3, 1).cpu().numpy(), labels=labels,
                     class_names=np.array(names, dtype=str))
    else:
        save_grid(x, out, nrow=nrow)
    print(f"wrote {n} samples ({settings.steps} steps, cfg {settings.cfg}) to {out}")
    if state is not None:
        r = state.residuals
        print(f"fixed point: {sum(state.used)} iterations over {len(state.used)} calls ({state.used[0]} first, "
              f"{state.used[-1]} last); relative residual ||z_k+1 - z_k|| / ||z_k|| mean {sum(r) / len(r):.2e}, "
              f"max {max(r):.2e}")


# Every frame is sampled, laid side by side in one PNG strip (cells of 64 pixels or more) and played twice in
# the GIF: 1000 already make a strip over 64,000 pixels wide and a GIF of minutes.
MAX_FRAMES = 1000


def add_interpolate(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder or a run folder (newest)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--seeds", nargs=2, type=SEED_INT, action=TwoDifferent, metavar=("A", "B"),
                      help="walk the great circle between the noises of two seeds (at --label / --prompt)")
    mode.add_argument("--labels", nargs=2, metavar=("A", "B"),
                      help="blend two class embeddings (indices or names) at the noise of --seed")
    mode.add_argument("--prompts", nargs=2, action=TwoDifferent, metavar=("P0", "P1"),
                      help="text models: blend the embeddings of two prompts at the noise of --seed")
    p.add_argument("--label", help="with --seeds: the class (index or name) of every frame (default: none)")
    p.add_argument("--prompt", help="with --seeds, text models: the prompt of every frame (default: none)")
    p.add_argument("--frames", type=bounded(int, Bound(2, MAX_FRAMES)), default=9,
                   help=f"frames, endpoints included (at most {MAX_FRAMES})")
    add_sampling_args(p, seed_help="noise seed for --labels / --prompts")
    p.add_argument("--duration", type=COUNT, default=120, help="milliseconds per GIF frame")
    p.add_argument("--out", default="interpolation.png", help="the PNG strip; the GIF goes beside it (.gif)")


def cmd_interpolate(args) -> None:
    from . import interpolate as interp
    from .generate import Pipeline

    if Path(args.out).suffix.lower() != ".png":
        raise ValueError(f"--out {args.out}: give a .png (the strip; the GIF is written beside it)")

    pipe = Pipeline.load(args.checkpoint, device=pick_device(args.device, "--device"), compile=args.compile)
    settings = sampling_settings(args, pipe.settings)
    if settings.sampler == "consistency" and settings.steps > 1:
        print("note: multi-step consistency sampling draws fresh noise at every step, so neighbouring frames "
              "differ by more than the interpolation")
    w = interp.weights(args.frames)
    names = pipe.spec.class_names
    if (args.labels or args.label is not None) and not names:
        raise ValueError("--labels / --label: this model has no classes; interpolate it with --seeds or --prompts")
    if not args.seeds and (args.label is not None or args.prompt is not None):
        raise ValueError("--label and --prompt fix the condition of a --seeds interpolation; they do not apply "
                         "to --labels or --prompts")
    y, cond = None, {}
    if args.seeds:
        a, b = pipe.noise(1, args.seeds[0])[0], pipe.noise(1, args.seeds[1])[0]
        noise = interp.slerp(a, b, w)
        if args.label is not None:
            y = torch.tensor(parse_labels([args.label], names) * args.frames)
        if args.prompt is not None:
            cond = dict(zip(("context", "context_mask"), pipe.encode_prompts([args.prompt] * args.frames)))
    else:
        noise = pipe.noise(1, args.seed).expand(args.frames, *pipe.spec.shape)
        if args.labels:  # compared as classes, as an index and its class name are one class
            a, b = parse_labels(args.labels, names)
            if a == b:
                raise ValueError(f"--labels {' '.join(args.labels)}: both ends are class {a} ({names[a]}); give two "
                                 f"different classes")
            y = interp.class_weights(a, b, w, len(names))
        else:
            cond = dict(zip(("context", "context_mask"), interp.blend_contexts(*pipe.encode_prompts(args.prompts), w)))
    cond = {k: v for k, v in cond.items() if v is not None}
    images = pipe.decode(pipe.sample(noise, y, settings, batch_size=args.batch, progress=True, **cond))
    out = Path(args.out)
    save_grid(images, out, nrow=args.frames)
    gif = save_gif([im[None] for im in images], out.with_suffix(".gif"), nrow=1, duration_ms=args.duration,
                   pingpong=True)
    print(f"wrote {args.frames} frames to {out} and {gif}")


# --- precompute -------------------------------------------------------------------------------------


def add_precompute(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", choices=SOURCES, help="folder (class subfolders or flat; captions from .txt files or "
                   "metadata.jsonl), digits, mnist, cifar10, npz, hf (a Hugging Face datasets folder or hub name), or "
                   "precomputed (a pixel dataset made by this command, to encode into latents: its caption "
                   "features are copied when --text-encoder names the encoder that made them)")
    p.add_argument("--root", help="the source's folder or file (or hub name for hf)")
    p.add_argument("--out", required=True, help="output folder; rerunning the same command resumes it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a precomputed dataset made with other settings in --out (refused otherwise)")
    p.add_argument("--size", type=COUNT, required=True, help="image side in pixels before encoding")
    p.add_argument("--autoencoder", default="identity",
                   help="identity (pixels), taesd, diffusers or own; see --ae-option for their settings")
    p.add_argument("--ae-option", nargs="*", default=[], metavar="KEY=VALUE",
                   help="autoencoder options, e.g. variant=taef2 weights=/path/to/taesd, or model=<folder|hub id>")
    p.add_argument("--text-encoder", default="", help="minilm, clip or open_clip: embed captions (default: none)")
    p.add_argument("--text-option", nargs="*", default=[], metavar="KEY=VALUE",
                   help="text encoder options, e.g. model=<folder|hub id> device=cuda")
    p.add_argument("--text-tokens", type=NONNEGATIVE_INT, default=0,
                   help="store per-token text features, padded or cut to this many tokens, for cross-attention "
                        "(default 0: one pooled vector per caption)")
    p.add_argument("--caption-template", nargs="*", default=[],
                   help="make captions from labels, e.g. 'a handwritten {}' (several are used in turn)")
    p.add_argument("--class-words", nargs="*", default=[],
                   help="words for the classes in caption templates (default: the class names)")
    p.add_argument("--split", default="train", help="dataset split (train | test; hf: any split name)")
    p.add_argument("--limit", type=COUNT, help="only the first N images")
    p.add_argument("--no-resize", action="store_true", help="require images of exactly --size instead of resizing")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="folder: leave out image files that cannot be decoded (counted in the manifest, named in a "
                        "warning) instead of stopping at the first")
    p.add_argument("--image-column", default="image", help="hf: the image column")
    p.add_argument("--label-column", default="", help="hf: the label column (default: unlabelled)")
    p.add_argument("--caption-column", default="", help="hf: the caption column (default: no captions)")
    p.add_argument("--shard-size", type=COUNT, default=4096, help="items per shard")
    p.add_argument("--batch-size", type=COUNT, default=64, help="images per autoencoder call")
    add_device_arg(p)


def cmd_precompute(args) -> None:
    from .precompute import Request, precompute

    text = {"name": args.text_encoder, **parse_options(args.text_option, "--text-option")} \
        if args.text_encoder else None
    columns = {"image_column": args.image_column, "label_column": args.label_column,
               "caption_column": args.caption_column} if args.source == "hf" else {}
    req = Request(source=args.source, root=args.root, image_size=args.size, split=args.split, limit=args.limit,
                  autoencoder={"name": args.autoencoder, **parse_options(args.ae_option, "--ae-option")},
                  text_encoder=text, caption_templates=args.caption_template, class_words=args.class_words,
                  resize=not args.no_resize, hf_columns=columns, shard_size=args.shard_size,
                  text_tokens=args.text_tokens, skip_bad_images=args.skip_bad_images)
    manifest = precompute(req, args.out, device=pick_device(args.device, "--device"), batch_size=args.batch_size,
                          overwrite=args.overwrite)
    print(f"wrote {manifest}\ntrain on it with: --set data.name=precomputed data.root={args.out}")


# --- data ---------------------------------------------------------------------------------------------


def add_data(p: argparse.ArgumentParser) -> None:
    from .emoji import STYLES, VERSION

    sources = p.add_subparsers(dest="source", required=True, help="emoji")
    q = sources.add_parser("emoji", help="captioned emoji images from the npm packages emoji-datasource-<style>")
    q.add_argument("--out", required=True, help="output folder: train/ and heldout/ image folders with "
                   "metadata.jsonl captions, and the images' licences")
    q.add_argument("--styles", nargs="+", choices=sorted(STYLES), help="styles fetched with `npm pack` "
                   "(default: google twitter); not with --tarball")
    q.add_argument("--version", default=VERSION, help=f"emoji-datasource version to fetch (default {VERSION})")
    q.add_argument("--tarball", nargs="+", default=[], help="local emoji-datasource-<style>-<version>.tgz files "
                   "instead of npm (offline); the style is read from each")
    q.add_argument("--cache", default="~/.cache/liquidgen/emoji", help="folder for the fetched tarballs")
    q.add_argument("--size", type=COUNT, default=64, help="image side in pixels (the packages' images are 64)")
    q.add_argument("--background", default="white", help="colour the transparent pixels become (name or #rrggbb)")
    q.add_argument("--holdout", type=bounded(float, Bound(0, 1, high_open=True)), default=0.05,
                   help="share of concepts (all their styles and skin tones) written to heldout/ (default 0.05)")
    q.add_argument("--seed", type=SEED_INT, default=0, help="seed of the held-out concepts' choice")
    q.add_argument("--overwrite", action="store_true", help="replace a dataset built with other settings in --out")


def cmd_data(args) -> None:
    from .emoji import build_emoji, fetch_tarball

    if args.tarball and args.styles:
        raise ValueError("--styles picks what npm fetches and --tarball replaces npm: give one")
    cache = Path(args.cache).expanduser()
    tarballs = args.tarball or [fetch_tarball(s, args.version, cache) for s in args.styles or ["google", "twitter"]]
    summary = build_emoji(tarballs, args.out, args.size, args.background, args.holdout, args.seed, args.overwrite)
    print(f"{args.out}: {summary['images']} images of {summary['concepts']} concepts in "
          f"{len(summary['categories'])} categories\ntext-to-image: liquidgen precompute folder --root "
          f"{args.out}/train --size {args.size} --text-encoder minilm --out <folder>")


# --- eval, fit-classifier -----------------------------------------------------------------------------


def add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="a samples .npz (uint8 NHWC images + labels) or a checkpoint / run folder")
    p.add_argument("--data", help="reference dataset name (mnist, cifar10, folder, npz, digits); may be left out "
                   "with --prompt-file, to score prompt retrieval only")
    p.add_argument("--root", help="reference dataset folder or file")
    p.add_argument("--split", default="test", help="reference split (test where it exists, else train)")
    p.add_argument("--size", type=COUNT, help="reference image size (default: the --classifier's, else the "
                   "samples' size)")
    p.add_argument("--reference-limit", type=COUNT, help="use only the first N reference images")
    p.add_argument("--classifier", help="reference classifier .safetensors (from eval fit-classifier; a path in an "
                   "existing folder where none is yet: fitted there first; default for digits, mnist and cifar10: the "
                   "dataset's, fitted into --cache on first use)")
    p.add_argument("--classifier2", help=_classifier2_help("the scales"))
    p.add_argument("--inception-weights", help="pt_inception-2015-12-05-6726825d.pth (pytorch-fid's FID Inception)")
    p.add_argument("--inception", action="store_true", help="compute FID / KID with Inception weights found in "
                   "the torch hub cache or $LIQUIDGEN_INCEPTION")
    p.add_argument("--n", "--num-samples", type=COUNT, dest="n",
                   help="number of samples (default: 10,000 generated, or all in the .npz)")
    p.add_argument("--prompt", nargs="+", help="text models: one prompt per class, in label order (prompt k "
                   "should show class k); samples cycle through them and class_accuracy scores prompt following")
    p.add_argument("--prompt-file", help="text models: a file of prompts, one per line; samples cycle through them and "
                   "--prompt-matcher scores whether each sample's prompt is retrieved from it (top-1 / top-5)")
    p.add_argument("--prompt-matcher", help="prompt matcher .safetensors (from `liquidgen eval fit-prompt-matcher`)")
    p.add_argument("--prompt-images", nargs="+", metavar="FOLDER", help="captioned image folders holding real images "
                   "of the prompts: their retrieval, the ceiling, is scored beside the samples'")
    p.add_argument("--candidates", help="file of candidate prompts, one per line (default: the captions the matcher "
                   "was fitted with and its held-out ones)")
    add_sampling_args(p, seed_help="noise seed for generated samples", sweep=True)
    p.add_argument("--bootstrap", type=bounded(int, Bound(2)), default=200,
                   help="bootstrap rounds of FD's 95%% interval")
    p.add_argument("--cache", default="~/.cache/liquidgen/eval",
                   help="folder for cached reference features and fitted reference classifiers")
    p.add_argument("--out", help="also write the records to this JSON lines file: one per scale, then the floor")


def read_lines(path: str, what: str) -> list[str]:
    """The non-empty, stripped lines of a text file (prompts, candidates); an empty file is an error."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ValueError(f"{what} file {path} cannot be read: {e.strerror or e}") from None
    lines = [line for line in (line.strip() for line in text.splitlines()) if line]
    if not lines:
        raise ValueError(f"{what} file {path} holds no lines")
    return lines


def cmd_eval(args) -> None:
    from .evaluation.classifier import load_classifier
    from .evaluation.evaluate import BUILT_IN, Scorer, best_point, rank_agreement, read_samples, sweep_table
    from .generate import Pipeline

    dist, device = setup(args.device, "--device")
    prompts = matcher = pool = None
    if args.prompt_file or args.prompt_matcher:
        prompts, matcher, pool = prompt_scoring(args, device)  # checked before any sample is drawn
    if args.data is None and prompts is None:
        raise ValueError("--data: give the reference dataset (or --prompt-file to score prompt retrieval only)")
    if args.data and not (args.classifier or args.inception or args.inception_weights or args.data in BUILT_IN):
        raise ValueError("nothing to measure with: give --classifier (make one with `liquidgen eval fit-classifier`) "
                         "and/or --inception-weights / --inception")  # said before any sample is drawn
    check_eval_paths(args)
    target = Path(args.target)
    samples = pipe = None
    if target.suffix.lower() == ".npz":
        if args.cfg:
            raise ValueError(f"--cfg: {target} holds samples made at one guidance scale; give a checkpoint to sweep")
        if prompts:
            raise ValueError(f"--prompt-file: {target} does not record the prompts of its samples; give a checkpoint")
        samples = read_samples(target)
        if args.n is not None and args.n > len(samples.images):
            raise ValueError(f"--n {args.n}: {target} holds only {len(samples.images)} samples; lower --n or leave "
                             f"it out to score them all")
        sample_size = samples.images.shape[-1]
    else:
        pipe = Pipeline.load(target, device=device, dist=dist, compile=args.compile)
        sample_size = pipe.space.image_size
        if pipe.spec.text_encoder and not (prompts or args.prompt) and any(c != 1 for c in args.cfg or []):
            raise ValueError("--cfg: this model conditions on text, and without --prompt (one per class) or "
                             "--prompt-file its samples are unconditional, so guidance changes nothing")
    scorer = None
    if args.data:
        # The reference is loaded at the classifier's own size unless --size says otherwise (it must fit).
        given = args.classifier and Path(args.classifier).expanduser().is_file()
        size = args.size or (load_classifier(args.classifier)[1]["size"] if given else sample_size)
        # Only the main process scores; it fits a missing classifier before any sample is drawn.
        scorer = Scorer(args.data, args.root, args.classifier, device, size, args.split, args.reference_limit,
                        args.inception_weights, args.cache, args.inception, args.bootstrap,
                        False if args.classifier2 == "none" else args.classifier2) if dist.main else None
    # the real images' retrieval first: a --prompt-images without the prompts' images fails before any sampling
    ceiling = prompt_ceiling(args, matcher, prompts, pool) if matcher and args.prompt_images and dist.main else None
    points = []
    if samples is not None:
        n = args.n or len(samples.images)
        labels = None if samples.labels is None else samples.labels[:n]
        if dist.main:
            points.append({"cfg": None, **scorer(samples.images[:n], labels, samples.class_names)})
    else:
        n = args.n or 10_000
        for cfg in args.cfg or [None]:  # None: the run's sample.cfg
            settings = sampling_settings(args, pipe.settings).with_(cfg=cfg)
            images, labels = pipe.generate(n, seed=args.seed, prompts=prompts or args.prompt, settings=settings,
                                           batch_size=args.batch)
            if not dist.main:
                continue
            point = {"cfg": settings.cfg}
            if scorer:  # a text model's labels index its prompts: class accuracy only where --prompt k shows class k
                point |= scorer(images, None if prompts else labels,
                                None if (args.prompt or prompts) else pipe.spec.class_names)
            if matcher:
                point |= matcher.retrieval(images, [prompts[i] for i in labels.tolist()], pool)
            points.append(point)
    if not dist.main:
        return
    floor = scorer.floor(n, args.seed) if scorer else None  # at the scores' own sample count
    if len(points) > 1:
        best_point(points)["best"] = True
    records = [{**p, "target": str(target), "seed": args.seed, "dataset": args.data, "split": args.split,
                "classifier": str(scorer.classifier) if scorer and scorer.classifier else None,
                "classifier2": str(scorer.second_classifier) if scorer and scorer.second_classifier else None,
                **({"prompt_matcher": args.prompt_matcher} if matcher else {})}
               for p in [*points, *([floor] if floor else []), *([ceiling] if ceiling else [])]]
    for r in records:
        print(json.dumps(r))
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in records))
    if scorer and scorer.classifier:
        print("classifier FD / KID and class acc use liquidgen's reference classifier (offline; not FID)")
    if scorer:
        print(sweep_table(points, floor))
        if floor.get("floor_split_half"):
            print(f"{args.data} has no held-out split: the reference is half of the training images and the floor the "
                  f"other half, so a model that reproduces its training images can score below the floor")
    if matcher:
        print(retrieval_table(points, ceiling))
    agreement = (rank_agreement(points, [f"cfg {p['cfg']:g}" for p in points])
                 if scorer and points[0]["cfg"] is not None else None)
    if agreement:
        print(agreement)


def check_eval_paths(args) -> None:
    """eval's --n, --classifier and --out, checked before any sample is drawn."""
    if args.n is not None and args.n < 2:
        raise ValueError(f"--n {args.n}: a distance between image sets needs at least 2 samples")
    if args.classifier:
        given = Path(args.classifier).expanduser()
        if given.is_dir():
            raise ValueError(f"--classifier {args.classifier} is a folder; give a classifier file (.safetensors), or a "
                             f"path in a folder to fit one there")
        if not given.is_file() and not given.parent.is_dir():  # a typo, not a place to fit a new one
            raise ValueError(f"--classifier {args.classifier}: no such file, and no folder {given.parent} to fit one "
                             f"into; give an existing classifier, or a path in an existing folder to fit one there")
    if args.out:
        output_file(args.out, overwrite=True)  # the records of a rerun replace the last run's


def output_file(out: str, overwrite: bool) -> Path:
    """An --out file, checked before the work that fills it, so that a mistake costs no fitting or sampling: an
    existing file without `overwrite` (--overwrite) is refused, and whatever `check_writable` refuses."""
    path = Path(out)
    if path.is_file() and not overwrite:
        raise ValueError(f"--out {out} already exists; replace it with --overwrite, or choose another --out")
    check_writable(path, "--out")
    return path


def prompt_scoring(args, device):
    """(prompts, loaded matcher, candidate pool) of eval's prompt options, all checked."""
    from .evaluation.retrieval import load_matcher

    if not (args.prompt_file and args.prompt_matcher):
        raise ValueError("--prompt-file and --prompt-matcher go together: the prompts to draw, and the matcher that "
                         "scores them (make one with `liquidgen eval fit-prompt-matcher`)")
    if args.prompt:
        raise ValueError("--prompt and --prompt-file: give the prompts one way")
    prompts = read_lines(args.prompt_file, "--prompt-file")
    matcher = load_matcher(args.prompt_matcher, device)
    pool = read_lines(args.candidates, "--candidates") if args.candidates else None
    return prompts, matcher, pool


def prompt_ceiling(args, matcher, prompts: list[str], pool) -> dict:
    """Retrieval of the real images, in --prompt-images, whose captions are among the prompts."""
    from .evaluation.retrieval import read_captioned

    wanted, images, captions = set(prompts), [], []
    for folder in args.prompt_images:
        x, caps, _, _ = read_captioned(folder, matcher.info["image_size"])
        keep = [i for i, c in enumerate(caps) if c in wanted]
        images.append(x[keep])
        captions += [caps[i] for i in keep]
    if not captions:
        raise ValueError(f"--prompt-images: no image in {', '.join(args.prompt_images)} has one of the "
                         f"{len(prompts)} prompts as its caption, so there is no ceiling to score")
    return {"ceiling": True, "prompts_with_images": len(set(captions)),
            **matcher.retrieval(torch.cat(images), captions, pool)}


def retrieval_table(points: list[dict], ceiling: dict | None) -> str:
    """Markdown: prompt retrieval per guidance scale, then the real images' ceiling."""
    lines = ["| cfg | prompt top-1 [95% CI] | prompt top-5 [95% CI] | median rank | images | pool |",
             "|---|---|---|---|---|---|"]
    for p in [*points, *([ceiling] if ceiling else [])]:
        name = f"real ({p['prompts_with_images']:,} prompts)" if p.get("ceiling") else (
            "-" if p.get("cfg") is None else f"{p['cfg']:g}")
        cells = [f"{p[k]:.3f} [{p[k + '_ci95'][0]:.3f}, {p[k + '_ci95'][1]:.3f}]" for k in ("prompt_top1",
                                                                                         "prompt_top5")]
        lines.append(f"| {name} | {' | '.join(cells)} | {p['prompt_median_rank']:g} | {p['prompt_images']:,} | "
                     f"{p['prompt_pool']:,} |")
    return "\n".join(lines)


def add_fit_classifier(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="labelled dataset name (mnist, cifar10, folder, npz, digits)")
    p.add_argument("--root", help="dataset folder or file")
    p.add_argument("--size", type=COUNT, help="image size (default: the dataset's own)")
    p.add_argument("--out", help="output .safetensors (default: classifiers/<data>-<size>.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace the file at --out (refused otherwise)")
    p.add_argument("--second", action="store_true",
                   help="fit the dataset's second, independent reference network (eval's --classifier2) instead")
    add_device_arg(p)


def cmd_fit_classifier(args) -> None:
    from .data import load_dataset, load_split
    from .evaluation.classifier import fit_classifier, recipes_for, save_classifier

    recipe = recipes_for(args.data)[1 if args.second else 0]
    train_set = load_dataset(args.data, args.root, args.size, split="train")
    suffix = f"-{recipe.arch}" if args.second else ""
    out = output_file(args.out or f"classifiers/{args.data}-{train_set.size}{suffix}.safetensors", args.overwrite)
    # Without a test split, fit_classifier holds out the last images instead.
    test_set = load_split(args.data, args.root, args.size, split="test")
    model, info = fit_classifier(train_set, test_set, pick_device(args.device, "--device"), recipe)
    info.update(dataset=args.data, root=str(args.root))
    save_classifier(model, info, out)
    print(f"wrote {out}: test accuracy {info['test_accuracy']:.4f} on {info['test_images']} images")


def add_fit_prompt_matcher(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="captioned image folder to fit on (metadata.jsonl or .txt captions; "
                   "e.g. `liquidgen data emoji`'s train/), or a pixel dataset precomputed from one with --text-encoder")
    p.add_argument("--heldout", nargs="*", default=[], metavar="FOLDER",
                   help="captioned folders of held-out prompts: their captions join the candidate pool and their "
                   "images' retrieval is measured as a ceiling (e.g. the emoji heldout/)")
    p.add_argument("--size", type=COUNT, default=64, help="side the images are read at (the generator's image size)")
    p.add_argument("--text-encoder", help="text encoder of the captions (minilm, clip, open_clip; default: a "
                   "precomputed dataset's, whose embeddings then spare loading it, else minilm)")
    p.add_argument("--text-option", nargs="*", default=[], metavar="KEY=VALUE", help="text encoder options")
    p.add_argument("--out", required=True, help="output .safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace the file at --out (refused otherwise)")
    add_device_arg(p)


def cmd_fit_prompt_matcher(args) -> None:
    from .evaluation.retrieval import describe_ceilings, fit_prompt_matcher

    out = output_file(args.out, args.overwrite)
    spec = ({"name": args.text_encoder, **parse_options(args.text_option, "--text-option")}
            if args.text_encoder else None)
    info = fit_prompt_matcher(args.root, args.heldout, args.size, out, spec,
                              device=pick_device(args.device, "--device"))
    print(f"wrote {args.out}: fitted on {info['train_images']:,} images, {len(info['pool']):,} candidate prompts")
    print(describe_ceilings(info))


# --- bench, models -------------------------------------------------------------------------------------


def add_bench(p: argparse.ArgumentParser) -> None:
    bench = p.add_subparsers(dest="bench", required=True, help="speed, quality or report")
    q = bench.add_parser("speed", help="training / sampling throughput, peak memory and MFU at native sizes")
    q.add_argument("presets", nargs="*", default=["all"],
                   help="backbone:preset (e.g. liquid:S), a backbone (its presets but tiny ones), or all")
    q.add_argument("--out", required=True, help="results folder (e.g. benchmarks/results/<date>-bench)")
    q.add_argument("--batch", type=COUNT, default=128, help="training batch size")
    q.add_argument("--mode", nargs="+", choices=["eager", "compiled", *COMPILE_MODES], default=["eager", "compiled"],
                   help="eager and/or torch.compile modes (compiled = default mode; reduce-overhead uses CUDA graphs)")
    q.add_argument("--steps", type=COUNT, default=20, help="timed training steps")
    q.add_argument("--warmup", type=NONNEGATIVE_INT, default=3, help="untimed steps first (compilation, autotuning)")
    q.add_argument("--sample-batch", type=COUNT, default=256, help="images per sampling call")
    q.add_argument("--sample-steps", type=COUNT, default=8, help="timed sampling steps (network calls)")
    q.add_argument("--objective", nargs="+", default=["flow"], metavar="NAME[:KEY=VALUE,...]",
                   help="losses of the timed step, each a case: e.g. flow consistency:mode=ct "
                   "consistency:mode=cd,fp32_tangent_only=true (cd distils from a frozen copy of the model)")
    add_device_arg(q, default="cuda")
    q = bench.add_parser("quality", help="train contenders for equal minutes, score at several NFE")
    q.add_argument("config", help="the shared recipe (data, objective, optimiser, batch): a YAML config")
    q.add_argument("contenders", nargs="+", help="backbone:preset[:key=value,...], e.g. liquid:S dit:S unet:28")
    q.add_argument("--out", required=True, help="results folder")
    q.add_argument("--runs", help="folder for the contenders' run folders (default: <out>/runs)")
    q.add_argument("--minutes", type=bounded(float, POSITIVE), required=True,
                   help="training budget per contender, in minutes")
    q.add_argument("--curve-every", type=bounded(float, Bound(0, 1, low_open=True)), default=0.25,
                   help="checkpoint and score every this fraction of the budget (the quality-vs-minutes curve)")
    q.add_argument("--nfe", type=COUNT, nargs="+", default=[1, 2, 4, 8, 16, 50], help="NFE scored at the full budget")
    q.add_argument("--curve-nfe", type=COUNT, default=16, help="NFE scored at the curve's checkpoints")
    q.add_argument("--samples", type=COUNT, default=10_000, help="samples per score at the full budget")
    q.add_argument("--curve-samples", type=COUNT, default=1000, help="samples per score on the curve")
    q.add_argument("--sampler", choices=sorted(SAMPLERS), default="euler", help="sampler (consistency models use "
                   "the consistency sampler)")
    q.add_argument("--cfg", type=bounded(float, NONNEGATIVE), nargs="+",
                   help="guidance scales, each scored at every NFE and curve point (default: the config's sample.cfg)")
    q.add_argument("--nfe-at-best", action="store_true",
                   help="with several --cfg: sweep them at the top NFE only, then score the other NFE and the "
                   "curve at each contender's best scale there (quality against NFE at the best scale, for less)")
    q.add_argument("--classifier", help="reference classifier .safetensors; fitted there first if missing "
                   "(default for digits, mnist and cifar10: the dataset's, in --cache)")
    q.add_argument("--classifier2", help=_classifier2_help("the contenders"))
    q.add_argument("--inception-weights", help="also FID / KID with pytorch-fid's Inception weights")
    q.add_argument("--reference", nargs=2, metavar=("DATA", "ROOT"),
                   help="pixel dataset to score against (default: the config's data; needed for latents)")
    q.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every contender")
    q.add_argument("--seed", type=SEED_INT, default=0, help="noise seed of the scored samples")
    q.add_argument("--sample-batch", type=COUNT, default=500, help="samples per sampling call (sample i's noise "
                   "depends on the seed and i alone: the batch changes the time, not which samples are drawn)")
    q.add_argument("--cache", default="~/.cache/liquidgen/eval", help="folder for cached reference features")
    q.add_argument("--prompts", nargs="+", help="text-conditioned recipes (required there): one prompt per class, in "
                   "label order (prompt k should show class k); samples cycle through them")
    q.add_argument("--prompt-embeddings", metavar="DATASET", help="a precomputed captioned dataset holding every "
                   "--prompts as a caption: its stored embeddings replace the text model (for a machine without it)")
    add_device_arg(q)
    q = bench.add_parser("report", help="rewrite report.md and the plots from the records in --out")
    q.add_argument("--out", required=True, help="results folder holding speed.jsonl / quality.jsonl")


def cmd_bench(args) -> None:
    from .bench.report import write_report

    if args.bench in ("speed", "quality"):  # fail before the first contender, naming the flag
        args.device = str(pick_device(args.device, "--device"))
    if args.bench == "speed":
        from .bench.speed import run_speed

        modes = tuple(dict.fromkeys("default" if m == "compiled" else m for m in args.mode))
        run_speed(args.presets, args.out, args.batch, modes, args.device, args.steps, args.warmup,
                  args.sample_batch, args.sample_steps, tuple(dict.fromkeys(args.objective)))
    elif args.bench == "quality":
        from .bench.quality import QualityStudy, run_quality

        run_quality(QualityStudy(
            config=args.config, contenders=args.contenders, out=args.out, minutes=args.minutes,
            curve_every=args.curve_every, nfes=tuple(args.nfe), curve_nfe=args.curve_nfe, samples=args.samples,
            curve_samples=args.curve_samples, sampler=args.sampler, cfgs=tuple(args.cfg) if args.cfg else None,
            nfe_at_best=args.nfe_at_best,
            classifier=args.classifier, classifier2=False if args.classifier2 == "none" else args.classifier2,
            inception_weights=args.inception_weights, reference=tuple(args.reference) if args.reference else None,
            overrides=tuple(args.set), device=args.device, seed=args.seed, cache_dir=args.cache, runs=args.runs,
            sample_batch=args.sample_batch, prompts=tuple(args.prompts) if args.prompts else None,
            prompt_embeddings=args.prompt_embeddings))
    report = write_report(args.out)
    print(f"wrote {report}")
    print(report.read_text())


def add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channels", type=COUNT, help="input channels (default: each preset's native setting)")
    p.add_argument("--size", type=COUNT, help="input size (default: each preset's native setting)")
    p.add_argument("--classes", type=NONNEGATIVE_INT, help="number of classes (default: each preset's native setting)")


def cmd_models(args) -> None:
    from .flops import forward_bytes, forward_flops
    from .models import BACKBONES, build_model

    print(f"{'backbone':<12} {'preset':<12} {'input':<9} {'classes':>7} {'params':>9} {'GFLOPs':>8} "
          f"{'MB unfused':>10} {'MB fused':>8}")
    for name, (_, presets, native) in BACKBONES.items():
        for preset in presets:
            channels, size, classes = native[preset]
            channels = channels if args.channels is None else args.channels
            size = size if args.size is None else args.size
            classes = classes if args.classes is None else args.classes
            with torch.device("meta"):  # count parameters and FLOPs without allocating anything
                model = build_model(name, preset, channels, size, classes)
                flops = forward_flops(model, channels, size, classes)
                moved = forward_bytes(model, channels, size, classes)
            print(f"{name:<12} {preset:<12} {f'{channels}x{size}x{size}':<9} {classes:>7} "
                  f"{model.num_params() / 1e6:>8.2f}M {flops / 1e9:>8.2f} {moved['unfused'] / 1e6:>10.1f} "
                  f"{moved['gemm'] / 1e6:>8.1f}")
    print("GFLOPs: one forward pass per image (matmuls, convolutions, attention; 2 per multiply-add)\n"
          "MB: bf16 activations read and written per image, each operator a kernel of its own (unfused) or only\n"
          "the matmuls, convolutions and attention touching memory (fused); on an H200 (4.8 TB/s, 989 dense bf16\n"
          "TFLOP/s) a forward whose MB exceed 4.9 x its GFLOPs is bound by memory, not arithmetic")


def add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder (its newest checkpoint) or checkpoint folder")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: this machine only; 0.0.0.0 opens the page to your network)")
    p.add_argument("--port", type=bounded(int, Bound(1, 65535)), default=7860, help="port of the page")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    add_device_arg(p)


def cmd_serve(args) -> None:
    from .serve import serve

    serve(args.run, args.host, args.port, args.device, ema=not args.no_ema)


# name, help, arguments, action (`liquidgen eval fit-classifier` is parsed as the command fit-classifier)
EVAL_SUBCOMMANDS = ("fit-classifier", "fit-prompt-matcher")
COMMANDS = [
    ("train", "train a model from a YAML config", add_train, cmd_train),
    ("distill", "a 1-2 step student of a trained model (sCD), its model and data taken from the teacher's run",
     add_distill, cmd_distill),
    ("train-autoencoder", "train your own KL-VAE or VQ-VAE (for latent generators)", add_train_autoencoder,
     cmd_train_autoencoder),
    ("sample", "generate images from a checkpoint", add_sample, cmd_sample),
    ("interpolate", "a strip and a GIF between two noise seeds, two classes or two prompts", add_interpolate,
     cmd_interpolate),
    ("precompute", "encode a dataset into latent shards (+ labels, + text embeddings)", add_precompute,
     cmd_precompute),
    ("data", "get a dataset: `liquidgen data emoji` writes captioned emoji images (npm packages) as image folders",
     add_data, cmd_data),
    ("eval", ("score samples (.npz) or a checkpoint against a dataset: classifier FD and accuracy, FID / KID with "
              "Inception weights, precision / recall; `liquidgen eval fit-classifier` trains a reference classifier"),
     add_eval, cmd_eval),
    ("fit-classifier", "(as `liquidgen eval fit-classifier`) train a dataset's reference classifier",
     add_fit_classifier, cmd_fit_classifier),
    ("fit-prompt-matcher", ("(as `liquidgen eval fit-prompt-matcher`) train the image encoder that scores prompt "
                            "following offline, contrastively against a captioned folder's text embeddings"),
     add_fit_prompt_matcher, cmd_fit_prompt_matcher),
    ("bench", ("benchmarks: speed per backbone preset, quality per GPU-minute; JSON records, a markdown report "
               "and plots in --out (reruns skip finished records)"), add_bench, cmd_bench),
    ("models", "list backbone presets with parameters and forward GFLOPs per image", add_models, cmd_models),
    ("serve", "a local web page to sample a model (Gradio: pip install 'liquidgen[web]')", add_serve, cmd_serve),
]


class Parser(argparse.ArgumentParser):
    """argparse, except that a mistake prints one line and where to read more, not the whole usage block
    (the sub-commands' parsers are made of this class too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="liquidgen", description=" ".join(__doc__.split("\n\n")[0].split()))
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text, add, run in COMMANDS:
        prog = f"liquidgen eval {name}" if name in EVAL_SUBCOMMANDS else None
        p = sub.add_parser(name, help=text, **({"prog": prog} if prog else {}))
        add(p)
        p.set_defaults(func=run)
    return parser


# Configuration, input, disk and divergence errors are the user's to fix: a message, not a traceback. Besides
# ValueError (ConfigError, JSON), OSError (files, PIL's unreadable images) and FloatingPointError (divergence),
# the exceptions third-party readers raise for a user's bad file that are neither: YAML, a corrupt
# .safetensors, an image over PIL's decompression-bomb limit, a corrupt .npz. Anything else is a bug and
# keeps its traceback.
# ImportError: an optional library missing (diffusers, transformers, open_clip); the message says what to install.
USER_ERRORS = (ValueError, OSError, EOFError, ImportError, FloatingPointError, yaml.YAMLError, SafetensorError,
               Image.DecompressionBombError, zipfile.BadZipFile)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"] and argv[1:2] and argv[1] in EVAL_SUBCOMMANDS:  # parsed as commands of their own
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        shutdown()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        # training has its own first-Ctrl-C handler (a checkpoint, then a clean stop); this is a second
        # Ctrl-C there, or one anywhere else: nothing to report but that it stopped
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
