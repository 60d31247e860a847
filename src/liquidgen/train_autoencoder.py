"""`liquidgen train-autoencoder`: train your own KL-VAE or VQ-VAE on your images, for latent generators.

Per step: reconstruction loss (L1 or L2) + the bottleneck's loss (weighted KL, or VQ commitment), and
after `loss.gan_start` steps an adversarial term from a patch discriminator (`discriminator.py`); bf16
autocast on CUDA, gradient clipping, AdamW, EMA, non-finite steps skipped. The run folder is laid out as
`liquidgen train`'s: config.yaml, metrics.jsonl (loss, reconstruction PSNR, KL or codebook perplexity and
usage), loss.png, samples/step-XXXXXX.png (held-out originals, each row above its EMA reconstruction),
checkpoints/step-XXXXXX/ (+ the discriminator), and --resume. The result is an autoencoder by path:
`liquidgen precompute ... --autoencoder own --ae-option path=RUN`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

from . import checkpoint as ckpt_io
from .autoencoders.discriminator import PatchDiscriminator, adaptive_weight, discriminator_loss, generator_loss
from .autoencoders.own import ConvAutoencoder, psnr
from .config import AT_LEAST_ONE, CHOICES, MOMENTUM, NONNEGATIVE, RANGES, ConfigError, DataConfig, OptimConfig, _plain
from .data import BatchSampler, ImageData, load_dataset, load_split
from .distributed import launched_world, part_seed, pick_device
from .ema import EMA
from .optim import make_optimizer, make_scheduler
from .plots import plot_metrics_jsonl, save_grid
from .run_folder import claim
from .runtime import (MetricsLog, NonFiniteGuard, StopRequest, autocast, check_resume, loss_text, resume_newest,
                      seed_everything)


@dataclass
class AutoencoderModelConfig:
    kind: str = "kl"  # kl (KL-VAE) | vq (VQ-VAE)
    channels: int = 64  # width of the first level
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])  # widths per level; downscale 2^(levels-1)
    blocks: int = 1  # residual blocks per level
    latent_channels: int = 4  # channels of the latents (vq: the code dimension)
    kl_weight: float = 1e-6  # kl: weight of KL(q(z|x) || N(0, I)), in Stable Diffusion's units
    codebook_size: int = 512  # vq: number of codes
    codebook_decay: float = 0.99  # vq: EMA decay of the codebook statistics
    commitment: float = 0.25  # vq: beta of the commitment loss
    restart_threshold: float = 1.0  # vq: codes whose EMA count falls below this restart on batch vectors


@dataclass
class AutoencoderLossConfig:
    reconstruction: str = "l1"  # l1 | l2
    gan_weight: float = 0.0  # adversarial loss weight (x taming's adaptive weight); 0 switches it off
    gan_start: int = 2000  # steps of reconstruction-only training before the discriminator joins
    disc_channels: int = 64  # width of the patch discriminator's first layer
    disc_lr: float = 0.0  # the discriminator's learning rate (0: optim.lr)


@dataclass
class AutoencoderTrainConfig:
    steps: int = 20_000
    batch_size: int = 64
    ema_decay: float = 0.999
    ema_warmup: bool = True
    precision: str = "auto"  # auto (bf16 on CUDA) | bf16 | fp32
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    sample_every: int = 1000  # 0: only at the end
    ckpt_every: int = 5000  # 0: only the final checkpoint
    keep_checkpoints: int = 3
    keep_every: int = 0
    holdout: int = 500  # images kept out of training to measure reconstruction (when there is no test split)
    max_bad_steps: int = 20  # consecutive non-finite steps before the run stops


@dataclass
class AutoencoderConfig:
    model: AutoencoderModelConfig = field(default_factory=AutoencoderModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    train: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)

    def __post_init__(self):
        # Here, at load, not in CHOICES: optim.name's choices there are train's, which has linear layers for Muon.
        if self.optim.name == "muon":
            raise ConfigError("optim.name: muon trains the weights of linear layers (optim.py), and "
                              "train-autoencoder's networks have none, only convolutions; use optim.name=adamw")

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


RECONSTRUCTION = {"l1": F.l1_loss, "l2": F.mse_loss}
# Checked when the config loads (config.from_dict), beside the keys it shares with `liquidgen train`.
CHOICES.update({"model.kind": ("kl", "vq"), "loss.reconstruction": tuple(RECONSTRUCTION)})
RANGES.update({**dict.fromkeys(("model.channels", "model.channel_mult", "model.blocks", "model.latent_channels",
                                "model.codebook_size", "loss.disc_channels", "train.holdout"), AT_LEAST_ONE),
               **dict.fromkeys(("model.kl_weight", "model.commitment", "model.restart_threshold", "loss.gan_weight",
                                "loss.gan_start", "loss.disc_lr"), NONNEGATIVE),
               "model.codebook_decay": MOMENTUM})
GRID_COLUMNS, GRID_PAIRS = 8, 4  # sample grids: 4 rows of originals, each above its reconstructions


def split_data(config: AutoencoderConfig) -> tuple[ImageData, ImageData]:
    """(training images, held-out images): the test split where the dataset has one, else the last
    `train.holdout` images, which training then never sees."""
    d = config.data
    train = load_dataset(d.name, d.root, d.image_size, limit=d.limit, skip_bad_images=d.skip_bad_images)
    test = load_split(d.name, d.root, d.image_size, "test", config.train.holdout)
    if test is not None:
        return train, test
    holdout, batch = config.train.holdout, config.train.batch_size
    keep = len(train) - holdout
    if keep < batch:
        left = f"only {keep}, less than a batch of {batch} (train.batch_size)," if keep > 0 else "none"
        raise ValueError(f"train.holdout {holdout}: holding out {holdout} of the {len(train)} images leaves {left} "
                         f"to train on; lower train.holdout, or give more images")
    return tuple(ImageData(train.images[rows], train.labels[rows], train.num_classes, train.class_names)
                 for rows in (slice(0, keep), slice(keep, None)))


@torch.no_grad()
def measure(net: ConvAutoencoder, images: ImageData, device: torch.device, batch: int = 256) -> dict:
    """Reconstruction PSNR (mean over images, dB) of `images`; for a VQ-VAE also the share of codes used
    and the code perplexity over all of them."""
    values, counts = [], None
    for i in range(0, len(images), batch):
        x = images.to_model(images.images[i:i + batch].to(device))
        z = net.encode(x)
        values.append(psnr(net.decode(z), x).cpu())
        if net.quantizer is not None:
            idx = net.quantizer.nearest(z.movedim(1, -1).reshape(-1, net.latent_channels))
            c = torch.bincount(idx, minlength=net.quantizer.codes).cpu()
            counts = c if counts is None else counts + c
    out = {"psnr": float(torch.cat(values).mean())}
    if counts is not None:
        p = counts.double() / counts.sum()
        out["codebook_usage"] = float((counts > 0).double().mean())
        out["codebook_perplexity"] = float(torch.exp(-(p * torch.log(p + 1e-12)).sum()))
    return out


@dataclass
class AutoencoderRun:
    """Everything an autoencoder training run holds, built once by `start_run`."""

    config: AutoencoderConfig
    out: Path
    device: torch.device
    data: ImageData
    held_out: ImageData
    net: ConvAutoencoder
    spec: dict  # model.json: what rebuilds the network (`autoencoders.own.load_trained`)
    ema: EMA
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: BatchSampler
    metrics: MetricsLog
    disc: PatchDiscriminator | None = None
    disc_opt: torch.optim.Optimizer | None = None

    def amp(self):
        return autocast(self.device, self.config.train.precision)


def start_run(config: AutoencoderConfig, out: Path) -> AutoencoderRun:
    if launched_world() > 1:
        raise ValueError("train-autoencoder runs in one process; start it without accelerate launch / torchrun")
    tc, lc = config.train, config.loss
    device = pick_device(tc.device)
    seed_everything(tc.seed)
    data, held_out = split_data(config)
    options = {**dataclasses.asdict(config.model), "image_channels": data.channels}
    net = ConvAutoencoder(**options).to(device)
    if data.size % net.downscale:
        raise ValueError(f"image size {data.size} is not divisible by the downscale factor {net.downscale} "
                         f"(2^(len(model.channel_mult) - 1)); set data.image_size")
    spec = {"name": "autoencoder", "options": options, "image_size": data.size, "dataset": config.data.name}
    ema = EMA(net, tc.ema_decay, tc.ema_warmup)
    optimizer = make_optimizer(net, config.optim)
    scheduler = make_scheduler(optimizer, config.optim, tc.steps)
    disc = disc_opt = None
    if lc.gan_weight > 0:
        # pix2pix's 3 strided layers judge 70 px patches of 256 px images; small images get fewer layers
        layers = max(1, min(3, data.size.bit_length() - 4))
        disc = PatchDiscriminator(data.channels, lc.disc_channels, layers).to(device)
        # betas (0.5, 0.9): the usual GAN setting (taming), a short momentum for a moving target
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=lc.disc_lr or config.optim.lr, betas=(0.5, 0.9),
                                     weight_decay=0.0)
    batches = BatchSampler(data, tc.batch_size, seed=tc.seed, device=device, hflip=config.data.hflip)
    return AutoencoderRun(config, out, device, data, held_out, net, spec, ema, optimizer, scheduler, batches,
                          MetricsLog(out / "metrics.jsonl"), disc, disc_opt)


DISC_FILES = ("discriminator.safetensors", "discriminator-optimizer.safetensors")


def load_checkpoint(run: AutoencoderRun, ckpt: Path) -> dict:
    """Restore the network, EMA, optimizer, scheduler, RNG and (where saved) the discriminator from
    `ckpt`; returns its state.json. Every file is read before anything is restored, so a checkpoint
    that raises CorruptCheckpoint changes nothing (`runtime.resume_newest` then tries the one before)."""
    check_resume(ckpt, run.config.to_dict(), run.spec, ("model",))
    if run.disc is not None and ckpt_io.read_files(ckpt, ("state.json",))["state.json"].get("discriminator"):
        ckpt_io.read_files(ckpt, DISC_FILES)  # only to raise CorruptCheckpoint before the network is touched
    state = ckpt_io.load_training_state(ckpt, run.net, run.ema.model, run.optimizer, run.scheduler)
    if run.disc is not None and state.get("discriminator"):
        ckpt_io.load_module_and_optimizer(ckpt, "discriminator", run.disc, run.disc_opt, state["discriminator"])
    return state


def restore(run: AutoencoderRun, resume: bool) -> dict:
    """Continue from the newest readable checkpoint (with `resume`), or start afresh; then writes
    config.yaml. Returns the state to go on from: step, skipped_steps."""
    state = {"step": 0, "skipped_steps": 0}
    found = resume_newest(run.out, lambda ckpt: load_checkpoint(run, ckpt)) if resume else None
    if resume and found is None:
        print(f"warning: --resume: {run.out} holds no checkpoint to resume from; starting a new run there")
    if found is not None:
        ckpt, saved = found
        state.update({k: saved[k] for k in state if k in saved})
        run.ema.updates = saved["ema_updates"]
        print(f"resumed from {ckpt} at step {state['step']}")
    (run.out / "samples").mkdir(parents=True, exist_ok=True)
    (run.out / "config.yaml").write_text(yaml.safe_dump(run.config.to_dict(), sort_keys=False))
    run.metrics.restart(state["step"])
    return state


def update(run: AutoencoderRun, step: int, guard: NonFiniteGuard) -> dict | None:
    """One step: reconstruction + bottleneck loss (+ the adaptive GAN term after loss.gan_start), clipped,
    then the discriminator's step. Returns the step's scalars, or None for a skipped non-finite step."""
    lc = run.config.loss
    torch.manual_seed(part_seed(run.config.train.seed, step, 0))  # as in train.py: noise depends on (seed, step)
    x, _, _ = run.batches(step)
    run.net.train()
    with run.amp():
        recon, bottleneck, stats = run.net(x)
    rec = RECONSTRUCTION[lc.reconstruction](recon.float(), x)
    loss = rec + bottleneck
    gan = lc.gan_weight > 0 and step >= lc.gan_start
    if gan:
        with run.amp():
            g_loss = generator_loss(run.disc(recon).float())
        weight = lc.gan_weight * adaptive_weight(rec, g_loss, run.net.decoder.out.weight)
        loss = loss + weight * g_loss
        stats.update(gan_g=g_loss.detach(), gan_weight=weight)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip = run.config.optim.grad_clip
    grad_norm = torch.nn.utils.clip_grad_norm_(run.net.parameters(), clip if clip > 0 else float("inf"))
    finite = torch.isfinite(grad_norm)
    guard(finite, step)
    if not finite:  # a host sync each step: this loop is not launch-bound
        guard.check()
        return None
    run.optimizer.step()
    run.scheduler.step()
    run.ema.update(run.net)
    if gan:
        with run.amp():
            d_loss = discriminator_loss(run.disc(x).float(), run.disc(recon.detach()).float())
        run.disc_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        run.disc_opt.step()
        stats["gan_d"] = d_loss.detach()
    return {"loss": loss.detach(), "reconstruction": rec.detach(), "psnr": psnr(recon.detach(), x).mean(),
            "grad_norm": grad_norm, **{k: v for k, v in stats.items() if v.ndim == 0}}


@dataclass
class Window:
    """The steps since the last log line: the sums of the taken steps' scalars, and all steps and their time."""

    sums: dict[str, float] = field(default_factory=dict)
    taken: int = 0
    steps: int = 0
    seconds: float = 0.0

    def add(self, scalars: dict | None, seconds: float) -> None:
        """A step's scalars, or None for a skipped one, which is only counted."""
        self.steps += 1
        self.seconds += seconds
        if scalars is not None:
            self.taken += 1
            for k, v in scalars.items():
                self.sums[k] = self.sums.get(k, 0.0) + float(v)


