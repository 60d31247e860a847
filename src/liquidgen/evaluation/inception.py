"""The FID feature network: Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture")
with the weights of the TensorFlow graph of the original FID code (inception-2015-12-05), as ported to
PyTorch by pytorch-fid (github.com/mseitzer/pytorch-fid, file pt_inception-2015-12-05-6726825d.pth).
FID numbers are only comparable with published ones when computed in exactly this feature space: the
2048-d output of the final average pool ("pool3"), on images bilinearly resized to 299 x 299.

Written here from the architecture description; the module names follow that checkpoint's state-dict keys
("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.bn.running_var", ...), so the file loads unchanged.
The layout (channel counts of torchvision's Inception-v3):

    stem    3 x 299^2 -> conv3x3/2, conv3x3, conv3x3, maxpool/2, conv1x1, conv3x3, maxpool/2 -> 192 x 35^2
    35^2    Mixed_5b, 5c, 5d    (InceptionA: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1)   -> 288
    17^2    Mixed_6a (grid reduction), Mixed_6b..6e (InceptionC: 7x7 factorised into 1x7 and 7x1) -> 768
    8^2     Mixed_7a (grid reduction), Mixed_7b, 7c (InceptionE: expanded 1x3 / 3x1 filter banks) -> 2048
    head    global average pool -> (B, 2048); the 1008-way classifier of the file is not used

The TF graph differs from torchvision's ImageNet Inception-v3 in two places, both reproduced here:
TF's average pooling with SAME padding averages only the valid inputs (count_include_pad=False), and
the pool branch of the last block (Mixed_7c) is a max pool, not an average pool.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import read_weight_file, state_dict_problems

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}"
ENV_VAR = "LIQUIDGEN_INCEPTION"
SIZE = 299  # the input resolution of the TF graph
FEATURES = 2048

Size2 = int | tuple[int, int]


class BasicConv2d(nn.Module):
    """Conv (no bias: the BatchNorm's shift replaces it) -> BatchNorm(eps=1e-3, TF's default) -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: Size2, stride: int = 1, padding: Size2 = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def avg_pool_valid(x: Tensor) -> Tensor:
    """3x3 stride-1 average pool that, like TF's SAME padding, divides by the number of valid inputs:
    border outputs are averages of 4 or 6 pixels, not sums over 9 with zeros (count_include_pad=False)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35 x 35 block (paper fig. 5; the TF graph keeps a 5x5 branch): 64 + 64 + 96 + `pool_features` channels."""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(avg_pool_valid(x)),
        ], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a, paper fig. 10): strided convs beside a strided max pool, so the
    resolution halves while the width grows (384 + 96 + c_in channels) without a representational bottleneck."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    """17 x 17 block (paper fig. 6): 7x7 convolutions factorised into 1x7 and 7x1, with `c7` channels inside
    the branches; 4 x 192 = 768 channels out."""

    def __init__(self, c_in: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([self.branch1x1(x), single, double, self.branch_pool(avg_pool_valid(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): 320 + 192 + c_in channels out."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        tower = self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(tower),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionE(nn.Module):
    """8 x 8 block (paper fig. 7): the 3x3 branches end in parallel 1x3 and 3x1 convs whose outputs are
    concatenated (wider, not deeper, at the coarsest grid); 320 + 768 + 768 + 192 = 2048 channels.

    `max_pool`: the pool branch takes a max instead of an average (Mixed_7c of the TF FID graph)."""

    def __init__(self, c_in: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        # Padding with -inf (max_pool2d's implicit padding) never wins a max: borders see only valid pixels.
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else avg_pool_valid(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
            self.branch_pool(pooled),
        ], 1)


class FIDInception(nn.Module):
    """Images in [-1, 1] (B, 3, H, W), any size -> (B, 2048) pool3 features.

    A frozen feature extractor: it is always in eval mode (`train()` is a no-op), because BatchNorm with batch
    statistics would make every feature depend on the rest of its batch and silently change FID."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)  # 149^2
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)  # 147^2
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)  # 147^2, then max pool -> 73^2
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)  # 71^2, then max pool -> 35^2
        self.Mixed_5b = InceptionA(192, pool_features=32)  # -> 256
        self.Mixed_5c = InceptionA(256, pool_features=64)  # -> 288
        self.Mixed_5d = InceptionA(288, pool_features=64)  # -> 288
        self.Mixed_6a = InceptionB(288)  # -> 768 x 17^2
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)  # -> 1280 x 8^2
        self.Mixed_7b = InceptionE(1280, max_pool=False)  # -> 2048
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        super().train(False)
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> FIDInception:
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FIDInception takes (B, 3, H, W) images in [-1, 1], got shape {tuple(x.shape)}")
        if x.shape[-2:] != (SIZE, SIZE):
            # pytorch-fid's resize (no antialiasing): needed to reproduce its feature space exactly.
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean((2, 3))  # adaptive average pool to 1 x 1, flattened


