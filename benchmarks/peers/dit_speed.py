"""DiT-S/2 training throughput, side by side in one process: liquidgen's DiT against facebookresearch/DiT's
model code (models.py at commit ed81ce2, fetched into an ignored folder and imported from there; it needs
timm). Both train at DiT's native setting - SD-VAE latents of 256 px images (4x32x32), 1000 classes - at
the same batch, through the same harness: flow-matching loss, AdamW, clipping and EMA of liquidgen's
`train.train_step` on a fixed synthetic batch.

    python benchmarks/peers/dit_speed.py --dit .carry/peers/DiT --batch 128 --out $OUT/dit_speed.json

Variants: facebookresearch/DiT as its train.py runs it (fp32, eager), then with bf16 autocast, then also
compiled; liquidgen's DiT-S/2 in bf16, eager and compiled. Differences in the models themselves: DiT's
learns sigma (8 output channels; the loss uses the first 4), and it drops labels inside the model.
MFU uses the counted FLOPs of each model's own training step.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from liquidgen.bench.records import device_name
from liquidgen.bench.speed import time_training
from liquidgen.models import build_model

ROOT = Path(__file__).resolve().parents[2]


class Reference(nn.Module):
    """facebookresearch/DiT's model behind liquidgen's call signature: t in [0, 1] -> its 0..1000 timesteps,
    the first 4 of its 8 (learned-sigma) output channels."""

    def __init__(self, dit):
        super().__init__()
        self.dit = dit
        self.in_channels, self.input_size, self.num_classes, self.context_dim = 4, 32, 1000, 0
        self.null_class, self.concat_channels = 1000, 0  # unused: DiT drops labels itself

    def forward(self, x, t, y=None, **_):
        return self.dit(x, t * 1000, y)[:, :4]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# short name -> (label, precision, torch.compile mode)
VARIANTS = {
    "ref-fp32": ("facebookresearch/DiT (fp32, as its train.py)", "fp32", "eager"),
    "ref-bf16": ("facebookresearch/DiT, bf16 autocast", "bf16", "eager"),
    "ref-compiled": ("facebookresearch/DiT, bf16 + torch.compile", "bf16", "default"),
    "ours-bf16": ("liquidgen DiT-S/2, bf16", "bf16", "eager"),
    "ours-compiled": ("liquidgen DiT-S/2, bf16 + torch.compile", "bf16", "default"),
    "ours-cudagraphs": ("liquidgen DiT-S/2, bf16 + compile reduce-overhead", "bf16", "reduce-overhead"),
}


def measure(name: str, model: nn.Module, batch: int, precision: str, compile_mode: str, device, steps: int
            ) -> dict:
    # DiT drops labels inside its model; liquidgen's loop does it for its own. DiT trains without decay.
    dropout = 0.0 if isinstance(model, Reference) else 0.1
    record, _ = time_training(model, batch, device, steps, warmup=3, flop_steps=1, compile_mode=compile_mode,
                              precision=precision, label_dropout=dropout, weight_decay=0.0)
    return {"variant": name, "batch": batch, "precision": precision, "compile": compile_mode, **record,
            "peak_gb": record.get("train_peak_gb", 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dit", required=True, help="folder holding facebookresearch/DiT's models.py")
    parser.add_argument("--batch", type=int, default=128, help="training batch size (both models)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="which variants to time; the first is the baseline of the x column")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.dit).resolve()))
    from models import DiT_S_2  # facebookresearch/DiT

    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True  # as DiT's train.py sets it (fp32 runs on TF32 cores)
    torch.backends.cudnn.allow_tf32 = True
    rows = []
    for name, precision, compile_ in [VARIANTS[k] for k in args.variants]:
        torch.manual_seed(0)
        if name.startswith("liquidgen"):
            model = build_model("dit", "S", 4, 32, 1000).to(device)
        else:
            model = Reference(DiT_S_2(input_size=32, num_classes=1000)).to(device)
        rows.append(measure(name, model, args.batch, precision, compile_, device, args.steps))
        print(json.dumps(rows[-1]), flush=True)
        del model
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = rows[0]["train_img_s"]
    result = {"device": device_name(device), "torch": torch.__version__, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\n{'variant':<48} {'img/s':>8} {'x fp32 ref':>10} {'MFU':>6} {'GB':>6} {'GPU busy':>8} {'matmul':>7}")
    for r in rows:
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        print(f"{r['variant']:<48} {r['train_img_s']:>8.0f} {r['train_img_s'] / base:>10.2f} {mfu:>6} "
              f"{r['peak_gb']:>6.2f} {r.get('gpu_busy', 0):>8.0%} {r.get('matmul_share', 0):>7.0%}")


if __name__ == "__main__":
    main()
