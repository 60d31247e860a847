"""The captioned-emoji text-to-image study (issue 22): LiquidGen-S (pooled text through AdaGN) against TLD's DiT-S
(cross-attention to [time, pooled text]), on 64 px pixels and on taef2 latents, each for the same GPU minutes.

    python benchmarks/emoji_study.py --data /tmp/emoji --runs /tmp/runs --out $OUT --minutes 5 \\
        liquid dit liquid-latent dit-latent
    python benchmarks/emoji_study.py ... liquid --variant mlp --set model.options.context_mlp=true   # a recipe

--data holds four datasets precomputed with MiniLM captions (`liquidgen precompute folder ... --text-encoder
minilm`, from `liquidgen data emoji`'s train/ and heldout/): emoji-64 and emoji-64-heldout (pixels), emoji-taef2-64
and emoji-taef2-64-heldout (taef2 latents; only for the -latent contenders). Their stored caption embeddings
condition the samples, so no text model is needed where this runs.

Per contender (resumable: a run trained to its budget is reused, a scored record skipped):
- train its config (`configs/emoji-*.yaml`) for --minutes of compiled training;
- at each --cfg, draw --n samples cycling through --prompts seen captions (a seeded pick of the training captions)
  and through every held-out caption, and score each set: prompt retrieval (top-1 / top-5 among all captions of
  both splits, by a prompt matcher fitted here on the pixel datasets), the emoji category's accuracy, and FD in two
  reference networks' features (CIFAR-10's small-data recipes, fitted here on the training pixels);
- grids of seen and held-out prompts at each scale, and a prompt-interpolation strip and GIF at the run's own scale.
The real images' retrieval (the ceilings) comes with the matcher. Writes emoji_study.jsonl, emoji_study.md, grids.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from liquidgen.bench.budget import budgeted_config, train_to_budget
from liquidgen.bench.records import append_record, read_records
from liquidgen.data import load_precomputed
from liquidgen.evaluation.classifier import RECIPES, ensure_classifier
from liquidgen.evaluation.evaluate import Scorer
from liquidgen.evaluation.retrieval import MatcherRecipe, describe_ceilings, fit_prompt_matcher, load_matcher
from liquidgen import interpolate as interp
from liquidgen.generate import Pipeline
from liquidgen.latent_space import to_uint8
from liquidgen.plots import save_gif, save_grid

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = {"liquid": ("emoji-liquid-S-text.yaml", "emoji-64"), "dit": ("emoji-dit-S-tld.yaml", "emoji-64"),
              "liquid-latent": ("emoji-liquid-S-text-latent.yaml", "emoji-taef2-64"),
              "dit-latent": ("emoji-dit-S-tld-latent.yaml", "emoji-taef2-64")}


def train_contender(contender: str, name: str, args) -> Path:
    """Train `contender` (a CONTENDERS key) with --set into the run folder `name` (the contender and --variant)."""
    file, data = CONTENDERS[contender]
    config = budgeted_config(ROOT / "configs" / file, args.minutes, args.device,
                             [f"data.root={Path(args.data) / data}", *args.set], compiled=args.device != "cpu")
    run = Path(args.runs) / name
    train_to_budget(config, run)  # a rerun continues to the budget
    return run


def prompt_sets(args, train, heldout) -> dict[str, tuple[list[str], torch.Tensor, torch.Tensor]]:
    """{"seen" | "heldout": (captions, their pooled embeddings, their category labels)}: a seeded pick of
    training captions (of the precomputed `train`), and every held-out one."""
    sets = {}
    for split, data in (("seen", train), ("heldout", heldout)):
        if split not in args.sets:
            continue
        pick = torch.arange(len(data.captions))
        if split == "seen":
            pick = torch.randperm(len(pick), generator=torch.Generator().manual_seed(0))[:args.prompts]
        sets[split] = ([data.captions[i] for i in pick], data.context[pick].float(), data.labels[pick])
    return sets


def score_contender(name: str, run: Path, sets: dict, scorer: Scorer, matcher, args, out: Path) -> None:
    path = out / "emoji_study.jsonl"
    done = {r["key"] for r in read_records(path)}
    pipe = None
    for cfg in args.cfg:
        for split, (captions, context, labels) in sets.items():
            key = f"{name}|cfg{cfg:g}|{split}"
            if key in done:
                continue
            pipe = pipe or Pipeline.load(run, device=args.device)
            rows_of = torch.arange(args.n) % len(captions)  # sample i draws prompt i mod len
            t0 = time.perf_counter()
            x = pipe.sample(pipe.noise(args.n, seed=0), None, pipe.settings.with_(cfg=cfg), batch_size=args.batch,
                            context=context[rows_of])
            images = torch.cat([to_uint8(pipe.decode(b)).cpu() for b in x.split(args.batch)])
            record = {"key": key, "name": name, "cfg": cfg, "prompts": split, "n": args.n, "set": args.set,
                      "sample_seconds": time.perf_counter() - t0,
                      **scorer(images, labels[rows_of]), **matcher.retrieval(images, [captions[i] for i in rows_of])}
            append_record(path, record)
            print(f"{key}: top-5 {record['prompt_top5']:.3f}  FD {record['classifier_fd']:.2f}  category acc "
                  f"{record.get('class_accuracy', float('nan')):.3f}", flush=True)
            # one row per prompt, captioned: a reader judges prompt following only if a row is one prompt
            shown = range(min(args.grid_prompts, len(captions), args.n))
            per = min(6, args.n // len(captions)) or 1
            grid = torch.cat([images[rows_of == k][:per] for k in shown])
            save_grid(grid.float() / 127.5 - 1, out / f"grid-{name}-{split}-cfg{cfg:g}.png", nrow=per,
                      row_labels=[captions[k][:48] for k in shown])


def interpolation(name: str, run: Path, matcher, args, out: Path) -> None:
    """A strip and a GIF from the first --interpolate prompt to the second, at the run's own guidance scale (made
    before the scoring, so that a call cut short by its time limit still has it): their pooled embeddings blended
    linearly (`interpolate.blend_contexts`), one noise. None with --frames 0."""
    if not args.frames:
        return
    pipe = Pipeline.load(run, device=args.device)
    missing = [p for p in args.interpolate if p not in matcher.features]
    if missing:
        print(f"{name}: no interpolation, {missing} not among the datasets' captions", flush=True)
        return
    w = interp.weights(args.frames)
    context, _ = interp.blend_contexts(torch.stack([matcher.features[p] for p in args.interpolate]), None, w)
    noise = pipe.noise(1, seed=0).expand(args.frames, *pipe.spec.shape)
    images = pipe.decode(pipe.sample(noise, None, pipe.settings, context=context))
    save_grid(images, out / f"interpolation-{name}.png", nrow=args.frames)
    save_gif([im[None] for im in images], out / f"interpolation-{name}.gif", nrow=1, duration_ms=120,
             pingpong=True)


def table(rows: list[dict], ceilings: str) -> str:
    lines = ["| contender | prompts | cfg | prompt top-1 [95%] | prompt top-5 [95%] | category acc | FD | FD-2 |",
             "|---" * 8 + "|"]
    for r in sorted(rows, key=lambda r: (r["name"], r["prompts"] != "seen", r["cfg"])):
        top = [f"{r[k]:.3f} [{r[k + '_ci95'][0]:.3f}, {r[k + '_ci95'][1]:.3f}]" for k in ("prompt_top1", "prompt_top5")]
        lines.append(f"| {r['name']} | {r['prompts']} | {r['cfg']:g} | {top[0]} | {top[1]} | "
                     f"{r.get('class_accuracy', float('nan')):.3f} | {r['classifier_fd']:.2f} | "
                     f"{r['classifier2_fd']:.3f} |")
    return "\n".join(lines) + "\n\nCeilings (real images, same matcher and pool):\n" + ceilings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("contenders", nargs="+", choices=list(CONTENDERS), help="contenders, in order")
    parser.add_argument("--data", required=True, help="folder of the four precomputed datasets (see above)")
    parser.add_argument("--out", required=True, help="records, table, grids, the matcher and reference networks")
    parser.add_argument("--runs", default="runs/emoji-study", help="run folders (resumed to their budget)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes per contender")
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.5], help="guidance scales")
    parser.add_argument("--n", type=int, default=2000, help="samples per prompt set and scale")
    parser.add_argument("--prompts", type=int, default=500, help="seen prompts (training captions) to draw")
    parser.add_argument("--batch", type=int, default=500, help="sampling batch")
    parser.add_argument("--grid-prompts", type=int, default=12, help="prompts shown in each grid, one row each")
    parser.add_argument("--matcher-epochs", type=int, default=MatcherRecipe.epochs, help="the prompt matcher's epochs")
    parser.add_argument("--classifier-epochs", type=int, help="the reference networks' epochs (default: their "
                        "recipes'; fewer only for smoke tests)")
    parser.add_argument("--interpolate", nargs=2, default=["red apple, google style", "green apple, google style"],
                        metavar="CAPTION", help="two training captions: a prompt-interpolation strip and GIF")
    parser.add_argument("--frames", type=int, default=8, help="frames of the interpolation (0: none)")
    parser.add_argument("--sets", nargs="+", choices=["seen", "heldout"], default=["seen", "heldout"],
                        help="prompt sets drawn at each scale (seen alone, for a guidance sweep at 10,000 samples)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for every contender (a recipe "
                        "variant with --variant, or smoke tests)")
    parser.add_argument("--variant", default="", help="name of a --set recipe: runs, records and grids become "
                        "CONTENDER-VARIANT, so that variants from several calls share one table")
    args = parser.parse_args()
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    print("torch", torch.__version__, torch.cuda.get_device_name() if args.device != "cpu" else "cpu", flush=True)
    train_px = data / "emoji-64"
    recipes = [replace(r, epochs=args.classifier_epochs or r.epochs) for r in RECIPES["cifar10"]]
    networks = [ensure_classifier(out / f"reference-{recipe.arch}.safetensors", "precomputed", str(train_px), 64,
                                  args.device, recipe) for recipe in recipes]
    scorer = Scorer("precomputed", str(train_px), networks[0], args.device, second_classifier=networks[1],
                    cache_dir=out / "cache")
    matcher_file = out / "prompt-matcher.safetensors"
    if not matcher_file.is_file():
        fit_prompt_matcher(train_px, [data / "emoji-64-heldout"], 64, matcher_file,
                           recipe=MatcherRecipe(epochs=args.matcher_epochs), device=args.device)
    matcher = load_matcher(matcher_file, args.device)
    train_set, heldout_set = load_precomputed(train_px), load_precomputed(data / "emoji-64-heldout")
    sets = prompt_sets(args, train_set, heldout_set)
    # every caption of the pool has its stored embedding: the retrieval's candidates need no text model
    matcher.features = {c: v.float() for d in (train_set, heldout_set) for c, v in zip(d.captions, d.context)}
    ceilings = describe_ceilings(matcher.info)
    print(ceilings, flush=True)
    for contender in args.contenders:
        name = f"{contender}-{args.variant}" if args.variant else contender
        run = train_contender(contender, name, args)
        interpolation(name, run, matcher, args, out)
        score_contender(name, run, sets, scorer, matcher, args, out)
        # every record in --out, earlier calls' contenders too: a study spread over several calls gets one table
        (out / "emoji_study.md").write_text(table(read_records(out / "emoji_study.jsonl"), ceilings) + "\n")
    print((out / "emoji_study.md").read_text())


if __name__ == "__main__":
    main()
