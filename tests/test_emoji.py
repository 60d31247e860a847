"""`liquidgen data emoji` on a tiny tarball of emoji-datasource's layout, made here (no npm, no network)."""
import io
import json
import os
import stat
import tarfile

import numpy as np
import pytest
from PIL import Image

from liquidgen.cli import main
from liquidgen.data import load_dataset
from liquidgen.emoji import heldout_concepts
from liquidgen.precompute import folder_captions

BACKGROUND = (16, 32, 48)  # "#102030": not white, so a background pixel cannot be mistaken for the default


def emoji(name, unified, category, sort_order, short_names, has_img=True, skin_variations=None):
    entry = {"name": name, "unified": unified, "image": f"{unified.lower()}.png", "short_name": short_names[0],
             "short_names": short_names, "category": category, "subcategory": "sub", "sort_order": sort_order,
             "has_img_google": has_img, "has_img_twitter": True}
    if skin_variations:
        entry["skin_variations"] = {tone: {"unified": f"{unified}-{tone}", "image": f"{unified.lower()}-"
                                           f"{tone.lower()}.png", "has_img_google": ok}
                                    for tone, ok in skin_variations.items()}
    return entry


EMOJIS = [
    emoji("THUMBS UP SIGN", "1F44D", "People & Body", 0, ["+1", "thumbsup"], skin_variations={"1F3FB": False}),
    emoji("WAVING HAND SIGN", "1F44B", "People & Body", 1, ["wave"], skin_variations={"1F3FB": True, "1F3FF": True}),
    emoji("RED APPLE", "1F34E", "Food & Drink", 2, ["apple"]),
    emoji("GREEN APPLE", "1F34F", "Food & Drink", 3, ["green_apple"]),
    emoji("GRAPES", "1F347", "Food & Drink", 4, ["grapes"], has_img=False),  # no google image: left out
]


