"""The fixed-point wrapper: iteration plans, convergence, solution reuse, per-batch state, training."""
import pytest
import torch

from liquidgen.models import build_model
from liquidgen.models.fixed_point import iteration_plan
from liquidgen.samplers import sample

from test_backbones import randomize


@pytest.mark.parametrize("schedule", ["constant", "increasing", "decreasing"])
@pytest.mark.parametrize("budget,steps", [(10, 10), (37, 10), (100, 7), (26, 1)])
def test_iteration_plan_spends_the_budget_exactly(schedule, budget, steps):
    plan = iteration_plan(budget, steps, schedule)
    assert len(plan) == steps and sum(plan) == budget and min(plan) >= 1
    pairs = list(zip(plan, plan[1:]))
    if schedule == "increasing":
        assert all(a <= b for a, b in pairs) and (budget == steps or steps == 1 or plan[-1] > plan[0])
    elif schedule == "decreasing":
        assert all(a >= b for a, b in pairs)
    else:
        assert max(plan) - min(plan) <= 1


def test_iteration_plan_rejects_impossible_budgets():
    with pytest.raises(ValueError, match="one iteration each"):
        iteration_plan(5, 10)
    with pytest.raises(ValueError, match="schedule"):
        iteration_plan(20, 10, "cosine")


def contractive(name="dit-tiny", strength=0.3):
    """A fixed-point model whose iteration map is a contraction: the injection sees z only through
    weights scaled by `strength` (the smaller, the faster the iteration converges)."""
    model = randomize(build_model("fixed_point", name, 1, 8, 3)).eval()
    with torch.no_grad():
        model.inject.fc1.weight[:, :model.inner.width] *= strength
    return model


@pytest.mark.parametrize("name", ["dit-tiny", "liquid-tiny"])
def test_iteration_converges_on_a_contractive_block(name):
    model = contractive(name)
    x, t, y = torch.randn(4, 1, 8, 8), torch.full((4,), 0.5), torch.tensor([0, 1, 2, 0])
    residuals = []
    for iters in range(1, 13):
        state = model.sampling_state()
        state.iters = iters
        model(x, t, y, state=state)
        residuals.append(state.residuals[-1])
    above_fp32_floor = [r for r in residuals if r > 1e-6]
    assert len(above_fp32_floor) >= 4
    assert all(b < 0.5 * a for a, b in zip(above_fp32_floor, above_fp32_floor[1:])), residuals
    assert residuals[-1] < 1e-5
    # the outputs converge too: 12 iterations and 40 agree
    state = model.sampling_state()
    state.iters = 40
    far = model(x, t, y, state=state)
    state.iters = 12
    state.z = None
    torch.testing.assert_close(model(x, t, y, state=state), far, atol=1e-4, rtol=0)


def run(model, noise, y, iters, reuse, steps=20):
    state = model.sampling_state()
    state.iters, state.reuse = iters, reuse
    out = sample(model, "v", noise, y, steps=steps, state=state)
    return out, sum(state.residuals) / len(state.residuals)


def test_reusing_the_last_solution_reaches_the_residual_in_fewer_iterations():
    model = contractive(strength=1.5)  # a slowly converging iteration, where a good start matters
    noise, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 3
    cold = [run(model, noise, y, k, reuse=False)[1] for k in range(1, 11)]
    warm = [run(model, noise, y, k, reuse=True)[1] for k in range(1, 11)]
    assert all(w < c for w, c in zip(warm, cold)), (warm, cold)
    target = cold[7]  # what 8 iterations per step from scratch achieve
    needed = min(k for k, w in enumerate(warm, start=1) if w <= target)
    assert needed <= 6, (needed, warm, cold)


def test_state_is_reset_between_batches():
    model = contractive()
    a, b = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0])
    state = model.sampling_state()
    state.iters = 2
    alone = sample(model, "v", a, y, steps=6, state=state)
    sample(model, "v", b, y, steps=6, state=state)
    again = sample(model, "v", a, y, steps=6, state=state)
    torch.testing.assert_close(again, alone, rtol=0, atol=0)


def test_a_budget_is_spread_over_the_steps():
    model = contractive()
    state = model.sampling_state()
    state.budget, state.schedule = 40, "increasing"
    sample(model, "v", torch.randn(2, 1, 8, 8), torch.tensor([0, 1]), steps=8, state=state)
    assert state.used == iteration_plan(40, 8, "increasing")
    # guidance doubles the batch, not the calls: one plan entry per step still
    sample(model, "v", torch.randn(2, 1, 8, 8), torch.tensor([0, 1]), steps=8, cfg=3.0, state=state)
    assert state.used == iteration_plan(40, 8, "increasing")


def test_default_sampling_depth_matches_the_explicit_model():
    with torch.device("meta"):
        model = build_model("fixed_point", "dit-S", 4, 32, 1000)
    assert model.sample_iters == 12 - 2 and len(model.inner.blocks) == 3


def test_training_draws_iterations_with_and_without_gradient():
    model = randomize(build_model("fixed_point", "dit-tiny", 1, 8, 3, train_iters_nograd=(0, 4),
                                  train_iters_grad=(1, 3))).train()
    calls = []
    model.inner.blocks[model.pre].register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    counts = set()
    for _ in range(30):
        calls.clear()
        out = model(torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 1]))
        free, grad = calls.count(False), calls.count(True)
        assert 0 <= free < 4 and 1 <= grad < 3 and calls == [False] * free + [True] * grad
        counts.add((free, grad))
    assert len(counts) > 3  # the counts really are random
    out.square().mean().backward()
    assert model.inject.fc1.weight.grad.abs().sum() > 0
    assert model.inner.blocks[model.pre].mlp.fc1.weight.grad.abs().sum() > 0


def test_bad_fixed_point_options_are_named():
    with pytest.raises(ValueError, match="pre .* must equal post"):
        build_model("fixed_point", "liquid-tiny", 1, 8, 0, pre=2, post=1)
    build_model("fixed_point", "dit-tiny", 1, 8, 0, pre=2, post=1)  # no long skips: any split
    with pytest.raises(ValueError, match="depth"):
        build_model("fixed_point", "dit-tiny", 1, 8, 0, options={"depth": 6})
    with pytest.raises(ValueError, match="train_iters_grad"):
        build_model("fixed_point", "dit-tiny", 1, 8, 0, train_iters_grad=[0, 3])
    with pytest.raises(ValueError, match="not a block stack"):
        build_model("fixed_point", "dit-tiny", 1, 8, 0, backbone="unet", backbone_preset="tiny")