def log_window(run: AutoencoderRun, bar: tqdm, window: Window, step: int, skipped: int) -> None:
    """A metrics line with the means over the window's taken steps: none where every step was skipped."""
    tc = run.config.train
    line = {"step": step, **{k: v / window.taken for k, v in window.sums.items()}, "lr": run.scheduler.get_last_lr()[0],
            "images_per_s": window.steps * tc.batch_size / window.seconds, "skipped_steps": skipped}
    run.metrics.append(line)
    shown = {"loss": loss_text(line, window.steps)}
    if "psnr" in line:  # not in a window of skipped steps
        shown["psnr"] = f"{line['psnr']:.2f} dB"
    bar.set_postfix(shown)
    if bar.disable:
        print(f"step {step}/{tc.steps}  " + "  ".join(f"{k} {v}" for k, v in shown.items())
              + f"  {line['images_per_s']:.0f} img/s", flush=True)


def save_samples(run: AutoencoderRun, step: int) -> None:
    """Held-out originals, each row above its EMA reconstruction."""
    x = run.held_out.to_model(run.held_out.images[:GRID_COLUMNS * GRID_PAIRS].to(run.device))
    with torch.no_grad(), run.amp():
        recon = run.ema.model.decode(run.ema.model.encode(x)).float().clamp(-1, 1)
    rows = [r for k in range(len(x) // GRID_COLUMNS)
            for r in (x[k * GRID_COLUMNS:(k + 1) * GRID_COLUMNS], recon[k * GRID_COLUMNS:(k + 1) * GRID_COLUMNS])]
    save_grid(torch.cat(rows), run.out / "samples" / f"step-{step:06d}.png", nrow=GRID_COLUMNS)
    plot_metrics_jsonl(run.metrics.path, run.out / "loss.png", keys=("loss", "psnr"))


def save(run: AutoencoderRun, step: int, skipped: int, extra: dict | None = None) -> Path:
    tc = run.config.train
    more, state = {}, {"ema_updates": run.ema.updates, "skipped_steps": skipped, **(extra or {})}
    if run.disc is not None:
        more, state["discriminator"] = ckpt_io.module_and_optimizer_files("discriminator", run.disc, run.disc_opt)
    return ckpt_io.save_checkpoint(run.out, step, run.config, run.spec, run.net, run.ema.model, run.optimizer,
                                   run.scheduler, extra=state, keep=tc.keep_checkpoints, keep_every=tc.keep_every,
                                   more=more)


def finish(run: AutoencoderRun, step: int, skipped: int) -> None:
    """The EMA weights' held-out reconstruction, logged, then the final checkpoint that records it."""
    held = measure(run.ema.model, run.held_out, run.device)
    run.metrics.append({"step": step, **{f"heldout_{k}": v for k, v in held.items()}})
    summary = ", ".join(f"{k} {v:.4g}" for k, v in held.items())
    print(f"held-out reconstruction ({len(run.held_out)} images, EMA weights): {summary}")
    if skipped:
        print(f"{skipped} of {step} steps skipped (non-finite gradients): the final checkpoint holds the weights "
              f"of the last step taken")
    save(run, step, skipped, {"heldout": held})


def train_autoencoder(config: AutoencoderConfig, out_dir: str | Path, resume: bool = False,
                      overwrite: bool = False) -> Path:
    """Train per `config` into `out_dir`, which must not hold another run: with `resume`, continue from
    its newest checkpoint; with `overwrite`, delete that run first. Returns the final checkpoint folder."""
    with claim(out_dir, resume=resume, overwrite=overwrite):
        return train_loop(config, Path(out_dir), resume)


def train_loop(config: AutoencoderConfig, out_dir: Path, resume: bool) -> Path:
    """`train_autoencoder` once the folder is this run's."""
    tc = config.train
    run = start_run(config, out_dir)
    state = restore(run, resume)
    net, data = run.net, run.data
    print(f"{config.model.kind}-autoencoder: {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters, "
          f"{len(data)} images {data.channels}x{data.size}x{data.size} -> latents "
          f"{net.latent_channels}x{data.size // net.downscale}x{data.size // net.downscale}, "
          f"{len(run.held_out)} held out, on {run.device}")
    guard = NonFiniteGuard(tc.max_bad_steps, state["skipped_steps"], run.device)
    window = Window()
    stop = StopRequest()
    bar = tqdm(range(state["step"], tc.steps), initial=state["step"], total=tc.steps, desc="train-autoencoder",
               disable=None)
    try:
        for step in bar:
            t0 = time.perf_counter()
            # A skipped step goes on below as well: the final checkpoint, a periodic one or a stop may fall on it.
            window.add(update(run, step, guard), time.perf_counter() - t0)
            done = step + 1
            last = done == tc.steps or stop.signal is not None
            if done % tc.log_every == 0 or last:
                log_window(run, bar, window, done, guard.check())
                window = Window()
            if (tc.sample_every and done % tc.sample_every == 0) or last:
                save_samples(run, done)
            if last:
                finish(run, done, guard.check())
            elif tc.ckpt_every and done % tc.ckpt_every == 0:
                save(run, done, guard.check())
            if stop.signal is not None:
                print(f"\nstopped by {stop.signal} at step {done}: checkpoint saved; continue with --resume",
                      flush=True)
                break
        bar.close()
    finally:
        stop.restore()
    return ckpt_io.resolve(out_dir)
