"""Interpolation (slerp, class and prompt blends), `liquidgen interpolate` and `sample --trajectory` GIFs."""
import numpy as np
import pytest
import torch
from PIL import Image

from liquidgen.cli import main
from liquidgen.interpolate import blend_contexts, class_weights, lerp, slerp, weights
from liquidgen.models import build_model
from liquidgen.plots import save_gif


def test_slerp_keeps_the_endpoints_and_the_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 50, 50, generator=g), torch.randn(4, 50, 50, generator=g)  # d = 10,000
    w = weights(5)
    assert w.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    path = slerp(a, b, w)
    assert path.shape == (5, 4, 50, 50)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    d = a.numel() ** 0.5
    assert all(abs(float(x.norm()) / d - 1) < 0.03 for x in path)  # on the sphere the noise lives on
    assert abs(float(lerp(a, b, w)[2].norm()) / d - 2**-0.5) < 0.03  # the chord: noise of the wrong size
    same = slerp(a, a * 2, w)  # parallel: the straight line, no NaN
    assert torch.isfinite(same).all() and torch.allclose(same[2], 1.5 * a)


def test_class_weights_rows():
    rows = class_weights(3, 7, weights(3), 10)
    assert rows.shape == (3, 11) and rows[1, 3] == rows[1, 7] == 0.5 and rows.sum(1).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="out of range"):
        class_weights(3, 10, weights(3), 10)


@pytest.mark.parametrize("name,preset", [("liquid", "tiny"), ("dit", "tiny"), ("unet", "tiny"),
                                         ("fixed_point", "dit-tiny")])
def test_one_hot_class_weights_are_the_label(name, preset):
    torch.manual_seed(0)
    model = build_model(name, preset, 1, 8, 10).eval()
    for p in model.parameters():  # zero-initialised output layers would hide the condition
        torch.nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(3, 1, 8, 8), torch.rand(3), torch.tensor([1, 4, 9])
    soft = torch.nn.functional.one_hot(y, 11).float()
    torch.testing.assert_close(model(x, t, soft), model(x, t, y))
    torch.testing.assert_close(model(x, t, model.unconditional(soft, None)[0]), model(x, t, None))
    half = model(x, t, class_weights(1, 4, torch.tensor([0.5, 0.5, 0.5]), 10))
    assert not torch.allclose(half, model(x, t, y))


@pytest.mark.parametrize("tokens", [False, True])
def test_prompt_blend_ends_are_the_prompts(tokens):
    torch.manual_seed(0)
    model = build_model("dit", "tiny", 1, 8, 0, context_dim=6, cross_attention=True).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    if tokens:  # a 3-token and a 5-token prompt, zero-padded to 5 as `text.fixed_length` does
        mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
        pair = torch.randn(2, 5, 6) * mask[..., None]
    else:
        pair, mask = torch.randn(2, 6), None
    context, blended_mask = blend_contexts(pair, mask, weights(3))
    x, t = torch.randn(1, 1, 8, 8).expand(3, -1, -1, -1), torch.full((3,), 0.5)
    out = model(x, t, None, context, context_mask=blended_mask)
    for k in (0, 1):
        alone = model(x[:1], t[:1], None, pair[k:k + 1], context_mask=None if mask is None else mask[k:k + 1])
        torch.testing.assert_close(out[2 * k: 2 * k + 1], alone)
    if tokens:
        assert blended_mask.tolist()[1] == [True] * 5  # in between, every token either prompt has


def test_gif_frames_and_pingpong(tmp_path):
    frames = [torch.full((2, 3, 8, 8), v) for v in (-1.0, 0.0, 1.0)]
    save_gif(frames, tmp_path / "a.gif", nrow=2)
    save_gif(frames, tmp_path / "b.gif", nrow=2, pingpong=True)
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 3 and im.size == image_size(2, 8, 8)
        im.seek(2)
        assert np.asarray(im.convert("L"))[5, 5] == 255
    with Image.open(tmp_path / "b.gif") as im:
        assert im.n_frames == 4  # forward, then back without repeating the ends


def gif_milliseconds(path):
    """Total play time: PIL merges identical neighbouring frames into one longer frame, so frame counts of
    near-identical samples vary, their summed durations do not."""
    total = 0
    with Image.open(path) as im:
        for k in range(im.n_frames):
            im.seek(k)
            total += im.info["duration"]
    return total


def image_size(n, cell, scale):
    return (2 + n * (cell * scale + 2), 2 + (cell * scale + 2))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("interp")
    main(["train", "configs/digits-liquid-tiny.yaml", "--out", str(out), "--set", "train.steps=30",
          "data.image_size=8", "train.batch_size=32", "train.sample_every=0", "train.ckpt_every=0"])
    return out


