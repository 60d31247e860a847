"""Reference classifiers, `liquidgen eval` and in-training evaluation."""
import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from liquidgen.cli import main
from liquidgen.data import ImageData, load_dataset
from liquidgen.latent_space import to_float
from liquidgen.evaluation.classifier import (
    SECOND,
    Recipe,
    ResidualClassifier,
    extract,
    fit_classifier,
    load_classifier,
    save_classifier,
)
from liquidgen.evaluation import classifier as classifier_module
from liquidgen.evaluation.evaluate import best_point, evaluate, load_samples, rank_agreement, sweep_table

QUICK_RECIPE = Recipe(epochs=6, batch_size=64, holdout=300)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", image_size=16)


@pytest.fixture(scope="module")
def classifier_file(digits, tmp_path_factory):
    model, info = fit_classifier(digits, None, recipe=QUICK_RECIPE, progress=False)
    return save_classifier(model, info, tmp_path_factory.mktemp("clf") / "digits.safetensors"), info


def test_classifier_training_is_reproducible_and_accurate(digits, classifier_file):
    path, info = classifier_file
    again, info2 = fit_classifier(digits, None, recipe=QUICK_RECIPE, progress=False)
    loaded, loaded_info = load_classifier(path)
    for (name, a), b in zip(loaded.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name  # same recipe and seed, same weights, bit for bit
    assert info == info2 == loaded_info
    assert info["test_accuracy"] > 0.85 and info["test_images"] == 300 and info["train_images"] == 1497


def test_second_feature_space_is_another_network_that_also_classifies(digits, classifier_file, tmp_path):
    second = Recipe(**{**QUICK_RECIPE.__dict__, "arch": SECOND.arch, "seed": SECOND.seed, "lr": SECOND.lr})
    model, info = fit_classifier(digits, None, recipe=second, progress=False)
    path = save_classifier(model, info, tmp_path / "second.safetensors")
    loaded, loaded_info = load_classifier(path)
    assert isinstance(loaded, ResidualClassifier) and loaded_info["recipe"]["arch"] == "resnet"
    assert info["test_accuracy"] > 0.85
    first = ImageData(digits.images[:600], digits.labels[:600], 10, digits.class_names)
    noise = torch.randint(0, 256, (300, 1, 16, 16), dtype=torch.uint8)
    scores = {name: evaluate(images, labels, first, "digits-600", classifier=classifier_file[0],
                             second_classifier=path, cache_dir=tmp_path)
              for name, images, labels in [("real", digits.images[600:1200], digits.labels[600:1200]),
                                           ("noise", noise, digits.labels[:300])]}
    assert len(extract(loaded, to_float(noise[:2]))[1][0]) == 256  # its own feature space, not the first's
    for fd in ("classifier_fd", "classifier2_fd"):
        assert scores["noise"][fd] > 5 * scores["real"][fd] > 0
    assert scores["real"]["classifier2_test_accuracy"] == info["test_accuracy"]


def test_rank_agreement_reports_tau_and_the_best_three():
    def point(a, b):
        return {"classifier_fd": a, "classifier2_fd": b}

    same = [point(1, 10), point(2, 20), point(3, 30), point(4, 40)]
    assert "tau +1.00 over 4; best three the same (a, b, c | a, b, c)" in rank_agreement(same, list("abcd"))
    swapped = [point(1, 40), point(2, 30), point(3, 20), point(4, 10)]
    assert "tau -1.00 over 4; best three different (a, b, c | d, c, b)" in rank_agreement(swapped, list("abcd"))
    assert rank_agreement([{"classifier_fd": 1}, {"classifier_fd": 2}], ["a", "b"]) is None  # one space only


def test_rank_agreement_counts_ties_as_neither_concordant_nor_discordant():
    # tau-a by another route: the mean over ordered pairs i != j of sign(dx) sign(dy); a tied pair adds 0
    x, y = np.array([1.0, 2.0, 2.0, 3.0, 5.0]), np.array([10.0, 30.0, 20.0, 20.0, 40.0])
    signs = np.sign(x[:, None] - x[None]) * np.sign(y[:, None] - y[None])
    tau = signs.sum() / (len(x) * (len(x) - 1))  # 0.6 here (7 - 1 of 10); ties as discordant gave 0.4
    points = [{"classifier_fd": float(a), "classifier2_fd": float(b)} for a, b in zip(x, y)]
    assert f"tau {tau:+.2f} over 5" in rank_agreement(points, list("abcde"))


def test_load_refuses_other_files(tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a liquidgen reference classifier"):
        load_classifier(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="fit-classifier"):
        load_classifier(tmp_path / "missing.safetensors")


def test_scores_of_real_and_broken_images(digits, classifier_file, tmp_path):
    path, info = classifier_file
    first = ImageData(digits.images[:600], digits.labels[:600], 10, digits.class_names)
    real = evaluate(first.images, first.labels, first, "digits-600", classifier=path, cache_dir=tmp_path)
    assert abs(real["classifier_fd"]) < 1e-6  # the reference itself
    assert real["classifier_precision"] == 1 and real["classifier_recall"] == 1
    rest = evaluate(digits.images[600:1200], digits.labels[600:1200], first, "digits-600", classifier=path,
                    cache_dir=tmp_path)  # other real digits: close, but not zero
    assert rest["classifier_fd"] > 0 and rest["classifier_precision"] > 0.7 and rest["classifier_recall"] > 0.7
    logits, _ = extract(load_classifier(path)[0], to_float(first.images))
    assert real["class_accuracy"] == pytest.approx(float((logits.argmax(1) == digits.labels[:600]).float().mean()))
    assert list(tmp_path.glob("digits-600-classifier-*.safetensors"))  # reference features cached
    noise = torch.randint(0, 256, (300, 1, 16, 16), dtype=torch.uint8)
    broken = evaluate(noise, digits.labels[:300], first, "digits-600", classifier=path, cache_dir=tmp_path)
    assert broken["classifier_fd"] > 5 * rest["classifier_fd"]
    assert broken["classifier_precision"] < 0.2 and broken["class_accuracy"] < 0.5
    with pytest.raises(ValueError, match="nothing to measure"):
        evaluate(noise, None, digits, "x", cache_dir=tmp_path)


def test_inception_needs_its_weights(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("LIQUIDGEN_INCEPTION", raising=False)
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        evaluate(digits.images[:4], None, digits, "x", use_inception=True, cache_dir=tmp_path)


@pytest.mark.parametrize("argv", [["eval", "fit-classifier", "--data", "digits", "--size", "8"],
                                  ["eval", "fit-prompt-matcher", "--root", "captions"]], ids=lambda a: a[1])
def test_fit_commands_check_out_before_fitting(argv, tmp_path, monkeypatch, capsys):
    """A folder or an existing file at --out is refused before minutes of fitting, and leaves nothing behind."""
    monkeypatch.chdir(tmp_path)
    for fit in ("liquidgen.evaluation.classifier.fit_classifier", "liquidgen.evaluation.retrieval.fit_prompt_matcher"):
        monkeypatch.setattr(fit, lambda *a, **k: pytest.fail("fitted before --out was checked"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "old.safetensors").write_bytes(b"old")
    for out, message in [("folder", "--out folder is a folder"),
                         ("old.safetensors", "--out old.safetensors already exists; replace it with --overwrite")]:
        with pytest.raises(SystemExit) as stop:
            main([*argv, "--out", out])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "old.safetensors"]  # no .tmp
    assert (tmp_path / "old.safetensors").read_bytes() == b"old"


def test_two_writers_of_one_cache_file_each_write_whole(tmp_path, monkeypatch):
    """Two processes filling one cache at once (two evals fitting the same reference classifier): a write that
    starts and ends while another is between writing and renaming leaves that one to finish, and the file holds a
    whole write (with one temporary name for both, the inner rename took the outer's file away: FileNotFoundError)."""
    import liquidgen.checkpoint as checkpoint
    path = tmp_path / "classifier.safetensors"
    pids = iter([101, 202])  # the two processes
    monkeypatch.setattr(checkpoint.os, "getpid", lambda: next(pids))

    def the_first_pauses(tensors, file, metadata=None):
        save_file(tensors, file, metadata=metadata)
        if "first" in tensors:  # written, not yet renamed: the second process writes whole meanwhile
            checkpoint.save_safetensors({"second": torch.ones(2)}, path)

    monkeypatch.setattr(checkpoint, "save_file", the_first_pauses)
    checkpoint.save_safetensors({"first": torch.zeros(3)}, path)
    assert list(load_file(path)) == ["first"]  # the last rename wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["classifier.safetensors"]  # no temporary file left


def test_fit_classifier_creates_the_folder_and_overwrites_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setitem(classifier_module.RECIPES, "digits", (Recipe(epochs=1), SECOND))  # seconds, not minutes
    out = tmp_path / "new" / "digits.safetensors"
    fit = ["eval", "fit-classifier", "--data", "digits", "--size", "8", "--out", str(out), "--device", "cpu"]
    main(fit)
    fitted = out.read_bytes()
    out.write_bytes(b"old")
    main([*fit, "--overwrite"])
    assert out.read_bytes() == fitted and [p.name for p in out.parent.iterdir()] == ["digits.safetensors"]


def test_a_failed_save_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(IsADirectoryError):
        save_classifier(torch.nn.Linear(2, 2), {}, tmp_path / "taken")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


@pytest.mark.slow
def test_cli_fit_classifier_eval_and_in_training_eval(tmp_path, capsys):
    clf = tmp_path / "digits.safetensors"
    main(["eval", "fit-classifier", "--data", "digits", "--size", "8", "--out", str(clf), "--device", "cpu"])
    assert load_classifier(clf)[1]["dataset"] == "digits"
    run = tmp_path / "run"
    main(["train", "configs/digits-liquid-tiny.yaml", "--out", str(run), "--set", "train.steps=4",
          "train.batch_size=16", "train.log_every=2", "train.sample_every=0", "data.image_size=8",
          "sample.steps=2", "sample.cfg=2.5", "train.eval_every=2", f"train.eval_classifier={clf}",
          "train.eval_samples=30"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_fd" in r]
    assert [r["step"] for r in evals] == [2, 4] and all(0 <= r["eval_acc"] <= 1 for r in evals)
    assert (run / "eval.png").is_file()

    capsys.readouterr()
    main(["eval", str(run), "--data", "digits", "--size", "8", "--classifier", str(clf), "--n", "40",
          "--steps", "2", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "m.json")])
    result, floor = [json.loads(line) for line in (tmp_path / "m.json").read_text().splitlines()]
    assert result["samples"] == 40 and "class_accuracy" in result and result["classifier_fd"] > 0
    assert result["cfg"] == 2.5  # the run's sample.cfg
    assert floor["floor"] and floor["samples"] == 40
    npz = tmp_path / "s.npz"
    main(["sample", str(run), "--n", "20", "--labels", "3", "--steps", "2", "--out", str(npz)])
    images, labels = load_samples(npz)
    assert images.shape == (20, 1, 8, 8) and labels.tolist() == [3] * 20
    main(["eval", str(npz), "--data", "digits", "--size", "8", "--classifier", str(clf),
          "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "n.json")])
    assert json.loads((tmp_path / "n.json").read_text().splitlines()[0])["samples"] == 20


def test_samples_npz_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", pictures=np.zeros((2, 4, 4, 1), np.uint8))
    with pytest.raises(ValueError, match="no 'images'"):
        load_samples(tmp_path / "bad.npz")


def test_sweep_table_has_a_row_per_scale_and_marks_the_lowest_fd():
    def point(cfg, fd):
        return {"cfg": cfg, "samples": 100, "classifier_fd": fd, "classifier_fd_ci95": (fd - 1, fd + 1),
                "classifier_kid": 0.01, "classifier_kid_std": 0.002, "class_accuracy": 0.9}

    points = [point(1.0, 5.0), point(1.5, 3.0), point(2.0, 4.0)]
    assert best_point(points) is points[1]
    table = sweep_table(points, {**point(None, 0.5), "floor": True})
    rows = table.splitlines()[2:]
    assert rows == ["| 1 | 5.00 [4.00, 6.00] | 0.01 ± 0.002 | 0.900 |",
                    "| 1.5 (best) | 3.00 [2.00, 4.00] | 0.01 ± 0.002 | 0.900 |",
                    "| 2 | 4.00 [3.00, 5.00] | 0.01 ± 0.002 | 0.900 |",
                    "| real (100) | 0.50 [-0.50, 1.50] | 0.01 ± 0.002 | 0.900 |"]


def test_eval_sweeps_scales_and_fits_its_classifier_once(tmp_path, capsys, monkeypatch):
    run, cache = tmp_path / "run", tmp_path / "cache"
    main(["train", "configs/digits-liquid-tiny.yaml", "--out", str(run), "--set", "train.steps=4",
          "train.batch_size=16", "train.log_every=2", "train.sample_every=0", "data.image_size=8", "sample.cfg=2.5"])
    capsys.readouterr()
    args = ["eval", str(run), "--data", "digits", "--n", "60", "--steps", "2", "--bootstrap", "20",
            "--cache", str(cache), "--device", "cpu", "--out", str(tmp_path / "r.jsonl")]
    main([*args, "--cfg", "1", "2"])
    out = capsys.readouterr().out
    assert out.count("fitting the reference classifier") == 2  # the first feature space and the second, once each
    assert (cache / "classifier-digits-8px.safetensors").is_file()
    assert (cache / "classifier-digits-8px-resnet.safetensors").is_file()
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    *points, floor = records
    assert [p["cfg"] for p in points] == [1.0, 2.0] and floor["floor"] and floor["samples"] == 60
    best = min(points, key=lambda p: p["classifier_fd"])
    assert [p.get("best", False) for p in points] == [p is best for p in points]
    for r in records:
        for space in ("classifier", "classifier2"):
            low, high = r[f"{space}_fd_ci95"]
            assert low < high and r[f"{space}_kid_std"] > 0
    # printed last: the two scales, the floor, the floor's caveat (digits has no held-out split), the agreement
    *table, caveat, agreement = out.rstrip().splitlines()[-5:]
    assert caveat.startswith("digits has no held-out split")
    assert agreement.startswith("classifier FD vs classifier-2 FD: Kendall tau")
    assert [row.split(" | ")[0] for row in table] == [f"| {p['cfg']:g}" + (" (best)" if p is best else "")
                                                      for p in points] + ["| real (60)"]

    def no_refit(*args, **kwargs):
        raise AssertionError("the cached classifier was fitted again")

    monkeypatch.setattr(classifier_module, "fit_classifier", no_refit)
    main(args)  # the run's own sample.cfg, with the cached classifier
    assert "fitting" not in capsys.readouterr().out
    assert [json.loads(line)["cfg"] for line in (tmp_path / "r.jsonl").read_text().splitlines()[:1]] == [2.5]


def test_classifier_input_is_resized_to_its_square_whatever_the_samples_shape():
    from PIL import Image

    from liquidgen.evaluation.classifier import fit_input

    # the reference: PIL's antialiased bilinear resize of each image, in float; a sample as wide as the classifier's
    # input but taller went in unresized (40 x 28, its features pooled over another geometry)
    g = torch.Generator().manual_seed(0)
    for shape in ((3, 1, 40, 28), (3, 1, 28, 40), (3, 1, 64, 64)):
        u8 = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        ref = np.stack([np.asarray(Image.fromarray(a[0].numpy()).convert("F").resize((28, 28), Image.BILINEAR))
                        for a in u8])
        out = fit_input(to_float(u8), 1, 28)
        assert out.shape == (3, 1, 28, 28)
        assert np.abs(out[:, 0].numpy() - (ref / 127.5 - 1)).max() < 1e-4


def test_random_shift_translates_each_image_with_a_reflected_border():
    from liquidgen.evaluation.classifier import random_shift

    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = random_shift(x, 2, g)
    dy, dx = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(2):  # image i is the padded image's 6x6 window at its own offset
        assert torch.equal(out[i], padded[i, :, dy[i]:dy[i] + 6, dx[i]:dx[i] + 6])
    assert out.shape == x.shape


def test_an_augmented_recipe_fits_saves_and_loads_with_its_width(tmp_path):
    from liquidgen.evaluation.classifier import (Recipe, fit_classifier, load_classifier, save_classifier)

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(96) % 2
    images[labels == 1, 0] = 255  # class 1: a red channel full on
    data = ImageData(images, labels, 2, ["a", "b"])
    recipe = Recipe(arch="resnet", width=16, epochs=6, batch_size=16, lr=3e-3, shift=2, weight_decay=0.05,
                    label_smoothing=0.1, cosine=True, holdout=32)
    model, info = fit_classifier(data, None, "cpu", recipe, progress=False)
    assert info["test_accuracy"] > 0.9 and info["recipe"]["width"] == 16
    loaded, _ = load_classifier(save_classifier(model, info, tmp_path / "c.safetensors"))
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    assert torch.equal(loaded(x)[1], model(x)[1])


def test_cifar10_has_its_own_recipes_and_cache_names():
    from liquidgen.evaluation.classifier import SECOND, Recipe, recipe_tag, recipes_for
    from liquidgen.evaluation.evaluate import reference_classifier

    assert recipes_for("mnist") == (Recipe(), SECOND)  # the cached MNIST files keep their names and recipes
    assert reference_classifier("mnist", 28, "/c").name == "classifier-mnist-28px.safetensors"
    assert reference_classifier("mnist", 28, "/c", second=True).name == "classifier-mnist-28px-resnet.safetensors"
    first, second = recipes_for("cifar10")
    assert first.arch != second.arch and first.seed != second.seed and first.shift and second.shift
    names = {reference_classifier("cifar10", 32, "/c", second=s).name for s in (False, True)}
    assert len(names) == 2 and all(recipe_tag(r) in " ".join(names) for r in (first, second))
    assert "classifier-cifar10-32px.safetensors" not in names  # a file of the old 36% recipe is not reused


def test_floor_is_split_half_where_the_reference_is_the_training_set(digits, classifier_file, tmp_path, capsys):
    """digits has no held-out split, so the reference is the training set itself: real images drawn from it would
    score against themselves (FD 0 once all are drawn). The training set is split in two fixed halves: samples and
    the floor are scored against the same one, and the floor draws from the other."""
    from liquidgen.evaluation.evaluate import Scorer

    scorer = Scorer("digits", None, classifier_file[0], "cpu", size=16, cache_dir=tmp_path, bootstrap=20,
                    second_classifier=False)
    half = len(digits) // 2
    assert not scorer.held_out and len(scorer.reference) == len(digits) - half and len(scorer.pool) == half
    both = torch.cat([scorer.reference.images, scorer.pool.images]).flatten(1)
    assert len(torch.unique(both, dim=0)) == len(torch.unique(digits.images.flatten(1), dim=0))  # halves partition
    itself = scorer(scorer.reference.images, scorer.reference.labels)
    assert abs(itself["classifier_fd"]) < 1e-3  # the degenerate floor the split avoids
    floor = scorer.floor(400)
    assert floor["floor"] and floor["floor_split_half"]
    assert floor["samples"] == 400 and floor["reference_images"] == len(scorer.reference)
    assert floor["classifier_fd"] > 100 * abs(itself["classifier_fd"]) and floor["classifier_fd"] > 0.01
    # the floor is what the same real images score as samples: one reference for both
    drawn = torch.randperm(half, generator=torch.Generator().manual_seed(0))[:400]
    as_samples = scorer(scorer.pool.images[drawn], scorer.pool.labels[drawn])
    assert as_samples["classifier_fd"] == pytest.approx(floor["classifier_fd"])
    capsys.readouterr()
    capped = scorer.floor(5000)
    assert capped["samples"] == half and "half of them" in capsys.readouterr().err


def test_reference_features_are_cached_per_dataset_content(classifier_file, tmp_path):
    """Two reference .npz files with the same count and size are two datasets: the second must not be scored
    against the first one's cached features."""
    from liquidgen.evaluation.evaluate import Scorer

    g = torch.Generator().manual_seed(0)
    images = {k: torch.randint(0, 256, (300, 1, 16, 16), dtype=torch.uint8, generator=g) for k in "ab"}
    images["b"] = images["b"] // 8  # dark noise: a different distribution, same shape and count
    for k, x in images.items():
        np.savez(tmp_path / f"ref-{k}.npz", images=x.permute(0, 2, 3, 1).numpy(),
                 labels=np.arange(300) % 10)
    samples = images["a"][:100]
    fds = [Scorer("npz", str(tmp_path / f"ref-{k}.npz"), classifier_file[0], "cpu", size=16,
                  cache_dir=tmp_path / "cache", bootstrap=2, second_classifier=False)(samples, None)["classifier_fd"]
           for k in "ab"]
    fresh = Scorer("npz", str(tmp_path / "ref-b.npz"), classifier_file[0], "cpu", size=16,
                   cache_dir=tmp_path / "fresh", bootstrap=2, second_classifier=False)(samples, None)["classifier_fd"]
    assert fds[1] == pytest.approx(fresh) and fds[1] > 2 * fds[0]


def test_floor_through_a_lossy_space_scores_what_a_perfect_model_of_it_would(digits, classifier_file, tmp_path):
    """`through` maps the drawn real images into a model's space and back (an autoencoder's round trip): the
    same draw, so a lossless map scores exactly the plain floor and a lossy one scores worse."""
    from liquidgen.evaluation.evaluate import Scorer

    scorer = Scorer("digits", None, classifier_file[0], "cpu", size=16, cache_dir=tmp_path, bootstrap=20,
                    second_classifier=False)
    plain, seen = scorer.floor(400), []
    same = scorer.floor(400, through=lambda x: seen.append(x) or x.clone())
    assert same["classifier_fd"] == pytest.approx(plain["classifier_fd"]) and seen[0].shape[0] == 400
    posterized = scorer.floor(400, through=lambda x: (x // 128) * 255)
    assert posterized["classifier_fd"] > 2 * plain["classifier_fd"]


def test_eval_refuses_what_it_cannot_finish_before_drawing_a_sample(classifier_file, tmp_path, monkeypatch, capsys):
    """Every check eval can make is made before its sampling: a classifier of another dataset, missing Inception
    weights, too few samples, a --classifier path in a folder that does not exist, an unreadable prompt file.
    Sampling is replaced by a failure, so any of these found late fails the test."""
    from liquidgen.generate import Pipeline

    def no_sampling(*args, **kwargs):
        raise AssertionError("samples were drawn before the check")

    def refused(args, match):
        capsys.readouterr()
        with pytest.raises(SystemExit):
            main(args)
        assert re.search(match, capsys.readouterr().err)

    run = tmp_path / "run"
    main(["train", "configs/digits-liquid-tiny.yaml", "--out", str(run), "--set", "train.steps=2",
          "train.batch_size=8", "train.sample_every=0", "data.image_size=8"])
    monkeypatch.setattr(Pipeline, "generate", no_sampling)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("LIQUIDGEN_INCEPTION", raising=False)
    base = ["eval", str(run), "--data", "digits", "--size", "16", "--cache", str(tmp_path / "cache"),
            "--device", "cpu"]
    mnist_file = tmp_path / "mnist.safetensors"  # the digits classifier, relabelled as MNIST's
    state = load_file(classifier_file[0])
    with safe_open(classifier_file[0], "pt") as f:
        info = json.loads(f.metadata()["liquidgen_classifier"])
    save_file(state, mnist_file, metadata={"liquidgen_classifier": json.dumps({**info, "dataset": "mnist"})})
    refused([*base, "--classifier", str(mnist_file)], "fitted on mnist")
    refused([*base, "--inception"], "pt_inception")
    assert not list((tmp_path / "cache").glob("classifier-*"))  # FID alone fits no classifier
    refused([*base, "--classifier", str(classifier_file[0]), "--n", "1"], "at least 2")
    refused([*base, "--classifier", str(tmp_path / "typo" / "c.safetensors")], "no folder")
    assert not (tmp_path / "typo").exists()
    refused([*base, "--classifier", str(tmp_path)], "is a folder")
    (tmp_path / "prompts.txt").write_bytes(b"caf\xe9\n")
    for name, problem in (("prompts.txt", "not UTF-8"), ("missing.txt", "cannot be read")):
        refused([*base, "--prompt-file", str(tmp_path / name), "--prompt-matcher", "m.safetensors"],
                f"--prompt-file file .* {problem}")


def test_a_cached_classifier_of_another_root_is_named(tmp_path, capsys):
    """The built-in classifier is cached by dataset name and size: read from another folder, the same name may be
    other images (Fashion-MNIST in MNIST's layout, say), so the reuse is said."""
    import gzip

    from liquidgen.evaluation.evaluate import Scorer

    def idx(a):
        return (0x0800 + a.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in a.shape) + a.tobytes()

    rng = np.random.default_rng(0)
    for name in ("one", "two"):
        raw = tmp_path / name / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for split, n in (("train", 80), ("t10k", 40)):
            (raw / f"{split}-images-idx3-ubyte.gz").write_bytes(
                gzip.compress(idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))))
            (raw / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(np.arange(n, dtype=np.uint8) % 10)))
    cache = tmp_path / "cache"
    Scorer("mnist", str(tmp_path / "one"), None, "cpu", size=8, cache_dir=cache, second_classifier=False)
    capsys.readouterr()
    Scorer("mnist", str(tmp_path / "one") + "/", None, "cpu", size=8, cache_dir=cache, second_classifier=False)
    assert "fitted on mnist from" not in capsys.readouterr().err  # the same folder, spelt otherwise
    Scorer("mnist", str(tmp_path / "two"), None, "cpu", size=8, cache_dir=cache, second_classifier=False)
    err = capsys.readouterr().err
    assert "fitted on mnist from" in err and str(tmp_path / "one") in err and "--cache" in err
