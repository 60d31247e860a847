"""Prompt retrieval: an offline prompt-following score, liquidgen's answer to CLIP score where no CLIP weights can
be had.

A *prompt matcher* is a small image encoder trained contrastively against the frozen sentence embeddings (MiniLM by
default) of a captioned dataset's captions, with one fixed recipe and seed (`liquidgen eval fit-prompt-matcher`),
like the reference classifiers. Its loss is CLIP's symmetric InfoNCE (Radford et al. 2021, Fig. 3): image i and
caption j are scored by a learned temperature times the cosine of their embeddings, and cross-entropy picks the
right caption for each image and the right image for each caption. A sample follows its prompt when the matcher
ranks that prompt first (top-1) or among the first five (top-5) of a pool of candidate prompts: by default every
caption the matcher was fitted with, plus the held-out ones given then. The same score for real images of the same
prompts is the ceiling.

A matcher is one safetensors file: the image tower, the text projection and the temperature, and as metadata the
recipe, the text encoder's spec, the caption pool and the ceilings measured when it was fitted. Nothing is
unpickled.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..checkpoint import save_safetensors, state_dict_problems
from ..data import warn
from ..latent_space import to_float
from ..text import build_text_encoder
from .classifier import ResidualClassifier, fit_input, random_shift, read_safetensors_with_metadata

META_KEY = "liquidgen_prompt_matcher"


@dataclass(frozen=True)
class MatcherRecipe:
    """The fixed recipe (changing it changes every retrieval score measured with the matcher). Chosen on one H200
    from 8 recipes (benchmarks/results/2026-12-04-prompt-matcher, `prompt_matcher.py --epochs 40 120 --size 32 64
    --width 32 64 --batch 512`, each fitted on all 7,150 captioned emoji): top-5 0.956 on real training images and
    0.325 on real held-out ones (the best of the 8 on held-out; 40 epochs reach 0.26-0.41 / 0.10-0.12), in 61 s there.
    A GPU recipe: on the 2-core CPU, 30 epochs of the old 32 px / width 32 recipe took 20 minutes."""

    epochs: int = 120
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    size: int = 64  # the side images are resized to first: 64 generalises to held-out concepts better than 32
    width: int = 64  # channels of the image tower's first stage
    dim: int = 256  # the shared embedding's size
    shift: int = 2  # random translation (pixels at `size`); no mirroring: "left arrow" must stay left
    # a seeded pick of this many training images (at most a tenth) is withheld from fitting, and its retrieval measured
    # beside as many fitted ones: the fitted ones score what a copy of a training image would, the withheld ones what
    # a new drawing of a training concept does (every emoji caption is unique, so theirs are never fitted)
    ceiling_images: int = 500


class PromptMatcher(nn.Module):
    """Images and caption embeddings to unit vectors in one space. The image tower is the second reference
    network's architecture with its class head as the projection; the text side is a 2-layer MLP over the frozen
    text encoder's pooled embedding."""

    def __init__(self, channels: int, size: int, text_dim: int, dim: int = 256, width: int = 32):
        super().__init__()
        self.channels, self.size, self.text_dim, self.dim = channels, size, text_dim, dim
        self.image = ResidualClassifier(channels, size, num_classes=dim, width=width)
        self.text = nn.Sequential(nn.Linear(text_dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature

    def embed_images(self, x: Tensor) -> Tensor:
        """Float images in [-1, 1] (any size and 1 or 3 channels) -> (N, dim) unit vectors."""
        return F.normalize(self.image(x)[0], dim=-1)

    def embed_text(self, pooled: Tensor) -> Tensor:
        return F.normalize(self.text(pooled), dim=-1)

    def logits(self, images: Tensor, pooled: Tensor) -> Tensor:
        scale = self.log_scale.clamp(max=math.log(100)).exp()  # CLIP clips the scale at 100
        return scale * self.embed_images(images) @ self.embed_text(pooled).T


def unique_captions(captions: Sequence[str]) -> tuple[list[str], Tensor]:
    """(distinct captions in first-seen order, index of each caption among them)."""
    order: dict[str, int] = {}
    index = [order.setdefault(c, len(order)) for c in captions]
    return list(order), torch.tensor(index)


def contrastive_loss(logits: Tensor, caption_ids: Tensor) -> Tensor:
    """Symmetric InfoNCE over a batch whose images may share captions: the target of each row (and column) is
    spread evenly over every item with the same caption, so two images of one caption are not pushed apart."""
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def fit_matcher(images: Tensor, captions: Sequence[str], text_encoder: dict, recipe: MatcherRecipe = MatcherRecipe(),
                device: torch.device | str = "cpu", progress: bool = True,
                features: dict[str, Tensor] | None = None) -> PromptMatcher:
    """Train a prompt matcher on uint8 `images` (N, C, H, W) and their `captions`, embedded by the text encoder of
    spec `text_encoder` (`build_text_encoder(**spec)`), or looked up in `features` (caption -> pooled embedding by
    that encoder, e.g. a precomputed dataset's), which spares loading the text model."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(images) < recipe.batch_size:
        raise ValueError(f"{len(images)} captioned images are fewer than one batch of {recipe.batch_size}")
    names, ids = unique_captions(captions)
    if len(names) < 2:
        raise ValueError("a prompt matcher needs at least 2 different captions")
    device = torch.device(device)
    pooled = embed_captions(names, text_encoder, {} if features is None else features).to(device)
    torch.manual_seed(recipe.seed)
    model = PromptMatcher(images.shape[1], recipe.size, pooled.shape[1], recipe.dim, recipe.width).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), recipe.lr, weight_decay=recipe.weight_decay)
    per_epoch = len(images) // recipe.batch_size
    steps = recipe.epochs * per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    g = torch.Generator().manual_seed(recipe.seed)  # a CPU generator: the same order on every device
    # resized once, by the same function the image tower applies to every input at scoring (`fit_input`)
    x = torch.cat([fit_input(to_float(b), b.shape[1], recipe.size) for b in images.split(1000)]).to(device)
    ids = ids.to(device)
    model.train()
    for _ in tqdm(range(recipe.epochs), desc="prompt matcher", disable=None if progress else True):
        for idx in torch.randperm(len(x), generator=g)[: per_epoch * recipe.batch_size].split(recipe.batch_size):
            idx = idx.to(device)
            xb = random_shift(x[idx], recipe.shift, g) if recipe.shift else x[idx]
            batch_ids, inverse = ids[idx].unique(return_inverse=True)
            loss = contrastive_loss(model.logits(xb, pooled[batch_ids][inverse]), inverse)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval().requires_grad_(False)


def embed_captions(captions: Sequence[str], text_encoder: dict, features: dict[str, Tensor]) -> Tensor:
    """Pooled embeddings (N, D) of `captions`: from `features` where it has them; the rest (if any) encoded by the
    text encoder of spec `text_encoder`, on the CPU, and added to `features`, so each caption is encoded once."""
    missing = [c for c in dict.fromkeys(captions) if c not in features]
    if missing:
        features.update(zip(missing, build_text_encoder(**{**text_encoder, "device": "cpu"}).encode(missing).pooled))
    return torch.stack([features[c].float() for c in captions])


@dataclass
class Matcher:
    """A loaded prompt matcher: the network, the metadata of its file, and the text encoder it was fitted with."""

    net: PromptMatcher
    info: dict
    features: dict[str, Tensor] = field(default_factory=dict)  # caption -> pooled embedding, known or encoded

    @property
    def pool(self) -> list[str]:
        """The default candidate prompts: the captions it was fitted with, then the held-out ones."""
        return self.info["pool"]

    def embed_prompts(self, prompts: Sequence[str]) -> Tensor:
        device = next(self.net.parameters()).device
        pooled = embed_captions(prompts, self.info["text_encoder"], self.features)
        with torch.no_grad():
            return self.net.embed_text(pooled.to(device)).cpu()

    @torch.no_grad()
    def embed_images(self, images: Tensor, batch_size: int = 500) -> Tensor:
        device = next(self.net.parameters()).device
        return torch.cat([self.net.embed_images(to_float(b.to(device))).cpu() for b in images.split(batch_size)])

    def retrieval(self, images: Tensor, prompts: Sequence[str], pool: Sequence[str] | None = None) -> dict:
        """Top-1 / top-5 retrieval of each uint8 image's prompt among `pool` (default: the matcher's). Every prompt
        is added to the pool if missing, so a prompt is always retrievable; a caption listed twice is one candidate.
        Candidates scored exactly like the prompt (another caption the text encoder cannot tell apart) are ranked
        in random order, in expectation: a hit counts the chance that the prompt comes within the first k."""
        pool = list(dict.fromkeys([*(pool if pool is not None else self.pool), *prompts]))
        if len(pool) <= 5:
            warn(f"prompt retrieval among {len(pool)} candidates: top-5 is 1 by construction and top-1 is at least "
                 f"1/{len(pool)} by chance; give --candidates more prompts")
        where = {p: i for i, p in enumerate(pool)}
        sims = self.embed_images(images) @ self.embed_prompts(pool).T
        true = sims[torch.arange(len(images)), torch.tensor([where[p] for p in prompts])]
        above = (sims > true[:, None]).sum(1).double()  # 0 when the prompt is the best match
        tied = (sims == true[:, None]).sum(1).double()  # the prompt and the candidates scored exactly alike
        top1, top5 = (((k - above) / tied).clamp(0, 1) for k in (1, 5))  # P(rank < k), the rank uniform in the tie
        rank = above + (tied - 1) / 2  # the mid-rank of the tie, 0-based
        return {"prompt_top1": float(top1.mean()), "prompt_top1_ci95": wilson(top1),
                "prompt_top5": float(top5.mean()), "prompt_top5_ci95": wilson(top5),
                # the median proper (the mean of the middle two of an even count), not torch.median's lower one
                "prompt_median_rank": float(rank.quantile(0.5)) + 1, "prompt_images": len(images),
                "prompt_pool": len(pool)}


def wilson(hits: Tensor, z: float = 1.96) -> list[float]:
    """Wilson's 95% score interval of a success rate (a bootstrap of a mean of 0/1 values gives about the same);
    `hits` may hold the expected hits of tied rankings (fractions), which enter through their mean."""
    n, p = len(hits), float(hits.float().mean())
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at p = 0 or 1 the bound is exactly 0 or 1; rounding leaves -1e-17, printed as "-0.000"
    return [max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))]


def save_matcher(net: PromptMatcher, info: dict, path: str | Path) -> Path:
    return save_safetensors(net.state_dict(), path, {META_KEY: json.dumps(info)})


def load_matcher(path: str | Path, device: torch.device | str = "cpu") -> Matcher:
    """The prompt matcher in `path`; an unusable file is one ValueError naming it (FileNotFoundError if missing)."""
    path = Path(path).expanduser()
    make = "make one with `liquidgen eval fit-prompt-matcher --root CAPTIONED_FOLDER --out FILE`"
    if not path.is_file():
        raise FileNotFoundError(f"prompt matcher {path} not found; {make}")
    info, state = read_safetensors_with_metadata(path, META_KEY, "prompt matcher", make)
    try:
        recipe = info["recipe"]
        net = PromptMatcher(info["channels"], recipe["size"], info["text_dim"], recipe["dim"], recipe["width"])
        pool, spec = info["pool"], info["text_encoder"]
        if not (isinstance(pool, list) and pool and isinstance(spec, dict) and "name" in spec):
            raise ValueError("no caption pool or text encoder")
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: its prompt-matcher metadata is incomplete ({e}); {make}") from None
    problems = state_dict_problems(net.state_dict(), state)
    if problems:
        raise ValueError(f"{path}: its weights do not fit the prompt matcher its metadata describes ({problems}); "
                         f"{make}")
    net.load_state_dict(state)
    return Matcher(net.to(device).eval().requires_grad_(False), info)


def read_captioned(root: str | Path, size: int) -> tuple[Tensor, list[str], dict[str, Tensor], dict | None]:
    """(uint8 RGB images (N, 3, H, W), captions, caption -> pooled text embedding, the spec of the encoder that
    made them) of an image folder with captions (metadata.jsonl or .txt files, `precompute.FolderSource`'s layout;
    no embeddings, None) or of a precomputed pixel dataset with pooled captions (`liquidgen precompute ...
    --text-encoder`: its embeddings and encoder), which needs no text model."""
    root = Path(root).expanduser()
    if (root / "manifest.json").is_file():
        return _read_precomputed(root)
    from ..precompute import FolderSource

    source = FolderSource(str(root), size, None, 3, resize=True)
    if not source.has_captions:
        raise ValueError(f"{root} has no captions: a prompt matcher needs a metadata.jsonl or a .txt file per image")
    rows = [source.read(i) for i in tqdm(range(len(source)), desc=f"reading {root}", disable=None)]
    return torch.from_numpy(np.stack([r[0] for r in rows])), [r[2] for r in rows], {}, None


def _read_precomputed(root: Path) -> tuple[Tensor, list[str], dict[str, Tensor], dict | None]:
    from ..data import load_precomputed

    data = load_precomputed(root)
    if data.images.dtype != torch.uint8:
        raise ValueError(f"{root} holds latents; a prompt matcher needs pixels: give the image folder, or a dataset "
                         f"precomputed without --autoencoder")
    if not data.captions:
        raise ValueError(f"{root} has no captions: precompute it from a captioned folder with --text-encoder")
    features = {}
    if data.context is not None and not data.text_tokens:
        features = dict(zip(data.captions, data.context.float()))
    images = data.images.expand(-1, 3, -1, -1) if data.images.shape[1] == 1 else data.images
    return images, list(data.captions), features, data.text_encoder


def ceiling_split(n: int, recipe: MatcherRecipe) -> tuple[Tensor, Tensor]:
    """(withheld, fitted): indices of n training images, a seeded pick of `recipe.ceiling_images` (at most a tenth)
    withheld from fitting and the rest. The fitted-training ceiling scores the first len(withheld) fitted ones."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(recipe.seed))
    return order.tensor_split([min(recipe.ceiling_images, n // 10)])


def fit_prompt_matcher(train_root: str | Path, heldout_roots: Sequence[str | Path], size: int, out: str | Path,
                       text_encoder: dict | None = None, recipe: MatcherRecipe = MatcherRecipe(),
                       device: torch.device | str = "cpu") -> dict:
    """Fit a matcher on the captioned folder (or precomputed pixel dataset) `train_root`, measure the ceilings
    (real images' retrieval among the pool of every caption: a seeded pick of training images, and each held-out
    folder), write it to `out`. `text_encoder`: the spec of the captions' encoder (None: a precomputed dataset's,
    else MiniLM). Returns its info."""
    images, captions, features, made_by = read_captioned(train_root, size)
    heldout = {}
    for root in heldout_roots:
        x, caps, more, other = read_captioned(root, size)
        if made_by and other and other != made_by:  # one caption's embedding would replace another encoder's
            raise ValueError(f"the captions of {root} were embedded by {other}, those of {train_root} by {made_by}: "
                             f"the matcher needs one text encoder's; precompute both with the same --text-encoder "
                             f"(or give the image folders)")
        heldout[Path(root).name], features = (x, caps), {**features, **more}
        made_by = made_by or other
    text_encoder = text_encoder or made_by or {"name": "minilm"}
    if made_by and made_by != text_encoder:
        raise ValueError(f"the precomputed captions were embedded by {made_by}, not the requested {text_encoder}; "
                         f"leave the text encoder out to use theirs")
    withheld, fitted = ceiling_split(len(images), recipe)
    net = fit_matcher(images[fitted], [captions[i] for i in fitted], text_encoder, recipe, device, features=features)
    pool = list(dict.fromkeys([*captions, *(c for _, caps in heldout.values() for c in caps)]))
    matcher = Matcher(net, {"pool": pool, "text_encoder": text_encoder}, features)
    ceilings = {name: matcher.retrieval(images[pick], [captions[i] for i in pick])
                for name, pick in (("training", fitted[:len(withheld)]), ("withheld", withheld))}
    ceilings |= {name: matcher.retrieval(x, caps) for name, (x, caps) in heldout.items()}
    info = {"channels": net.channels, "text_dim": net.text_dim, "recipe": asdict(recipe),
            "text_encoder": text_encoder, "train_root": str(train_root), "train_images": len(fitted),
            "image_size": size, "pool": pool, "ceilings": ceilings}
    save_matcher(net, info, out)
    return info


def describe_ceilings(info: dict) -> str:
    """One line per ceiling measured at fitting: real images' retrieval among the whole pool."""
    names = {"training": "fitted training", "withheld": "withheld training"}
    return "\n".join(f"real {names.get(name, name)} images ({c['prompt_images']:,}): top-1 {c['prompt_top1']:.3f}, "
                     f"top-5 {c['prompt_top5']:.3f} among {c['prompt_pool']:,} prompts"
                     for name, c in info.get("ceilings", {}).items())


__all__ = ["Matcher", "MatcherRecipe", "PromptMatcher", "ceiling_split", "contrastive_loss", "describe_ceilings",
           "embed_captions", "fit_matcher", "fit_prompt_matcher", "load_matcher", "read_captioned", "save_matcher",
           "unique_captions", "wilson"]