def read_strip(path, frames):
    arr = np.asarray(Image.open(path).convert("L")).astype(int)
    cell = (arr.shape[1] - 2) // frames
    return [arr[2:cell, 2 + k * cell: k * cell + cell] for k in range(frames)]


def test_interpolate_endpoints_are_the_plain_samples(run, tmp_path):
    main(["interpolate", str(run), "--labels", "2", "7", "--frames", "4", "--seed", "5", "--steps", "4",
          "--out", str(tmp_path / "labels.png"), "--device", "cpu"])
    assert gif_milliseconds(tmp_path / "labels.gif") == 6 * 120  # 4 frames, played forward and back
    strip = read_strip(tmp_path / "labels.png", 4)
    for label, frame in ((2, strip[0]), (7, strip[-1])):
        main(["sample", str(run), "--labels", str(label), "--n", "1", "--seed", "5", "--steps", "4",
              "--out", str(tmp_path / f"{label}.png"), "--device", "cpu"])
        single = read_strip(tmp_path / f"{label}.png", 1)[0]
        assert np.abs(single - frame).max() <= 1
    main(["interpolate", str(run), "--seeds", "1", "2", "--label", "3", "--frames", "3", "--steps", "4",
          "--out", str(tmp_path / "seeds.png"), "--device", "cpu"])
    first, _, last = read_strip(tmp_path / "seeds.png", 3)
    main(["sample", str(run), "--labels", "3", "--n", "1", "--seed", "2", "--steps", "4",
          "--out", str(tmp_path / "s2.png"), "--device", "cpu"])
    assert np.abs(read_strip(tmp_path / "s2.png", 1)[0] - last).max() <= 1 and np.abs(first - last).max() > 10


def test_interpolate_errors(run, tmp_path):
    with pytest.raises(SystemExit):
        main(["interpolate", str(run), "--seeds", "1", "1", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit):
        main(["interpolate", str(run), "--prompts", "a", "b", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit):  # --label fixes the class of a seed walk, not of a class blend
        main(["interpolate", str(run), "--labels", "1", "2", "--label", "3", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit):
        main(["interpolate", str(run), "--labels", "1", "2", "--frames", "1", "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()


def test_interpolate_refuses_endless_frames_and_a_walk_from_a_thing_to_itself(run, tmp_path, capsys):
    """--frames and the --prompts are refused as they are parsed (no run at the checkpoint path); --labels once
    the model has named its classes, before sampling."""
    out = str(tmp_path / "x.png")
    problems = [(tmp_path / "no-run", ["--seeds", "1", "2", "--frames", "100000"], "must be in [2, 1000], got 100000"),
                (tmp_path / "no-run", ["--prompts", "a cat", "a cat"], "both ends are 'a cat'"),
                (run, ["--labels", "3", "3"], "both ends are class 3")]
    for checkpoint, argv, problem in problems:
        with pytest.raises(SystemExit):
            main(["interpolate", str(checkpoint), *argv, "--out", out, "--device", "cpu"])
        assert problem in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_sample_trajectory_gif(run, tmp_path):
    main(["sample", str(run), "--labels", "0", "1", "--n", "2", "--steps", "5", "--seed", "3", "--device", "cpu",
          "--out", str(tmp_path / "with.png"), "--trajectory", str(tmp_path / "t.gif")])
    main(["sample", str(run), "--labels", "0", "1", "--n", "2", "--steps", "5", "--seed", "3", "--device", "cpu",
          "--out", str(tmp_path / "without.png")])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "with.png")), np.asarray(Image.open(tmp_path / "without.png")))
    assert gif_milliseconds(tmp_path / "t.gif") == 6 * 500  # one per model evaluation (5 Euler steps), the result


def test_sample_refuses_a_bad_trajectory_path_before_loading_the_model(tmp_path, capsys):
    """No run at the checkpoint path: each refusal must come from the path check, before anything is loaded."""
    (tmp_path / "folder.gif").mkdir()
    (tmp_path / "file").touch()
    out = tmp_path / "out.png"
    problems = {tmp_path / "t.txt": "give a .gif", out: "is the --out file too",
                tmp_path / "folder.gif": "is a folder", tmp_path / "file" / "t.gif": "cannot make the folder"}
    for trajectory, problem in problems.items():
        with pytest.raises(SystemExit):
            main(["sample", str(tmp_path / "no-run"), "--out", str(out), "--trajectory", str(trajectory)])
        assert problem in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(SystemExit):
        main(["sample", str(tmp_path / "no-run"), "--out", str(tmp_path / "folder.png")])
    assert "is a folder" in capsys.readouterr().err
