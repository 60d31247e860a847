"""The FID Inception-v3 on random weights (the real file cannot be downloaded here): architecture, feature
extraction and weight loading."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from liquidgen.evaluation import inception
from liquidgen.evaluation.inception import WEIGHTS_NAME, WEIGHTS_URL, FIDInception, features, load_inception


def randomise(net: FIDInception, seed: int = 0) -> FIDInception:
    """Weights that keep activations O(1) through all 94 conv layers (PyTorch's default init shrinks them to
    ~1e-8 by the end, which would make every comparison below trivially true), and non-trivial BatchNorm
    running statistics, so that using batch statistics instead would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return net


@pytest.fixture(scope="module")
def net() -> FIDInception:
    return randomise(FIDInception())


def checkpoint_state(net: FIDInception) -> dict[str, torch.Tensor]:
    """What pt_inception-2015-12-05-6726825d.pth holds: the network's keys plus the 1008-way classifier."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    return state | {"fc.weight": torch.randn(1008, 2048), "fc.bias": torch.randn(1008)}


@pytest.fixture
def no_cache(tmp_path, monkeypatch) -> Path:
    """Point torch hub's folder and $LIQUIDGEN_INCEPTION away from any real cache; returns the hub folder."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.delenv(inception.ENV_VAR, raising=False)
    return hub


# ---------------------------------------------------------------- architecture


def test_parameter_count_and_checkpoint_key_names():
    net = FIDInception()
    # torchvision's inception_v3 has 27,161,264 parameters (its published num_params), of which
    #   AuxLogits: conv0 768*128 + BN 2*128 = 98,560; conv1 128*768*5*5 + BN 2*768 = 2,459,136;
    #              fc 768*1000 + 1000 = 769,000                                  -> 3,326,696
    #   fc:        2048*1000 + 1000                                              -> 2,049,000
    # leaving 27,161,264 - 3,326,696 - 2,049,000 = 21,785,568 for the FID network (the FID variants of the
    # blocks change only the pooling, not the layers).
    assert sum(p.numel() for p in net.parameters()) == 21_785_568
    state = net.state_dict()
    # 94 BasicConv2d (stem 5, 3 x InceptionA 7, InceptionB 4, 4 x InceptionC 10, InceptionD 6, 2 x InceptionE 9),
    # each conv.weight + bn.{weight, bias, running_mean, running_var, num_batches_tracked}.
    assert len(state) == 94 * 6
    shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_mean": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6a.branch3x3dbl_3.conv.weight": (96, 96, 3, 3),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.bn.running_var": (192,),
    }
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    assert not any(k.startswith(("fc.", "AuxLogits.")) for k in state)


def test_fid_variants_of_the_pooling_branches(net):
    """TF's average pool ignores the padding (a constant map stays constant up to its borders); Mixed_7c's
    pool branch is a max pool."""
    seen: dict[str, torch.Tensor] = {}

    def capture(name):
        return lambda module, args: seen.__setitem__(name, args[0])

    hooks = [getattr(net, name).branch_pool.register_forward_pre_hook(capture(name))
             for name in ("Mixed_5b", "Mixed_6b", "Mixed_7b", "Mixed_7c")]
    try:
        for name, channels in (("Mixed_5b", 192), ("Mixed_6b", 768), ("Mixed_7b", 1280)):
            getattr(net, name)(torch.full((1, channels, 5, 5), 2.0))
            assert torch.equal(seen[name], torch.full((1, channels, 5, 5), 2.0)), name  # 8/9 or 4/9 at borders
        x = torch.rand(1, 2048, 4, 4)
        net.Mixed_7c(x)
        assert torch.equal(seen["Mixed_7c"], F.max_pool2d(x, 3, stride=1, padding=1))
    finally:
        for h in hooks:
            h.remove()


# ---------------------------------------------------------------- features


def test_features_shape_batches_and_eval_mode(net):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    f = features(net, x, batch_size=4)
    assert f.shape == (4, 2048) and f.dtype == torch.float64 and f.device.type == "cpu"
    assert (f >= 0).all() and f.std() > 0.01  # averages of ReLU outputs, not collapsed by the random weights
    assert (f[0] - f[1]).abs().max() > 1e-3  # different images, different features
    halves = torch.cat([features(net, x[:2]), features(net, x[2:])])
    torch.testing.assert_close(halves, f, rtol=1e-4, atol=1e-5)  # batch invariance
    # Eval mode: BatchNorm normalises with its running statistics, so an image's features do not depend on
    # its batch companions, even after an attempt to switch the network to training.
    running = net.Mixed_6c.branch1x1.bn.running_mean.clone()
    net.train()
    assert not net.training and not any(m.training for m in net.modules())
    alone = features(net, torch.cat([x[3:], -x[3:]]), batch_size=2)[0]
    torch.testing.assert_close(alone, f[3], rtol=1e-4, atol=1e-5)
    assert torch.equal(net.Mixed_6c.branch1x1.bn.running_mean, running)  # never updated
    assert not any(p.requires_grad for p in net.parameters())


