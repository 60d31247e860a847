"""`liquidgen bench`: FLOP counting, time budgets, speed and quality records, resumption, the report."""
import json

import pytest
import torch
from torch import nn

from liquidgen.bench.budget import budgeted_config, train_to_budget
from liquidgen.autoencoders import AUTOENCODERS, Identity
from liquidgen.bench.quality import autoencoder_round_trip, parse_contender, record_key
from liquidgen.bench.report import floor_line, quality_tables, write_report
from liquidgen.bench.speed import parse_presets, read_records
from liquidgen.cli import main
from liquidgen.config import load_config
from liquidgen.data import fit_images, load_dataset
from liquidgen.flops import count_flops, forward_bytes, forward_flops
from liquidgen.latent_space import to_float, to_uint8
from liquidgen.models import build_model
from liquidgen.precompute import Request, precompute
from liquidgen.train import train


@pytest.mark.parametrize("groups", [1, 8, 32])
def test_conv_backward_flops_count_groups(groups):
    """Input and weight gradients each cost one forward pass, also for grouped / depthwise kernels
    (PyTorch's own backward formula ignores the groups)."""
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=groups)
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    fwd = count_flops(lambda: conv(x))
    assert fwd == 2 * 2 * 64 * 32 * (32 // groups) * 9
    out = conv(x)
    assert count_flops(lambda: out.square().sum().backward()) == 2 * fwd
    frozen = conv(x.detach())  # no input gradient wanted: only the weight's
    assert count_flops(lambda: frozen.sum().backward()) == fwd


@pytest.mark.parametrize("name,preset", [("liquid", "tiny"), ("dit", "tiny"), ("unet", "tiny")])
def test_training_step_costs_three_forward_passes(name, preset):
    model = build_model(name, preset, 1, 16, 10)
    x, t, y = torch.randn(2, 1, 16, 16), torch.rand(2), torch.arange(2)
    fwd = forward_flops(model, 1, 16, 10, batch=2)
    step = count_flops(lambda: model(x, t, y).square().mean().backward())
    # backward = 2 x forward for every counted op, except that the stem's input needs no gradient
    assert 2.8 * fwd <= step <= 3.0 * fwd


def test_forward_bytes_count_activations_per_image_without_the_weights():
    class ConvRelu(torch.nn.Module):  # a backbone's call signature, t and y unused
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x, t, y):
            return torch.relu(self.conv(x))

    side = 6
    moved = forward_bytes(ConvRelu(), 1, side, 0, element_size=2)
    # conv: reads 1 channel, writes 4; relu: reads 4, writes 4 (the conv's 40 weights drop out of the difference)
    assert moved["gemm"] == 2 * (1 + 4) * side**2
    assert moved["unfused"] == 2 * (1 + 4 + 4 + 4) * side**2


def test_parse_presets_and_contenders():
    assert parse_presets(["dit:S", "unet"]) == [("dit", "S", ""), ("unet", "28", ""), ("unet", "32", "")]
    every = parse_presets(["all"])
    assert ("liquid", "B", "") in every and not any("tiny" in p for _, p, _ in every)
    options = "kernels=torch,checkpointing=-1"
    assert parse_presets([f"liquid:S:{options}"]) == [("liquid", "S", options)]
    with pytest.raises(ValueError, match="options need a preset"):
        parse_presets(["liquid::kernels=torch"])
    with pytest.raises(ValueError, match="unknown preset"):
        parse_presets(["dit:XL"])
    with pytest.raises(ValueError, match="unknown backbone"):
        parse_presets(["mamba"])
    c = parse_contender("dit:S:patch_size=1,pos_embed=learned")
    assert (c.backbone, c.preset, c.options) == ("dit", "S", {"patch_size": 1, "pos_embed": "learned"})
    assert c.name == "dit-S,patch_size=1,pos_embed=learned"
    with pytest.raises(ValueError, match="backbone:preset"):
        parse_contender("dit")


