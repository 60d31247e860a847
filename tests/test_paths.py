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
    truth = {"x0": x0, "eps": eps, "v": eps - x0}
    out = paths.convert(truth[src], src, dst, x_t, t)
    torch.testing.assert_close(out, truth[dst], rtol=0, atol=1e-10)
    back = paths.convert(out, dst, src, x_t, t)
    torch.testing.assert_close(back, truth[src], rtol=0, atol=1e-10)


def test_converter_rejects_unknown_kind():
    x0, eps, t = batch()
    with pytest.raises(ValueError, match="unknown prediction"):
        paths.convert(x0, "score", "v", x0, t)
    with pytest.raises(ValueError, match="unknown prediction"):
        paths.convert(x0, "v", "noise", x0, t)


def test_scalar_time_broadcasts():
    x0, eps, _ = batch()
    torch.testing.assert_close(paths.interpolate(x0, eps, 0.25), 0.75 * x0 + 0.25 * eps)
