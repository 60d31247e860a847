"""FID, KID, precision / recall on toy sets with known answers; the FID Inception network on random weights."""
import numpy as np
import pytest
import torch
from scipy import linalg

from liquidgen.evaluation.inception import WEIGHTS_NAME, FIDInception, features, load_inception
from liquidgen.evaluation.metrics import (
    Stats,
    frechet_distance,
    gaussian_stats,
    kernel_inception_distance,
    precision_recall,
)


def closed_form(mu1, s1, mu2, s2) -> float:
    root = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_frechet_distance_exact_and_sampled():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)  # non-commuting covariances
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    exact = frechet_distance(Stats(torch.tensor(mu1), torch.tensor(s1), 0), Stats(torch.tensor(mu2), torch.tensor(s2), 0))
    assert exact == pytest.approx(closed_form(mu1, s1, mu2, s2), rel=1e-8)
    d1, d2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])  # diagonal: sum (sqrt s1 - sqrt s2)^2
    diag = frechet_distance(Stats(torch.zeros(3), torch.diag(torch.tensor(d1)), 0),
                            Stats(torch.ones(3), torch.diag(torch.tensor(d2)), 0))
    assert diag == pytest.approx(3 + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum(), rel=1e-10)
    x = torch.randn(4000, 6, dtype=torch.float64)
    assert abs(frechet_distance(gaussian_stats(x), gaussian_stats(x))) < 1e-8  # identical sets
    # Samples of N(mu, S): the estimate approaches the closed form (error ~ d^2 / n here).
    l1, l2 = np.linalg.cholesky(s1), np.linalg.cholesky(s2)
    xa = torch.tensor(rng.normal(size=(200_000, 6)) @ l1.T + mu1)
    xb = torch.tensor(rng.normal(size=(200_000, 6)) @ l2.T + mu2)
    sampled = frechet_distance(gaussian_stats(xa), gaussian_stats(xb))
    assert sampled == pytest.approx(closed_form(mu1, s1, mu2, s2), rel=0.02)


def test_stats_round_trip(tmp_path):
    stats = gaussian_stats(torch.randn(50, 4))
    stats.save(tmp_path / "s.safetensors")
    back = Stats.load(tmp_path / "s.safetensors")
    assert torch.equal(back.mean, stats.mean) and torch.equal(back.cov, stats.cov) and back.count == 50
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        Stats.load(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="NaN"):
        gaussian_stats(torch.tensor([[0.0], [float("nan")]]))


def test_kid():
    torch.manual_seed(0)
    a, b = torch.randn(600, 8), torch.randn(600, 8)
    same, _ = kernel_inception_distance(a, b, subsets=20, subset_size=300)
    shifted, _ = kernel_inception_distance(a, b + 1.0, subsets=20, subset_size=300)
    assert abs(same) < 0.05 and shifted > 1.0
    assert kernel_inception_distance(a, b, subsets=5, subset_size=100) == kernel_inception_distance(
        a, b, subsets=5, subset_size=100)
    # one subset holding both whole sets: the textbook unbiased MMD^2 with the cubic kernel
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64) + 0.5
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(5)) / 25
    assert kernel_inception_distance(x, y, subsets=1, subset_size=5)[0] == pytest.approx(float(xx + yy - 2 * xy))


def test_precision_recall():
    torch.manual_seed(0)
    real = torch.rand(2000, 2)
    assert precision_recall(real, real.clone()) == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(real, torch.rand(500, 2) + 10)
    assert far == {"precision": 0.0, "recall": 0.0}
    left = torch.rand(1000, 2) * torch.tensor([0.5, 1.0])  # half of the real square
    pr = precision_recall(real, left)
    assert pr["precision"] > 0.97 and 0.4 < pr["recall"] < 0.65
    # the k-NN radius excludes the point itself: 4 points at distance 1 on a line, k = 1 -> radius 1, not 0
    line = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    assert precision_recall(line, torch.tensor([[0.5], [3.9], [4.1], [-0.9]]), k=1)["precision"] == 0.75


def test_fid_inception_network_on_random_weights(tmp_path, monkeypatch):
    net = FIDInception().eval()
    n_features = sum(p.numel() for name, p in net.named_parameters() if not name.startswith("fc."))
    assert n_features == 21_785_568  # torchvision's Inception-v3 without AuxLogits and fc: the FID network
    path = tmp_path / WEIGHTS_NAME
    torch.save(net.state_dict(), path)
    loaded = load_inception(str(path))
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    f = features(loaded, images, batch_size=2)
    assert f.shape == (4, 2048) and f.dtype == torch.float64 and (f >= 0).all()  # post-ReLU averages
    torch.testing.assert_close(f[:2], features(loaded, images[:2]))  # eval mode: batch-independent
    bad = net.state_dict()
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth does not match"):
        load_inception(str(tmp_path / "bad.pth"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("LIQUIDGEN_INCEPTION", str(tmp_path / "nowhere.pth"))
    with pytest.raises(FileNotFoundError, match=f"{WEIGHTS_NAME}.*--inception-weights"):
        load_inception()