def test_time_budget_stops_checkpoints_and_resumes(tmp_path, step_clock):
    run = tmp_path / "run"
    overrides = ["train.steps=100000", "train.batch_size=16", "train.log_every=5", "train.sample_every=0",
                 "train.ckpt_every=0", "train.keep_checkpoints=0", "data.image_size=8", "train.minutes=0.02",
                 "train.ckpt_minutes=0.01"]
    train(load_config("configs/digits-liquid-tiny.yaml", overrides), run)
    ckpts = sorted((run / "checkpoints").iterdir())
    states = [json.loads((c / "state.json").read_text()) for c in ckpts]
    # The first step compiles and warms up, so it is not counted: the timed checkpoint falls on the first step past
    # 0.6 s (10 counted steps, 0.625 s), the budget of 1.2 s ends at 20 (1.25 s).
    assert [(st["step"], st["train_seconds"]) for st in states] == [(11, 0.625), (21, 1.25)]
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 21 and log[-1]["train_seconds"] == 1.25
    # A longer budget continues the same run: its time count carries over from the checkpoint, and the step after
    # the restart warms up again, uncounted: 1.8 s is passed at 1.8125, 9 counted steps later.
    train(load_config("configs/digits-liquid-tiny.yaml", overrides[:-2] + ["train.minutes=0.03"]), run, resume=True)
    final = json.loads((sorted((run / "checkpoints").iterdir())[-1] / "state.json").read_text())
    assert (final["step"], final["train_seconds"]) == (31, 1.8125)


def test_budgeted_run_trains_to_its_minutes_and_a_rerun_continues(tmp_path, step_clock):
    """The helper of every equal-minutes study: the budget wins over a user's override of it, no samples are
    written, and a rerun with a larger budget resumes the run rather than starting over."""
    run, user = tmp_path / "run", ["train.batch_size=16", "data.image_size=8", "train.minutes=5", "train.log_every=3"]
    config = budgeted_config("configs/digits-liquid-tiny.yaml", 0.01, "cpu", user, compiled=False, log_every=2)
    assert (config.train.minutes, config.train.log_every, config.train.compile) == (0.01, 2, False)
    assert config.train.sample_every == 0 and config.train.keep_checkpoints == 1
    first = train_to_budget(config, run)
    assert (first["steps"], first["train_seconds"]) == (11, 0.625) and first["train_img_s"] > 0
    assert first["wall_s"] > first["train_seconds"] and not any((run / "samples").glob("*.png"))
    more = train_to_budget(budgeted_config("configs/digits-liquid-tiny.yaml", 0.02, "cpu", user, compiled=False),
                           run)
    assert (more["steps"], more["train_seconds"]) == (22, 1.25)
    assert len(list((run / "checkpoints").iterdir())) == 1  # keep_checkpoints=1


def test_bench_speed_on_cpu_records_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "speed"
    args = ["bench", "speed", "dit:tiny:checkpointing=-1", "unet:tiny", "--out", str(out), "--batch", "4",
            "--mode", "eager", "--steps", "1", "--warmup", "1", "--sample-batch", "2", "--sample-steps", "2",
            "--device", "cpu"]
    main(args)
    records = read_records(out / "speed.jsonl")
    assert [r["key"] for r in records] == ["dit:tiny:checkpointing=-1:eager:b4", "unet:tiny:eager:b4"]
    for r in records:
        assert r["train_img_s"] > 0 and r["sample_img_nfe_s"] > 0 and r["mfu"] is None  # no peak on a CPU
        assert 2.5 < r["train_gflops_per_img"] / r["sample_gflops_per_nfe"] < 3.5
    report = (out / "report.md").read_text()
    assert "| dit:tiny:checkpointing=-1 | 4x32x32 |" in report and (out / "speed.png").stat().st_size > 1000
    capsys.readouterr()
    main(args)  # a rerun measures nothing again
    assert "done before, skipped" in capsys.readouterr().out
    assert len(read_records(out / "speed.jsonl")) == 2