def weight_paths(weights: str | os.PathLike | None) -> list[Path]:
    """Where to look: `weights` alone if given (a file, or a folder holding WEIGHTS_NAME), else
    $LIQUIDGEN_INCEPTION (likewise), then torch hub's checkpoint folder, where pytorch-fid's own download lands."""
    def resolve(p: Path) -> Path:
        return p / WEIGHTS_NAME if p.is_dir() else p

    if weights is not None:
        return [resolve(Path(weights).expanduser())]
    env = os.environ.get(ENV_VAR)
    hub = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME
    return ([resolve(Path(env).expanduser())] if env else []) + [hub]


def find_weights(weights: str | os.PathLike | None) -> Path:
    tried = weight_paths(weights)
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"FID Inception weights {WEIGHTS_NAME} (pytorch-fid's port of the TF FID Inception) not found; tried "
        f"{', '.join(str(p) for p in tried)}. Download {WEIGHTS_URL} and pass it with --inception-weights FILE "
        f"(the `weights` argument), set ${ENV_VAR} to it, or put it in {Path(torch.hub.get_dir()) / 'checkpoints'}.")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    return read_weight_file(path, f"expected {WEIGHTS_NAME} from {WEIGHTS_URL}")


def load_into(net: FIDInception, path: Path) -> None:
    """Copy the file's tensors into `net` after checking names and shapes. The file's 1008-way classifier
    (fc.*) is not part of the feature network and is dropped; BatchNorm's num_batches_tracked counters, which
    files from older PyTorch lack, are unused in eval mode and kept at the module's value when absent."""
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("fc.")}
    own = net.state_dict()
    for k, v in own.items():
        if k.endswith(".num_batches_tracked"):
            state.setdefault(k, v)
    problems = state_dict_problems(own, state)
    if problems:
        hint = (" It looks like torchvision's ImageNet Inception-v3 (it has AuxLogits), a different network with "
                "different weights; FID needs") if any(k.startswith("AuxLogits.") for k in state) else " Expected"
        raise ValueError(f"{path} does not match the FID Inception-v3: {problems}.{hint} "
                         f"{WEIGHTS_NAME} from {WEIGHTS_URL}")
    net.load_state_dict(state, strict=True)


def load_inception(weights: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> FIDInception:
    """The FID Inception with its pretrained weights (see `weight_paths` for where they are looked for),
    on `device`, in eval mode, without gradients."""
    path = find_weights(weights)
    net = FIDInception()
    load_into(net, path)
    return net.to(device)


def prepare(images: Tensor) -> Tensor:
    """uint8 (B, C, H, W) in [0, 255] or float in [-1, 1] -> float32 RGB in [-1, 1] (grayscale repeated)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"Inception features need (B, 1 or 3, H, W) images, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        x = images.float() / 127.5 - 1  # x / 255 * 2 - 1: pytorch-fid's ToTensor then 2x - 1
    elif images.is_floating_point():
        x = images.float()
    else:
        raise ValueError(f"Inception features need uint8 or float images, got {images.dtype}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.no_grad()
def features(net: FIDInception, images: Tensor, batch_size: int = 200) -> Tensor:
    """pool3 features (N, 2048), float64 on the CPU, of uint8 or [-1, 1] float images, computed on the
    net's device in batches of `batch_size` (each image's features do not depend on its batch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prepare(images[:0])  # validate shape and dtype before any work
    param = next(net.parameters())
    out = [net(prepare(chunk).to(param.device, param.dtype)).double().cpu() for chunk in images.split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0, FEATURES, dtype=torch.float64)
