"""Depthwise convs as dense per-channel matrices (models.toeplitz) against the convolutions they replace."""
import pytest
import torch
import torch.nn.functional as F

from liquidgen.flops import count_flops, forward_bytes
from liquidgen.models.base import model_flops_mode
from liquidgen.models.liquid import LiquidBlock, LiquidGen, ZigzagScan1D
from liquidgen.models.toeplitz import (
    basis_for,
    channel_gemm,
    check_choice,
    dense_depthwise,
    grid_coords,
    snake_coords,
    tap_basis,
    use_dense,
)


def set_path(module: torch.nn.Module, path: str) -> None:
    for m in module.modules():
        if hasattr(m, "depthwise_path"):
            m.depthwise_path = path


def grads(fn, *inputs):
    out = fn(*inputs)
    return out, torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), inputs)


@pytest.mark.parametrize("kernel,size", [((3, 3), (5, 5)), ((7, 7), (6, 9)), ((1, 5), (4, 3))])
@pytest.mark.parametrize("with_bias", [True, False])
def test_dense_depthwise_is_the_conv_with_its_gradients(kernel, size, with_bias):
    torch.manual_seed(0)
    c = 6
    x = torch.randn(3, c, *size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c, 1, *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, dtype=torch.float64, requires_grad=True) if with_bias else None
    inputs = (x, w) + ((b,) if with_bias else ())
    basis = tap_basis(grid_coords(*size, x.device), kernel, torch.float64)

    def conv(x, w, b=None):
        return F.conv2d(x, w, b, padding=(kernel[0] // 2, kernel[1] // 2), groups=c)

    def dense(x, w, b=None):
        return dense_depthwise(x, w, b, basis)

    want, want_grads = grads(conv, *inputs)
    got, got_grads = grads(dense, *inputs)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, h in zip(got_grads, want_grads):
        torch.testing.assert_close(g, h, rtol=1e-12, atol=1e-12)


def test_channel_gemm_op_is_registered_right():
    """Fake (meta) shapes, autograd and the compiled layout rules of the custom op, by PyTorch's own checker; its
    gradients against finite differences; and its FLOPs counted as the GEMM it is."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    matrix = torch.randn(4, 5, 5, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(channel_gemm, (x, matrix))
    assert torch.autograd.gradcheck(channel_gemm, (x, matrix))
    torch.testing.assert_close(channel_gemm(x, matrix), torch.einsum("bcj,cij->cbi", x, matrix))
    assert count_flops(lambda: channel_gemm(x, matrix).sum().backward()) == 3 * 2 * 3 * 4 * 5 * 5


def test_dense_model_compiles_fullgraph_and_matches_eager():
    torch.manual_seed(0)
    model = LiquidGen(1, 10, 10, width=16, depth=2, groups=4, depthwise="matmul")  # 5x5 tokens: padded to 32
    for m in model.modules():  # a zero-initialised head would make any two forwards agree
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.normal_(m.weight, std=0.2)
    x, t, y = torch.randn(2, 1, 10, 10), torch.rand(2), torch.tensor([1, 2])
    compiled = torch.compile(model, fullgraph=True)
    eager_grads = torch.autograd.grad(model(x, t, y).square().mean(), list(model.parameters()))
    out = compiled(x, t, y)
    torch.testing.assert_close(out, model(x, t, y), rtol=1e-4, atol=1e-5)
    assert out.abs().mean() > 0.1
    for got, want in zip(torch.autograd.grad(out.square().mean(), list(model.parameters())), eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


def test_compiled_dense_gemm_reads_its_operands_channel_major(monkeypatch):
    """With Inductor's layout optimisation on (CUDA's default; forced here on the CPU) the 1x1 convs around the dense
    GEMM run channels-last; the custom ops' layout tag still hands the GEMMs x and the output gradient contiguous,
    forward and backward, where a plain matmul was given channels-last views that it had to copy."""
    import torch._inductor.config as inductor_config

    from liquidgen.models import toeplitz

    seen = {"forward": [], "backward": []}
    forward, grads = toeplitz._channel_gemm, toeplitz._channel_gemm_grads
    monkeypatch.setattr(toeplitz, "_channel_gemm",
                        lambda x, m: seen["forward"].append(x.is_contiguous()) or forward(x, m))
    monkeypatch.setattr(toeplitz, "_channel_gemm_grads", lambda dy, x, m: seen["backward"].append(
        dy.is_contiguous() and x.is_contiguous()) or grads(dy, x, m))
    torch.manual_seed(0)
    model = LiquidGen(1, 16, 10, width=32, depth=2, groups=8, depthwise="matmul")
    torch._dynamo.reset()
    # fx_graph_cache off: its key does not see the ops' layout tags
    with inductor_config.patch(force_layout_optimization=True, fx_graph_cache=False):
        out = torch.compile(model)(torch.randn(2, 1, 16, 16), torch.rand(2), torch.tensor([1, 2]))
        out.square().mean().backward()
    assert len(seen["forward"]) == len(seen["backward"]) == 4 and all(seen["forward"] + seen["backward"]), seen


def test_eager_code_builds_each_basis_once():
    cpu = torch.device("cpu")
    grid = basis_for(5, 6, (3, 3), cpu, torch.float32)
    assert basis_for(5, 6, (3, 3), cpu, torch.float32) is grid
    assert torch.equal(grid, tap_basis(grid_coords(5, 6, cpu), (3, 3), torch.float32))
    column = basis_for(5, 6, (7,), cpu, torch.float32, snake=True)
    assert torch.equal(column, tap_basis(snake_coords(5, 6, True, cpu), (7,), torch.float32))
    assert not torch.equal(column, basis_for(5, 6, (7,), cpu, torch.float32, snake=False))


def test_tap_basis_reaches_each_neighbour_once():
    """Interior tokens of a 7x7 conv see all 49 taps, each from a different token; a corner sees 16."""
    basis = tap_basis(grid_coords(9, 9, torch.device("cpu")), (7, 7), torch.float32)
    per_token = basis.sum(dim=(0, 2))
    assert per_token.view(9, 9)[4, 4] == 49 and per_token.view(9, 9)[0, 0] == 16
    assert basis.sum(0).max() == 1  # no token pair shares two taps


@pytest.mark.parametrize("transpose", [False, True])
def test_scan_folds_the_snake_into_the_matrix(transpose):
    torch.manual_seed(0)
    scan = ZigzagScan1D(5, 7, transpose, depthwise="conv").double()
    x = torch.randn(2, 5, 6, 4, dtype=torch.float64, requires_grad=True)  # 24 tokens: the path turns 5 times
    want, want_grads = grads(scan, x)
    set_path(scan, "matmul")
    got, got_grads = grads(scan, x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grads[0], want_grads[0], rtol=1e-12, atol=1e-12)


def test_liquid_block_forward_mode_derivative_matches():
    """sCM differentiates the model with torch.func.jvp: the dense path's tangents are the conv path's."""
    torch.manual_seed(0)
    block = LiquidBlock(16, 16, 4, 2.0, 3, 5, transpose_scan=True, kernels="torch", depthwise="conv").double()
    x, c = torch.randn(2, 16, 5, 5, dtype=torch.float64), torch.randn(2, 16, dtype=torch.float64)
    tx, tc = torch.randn_like(x), torch.randn_like(c)
    want = torch.func.jvp(block, (x, c), (tx, tc))
    set_path(block, "matmul")
    got = torch.func.jvp(block, (x, c), (tx, tc))
    for g, h in zip(got, want):
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-10)


def test_auto_keeps_convs_on_cpu_and_choices_are_checked():
    assert not use_dense("auto", torch.zeros(1, 2, 4, 4))
    assert use_dense("matmul", torch.zeros(1, 2, 4, 4)) and not use_dense("conv", torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="depthwise must be one of"):
        check_choice("fft")
    with pytest.raises(ValueError, match="depthwise must be one of"):
        LiquidGen(1, 8, 0, width=16, depth=2, groups=4, depthwise="dense")


def test_model_bytes_count_the_convs_not_the_dense_matrices():
    """As the FLOPs: and eager code's per-shape basis cache, built in the first of forward_bytes's two batches only,
    made the difference between them negative."""
    dense = LiquidGen(1, 16, 10, width=32, depth=2, groups=8, depthwise="matmul")
    conv = LiquidGen(1, 16, 10, width=32, depth=2, groups=8, depthwise="conv")
    assert forward_bytes(dense, 1, 16, 10) == forward_bytes(conv, 1, 16, 10)
    assert forward_bytes(dense, 1, 16, 10)["unfused"] > 0


def test_model_flops_count_the_convs_not_the_dense_matrices():
    model = LiquidGen(1, 16, 10, width=32, depth=2, groups=8, depthwise="matmul")
    x, t, y = torch.randn(2, 1, 16, 16), torch.rand(2), torch.tensor([1, 2])
    dense = count_flops(lambda: model(x, t, y))
    with model_flops_mode(model):
        counted = count_flops(lambda: model(x, t, y))
    assert model.blocks[0].local.depthwise_path == "matmul"  # restored
    set_path(model, "conv")
    assert counted == count_flops(lambda: model(x, t, y)) < dense


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA: the dense path in bf16 on tensor cores")
def test_dense_block_agrees_in_bf16_on_cuda():
    torch.manual_seed(0)
    block = LiquidBlock(512, 512, 32, 4.0, 7, 31, transpose_scan=True, kernels="torch", depthwise="conv").cuda()
    x = torch.randn(16, 512, 16, 16, device="cuda", requires_grad=True)
    c = torch.randn(16, 512, device="cuda")

    def run():
        with torch.autocast("cuda", torch.bfloat16):
            out = block(x, c)
        return out.float(), torch.autograd.grad(out.float().square().mean(), (x, block.local.depthwise.weight))

    want, want_grads = run()
    set_path(block, "matmul")
    got, got_grads = run()
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    for g, h in zip(got_grads, want_grads):
        torch.testing.assert_close(g, h, rtol=5e-2, atol=5e-2 * h.abs().max().item())