def test_bench_speed_times_other_objectives_in_the_same_step(tmp_path, capsys):
    """Issue 21's ratio: a consistency step against a flow step of the same backbone. sCT adds the JVP (about one
    forward and its tangent); sCD also the teacher's forward on a frozen copy of the model."""
    out = tmp_path / "speed"
    main(["bench", "speed", "unet:tiny", "--out", str(out), "--batch", "4", "--mode", "eager", "--steps", "1",
          "--warmup", "1", "--sample-batch", "2", "--sample-steps", "1", "--device", "cpu",
          "--objective", "flow", "consistency:mode=ct", "consistency:mode=cd,teacher_cfg=2.0"])
    flow, ct, cd = read_records(out / "speed.jsonl")
    assert [r["objective"] for r in (flow, ct, cd)] == ["flow", "consistency:mode=ct",
                                                        "consistency:mode=cd,teacher_cfg=2.0"]
    assert ct["key"] == "unet:tiny:eager:b4:consistency:mode=ct" and flow["key"] == "unet:tiny:eager:b4"
    forward = flow["sample_gflops_per_nfe"]
    assert "sample_img_nfe_s" not in ct and "sample_img_nfe_s" not in cd  # sampling is timed once per preset
    assert ct["train_gflops_per_img"] > flow["train_gflops_per_img"] + 0.9 * forward
    assert cd["train_gflops_per_img"] == pytest.approx(ct["train_gflops_per_img"] + 2 * forward, rel=0.02)  # CFG pair
    assert "| unet:tiny (consistency:mode=ct) |" in (out / "report.md").read_text()
    with pytest.raises(SystemExit):
        main(["bench", "speed", "unet:tiny", "--out", str(out), "--mode", "eager", "--device", "cpu",
              "--objective", "consistency:nope=1"])
    assert "unknown option 'nope' for objective 'consistency'" in capsys.readouterr().err


def test_bench_quality_on_cpu(tmp_path, capsys, step_clock):
    out = tmp_path / "quality"
    args = ["bench", "quality", "configs/digits-liquid-tiny.yaml", "liquid:tiny", "dit:tiny:patch_size=2",
            "--set", "optim.schedule=constant", "data.image_size=8", "train.batch_size=16",
            "--out", str(out), "--minutes", "0.04", "--curve-every", "0.5", "--nfe", "1", "2",
            "--curve-nfe", "2", "--samples", "30", "--curve-samples", "20",
            "--classifier", str(tmp_path / "clf.safetensors"), "--cache", str(tmp_path / "cache"), "--device", "cpu"]
    main(args)  # step_clock: marks 1.2 s apart, whatever the load
    records = read_records(out / "quality.jsonl")
    keys = {r["key"] for r in records}
    for name in ("liquid-tiny", "dit-tiny,patch_size=2"):
        assert {record_key(name, 0.02, "euler", 2), record_key(name, 0.04, "euler", 1),
                record_key(name, 0.04, "euler", 2)} <= keys
        assert (out / f"samples-{name.replace(',', '_').replace('=', '_')}.png").is_file()
    floors = [r for r in records if r.get("floor")]
    assert sorted(r["samples"] for r in floors) == [20, 30] and all(r["classifier_fd"] > 0 for r in floors)
    records = [r for r in records if not r.get("floor")]
    assert len(records) == 6
    for r in records:
        assert r["classifier_fd"] > 0 and 0 <= r["class_accuracy"] <= 1
        assert r["checkpoint_train_seconds"] >= 60 * r["minutes"]
    report = (out / "report.md").read_text()
    assert "| liquid-tiny | 0.04 |" in report and "0.02 min" in report and "Real training images score" in report
    assert (out / "quality_vs_minutes.png").is_file() and (out / "quality_vs_nfe.png").is_file()
    capsys.readouterr()
    main(args)
    assert capsys.readouterr().out.count("scored before, skipped") == 2
    assert len(read_records(out / "quality.jsonl")) == 8


def test_bench_quality_needs_a_constant_schedule_and_pixels(tmp_path):
    with pytest.raises(SystemExit):
        main(["bench", "quality", "configs/digits-liquid-tiny.yaml", "liquid:tiny", "--out", str(tmp_path),
              "--minutes", "1"])


