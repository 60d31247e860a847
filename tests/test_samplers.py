
import math

import numpy as np
import pytest
import torch

from liquidgen import paths
from liquidgen.models import build_model
from liquidgen.samplers import denoiser, sample, sample_euler, time_grid

MU, S = 0.7, 0.4  # data ~ N(MU, S^2) per dimension: the exact velocity field is known


def gaussian_velocity(x, t):
    """E[eps - x0 | x_t = x] for x0 ~ N(MU, S^2), x_t = (1 - t) x0 + t eps."""
    t = paths.expand(t, x)
    a, b = 1 - t, t
    var = a**2 * S**2 + b**2
    return (b - a * S**2) / var * (x - a * MU) - MU


def exact_endpoint(noise):
    # The probability-flow map of a Gaussian is affine: x_1 = z (std 1) lands on x_0 = MU + S z.
    return MU + S * noise


def test_exact_velocity_is_consistent_with_converters():
    x, t = torch.randn(5, 3, dtype=torch.float64), torch.rand(5, dtype=torch.float64)
    v = gaussian_velocity(x, t)
    x0 = paths.convert(v, "v", "x0", x, t)
    # the posterior mean of x0 under a Gaussian prior, computed independently
    a, b = 1 - t[:, None], t[:, None]
    expected = MU + a * S**2 / (a**2 * S**2 + b**2) * (x - a * MU)
    torch.testing.assert_close(x0, expected)


def test_euler_converges_at_first_order():
    noise = torch.randn(256, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    steps = [8, 16, 32, 64]
    errors = []
    for n in steps:
        out = sample_euler(gaussian_velocity, noise, time_grid(n).double())
        errors.append((out - exact_endpoint(noise)).abs().max().item())
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert errors[-1] < 0.05
    assert -1.15 < slope < -0.85, (errors, slope)


def test_time_grid():
    ts = time_grid(4)
    torch.testing.assert_close(ts, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    with pytest.raises(ValueError):
        time_grid(0)


class LabelEcho(torch.nn.Module):
    """A stand-in backbone whose prediction is its label, to check how guidance combines."""
    num_classes = 5
    null_class = 5

    def __init__(self):
        super().__init__()
        self.seen = []

    def unconditional(self, y, context):
        return torch.full_like(y, self.null_class), context

    def forward(self, x, t, y):
        self.seen.append(y.clone())
        return torch.zeros_like(x) + y.float().view(-1, *[1] * (x.ndim - 1))


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_cfg_uses_the_null_class_and_extrapolates(cfg):
    model = LabelEcho()
    fn = denoiser(model, "v", y=torch.tensor([2, 0]), cfg=cfg)
    v = fn(torch.zeros(2, 1, 2, 2), torch.full((2,), 0.5))
    if cfg == 1.0:
        assert model.seen[-1].tolist() == [2, 0]
        expected = torch.tensor([2.0, 0.0])
    else:
        assert model.seen[-1].tolist() == [2, 0, 5, 5]  # one doubled batch: conditional, then null
        expected = 5 + cfg * (torch.tensor([2.0, 0.0]) - 5)
    torch.testing.assert_close(v[:, 0, 0, 0], expected)


def test_cfg_is_the_same_in_every_prediction_space():
    model = build_model("liquid", "tiny", 1, 8, 4)
    for p in model.parameters():  # a non-trivial network (the default zero-init output is trivial)
        torch.nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([0.2, 0.5, 0.8]), torch.tensor([0, 1, 3])
    outs = {kind: denoiser(model, kind, y, cfg=2.5)(x, t) for kind in ("v", "x0", "eps")}
    # guidance applied to raw outputs read as x0 / eps must equal guidance applied after conversion to v
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 4))
        for kind, v in outs.items():
            guided_v = paths.convert(uncond, kind, "v", x, t) + 2.5 * (
                paths.convert(cond, kind, "v", x, t) - paths.convert(uncond, kind, "v", x, t))
            torch.testing.assert_close(v, guided_v, rtol=1e-4, atol=1e-4)


