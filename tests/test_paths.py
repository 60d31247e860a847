import itertools

import pytest
import torch

from liquidgen import paths


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(n, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.98 + 0.01
    return x0, eps, t


def test_interpolation_endpoints_and_velocity_is_time_derivative():
    x0, eps, _ = batch()
    assert torch.equal(paths.interpolate(x0, eps, torch.zeros(6, dtype=torch.float64)), x0)
    assert torch.equal(paths.interpolate(x0, eps, torch.ones(6, dtype=torch.float64)), eps)
    t, h = torch.full((6,), 0.3, dtype=torch.float64), 1e-6
    fd = (paths.interpolate(x0, eps, t + h) - paths.interpolate(x0, eps, t - h)) / (2 * h)
    torch.testing.assert_close(fd, paths.velocity(x0, eps), rtol=0, atol=1e-8)


@pytest.mark.parametrize("src,dst", list(itertools.product(paths.PREDICTIONS, repeat=2)))
def test_converters_are_exact_and_round_trip(src, dst):
    x0, eps, t = batch()
    x_t = paths.interpolate(x0, eps, t)
    truth = {kind: paths.from_x0_eps(x0, eps, kind, t) for kind in paths.PREDICTIONS}
    out = paths.convert(truth[src], src, dst, x_t, t)
    torch.testing.assert_close(out, truth[dst], rtol=0, atol=1e-10)
    back = paths.convert(out, dst, src, x_t, t)
    torch.testing.assert_close(back, truth[src], rtol=0, atol=1e-10)


def test_converter_rejects_unknown_kind():
    x0, eps, t = batch()
    with pytest.raises(ValueError, match="unknown prediction"):
        paths.convert(x0, "noise2", "v", x0, t)
    with pytest.raises(ValueError, match="unknown prediction"):
        paths.convert(x0, "v", "noise", x0, t)


def test_scalar_time_broadcasts():
    x0, eps, _ = batch()
    torch.testing.assert_close(paths.interpolate(x0, eps, 0.25), 0.75 * x0 + 0.25 * eps)


def test_named_kinds_are_what_the_papers_define():
    x0, eps, t = batch()
    x_t = paths.interpolate(x0, eps, t)
    e = lambda z: paths.expand(z, x0)  # noqa: E731
    # diffusion v on the VP path through x_t (Salimans & Ho 2022): x_vp = a x0 + s eps, v = a eps - s x0
    a, s = paths.vp_coefficients(t)
    torch.testing.assert_close(e(a) ** 2 + e(s) ** 2, torch.ones_like(e(a)))
    torch.testing.assert_close(paths.from_x0_eps(x0, eps, "v_vp", t), e(a) * eps - e(s) * x0)
    # TrigFlow: sigma_d F = d/dtheta (cos th x0 + sin th sigma_d eps)
    th, h = paths.t_to_theta(t), 1e-6
    x_trig = lambda th: e(torch.cos(th)) * x0 + e(torch.sin(th)) * paths.SIGMA_D * eps  # noqa: E731
    fd = (x_trig(th + h) - x_trig(th - h)) / (2 * h)
    torch.testing.assert_close(paths.SIGMA_D * paths.from_x0_eps(x0, eps, "trigflow", t), fd, rtol=0, atol=1e-8)
    # and x_trig is x_t rescaled: the same point of the same path
    torch.testing.assert_close(x_trig(th) / e(torch.cos(th) + paths.SIGMA_D * torch.sin(th)), x_t)
    # the score of N((1 - t) x0, t^2) at x_t
    torch.testing.assert_close(paths.from_x0_eps(x0, eps, "score", t), -(x_t - e(1 - t) * x0) / e(t) ** 2)


def test_noise_level_conversions_round_trip():
    t = torch.linspace(1e-4, 1 - 1e-4, 101, dtype=torch.float64)
    torch.testing.assert_close(paths.sigma_to_t(paths.t_to_sigma(t)), t, rtol=0, atol=1e-10)
    torch.testing.assert_close(paths.lambda_to_t(paths.t_to_lambda(t)), t, rtol=0, atol=1e-10)
    torch.testing.assert_close(paths.theta_to_t(paths.t_to_theta(t)), t, rtol=0, atol=1e-10)
    sigma = paths.t_to_sigma(t)
    torch.testing.assert_close(paths.t_to_lambda(t), -2 * torch.log(sigma))
    torch.testing.assert_close(torch.tan(paths.t_to_theta(t)) * paths.SIGMA_D, sigma)
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(paths.t_to_theta(ends), torch.tensor([0.0, torch.pi / 2], dtype=torch.float64))
    assert paths.t_to_lambda(ends).tolist() == [float("inf"), float("-inf")]