def test_quality_tables_from_records(tmp_path):
    def rec(name, minutes, nfe, fd, acc):
        return {"key": record_key(name, minutes, "euler", nfe), "name": name, "minutes": minutes, "nfe": nfe,
                "classifier_fd": fd, "class_accuracy": acc, "steps": 100, "train_img_s": 50.0, "loss": 0.5}

    records = [rec("a", 1, 16, 30.0, 0.9), rec("a", 2, 16, 20.0, 0.95), rec("a", 2, 1, 90.0, 0.5),
               rec("b", 1, 16, 40.0, 0.8), rec("b", 2, 16, 10.0, 0.99), rec("b", 2, 1, 80.0, 0.6)]
    text = quality_tables(records)
    assert "| a | 2 | 100 | 50 | 0.5000 | 90.00 (0.500) | 20.00 (0.950) |" in text
    assert "| b | 40.00 | 10.00 |" in text  # the curve: FD at 1 and 2 minutes, NFE 16
    (tmp_path / "quality.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"cut')
    write_report(tmp_path)  # a last line cut off by a kill is ignored
    assert "90.00 (0.500)" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "quality_vs_nfe.png").is_file()  # two NFE each: a curve
    one_nfe = tmp_path / "sweep"
    one_nfe.mkdir()
    (one_nfe / "quality.jsonl").write_text("".join(json.dumps({**r, "cfg": c}) + "\n"
                                                   for c, r in zip((1.0, 2.0), records[:2])))
    write_report(one_nfe)  # a guidance sweep at one NFE: no one-point "curve"
    assert not (one_nfe / "quality_vs_nfe.png").exists() and "NFE" in (one_nfe / "report.md").read_text()
    assert "Kendall" not in text  # one feature space: nothing to compare
    for r, second in zip(records, [5.0, 4.0, 9.0, 6.0, 3.0, 8.0]):  # the second space: b ahead of a at NFE 16 too
        r["classifier2_fd"] = second
    assert "Kendall tau +1.00 over 2; best three the same (b, a | b, a)" in quality_tables(records)
    records[1]["classifier2_fd"] = 2.0  # now a ahead of b in the second space
    assert "Kendall tau -1.00 over 2; best three different (b, a | a, b)" in quality_tables(records)


def test_bench_quality_scores_consistency_models_at_one_and_two_steps(tmp_path):
    out = tmp_path / "scm"
    main(["bench", "quality", "configs/digits-liquid-tiny.yaml", "unet:tiny", "--set", "optim.schedule=constant",
          "data.image_size=8", "train.batch_size=16", "objective.name=consistency", "objective.options={mode: ct}",
          "sample.cfg=1.0", "--out", str(out), "--minutes", "0.01", "--curve-every", "1", "--samples", "20",
          "--classifier", str(tmp_path / "clf.safetensors"), "--cache", str(tmp_path / "cache"), "--device", "cpu"])
    records = [r for r in read_records(out / "quality.jsonl") if not r.get("floor")]
    assert sorted((r["sampler"], r["nfe"]) for r in records) == [("consistency", 1), ("consistency", 2)]


def test_bench_quality_sweeps_guidance_and_reports_each_best_scale(tmp_path):
    out = tmp_path / "sweep"
    main(["bench", "quality", "configs/digits-liquid-tiny.yaml", "liquid:tiny", "--set", "optim.schedule=constant",
          "data.image_size=8", "train.batch_size=16", "--out", str(out), "--minutes", "0.01", "--curve-every", "1",
          "--nfe", "1", "2", "--samples", "20", "--cfg", "1", "3", "--cache", str(tmp_path / "cache"),
          "--device", "cpu"])  # no --classifier: digits' own is fitted into the cache
    assert (tmp_path / "cache" / "classifier-digits-8px.safetensors").is_file()
    records = [r for r in read_records(out / "quality.jsonl") if not r.get("floor")]
    assert sorted((r["nfe"], r["cfg"]) for r in records) == [(1, 1.0), (1, 3.0), (2, 1.0), (2, 3.0)]
    assert record_key("liquid-tiny", 0.01, "euler", 2, 3.0) in {r["key"] for r in records}
    assert all(r["classifier_fd_ci95"][0] < r["classifier_fd_ci95"][1] for r in records)
    best = {n: min((r for r in records if r["nfe"] == n), key=lambda r: r["classifier_fd"]) for n in (1, 2)}
    report = (out / "report.md").read_text()
    assert "Guidance sweep at the full budget" in report and "| liquid-tiny | 3 |" in report
    assert all(f"{best[n]['classifier_fd']:.2f} ({best[n]['class_accuracy']:.3f}) @cfg {best[n]['cfg']:g}" in report
               for n in (1, 2))


