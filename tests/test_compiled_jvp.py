"""sCM's tangent (a torch.func.jvp through the backbone) under torch.compile: the models' primitive paths while
`kernels.compiled_jvp` is on, one graph without breaks per backbone, and the same numbers as eager."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import jvp

from liquidgen.kernels import compiled_jvp
from liquidgen.models import build_model
from liquidgen.models.base import group_norm_primitives
from liquidgen.objectives.consistency import Consistency, student_tangent


@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_from_primitives_is_group_norm_with_its_jvp(affine):
    torch.manual_seed(0)
    x, dx = torch.randn(3, 8, 5, 5, dtype=torch.float64), torch.randn(3, 8, 5, 5, dtype=torch.float64)
    w, b = (torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)) if affine else (None, None)
    native = jvp(lambda h: F.group_norm(h, 4, w, b, 1e-5), (x,), (dx,))
    ours = jvp(lambda h: group_norm_primitives(h, 4, w, b, 1e-5), (x,), (dx,))
    for a, c in zip(native, ours):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)


def _case(name: str, **options):
    torch.manual_seed(0)
    model = build_model(name, "tiny", 1, 8, 10, **options)
    x, dx = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    theta, y = torch.rand(4) * 1.5, torch.randint(0, 10, (4,))
    return model, (x, theta, dx, torch.tensor(0.7), y, {})


@pytest.mark.parametrize("name,options", [("unet", {}), ("liquid", {}), ("dit", {}),
                                          ("liquid", {"depthwise": "matmul"})])  # models.toeplitz's custom op
def test_the_tangent_of_every_backbone_compiles_as_one_graph(name, options):
    model, args = _case(name, **options)
    torch._dynamo.reset()
    with torch.no_grad(), compiled_jvp():
        explained = torch._dynamo.explain(student_tangent)(model, *args)
    assert explained.graph_break_count == 0, [str(b.reason)[:300] for b in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.slow
def test_the_compiled_tangent_and_loss_match_eager():
    model, args = _case("unet")
    with torch.no_grad():
        eager = student_tangent(model, *args)
    objective = Consistency(mode="ct", tangent_warmup=4, adaptive_weighting=False)
    objective.compile_tangent(backend="aot_eager")  # Dynamo + AOTAutograd as inductor sees them, no codegen
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = objective._tangent(model, *args)
    for a, c in zip(eager, compiled):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)
    x0 = torch.randn(4, 1, 8, 8)
    plain = Consistency(mode="ct", tangent_warmup=4, adaptive_weighting=False)
    for step in (1, 3):  # r changes with the step: a tensor input, not a recompile
        plain.set_step(step)
        objective.set_step(step)
        torch.manual_seed(step)
        expected = plain.loss(model, x0, args[4])
        torch.manual_seed(step)
        torch.testing.assert_close(objective.loss(model, x0, args[4]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_compiled_teacher_velocity_matches_eager():
    """sCD's teacher (guided, any prediction) compiled as one graph gives the eager numbers."""
    torch.manual_seed(0)
    teacher = build_model("unet", "tiny", 1, 8, 10).eval()
    with torch.no_grad():  # zero-initialised layers (the class embedding among them) would hide guidance
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x_t, t, y = torch.randn(4, 1, 8, 8), torch.rand(4) * 0.9 + 0.05, torch.randint(0, 10, (4,))
    eager = Consistency(mode="cd", teacher="unused", teacher_cfg=2.0)
    compiled = Consistency(mode="cd", teacher="unused", teacher_cfg=2.0)
    compiled.compile_tangent(backend="aot_eager")
    torch._dynamo.reset()
    for objective in (eager, compiled):
        objective.bind_teacher(teacher, "v")
    with torch.no_grad():
        expected = eager.teacher_velocity(x_t, t, y)
        torch.testing.assert_close(compiled.teacher_velocity(x_t, t, y), expected, rtol=1e-5, atol=1e-5)
        unguided = Consistency(mode="cd", teacher="unused", teacher_cfg=1.0)
        unguided.bind_teacher(teacher, "v")
        assert (unguided.teacher_velocity(x_t, t, y) - expected).abs().max() > 1e-3  # guidance is applied


def test_the_tangent_compiles_in_the_chosen_mode(monkeypatch):
    """`compile_mode` reaches torch.compile for both the tangent and the teacher; the default passes no mode."""
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.append((fn.__name__, kw.get("mode"))) or fn)
    Consistency(mode="cd", teacher="unused", compile_mode="reduce-overhead").compile_tangent()
    Consistency(mode="cd", teacher="unused").compile_tangent()
    assert seen == [("student_tangent", "reduce-overhead"), ("guided_trigflow", "reduce-overhead"),
                    ("student_tangent", None), ("guided_trigflow", None)]
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        Consistency(compile_mode="fast")
