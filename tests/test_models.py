import pytest
import torch

from liquidgen.models import build_model
from liquidgen.models.liquid import LiquidTimeConstant, ZigzagScan1D, snake

SEED_SETTING = dict(in_channels=16, input_size=32, num_classes=27)


@pytest.mark.parametrize("preset,target", [("S", 55e6), ("B", 140e6), ("L", 280e6)])
def test_liquid_preset_sizes_match_the_seed(preset, target):
    with torch.device("meta"):
        model = build_model("liquid", preset, **SEED_SETTING)
    assert abs(model.num_params() - target) / target < 0.10


@pytest.mark.parametrize("preset", ["tiny", "XS"])
@pytest.mark.parametrize("channels,size,classes", [(16, 32, 27), (1, 28, 10), (3, 16, 0)])
def test_small_presets_forward_shapes(preset, channels, size, classes):
    model = build_model("liquid", preset, channels, size, classes)
    x = torch.randn(2, channels, size, size)
    y = torch.tensor([0, classes]) if classes else None
    out = model(x, torch.rand(2), y)
    assert out.shape == x.shape and torch.isfinite(out).all()


def zigzag_order(h: int, w: int, transpose: bool) -> list[int]:
    """The scan as an index list (flat row-major indices): the reference the flip-based scan must match."""
    if transpose:
        return [r * w + c for c in range(w) for r in (range(h) if c % 2 == 0 else reversed(range(h)))]
    return [r * w + c for r in range(h) for c in (range(w) if r % 2 == 0 else reversed(range(w)))]


@pytest.mark.parametrize("h,w", [(1, 1), (1, 7), (4, 4), (14, 14), (5, 9)])
@pytest.mark.parametrize("transpose", [False, True])
def test_zigzag_is_a_bijection_of_adjacent_steps(h, w, transpose):
    order = zigzag_order(h, w, transpose)
    assert sorted(order) == list(range(h * w))
    for a, b in zip(order, order[1:]):
        (ra, ca), (rb, cb) = divmod(a, w), divmod(b, w)
        assert abs(ra - rb) + abs(ca - cb) == 1


@pytest.mark.parametrize("h,w", [(1, 1), (1, 7), (4, 4), (5, 9)])
@pytest.mark.parametrize("transpose", [False, True])
def test_the_scan_convolves_along_the_zigzag(h, w, transpose):
    """ZigzagScan1D = gather along the zigzag, 1-D conv, scatter back: against that written with index lists."""
    torch.manual_seed(0)
    scan = ZigzagScan1D(3, 5, transpose)
    x = torch.randn(2, 3, h, w)
    order = torch.tensor(zigzag_order(h, w, transpose))
    seq = scan.conv(x.flatten(2)[:, :, order])
    expected = scan.project(torch.nn.functional.gelu(seq[:, :, torch.argsort(order)].reshape(x.shape)))
    torch.testing.assert_close(scan(x), expected)
    torch.testing.assert_close(snake(snake(x)), x)


def test_liquid_blend_is_convex_with_learned_retention():
    ltc = LiquidTimeConstant(8)
    a = ltc.retention()
    assert ((a > 0) & (a < 1)).all()
    torch.testing.assert_close(a, torch.linspace(0.5, 0.95, 8))
    state, stim = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)
    out = ltc(state, stim)
    torch.testing.assert_close(out, a[None, :, None, None] * state + (1 - a[None, :, None, None]) * stim)


def test_output_starts_at_zero_and_depends_on_time_and_class_after_a_step():
    model = build_model("liquid", "tiny", 1, 8, 3)
    x = torch.randn(4, 1, 8, 8)
    assert model(x, torch.rand(4), torch.tensor([0, 1, 2, 3])).abs().max() == 0
    torch.nn.init.normal_(model.unpatchify.weight, std=0.1)
    for m in model.modules():  # un-zero the AdaGN projections too
        if m.__class__.__name__ == "AdaGN":
            torch.nn.init.normal_(m.proj[1].weight, std=0.1)
    t = torch.full((4,), 0.5)
    base = model(x, t, torch.tensor([0, 0, 0, 0]))
    assert not torch.allclose(base, model(x, t, torch.tensor([1, 1, 1, 1])))
    assert not torch.allclose(base, model(x, torch.full((4,), 0.9), torch.tensor([0, 0, 0, 0])))
    # the null class (index num_classes) is its own learned embedding, distinct from class 0
    assert not torch.allclose(base, model(x, t, torch.tensor([3, 3, 3, 3])))
    torch.testing.assert_close(model(x, t, None), model(x, t, torch.tensor([3, 3, 3, 3])))


def test_position_embedding_interpolates_to_other_sizes():
    model = build_model("liquid", "tiny", 1, 8, 0)
    assert model(torch.randn(1, 1, 16, 16), torch.rand(1)).shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 1, 9, 9), torch.rand(1))


def test_bad_model_options_are_named():
    with pytest.raises(ValueError, match="unknown option 'widht'"):
        build_model("liquid", "tiny", 1, 8, 0, widht=3)
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("liquid", "XXL", 1, 8, 0)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("mamba", "S", 1, 8, 0)
    with pytest.raises(ValueError, match="divisible"):
        build_model("liquid", "tiny", 1, 9, 0)


@pytest.mark.parametrize("channels,size,classes,message", [
    (0, 8, 3, "in_channels must be an integer >= 1, got 0"), (1, 0, 3, "input_size must be an integer >= 1"),
    (1, 8, -1, "num_classes must be an integer >= 0, got -1"), (1, 8, 2.5, "num_classes must be an integer")])
def test_impossible_geometry_is_refused_by_name(channels, size, classes, message):
    """Without the check, 0 input channels or -1 classes built a model (no class table, num_classes -1) that
    failed or misbehaved only when called."""
    with pytest.raises(ValueError, match=message):
        build_model("liquid", "tiny", channels, size, classes)


def test_odd_depth_leaves_the_middle_block_unpaired():
    model = build_model("liquid", "tiny", 1, 8, 0, depth=3)
    assert model(torch.randn(1, 1, 8, 8), torch.rand(1)).shape == (1, 1, 8, 8)


@pytest.mark.parametrize("name", ["liquid", "dit"])
def test_with_blocks_swaps_blocks_in_a_copy_that_shares_parameters(name):
    model = build_model(name, "tiny", 1, 8, 3).eval()
    x, t, y = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 2])
    calls = []

    class Counted(torch.nn.Module):  # a wrapper like torch.compile's: the same block, seen being called
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, *args):
            calls.append(1)
            return self.block(*args)

    stack = model.with_blocks([Counted(b) for b in model.blocks])
    torch.testing.assert_close(stack(x, t, y), model(x, t, y), rtol=0, atol=0)
    assert len(calls) == len(model.blocks)  # the copy ran the wrapped blocks; the model below ran its own
    assert not any(isinstance(b, Counted) for b in model.blocks)
    assert {id(p) for p in stack.parameters()} == {id(p) for p in model.parameters()}