def test_features_resize_grayscale_and_uint8(net):
    g = torch.Generator().manual_seed(2)
    gray = torch.rand(2, 1, 28, 28, generator=g) * 2 - 1
    rgb = gray.expand(-1, 3, -1, -1)
    expected = features(net, rgb)  # grayscale is repeated to RGB
    torch.testing.assert_close(features(net, gray), expected, rtol=1e-4, atol=1e-5)
    # Small images are bilinearly resized to 299 (align_corners=False, pytorch-fid's), and 299 passes as is.
    resized = F.interpolate(rgb, size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(features(net, resized), expected, rtol=1e-4, atol=1e-5)
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    torch.testing.assert_close(features(net, images), features(net, images.float() / 255 * 2 - 1),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="1 or 3"):
        features(net, torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="uint8 or float"):
        features(net, torch.zeros(1, 3, 8, 8, dtype=torch.int64))


# ---------------------------------------------------------------- weights


def test_load_inception_from_a_checkpoint_file(net, tmp_path, no_cache, monkeypatch):
    state = checkpoint_state(net)
    path = tmp_path / WEIGHTS_NAME
    torch.save(state, path)
    loaded = load_inception(str(path))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    got = loaded.state_dict()
    assert set(got) == set(state) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(got[k], state[k]) for k in got)
    # Files from older PyTorch have no num_batches_tracked counters; safetensors files load too.
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    assert torch.equal(load_inception(tmp_path / "old.pth").Mixed_7c.branch_pool.conv.weight,
                       state["Mixed_7c.branch_pool.conv.weight"])
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    assert torch.equal(load_inception(tmp_path / "w.safetensors").Conv2d_1a_3x3.bn.running_var,
                       state["Conv2d_1a_3x3.bn.running_var"])
    # Without an argument: $LIQUIDGEN_INCEPTION (a file or a folder holding the file), then torch hub's cache.
    monkeypatch.setenv(inception.ENV_VAR, str(tmp_path))
    assert inception.find_weights(None) == path
    monkeypatch.delenv(inception.ENV_VAR)
    (no_cache / "checkpoints").mkdir(parents=True)
    (no_cache / "checkpoints" / WEIGHTS_NAME).write_bytes(path.read_bytes())
    assert inception.find_weights(None) == no_cache / "checkpoints" / WEIGHTS_NAME
    assert torch.equal(load_inception().Mixed_5b.branch1x1.conv.weight, state["Mixed_5b.branch1x1.conv.weight"])


def test_load_inception_rejects_other_files(net, tmp_path, no_cache):
    state = checkpoint_state(net)
    wrong_key = dict(state)
    wrong_key["Mixed_5b.branch1x1.conv.weights"] = wrong_key.pop("Mixed_5b.branch1x1.conv.weight")
    torch.save(wrong_key, tmp_path / "renamed.pth")
    with pytest.raises(ValueError, match=r"renamed\.pth does not match.*missing Mixed_5b\.branch1x1\.conv\.weight"):
        load_inception(tmp_path / "renamed.pth")
    wrong_shape = dict(state, **{"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 1, 3, 3)})
    torch.save(wrong_shape, tmp_path / "gray.pth")
    with pytest.raises(ValueError, match=r"gray\.pth does not match.*Conv2d_1a_3x3\.conv\.weight has shape"):
        load_inception(tmp_path / "gray.pth")
    torchvision_like = dict(state, **{"AuxLogits.fc.weight": torch.zeros(1000, 768)})
    torch.save(torchvision_like, tmp_path / "inception_v3_google.pth")
    with pytest.raises(ValueError, match="torchvision's ImageNet Inception-v3"):
        load_inception(tmp_path / "inception_v3_google.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"could not read .*junk\.pth"):
        load_inception(tmp_path / "junk.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth is not a state dict"):
        load_inception(tmp_path / "list.pth")


def test_missing_weights_name_every_path_tried(tmp_path, no_cache, monkeypatch):
    monkeypatch.setenv(inception.ENV_VAR, str(tmp_path / "nowhere.pth"))
    with pytest.raises(FileNotFoundError) as info:
        load_inception()
    message = str(info.value)
    for part in (WEIGHTS_NAME, WEIGHTS_URL, "--inception-weights FILE", str(tmp_path / "nowhere.pth"),
                 str(no_cache / "checkpoints" / WEIGHTS_NAME)):
        assert part in message
    with pytest.raises(FileNotFoundError, match=r"given\.pth"):
        load_inception(tmp_path / "given.pth")  # an explicit file is the only place looked at
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "folder" / WEIGHTS_NAME))):
        (tmp_path / "folder").mkdir()
        load_inception(tmp_path / "folder")