def test_sampling_is_deterministic_for_a_seed():
    model = build_model("liquid", "tiny", 1, 8, 3)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    model.eval()

    def run(seed):
        noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
        return sample(model, "v", noise, torch.tensor([0, 1, 2, 0]), steps=5, cfg=2.0)

    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


def test_unknown_sampler():
    model = build_model("liquid", "tiny", 1, 8, 0)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(model, "v", torch.randn(1, 1, 8, 8), sampler="dopri5")


from liquidgen.samplers import GRIDS, SAMPLERS  # noqa: E402


def convergence(sampler, steps, grid="uniform"):
    noise = torch.randn(256, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    errors = []
    for n in steps:
        ts = GRIDS[grid](n).double()
        t0 = ts[0]
        start = (1 - t0) * MU + torch.sqrt((1 - t0) ** 2 * S**2 + t0**2) * noise  # the exact state at t0
        out = SAMPLERS[sampler].run(gaussian_velocity, start, ts)
        errors.append((out - exact_endpoint(noise)).abs().max().item())
    return errors, np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.parametrize("sampler,order,grid,steps,tol", [
    ("euler", 1, "uniform", [8, 16, 32, 64], 0.05), ("ddim", 1, "uniform", [8, 16, 32, 64], 0.05),
    ("heun", 2, "uniform", [8, 16, 32, 64], 0.002), ("heun", 2, "karras", [16, 32, 64, 128], 0.002),
    # DPM-Solver steps in log-SNR: it needs a grid whose log-SNR steps shrink (a uniform t grid keeps
    # O(1) steps in lambda near t = 0 however many steps it has), as in the DPM-Solver paper.
    ("dpmpp_2m", 2, "karras", [32, 64, 128], 0.002)])
def test_ode_samplers_converge_at_their_order(sampler, order, grid, steps, tol):
    """Error at t = 0 against the exact probability-flow map of a Gaussian, as steps double."""
    errors, slope = convergence(sampler, steps, grid)
    assert errors[-1] < tol, errors
    assert -order - 0.25 < slope < -order + 0.25, (errors, slope)


def test_deterministic_ddim_is_euler_on_the_straight_path():
    x, ts = torch.randn(16, 4, dtype=torch.float64), time_grid(10).double()
    torch.testing.assert_close(SAMPLERS["ddim"].run(gaussian_velocity, x, ts), sample_euler(gaussian_velocity, x, ts))


def test_stochastic_ddim_samples_the_right_distribution():
    torch.manual_seed(0)
    noise = torch.randn(20000, 2, dtype=torch.float64)
    out = SAMPLERS["ddim"].run(gaussian_velocity, noise, time_grid(100).double(), eta=1.0)
    assert abs(out.mean().item() - MU) < 0.02 and abs(out.std().item() - S) < 0.02
    assert not torch.allclose(out, exact_endpoint(noise), atol=0.05)  # a different (stochastic) map


@pytest.mark.parametrize("sampler, kw", [("ddim", {"eta": 1.0}), ("consistency", {})])
def test_stochastic_samplers_draw_their_fresh_noise_from_fresh(sampler, kw):
    """The noise a stochastic sampler draws on the way comes from `fresh(i, x)` when given (how `Pipeline`
    makes it reproducible), once per step but the last, and not from torch's global generator."""
    x, ts = torch.randn(64, 2, dtype=torch.float64), GRIDS[SAMPLERS[sampler].grid](4).double()
    calls = []

    def fresh(i, like):
        calls.append(i)
        return torch.randn(like.shape, generator=torch.Generator().manual_seed(i), dtype=like.dtype)
    out = SAMPLERS[sampler].run(gaussian_velocity, x, ts, fresh=fresh, **kw)
    assert calls == [0, 1, 2]
    torch.manual_seed(1)
    torch.testing.assert_close(SAMPLERS[sampler].run(gaussian_velocity, x, ts, fresh=fresh, **kw), out)
    torch.manual_seed(1)
    assert not torch.allclose(SAMPLERS[sampler].run(gaussian_velocity, x, ts, **kw), out)  # global generator
    assert SAMPLERS[sampler].stochastic


def flow_map_velocity(x, t):
    """The 'velocity' whose data estimate x - t v is the exact consistency function of the Gaussian:
    the probability-flow map f(x_t, t) = MU + S (x_t - (1 - t) MU) / sqrt((1 - t)^2 S^2 + t^2)."""
    t = paths.expand(t, x)
    f = MU + S * (x - (1 - t) * MU) / torch.sqrt((1 - t) ** 2 * S**2 + t**2)
    return (x - f) / t


def test_consistency_sampling_with_an_exact_consistency_function():
    """One step maps noise onto the data exactly; re-noising and jumping again keeps the samples
    exactly distributed (each re-noised point is an exact marginal sample)."""
    torch.manual_seed(0)
    noise = torch.randn(20000, 2, dtype=torch.float64)
    one = SAMPLERS["consistency"].run(flow_map_velocity, noise, time_grid(1).double())
    torch.testing.assert_close(one, exact_endpoint(noise))
    many = SAMPLERS["consistency"].run(flow_map_velocity, noise, GRIDS["consistency"](4).double())
    assert abs(many.mean().item() - MU) < 0.01 and abs(many.std().item() - S) < 0.01
    assert (many - exact_endpoint(noise)).abs().mean() > 0.1  # fresh noise: other samples, same law


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_grids_decrease_from_at_most_one_to_zero(grid, steps):
    ts = GRIDS[grid](steps)
    assert len(ts) == steps + 1 and ts[-1] == 0 and ts[0] <= 1
    assert (ts[1:] < ts[:-1]).all()


def test_named_grids():
    karras = paths.t_to_sigma(GRIDS["karras"](3)[:3].double())
    torch.testing.assert_close(karras[[0, 2]], torch.tensor([80.0, 0.002], dtype=torch.float64), rtol=1e-4, atol=0)
    th = paths.t_to_theta(GRIDS["consistency"](2)[:2].double())
    torch.testing.assert_close(th, torch.tensor([math.atan(80 / 0.5), 1.1], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(GRIDS["tld"](4, exponent=1.0), time_grid(4))
    assert (GRIDS["tld"](4, exponent=2.0)[1:-1] < time_grid(4)[1:-1]).all()  # more steps near the data
    torch.testing.assert_close(GRIDS["logit"](4)[2], torch.tensor(0.5))  # the median of logit-normal(0, 1)


def test_grid_specs_set_a_grid_s_own_parameters():
    from liquidgen.samplers import grid_times, parse_grid
    assert parse_grid("karras") == ("karras", {})
    assert parse_grid("consistency:theta_mid=0.9") == ("consistency", {"theta_mid": 0.9})
    th = paths.t_to_theta(grid_times("consistency:theta_mid=0.9", 2)[:2].double())
    torch.testing.assert_close(th[1], torch.tensor(0.9, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(grid_times("karras:rho=7,sigma_max=80", 5), GRIDS["karras"](5))
    assert (grid_times("karras:rho=3", 5)[1:-2] != GRIDS["karras"](5)[1:-2]).all()  # ends at sigma_min, 0
    for spec, match in [("karras:rh0=7", "KEY one of karras's options"), ("karras:rho", "not KEY=VALUE"),
                        ("uniform:rho=7", r"\(none\)"), ("karras:rho=seven", "rho needs a number"),
                        ("cosine", "unknown time grid 'cosine'"),
                        # a re-noising angle above the start would climb back towards the noise
                        ("consistency:theta_mid=1.6", "not decreasing from at most 1 to 0")]:
        with pytest.raises(ValueError, match=match):
            grid_times(spec, 2)


def test_guidance_interval():
    model = LabelEcho()
    fn = denoiser(model, "v", y=torch.tensor([2]), cfg=3.0, cfg_interval=(0.2, 0.6))
    inside = fn(torch.zeros(1, 1, 2, 2), torch.full((1,), 0.5))
    outside = fn(torch.zeros(1, 1, 2, 2), torch.full((1,), 0.9))
    assert inside[0, 0, 0, 0] == 5 + 3 * (2 - 5) and outside[0, 0, 0, 0] == 2


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_a_model_with_guidance(sampler):
    model = build_model("liquid", "tiny", 1, 8, 3)
    out = sample(model, "v", torch.randn(2, 1, 8, 8), torch.tensor([0, 1]), steps=3, cfg=2.0, sampler=sampler)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


CLASS_MODEL = build_model("liquid", "tiny", 1, 8, 3, width=16, depth=2, groups=4).eval()
TEXT_MODEL = build_model("liquid", "tiny", 1, 8, 0, width=16, depth=2, groups=4, context_dim=6).eval()
TWO = torch.randn(2, 1, 8, 8)


@pytest.mark.parametrize("model,kw,message", [
    (CLASS_MODEL, {"y": torch.tensor([0, 3])}, "label 3 out of range: this model has 3 classes"),  # the null class
    (CLASS_MODEL, {"y": torch.tensor([-1, 0])}, "label -1 out of range"),
    (CLASS_MODEL, {"y": torch.tensor([0, 7]), "cfg": 1.0}, "label 7 out of range"),
    (CLASS_MODEL, {"y": torch.tensor([0.0, 1.0])}, r"float labels are class weights \(B, 4\)"),
    (CLASS_MODEL, {"y": torch.tensor([[0], [1]])}, "labels must be integer class indices"),
    (CLASS_MODEL, {"y": torch.tensor([1]), "cfg": 1.0}, "labels has 1 rows for 2 samples"),  # broadcast before
    (CLASS_MODEL, {"y": torch.tensor([1, 2, 0])}, "labels has 3 rows for 2 samples"),
    (TEXT_MODEL, {"y": torch.tensor([1, 2])}, "this model is unconditional; labels do not apply"),
    (CLASS_MODEL, {"y": torch.tensor([0, 1]), "cfg": float("nan")}, "cfg must be a finite number, got nan"),
    (CLASS_MODEL, {"y": torch.tensor([0, 1]), "cfg_interval": (0.9, 0.1)}, "cfg_interval must be"),
    (CLASS_MODEL, {"noise": torch.randn(2, 3, 8, 8)}, r"noise must be \(B, 1, H, W\), got \(2, 3, 8, 8\)"),
    (CLASS_MODEL, {"context": torch.randn(2, 6)}, "not text-conditioned; context does not apply"),
    (TEXT_MODEL, {"context": torch.randn(2, 5)}, r"context must be \(B, 6\) or \(B, L, 6\), got \(2, 5\)"),
    (TEXT_MODEL, {"context": torch.randn(1, 6), "cfg": 1.0}, "context has 1 rows for 2 samples"),
    (TEXT_MODEL, {"context": torch.randn(2, 4, 6), "context_mask": torch.ones(2, 3, dtype=torch.bool)},
     r"context_mask must be \(B, L\)"),
])
def test_bad_sampling_input_is_a_value_error_naming_it(model, kw, message):
    """Each of these failed deep inside torch (IndexError, a shape error in the backbone), or worse gave samples
    without a word: the null class for label 3, one label broadcast over every row, NaN images for a NaN cfg, no
    guidance at all for a reversed interval."""
    kw = {"noise": TWO, "cfg": 2.0, **kw}
    with pytest.raises(ValueError, match=message):
        sample(model, "v", steps=2, **kw)