def test_bench_quality_scores_other_nfe_and_the_curve_at_the_best_scale(tmp_path, capsys, step_clock):
    out = tmp_path / "best"
    args = ["bench", "quality", "configs/digits-liquid-tiny.yaml", "liquid:tiny", "--set", "optim.schedule=constant",
            "data.image_size=8", "train.batch_size=16", "--out", str(out), "--minutes", "0.02", "--curve-every", "0.5",
            "--nfe", "1", "4", "--curve-nfe", "4", "--samples", "20", "--curve-samples", "20", "--cfg", "1", "3",
            "--nfe-at-best", "--cache", str(tmp_path / "cache"), "--device", "cpu"]
    main(args)
    records = [r for r in read_records(out / "quality.jsonl") if not r.get("floor")]
    sweep = {r["cfg"]: r for r in records if r["minutes"] == 0.02 and r["nfe"] == 4}
    assert sorted(sweep) == [1.0, 3.0]
    best = min(sweep.values(), key=lambda r: r["classifier_fd"])["cfg"]
    rest = sorted((r["minutes"], r["nfe"], r["cfg"]) for r in records if r["key"] not in
                  {s["key"] for s in sweep.values()})
    assert rest == [(0.01, 4, best), (0.02, 1, best)]  # nothing scored at the losing scale but the sweep itself
    assert records.index(sweep[1.0]) < records.index(next(r for r in records if r["minutes"] == 0.01))
    assert {f"samples-liquid-tiny-cfg{c:g}.png" for c in (1, 3)} <= {p.name for p in out.iterdir()}
    capsys.readouterr()
    main(args)
    assert "scored before, skipped" in capsys.readouterr().out


def test_floor_line_says_when_the_floor_is_split_half():
    held_out = [{"floor": True, "samples": 1000, "classifier_fd": 4.77}]
    assert floor_line(held_out, "classifier_fd").startswith("Real training images score 4.77 at 1,000 images:")
    halves = [{"floor": True, "floor_split_half": True, "samples": 2000, "classifier_fd": 3.1}]
    assert "against the other half of the training set" in floor_line(halves, "classifier_fd")
    assert floor_line([], "classifier_fd") == ""
    through = [{"floor": True, "floor_autoencoder": "taesd-taef2", "samples": 2000, "classifier_fd": 41.5}]
    line = floor_line(halves + through, "classifier_fd")
    assert line.startswith("Real training images score 3.10 at 2,000 images")
    assert "through the taesd-taef2 autoencoder (encoded, stored, decoded) score 41.50 at 2,000 images" in line


class Coarse(Identity):
    """A lossy stand-in autoencoder: 2x2 average-pooled latents, decoded by repetition."""

    name = "coarse"

    def __init__(self, channels: int = 3):
        super().__init__(channels)
        self.downscale = 2

    def _encode(self, images):
        return nn.functional.avg_pool2d(images, 2)

    def _decode(self, latents):
        return latents.repeat_interleave(2, -1).repeat_interleave(2, -2)


def test_autoencoder_round_trip_resizes_encodes_stores_half_and_decodes(tmp_path, monkeypatch):
    monkeypatch.setitem(AUTOENCODERS, "coarse", Coarse)
    precompute(Request("digits", None, 8), tmp_path / "px", progress=False)
    assert autoencoder_round_trip(str(tmp_path / "px"), torch.device("cpu")) is None  # pixels: nothing to add
    precompute(Request("digits", None, 16, autoencoder={"name": "coarse"}), tmp_path / "lat", progress=False)
    name, through = autoencoder_round_trip(str(tmp_path / "lat"), torch.device("cpu"))
    images = load_dataset("digits", image_size=8).images[:10]
    out = through(images)
    assert name == "coarse" and out.dtype == torch.uint8 and out.shape == (10, 3, 16, 16)  # stored size, RGB
    big = to_float(fit_images(images, 16))
    expected = Coarse().decode(Coarse().encode(big).half().float())  # float16, as precompute stores latents
    assert torch.equal(out, to_uint8(expected))
    assert not torch.equal(out, fit_images(images, 16))  # lossy: the floor it gives is above the pixel one


