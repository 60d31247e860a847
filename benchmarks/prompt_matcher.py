"""Prompt-matcher recipes on the captioned emoji (issue 22): the ceilings each recipe reaches and its fitting time,
to choose `MatcherRecipe`'s defaults from measurement.

    python benchmarks/prompt_matcher.py --train /tmp/emoji/emoji-64 --heldout /tmp/emoji/emoji-64-heldout \\
        --out $OUT --epochs 40 100 --size 32 64 --width 32 48 --batch 256 1024

--train / --heldout: pixel datasets precomputed with MiniLM captions (`liquidgen precompute folder ...
--text-encoder minilm`), so no text model is needed where this runs; image folders work too where MiniLM is
installed. Every combination of the lists is fitted (the rest of the recipe is `MatcherRecipe`'s) and its ceilings
recorded: real training images the matcher fitted and as many it did not (a seeded pick, withheld from fitting), and
real held-out images, top-1 / top-5 among every caption of both. Writes prompt_matcher.jsonl (rerun: finished
recipes skipped) and a markdown table.

    python benchmarks/prompt_matcher.py --train ... --heldout ... --out DIR --robustness MATCHER.safetensors

scores the real training images of a fitted matcher's own training ceiling (precomputed pixels) as they are and
under small changes a generator's drawing would have (a 2-pixel shift, blur, resolution, noise, a mirror), beside
the held-out images: whether the score reads concepts or memorised pixels. Writes robustness.md.
"""
from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from liquidgen.bench.records import append_record, read_records
from liquidgen.data import load_precomputed
from liquidgen.evaluation.retrieval import MatcherRecipe, ceiling_split, fit_prompt_matcher, load_matcher


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur (7 taps) of float images (N, C, H, W), edges replicated."""
    k = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / (2 * sigma**2))
    k = (k / k.sum()).to(x)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), k.view(1, 1, 1, 7).expand(c, 1, 1, 7), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), k.view(1, 1, 7, 1).expand(c, 1, 7, 1), groups=c)


def robustness(matcher_file: str, train_root: str, heldout_root: str, out: Path) -> None:
    matcher = load_matcher(matcher_file)
    train, heldout = load_precomputed(train_root), load_precomputed(heldout_root)
    if train.images.dtype != torch.uint8:
        raise SystemExit(f"{train_root} holds latents; --robustness needs precomputed pixels")
    matcher.features = {c: v.float() for d in (train, heldout) for c, v in zip(d.captions, d.context)}
    # the images of the matcher's fitted-training ceiling (a matcher fitted before the withheld split drew them
    # from all images)
    withheld, fitted = ceiling_split(len(train.captions), MatcherRecipe(**matcher.info["recipe"]))
    pick = (fitted[:len(withheld)] if "withheld" in matcher.info.get("ceilings", {})
            else torch.cat([withheld, fitted])[:matcher.info["recipe"]["ceiling_images"]])
    x, captions = train.images[pick], [train.captions[i] for i in pick]
    xf, size = x.float(), x.shape[-1]
    noise = torch.randn(xf.shape, generator=torch.Generator().manual_seed(1))
    changed = {"as they are": xf, "shifted 2 px": torch.roll(xf, (2, 2), (2, 3)), "blur sigma 0.7": blur(xf, 0.7),
               "blur sigma 1.5": blur(xf, 1.5), "noise std 8": xf + 8 * noise, "noise std 20": xf + 20 * noise,
               f"down to {size // 2} px and up": F.interpolate(F.interpolate(xf, size // 2, mode="area"), size,
                                                               mode="bilinear"),
               "mirrored": xf.flip(3)}
    lines = ["| real images | top-1 | top-5 | median rank |", "|---|---:|---:|---:|"]
    for name, images in changed.items():
        r = matcher.retrieval(images.round().clamp(0, 255).to(torch.uint8), captions)
        lines.append(f"| {len(pick)} training, {name} | {r['prompt_top1']:.3f} | {r['prompt_top5']:.3f} | "
                     f"{r['prompt_median_rank']:.0f} |")
    r = matcher.retrieval(heldout.images, list(heldout.captions))
    lines.append(f"| {len(heldout.captions)} held-out | {r['prompt_top1']:.3f} | {r['prompt_top5']:.3f} | "
                 f"{r['prompt_median_rank']:.0f} |")
    table = "\n".join(lines) + f"\n\nMatcher: {matcher_file}; retrieval among {r['prompt_pool']:,} captions.\n"
    (out / "robustness.md").write_text(table)
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="captioned training images (precomputed pixels or a folder)")
    parser.add_argument("--heldout", required=True, help="captioned held-out images, the same kind")
    parser.add_argument("--out", required=True, help="records and table")
    parser.add_argument("--epochs", type=int, nargs="+", default=[MatcherRecipe.epochs], help="epochs to try")
    parser.add_argument("--size", type=int, nargs="+", default=[MatcherRecipe.size], help="image sides to try")
    parser.add_argument("--width", type=int, nargs="+", default=[MatcherRecipe.width], help="tower widths to try")
    parser.add_argument("--batch", type=int, nargs="+", default=[MatcherRecipe.batch_size], help="batches to try")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--robustness", metavar="MATCHER", help="no fitting: score real images, changed slightly, "
                        "with this fitted matcher (see above)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.robustness:
        robustness(args.robustness, args.train, args.heldout, out)
        return
    path = out / "prompt_matcher.jsonl"
    print("torch", torch.__version__, torch.cuda.get_device_name() if args.device != "cpu" else "cpu", flush=True)
    rows = {r["key"]: r for r in read_records(path)}
    for epochs, size, width, batch in itertools.product(args.epochs, args.size, args.width, args.batch):
        recipe = replace(MatcherRecipe(), epochs=epochs, size=size, width=width, batch_size=batch)
        key = f"epochs{epochs}|size{size}|width{width}|batch{batch}"
        if key in rows:
            continue
        t0 = time.perf_counter()
        info = fit_prompt_matcher(args.train, [args.heldout], 64, out / "last.safetensors", recipe=recipe,
                                  device=args.device)
        c = info["ceilings"]
        rows[key] = {"key": key, "recipe": asdict(recipe), "seconds": time.perf_counter() - t0,
                     "training": c["training"], "withheld": c["withheld"], "heldout": c[Path(args.heldout).name]}
        append_record(path, rows[key])
        print(f"{key}: top-5 of fitted / withheld training images {c['training']['prompt_top5']:.3f} / "
              f"{c['withheld']['prompt_top5']:.3f}, of held-out concepts {rows[key]['heldout']['prompt_top5']:.3f} "
              f"({rows[key]['seconds']:.0f} s)", flush=True)
    lines = ["| epochs | size | width | batch | fit s | fitted training top-1 / top-5 "
             "| withheld training top-1 / top-5 | held-out concepts top-1 / top-5 |", "|---" * 8 + "|"]
    for r in rows.values():
        c = r["recipe"]
        lines.append(f"| {c['epochs']} | {c['size']} | {c['width']} | {c['batch_size']} | {r['seconds']:.0f} | "
                     + " | ".join(f"{r[k]['prompt_top1']:.3f} / {r[k]['prompt_top5']:.3f}" if k in r else "-"
                                  for k in ("training", "withheld", "heldout")) + " |")
    pool = next(iter(rows.values()))["training"]["prompt_pool"] if rows else 0
    table = "\n".join(lines) + f"\n\nRetrieval among {pool:,} captions (both splits)."
    (out / "prompt_matcher.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
