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
"""
from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from liquidgen.bench.records import append_record, read_records
from liquidgen.evaluation.retrieval import MatcherRecipe, fit_prompt_matcher


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
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
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