def png(colour) -> bytes:
    """64x64 RGBA: an opaque square of `colour` on pixels of alpha 0 that store black (as real emoji do)."""
    a = np.zeros((64, 64, 4), np.uint8)
    a[16:48, 16:48] = (*colour, 255)
    buffer = io.BytesIO()
    Image.fromarray(a, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def make_tarball(path, emojis=EMOJIS, with_emoji_json=True):
    files = {"package/package.json": json.dumps({"name": "emoji-datasource-google", "version": "16.0.0"}).encode(),
             "package/LICENSE": b"The MIT License (MIT)\n"}
    if with_emoji_json:
        files["package/emoji.json"] = json.dumps(emojis).encode()
    for k, e in enumerate(emojis):
        images = [e["image"]] + [v["image"] for v in e.get("skin_variations", {}).values()]
        for j, image in enumerate(images):
            files[f"package/img/google/64/{image}"] = png((200, 10 * k, 10 * j))
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def rows(folder):
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


def build(tmp_path, *extra, out="emoji"):
    tarball = tmp_path / "emoji-datasource-google-16.0.0.tgz"
    if not tarball.exists():
        make_tarball(tarball)
    main(["data", "emoji", "--tarball", str(tarball), "--out", str(tmp_path / out), "--background", "#102030",
          *extra])
    return tmp_path / out


def test_images_captions_labels_and_licences(tmp_path):
    out = build(tmp_path, "--holdout", "0")
    summary = json.loads((out / "emoji-dataset.json").read_text())
    assert summary["categories"] == ["People & Body", "Food & Drink"]  # emoji-datasource's order, by sort_order
    assert summary["images"] == {"train": 6}  # thumbs up (not its tone), waving hand and 2 tones, 2 apples
    by_name = {r["file_name"]: r for r in rows(out / "train")}
    assert by_name["01-food-drink/1f34e-google.png"]["text"] == "red apple, google style"
    assert by_name["00-people-body/1f44b-1f3fb-google.png"]["text"] == "waving hand sign, wave, light skin tone, " \
                                                                     "google style"
    assert {r["label"] for r in by_name.values() if r["category"] == "Food & Drink"} == {1}
    image = Image.open(out / "train" / "01-food-drink" / "1f34e-google.png")
    assert image.mode == "RGB" and image.size == (64, 64)
    assert image.getpixel((0, 0)) == BACKGROUND and image.getpixel((32, 32)) == (200, 20, 0)
    assert "Apache License 2.0" in (out / "NOTICE-google.txt").read_text()
    assert "MIT" in (out / "LICENSE-emoji-data.txt").read_text()
    assert not (out / "heldout").exists()


def test_training_reads_it_as_a_captioned_image_folder(tmp_path):
    out = build(tmp_path, "--holdout", "0", "--size", "32")
    data = load_dataset("folder", out / "train", image_size=32)
    assert data.images.shape == (6, 3, 32, 32) and data.class_names == ["00-people-body", "01-food-drink"]
    assert sorted(data.labels.tolist()) == [0, 0, 0, 0, 1, 1]
    captions = folder_captions(out / "train", sorted((out / "train").rglob("*.png")))
    assert captions[out / "train" / "01-food-drink" / "1f34f-google.png"] == "green apple, google style"


def test_held_out_concepts_keep_all_their_skin_tones(tmp_path):
    concepts = {"1F44D", "1F44B", "1F34E", "1F34F", "1F347"}  # the draw is over emoji.json's concepts
    seed = next(s for s in range(100) if "1F44B" in heldout_concepts(concepts, 0.4, s))
    out = build(tmp_path, "--holdout", "0.4", "--seed", str(seed))
    held, train = rows(out / "heldout"), rows(out / "train")
    assert {r["unified"] for r in held} & {r["unified"] for r in train} == set()
    assert sorted(r["skin_tone"] for r in held if r["unified"] == "1F44B") == ["", "dark", "light"]
    # both splits have every category folder, so label k is the same category in both
    assert sorted(p.name for p in (out / "heldout").iterdir() if p.is_dir()) == ["00-people-body", "01-food-drink"]
    summary = json.loads((out / "emoji-dataset.json").read_text())
    assert summary["concepts"]["heldout"] == len({r["unified"] for r in held}) >= 1


def test_a_rerun_does_nothing_and_other_settings_need_overwrite(tmp_path, capsys):
    out = build(tmp_path, "--holdout", "0")
    image = out / "train" / "01-food-drink" / "1f34e-google.png"
    written = image.stat().st_mtime_ns
    build(tmp_path, "--holdout", "0")
    assert "nothing to do" in capsys.readouterr().out and image.stat().st_mtime_ns == written
    with pytest.raises(SystemExit):
        build(tmp_path, "--holdout", "0", "--size", "32")
    assert "--overwrite" in capsys.readouterr().err and Image.open(image).size == (64, 64)
    build(tmp_path, "--holdout", "0", "--size", "32", "--overwrite")
    assert Image.open(image).size == (32, 32)


def test_an_interrupted_build_is_finished_and_a_folder_of_other_files_is_kept(tmp_path, monkeypatch, capsys):
    import liquidgen.emoji as emoji_module

    real, calls = emoji_module.composite, []

    def failing(*args):  # the build is cut short after two images
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(emoji_module, "composite", failing)
    with pytest.raises(SystemExit):  # the CLI's exit on Ctrl-C
        build(tmp_path, "--holdout", "0")
    out = tmp_path / "emoji"
    assert not (out / "emoji-dataset.json").exists() and (out / "train").is_dir()
    monkeypatch.setattr(emoji_module, "composite", real)
    build(tmp_path, "--holdout", "0")  # the same command finishes it
    assert len(rows(out / "train")) == 6 and not (out / ".emoji-dataset-building").exists()

    mine = tmp_path / "mine"  # a folder of the user's own files, named like what a build writes
    (mine / "train" / "cats").mkdir(parents=True)
    (mine / "train" / "cats" / "img1.txt").write_text("precious")
    (mine / "NOTICE-mine.txt").write_text("mine")
    with pytest.raises(SystemExit):
        build(tmp_path, out="mine")
    err = capsys.readouterr().err
    assert "NOTICE-mine.txt, train" in err and "--overwrite" in err
    assert (mine / "train" / "cats" / "img1.txt").read_text() == "precious" and (mine / "NOTICE-mine.txt").exists()
    build(tmp_path, "--overwrite", out="mine")  # asked for: replaced
    assert not (mine / "train" / "cats").exists() and (mine / "emoji-dataset.json").is_file()


def test_npm_is_run_for_the_styles_and_its_absence_named(tmp_path, monkeypatch, capsys):
    tiny = make_tarball(tmp_path / "tiny.tgz")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"  # stands in for `npm pack SPEC --pack-destination DIR`
    npm.write_text(f'#!/bin/sh\ncp {tiny} "$4/emoji-datasource-google-16.0.0.tgz"\n')
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cache = tmp_path / "cache"
    main(["data", "emoji", "--styles", "google", "--cache", str(cache), "--out", str(tmp_path / "a")])
    assert (cache / "emoji-datasource-google-16.0.0.tgz").is_file() and (tmp_path / "a" / "train").is_dir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SystemExit):
        main(["data", "emoji", "--styles", "twitter", "--cache", str(cache), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert "npm not found" in err and "--tarball" in err and "emoji-datasource-twitter-16.0.0.tgz" in err
    assert len(err.splitlines()) == 1


def test_a_tarball_of_another_layout_is_named(tmp_path, capsys):
    bad = make_tarball(tmp_path / "bad.tgz", with_emoji_json=False)
    not_tar = tmp_path / "not.tgz"
    not_tar.write_bytes(b"hello")
    for tarball, says in ((bad, "no package/emoji.json"), (not_tar, "not a readable .tgz")):
        with pytest.raises(SystemExit):
            main(["data", "emoji", "--tarball", str(tarball), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert says in err and str(tarball) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("config, latent, tokens", [
    ("emoji-liquid-S-text", False, 0), ("emoji-dit-S-tld", False, 0), ("emoji-dit-S-tld", False, 16),
    ("emoji-liquid-S-text-latent", True, 0), ("emoji-dit-S-tld-latent", True, 0)])
def test_the_emoji_configs_train_on_it_and_draw_prompts(tmp_path, config, latent, tokens, request):
    """Each 64 px text-to-image config, as its header says: data emoji -> precompute folder -> train -> sample (the
    DiT also with per-token cross-attention, its header's alternative)."""
    out = build(tmp_path, "--holdout", "0")
    data = tmp_path / "precomputed"
    autoencoder = (["--autoencoder", "taesd", "--ae-option", "variant=taef2",
                    f"weights={request.getfixturevalue('taef2_weights')}"] if latent else [])
    main(["precompute", "folder", "--root", str(out / "train"), "--size", "64", "--text-encoder", "minilm",
          "--text-tokens", str(tokens), *autoencoder, "--out", str(data), "--device", "cpu"])
    run = tmp_path / "run"
    main(["train", f"configs/{config}.yaml", "--out", str(run), "--set", f"data.root={data}", "model.preset=tiny",
          "train.minutes=0", "train.steps=2", "train.batch_size=4", "train.sample_every=0", "train.ckpt_every=0",
          "train.log_every=1"])
    spec = json.loads(next((run / "checkpoints").iterdir()).joinpath("model.json").read_text())
    assert spec["text_tokens"] == tokens and spec["num_classes"] == 0  # prompts, not the category labels
    samples = tmp_path / "apple.npz"
    main(["sample", str(run), "--prompt", "red apple, google style", "--n", "2", "--steps", "2", "--out", str(samples),
          "--device", "cpu"])
    assert np.load(samples)["images"].shape == (2, 64, 64, 3)


def without(key):
    return [{k: v for k, v in e.items() if k != key} for e in EMOJIS]


@pytest.mark.parametrize("entries, says", [
    (without("sort_order"), "entry 0 (THUMBS UP SIGN): 'sort_order' is missing or not an integer"),
    (without("category"), "'category' is missing"),
    ([{**e, "sort_order": str(e["sort_order"])} for e in EMOJIS], "'sort_order' is missing or not an integer"),
    ({"emoji": EMOJIS}, "is a dict, not a list"),
    ([{**EMOJIS[0], "skin_variations": ["1F3FB"]}], "'skin_variations' is not a mapping"),
    ([], "lists no emoji"),
], ids=["no-sort-order", "no-category", "str-sort-order", "object", "variations-list", "empty"])
def test_a_malformed_emoji_json_is_one_line_naming_the_tarball(tmp_path, capsys, entries, says):
    tarball = make_tarball(tmp_path / "odd.tgz", EMOJIS)  # its images, then the odd emoji.json
    replace_member(tarball, "package/emoji.json", json.dumps(entries).encode())
    with pytest.raises(SystemExit):
        main(["data", "emoji", "--tarball", str(tarball), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert says in err and str(tarball) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def replace_member(tarball, name, data):
    with tarfile.open(tarball) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(tarball, "w:gz") as tar:
        for member, old in members:
            new = data if member.name == name else old
            member.size = len(new)
            tar.addfile(member, io.BytesIO(new))


def drop_members(tarball, *endings):
    with tarfile.open(tarball) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(tarball, "w:gz") as tar:
        for member, data in members:
            if not member.name.endswith(endings):
                tar.addfile(member, io.BytesIO(data))


def test_listed_images_a_tarball_lacks_are_warned_about_and_not_counted(tmp_path, capsys):
    tarball = make_tarball(tmp_path / "emoji-datasource-google-16.0.0.tgz")
    drop_members(tarball, "1f34e.png", "1f34f.png")  # the two apples
    out = build(tmp_path, "--holdout", "0")
    err = capsys.readouterr().err
    assert "2 images that emoji.json lists are not in the tarball" in err and "google/1f34e.png" in err
    summary = json.loads((out / "emoji-dataset.json").read_text())
    assert summary["images"] == {"train": 4} and summary["concepts"] == {"train": 2, "heldout": 0}
    assert summary["missing_images"] == ["google/1f34e.png", "google/1f34f.png"] and len(rows(out / "train")) == 4


def test_a_held_out_concept_without_images_is_not_counted(tmp_path, capsys):
    tarball = make_tarball(tmp_path / "emoji-datasource-google-16.0.0.tgz")
    held = heldout_concepts({e["unified"] for e in EMOJIS}, 0.5, 0)
    lacking = sorted(held - {"1F347"})[0]  # a held-out concept that has google images, whose images go missing
    drop_members(tarball, *(f"{lacking.lower()}{tail}.png" for tail in ("", "-1f3fb", "-1f3ff")))
    out = build(tmp_path, "--holdout", "0.5")
    summary = json.loads((out / "emoji-dataset.json").read_text())
    assert lacking not in summary["heldout_concepts"]
    assert summary["concepts"]["heldout"] == len(summary["heldout_concepts"]) == len(
        {row["unified"] for row in rows(out / "heldout")})
    err = capsys.readouterr().err
    assert f"google/{lacking.lower()}.png" in err
    assert f"of the {len(held)} held-out concepts have no image here: the held-out split holds " \
           f"{summary['concepts']['heldout']}" in err


def test_an_unreadable_png_names_the_tarball_and_the_member(tmp_path, capsys):
    tarball = make_tarball(tmp_path / "emoji-datasource-google-16.0.0.tgz")
    replace_member(tarball, "package/img/google/64/1f44d.png", b"not a png")
    with pytest.raises(SystemExit):
        build(tmp_path, "--holdout", "0")
    err = capsys.readouterr().err.strip()
    assert f"{tarball}: package/img/google/64/1f44d.png is not a readable image" in err
    assert "BytesIO" not in err and len(err.splitlines()) == 1


def test_no_build_without_images_or_without_training_concepts(tmp_path, capsys):
    one = make_tarball(tmp_path / "one.tgz", EMOJIS[2:3])  # one concept: a hold-out would take it all
    with pytest.raises(SystemExit):
        main(["data", "emoji", "--tarball", str(one), "--out", str(tmp_path / "one")])
    assert "leaving no training images" in capsys.readouterr().err and not (tmp_path / "one").exists()
    main(["data", "emoji", "--tarball", str(one), "--out", str(tmp_path / "one"), "--holdout", "0"])  # fine
    assert len(rows(tmp_path / "one" / "train")) == 1

    none = make_tarball(tmp_path / "none.tgz")  # images, but none that emoji.json lists
    renamed = [{**e, "image": "x" + e["image"], "skin_variations": {}} for e in EMOJIS]
    replace_member(none, "package/emoji.json", json.dumps(renamed).encode())
    with pytest.raises(SystemExit):
        main(["data", "emoji", "--tarball", str(none), "--out", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert "none of the images emoji.json lists" in err and str(none) in err and not (tmp_path / "none").exists()
