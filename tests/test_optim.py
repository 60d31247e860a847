"""Optimizers: Muon's orthogonalisation, which parameters it takes, and Muon runs that learn and resume."""
import json

import pytest
import torch

from liquidgen.config import load_config
from liquidgen.models import build_model
from liquidgen.optim import MuonWithAdamW, OwnMuon, make_optimizer, newton_schulz, split_for_muon
from liquidgen.train import train

TINY = ["model.preset=tiny", "data.name=digits", "data.image_size=8", "train.batch_size=32",
        "train.sample_every=0", "train.ckpt_every=0", "optim.lr=2e-3", "train.ema_decay=0.99", "optim.name=muon"]


@pytest.mark.parametrize("shape", [(64, 32), (32, 64)])
def test_newton_schulz_makes_the_singular_values_near_one(shape):
    torch.manual_seed(0)
    g = torch.randn(*shape)  # a gradient-like matrix: singular values spread over a factor of ~5
    before, after = torch.linalg.svdvals(g / g.norm()), torch.linalg.svdvals(newton_schulz(g))
    assert before.max() / before.min() > 4
    assert after.min() > 0.6 and after.max() < 1.25  # the quintic's band: every direction at about one size
    u, _, vt = torch.linalg.svd(g, full_matrices=False)  # and the singular vectors are g's: close to U V^T
    assert torch.nn.functional.cosine_similarity(newton_schulz(g).flatten(), (u @ vt).flatten(), dim=0) > 0.97
    # an ill-conditioned matrix (condition number 1000) comes out far less so after the 5 steps
    skewed = torch.randn(*shape) @ torch.diag(torch.logspace(-2, 1, shape[1]))[: shape[1], : shape[1]]
    s = torch.linalg.svdvals(newton_schulz(skewed))
    assert s.max() / s.min() < 10


def test_muon_takes_the_linear_weights_and_adamw_the_rest():
    for name, preset in (("dit", "tiny"), ("unet", "tiny"), ("liquid", "tiny")):
        model = build_model(name, preset, 1, 8, 10)
        matrices, rest = split_for_muon(model)
        linear = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert {id(p) for p in matrices} == {id(p) for p in linear} and matrices
        assert all(p.ndim == 2 for p in matrices)
        assert len(matrices) + len(rest) == len(list(model.parameters()))
        embeddings = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
        convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert {id(p) for p in embeddings + convs} <= {id(p) for p in rest}


def test_own_muon_steps_like_torchs():
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("this PyTorch has no torch.optim.Muon to compare with")
    torch.manual_seed(1)
    w = torch.randn(16, 8)
    grad = torch.randn(16, 8)
    results = []
    for cls, kwargs in ((torch.optim.Muon, {"adjust_lr_fn": "match_rms_adamw"}), (OwnMuon, {})):
        p = torch.nn.Parameter(w.clone())
        opt = cls([p], lr=0.01, weight_decay=0.1, momentum=0.95, **kwargs)
        for _ in range(3):
            p.grad = grad.clone()
            opt.step()
        results.append(p.detach())
    # torch iterates Newton-Schulz in bf16, ours in fp32: the same step up to bf16's rounding
    ours, theirs = (r - w * (1 - 0.01 * 0.1) ** 3 for r in results[::-1])
    assert torch.nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0) > 0.999
    assert abs(ours.norm() / theirs.norm() - 1) < 0.02


def test_the_combined_optimizer_round_trips_its_state():
    model = build_model("dit", "tiny", 1, 8, 10)
    cfg = load_config(None, ["optim.name=muon"]).optim
    opt = make_optimizer(model, cfg)
    assert isinstance(opt, MuonWithAdamW)
    model(torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([1, 2])).square().mean().backward()
    opt.step()
    state = opt.state_dict()
    assert sorted(state["state"]) == list(range(len(state["state"])))  # one numbering over both parts
    fresh = make_optimizer(model, cfg)
    fresh.load_state_dict(state)
    again = fresh.state_dict()
    for i, s in state["state"].items():
        assert all(torch.equal(v, again["state"][i][k]) if torch.is_tensor(v) else v == again["state"][i][k]
                   for k, v in s.items())


def test_muon_training_learns(tmp_path):  # resuming Muon runs exactly: test_train's resume test
    train(load_config(None, TINY + ["train.steps=60", "train.log_every=10"]), tmp_path / "long")
    losses = [json.loads(l)["loss"] for l in (tmp_path / "long" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.8 * losses[0], losses