def test_bench_quality_passes_its_second_classifier_on(tmp_path, monkeypatch):
    """--classifier2 none skips the second network (hours on a CPU for CIFAR-10); a file is used as given."""
    import liquidgen.bench.quality as quality

    studies = []
    monkeypatch.setattr(quality, "run_quality", studies.append)
    base = ["bench", "quality", "configs/digits-liquid-tiny.yaml", "liquid:tiny", "--out", str(tmp_path),
            "--minutes", "0.1"]
    main([*base, "--classifier2", "none"])
    main([*base, "--classifier2", str(tmp_path / "c2.safetensors")])
    main(base)
    assert [s.classifier2 for s in studies] == [False, str(tmp_path / "c2.safetensors"), None]


def test_profile_step_splits_kernels_by_family_and_ranks_the_slowest(monkeypatch):
    """The kernel split of `profile_step` (fed a fixed profile: the GPU's own one needs CUDA): each family's share of
    the wall time, the busy share, and the top kernels per step, slowest first."""
    from liquidgen.bench import speed

    calls = []
    # GPU seconds and calls over the 2 repeats, which took 0.02 s of wall time
    kernels = {"sm90_xmma_gemm_bf16": [0.004, 8], "cudnn_flash_fwd": [0.002, 2],
               "triton_red_fused_group_norm": [0.006, 10], "elementwise_kernel": [0.001, 4]}

    def profiled(step, device, repeats):
        calls.append(repeats)
        return 0.02, kernels
    monkeypatch.setattr(speed, "kernel_times", profiled)
    record = speed.profile_step(lambda: None, torch.device("cpu"), repeats=2, top=2)
    assert calls == [2]
    assert record["step_ms"] == pytest.approx(10.0)
    assert record["matmul_share"] == pytest.approx(0.2) and record["attention_share"] == pytest.approx(0.1)
    assert record["other_share"] == pytest.approx(0.35) and record["gpu_busy"] == pytest.approx(0.65)
    assert [k[0] for k in record["top_kernels"]] == ["triton_red_fused_group_norm", "sm90_xmma_gemm_bf16"]
    assert record["top_kernels"][0][1:] == [5, pytest.approx(3.0)]  # calls and ms per step
    assert "top_kernels" not in speed.profile_step(lambda: None, torch.device("cpu"), repeats=2)


@pytest.fixture
def compiled_graphs(monkeypatch) -> list[bool]:
    """Every graph that `Module.compile` hands its backend from now on, as whether it has symbolic sizes; the graph
    then runs as traced (no Inductor: fast on a CPU)."""
    symbolic = []

    def capture(gm, example_inputs):
        symbolic.append(any(isinstance(s, torch.SymInt) for x in example_inputs if isinstance(x, torch.Tensor)
                            for s in x.shape) or any(isinstance(x, torch.SymInt) for x in example_inputs))
        return gm.forward

    compile_ = torch.nn.Module.compile

    def compile_capturing(self, *args, mode=None, **kwargs):  # the same call, with a backend that looks
        return compile_(self, *args, backend=capture, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", compile_capturing)
    return symbolic


def test_runs_of_one_backbone_in_one_process_compile_static_shapes(tmp_path, compiled_graphs):
    """A study trains its contenders in one process. With dynamic shapes left to torch.compile, the second run of a
    backbone at another input size recompiled the shared forward with symbolic sizes, and trained 43% slower on an
    H100 (results/2026-12-06-emoji-guidance-10k-h100). Every graph a run compiles must be static."""
    for size in (8, 16):  # `train` itself, as a notebook calls it twice (train_to_budget also resets the compiler)
        user = ["train.batch_size=8", f"data.image_size={size}", "train.compile=true"]
        train(budgeted_config("configs/digits-liquid-tiny.yaml", 0.005, "cpu", user), tmp_path / f"r{size}")
    assert len(compiled_graphs) >= 2 and not any(compiled_graphs)


def test_bench_speed_compiles_training_and_sampling_with_static_shapes(tmp_path, compiled_graphs):
    """`bench speed` times a case's training step, then its sampling at another batch on the same compiled model:
    the sampling graph must be compiled for its batch, not with a symbolic one."""
    main(["bench", "speed", "unet:tiny", "--out", str(tmp_path), "--batch", "4", "--mode", "default", "--steps", "1",
          "--warmup", "1", "--sample-batch", "2", "--sample-steps", "2", "--device", "cpu"])
    assert len(compiled_graphs) >= 2 and not any(compiled_graphs)
