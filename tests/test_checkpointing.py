"""Activation recomputation of block stacks (`model.checkpointing`): it changes what the backward keeps, never
what a model computes."""
from __future__ import annotations

import pytest
import torch

from liquidgen.config import load_config
from liquidgen.models import build_model

from test_backbones import randomize


def inputs(batch: int = 3, channels: int = 2, size: int = 12, classes: int = 4, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=g, dtype=dtype)
    return x, torch.rand(batch, generator=g, dtype=dtype), torch.randint(0, classes, (batch,), generator=g)


def outputs_and_grads(model: torch.nn.Module, x, t, y) -> list[torch.Tensor]:
    model.zero_grad()
    x = x.clone().requires_grad_()
    out = model(x, t, y)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return [out.detach(), x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("blocks", [1, -1])
@pytest.mark.parametrize("name,preset", [("liquid", "tiny"), ("dit", "tiny")])
def test_checkpointing_gives_the_same_gradients(name, preset, blocks):
    model = randomize(build_model(name, preset, 2, 12, 4)).double()
    x, t, y = inputs()
    plain = outputs_and_grads(model, x, t, y)
    model.set_checkpointing(blocks)
    marked = [getattr(b, "recompute", False) for b in model.blocks]
    assert sum(marked) == (len(model.blocks) if blocks == -1 else blocks)
    recomputed = outputs_and_grads(model, x, t, y)
    for a, b in zip(recomputed, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checkpointing_saves_memory_in_the_backward():
    """The saved activations shrink: count the bytes autograd keeps for the backward of one forward."""
    model = build_model("liquid", "tiny", 2, 16, 4)
    x, t, y = inputs(batch=8, size=16, dtype=torch.float32)

    def saved_bytes() -> int:
        total = 0

        def pack(tensor):
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(x, t, y).sum()
        return total

    before = saved_bytes()
    model.set_checkpointing(-1)
    after = saved_bytes()
    assert after < 0.5 * before, (before, after)


def test_checkpointing_is_off_without_gradients_and_under_jvp():
    model = randomize(build_model("liquid", "tiny", 2, 12, 4)).double()
    model.set_checkpointing(-1)
    x, t, y = inputs()
    with torch.no_grad():
        out = model(x, t, y)
    tangent = torch.ones_like(x)
    value, derivative = torch.func.jvp(lambda v: model(v, t, y), (x,), (tangent,))
    torch.testing.assert_close(value, out)
    eps = 1e-6
    fd = (model(x + eps * tangent, t, y) - model(x - eps * tangent, t, y)) / (2 * eps)
    torch.testing.assert_close(derivative, fd.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("blocks", [-2, 5])
def test_checkpointing_counts_are_checked(blocks):
    model = build_model("liquid", "tiny", 2, 12, 4)  # 4 blocks
    with pytest.raises(ValueError, match="model.checkpointing"):
        model.set_checkpointing(blocks)


def test_training_with_checkpointing_matches_training_without(tmp_path):
    """Two steps from the same seed with every block recomputed reach the same weights as without;
    a backbone that is no block stack is refused in one line."""
    from liquidgen.spec import load_model
    from liquidgen.train import train

    tiny = ["model.preset=tiny", "data.name=digits", "data.image_size=8", "train.batch_size=16", "train.steps=2",
            "train.log_every=1", "train.sample_every=0", "train.ckpt_every=0"]
    finals = [train(load_config(None, tiny + [f"model.checkpointing={n}"]), tmp_path / str(n)) for n in (0, -1)]
    plain, recomputed = (load_model(f, ema=False)[0].state_dict() for f in finals)
    for name, w in plain.items():
        torch.testing.assert_close(recomputed[name], w, rtol=1e-6, atol=1e-7, msg=name)
    with pytest.raises(ValueError, match="block stack"):
        train(load_config(None, tiny + ["model.name=unet", "model.checkpointing=1"]), tmp_path / "unet")
    assert not (tmp_path / "unet").exists()
