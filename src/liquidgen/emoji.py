"""Captioned emoji images from the npm packages emoji-datasource-<style> (Noto for google, Twemoji for twitter).

`build_emoji` turns the packages' tarballs (fetched with `npm pack`, or given as files for offline users) into
the image-folder layout that `liquidgen precompute folder` and `data.name: folder` read: one folder per
category (the label), `metadata.jsonl` with one caption per image ("red apple, google style"), every image
composited onto an opaque background. A fixed share of concepts (an emoji's unified code: all its styles and
skin tones together) goes to a separate `heldout/` folder, to test prompts the model never saw.

    out/train/00-smileys-emotion/1f600-google.png ... + out/train/metadata.jsonl
    out/heldout/... (same category folders, so labels match)   + out/heldout/metadata.jsonl
    out/NOTICE-google.txt (the images' licence)  out/LICENSE-emoji-data.txt  out/emoji-dataset.json
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageColor, UnidentifiedImageError

from .data import warn
from .run_folder import DATASET_MARK, RUN_MARK, claim

__all__ = ["STYLES", "VERSION", "EmojiRequest", "build_emoji", "fetch_tarball", "read_package"]

VERSION = "16.0.0"  # the emoji-datasource release fetched by default (Emoji 16.0; 1,911 emoji)
IMAGE_FOLDER = "64"  # the packages ship one size of single images: 64x64 RGBA
# The images' licence per style, as emoji-datasource's README states it; written beside the data.
STYLES = {
    "google": "Noto Emoji images (c) Google Inc., under the Apache License 2.0: "
              "https://github.com/googlefonts/noto-emoji/blob/main/LICENSE",
    "twitter": "Twemoji images (c) Twitter, Inc. and other contributors, under the Creative Commons Attribution "
               "4.0 International licence (CC-BY 4.0), which asks for this attribution to be kept: "
               "https://github.com/jdecked/twemoji/blob/main/LICENSE-GRAPHICS",
}
SKIN_TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark"}
SPLITS = ("train", "heldout")
MARKER = "emoji-dataset.json"  # written last: its presence means the build finished
BUILDING = ".emoji-dataset-building"  # written first, removed after MARKER: a build that was cut short
# What a build writes into --out, and what --overwrite (or finishing an interrupted build) deletes.
OWNED = (*SPLITS, MARKER, BUILDING, "NOTICE-*.txt", "LICENSE-emoji-data.txt")


class EmojiSourceError(ValueError):
    """npm missing or failing, or a tarball that is not an emoji-datasource package."""


@dataclass(frozen=True)
class EmojiRequest:
    """What decides the dataset: equal requests build equal folders (so a rerun has nothing to do)."""

    packages: tuple[str, ...]  # "emoji-datasource-google@16.0.0", from each tarball's package.json
    size: int
    background: tuple[int, int, int]
    holdout: float
    seed: int


@dataclass
class Package:
    """One emoji-datasource tarball, read: its style, emoji.json entries, PNG bytes by file name, licence."""

    name: str  # name@version
    style: str
    emojis: list[dict]
    images: dict[str, bytes]
    license: str
    path: Path  # the tarball, for messages


@dataclass(frozen=True)
class Item:
    """One image to write: a concept (unified code) in one style and skin tone."""

    unified: str  # the concept's code, shared by its skin tones: what the held-out split is drawn over
    image: str  # file name in the package's img/<style>/64/
    name: str
    short_names: tuple[str, ...]
    category: str
    subcategory: str
    skin_tone: str  # "" for the default

    def caption(self, style: str) -> str:
        """'father christmas, santa, light skin tone, google style': the name, the short names that add words
        to it, the tone, the style."""
        name = self.name.lower()
        extra = [s for s in (n.replace("_", " ") for n in self.short_names) if s not in name]
        tone = [f"{self.skin_tone} skin tone"] if self.skin_tone else []
        return ", ".join([name, *extra, *tone, f"{style} style"])


# --- getting the tarballs ---------------------------------------------------------------------


def tarball_name(style: str, version: str) -> str:
    return f"emoji-datasource-{style}-{version}.tgz"


def fetch_tarball(style: str, version: str, cache: Path) -> Path:
    """The package's tarball in `cache`, fetched with `npm pack` unless already there."""
    path = cache / tarball_name(style, version)
    if path.is_file():
        return path
    spec = f"emoji-datasource-{style}@{version}"
    npm = shutil.which("npm")
    if npm is None:
        raise EmojiSourceError(
            f"npm not found: install Node.js (which brings npm, e.g. `apt install npm`), or download "
            f"https://registry.npmjs.org/emoji-datasource-{style}/-/{tarball_name(style, version)} and pass it "
            f"with --tarball")
    cache.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "pack", spec, "--pack-destination", str(cache)], capture_output=True, text=True)
    if done.returncode or not path.is_file():
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise EmojiSourceError(f"`npm pack {spec}` failed ({last}); download the tarball elsewhere and pass it "
                               f"with --tarball")
    return path


# --- reading a tarball ------------------------------------------------------------------------


def read_package(path: Path) -> Package:
    """Read package.json, emoji.json, LICENSE and img/<style>/64/*.png in one pass over the gzip stream
    (random access into a .tgz decompresses from the start each time)."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.startswith("package/"):
                    name = member.name.removeprefix("package/")
                    if name in ("package.json", "emoji.json", "LICENSE") or name.endswith(".png"):
                        files[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise EmojiSourceError(f"{path}: not a readable .tgz ({e}); expected the file `npm pack "
                               f"emoji-datasource-google@{VERSION}` writes") from None
    missing = [n for n in ("package.json", "emoji.json") if n not in files]
    if missing:
        raise EmojiSourceError(f"{path}: no package/{' or package/'.join(missing)} inside; expected the file "
                               f"`npm pack emoji-datasource-google@{VERSION}` writes")
    try:
        meta, emojis = json.loads(files["package.json"]), json.loads(files["emoji.json"])
        style = meta["name"].removeprefix("emoji-datasource-")
        name = f"{meta['name']}@{meta['version']}"
    except (ValueError, KeyError, TypeError) as e:
        raise EmojiSourceError(f"{path}: package.json or emoji.json is not as emoji-datasource writes it ({e})"
                               ) from None
    if style not in STYLES:
        raise EmojiSourceError(f"{path} holds {meta['name']}; styles with a known licence: "
                               f"{', '.join(f'emoji-datasource-{s}' for s in STYLES)}")
    check_entries(emojis, path)
    folder = f"img/{style}/{IMAGE_FOLDER}/"
    images = {n.removeprefix(folder): data for n, data in files.items() if n.startswith(folder)}
    if not images:
        raise EmojiSourceError(f"{path}: no images in package/{folder}; expected the file `npm pack "
                               f"emoji-datasource-{style}@{VERSION}` writes")
    return Package(name, style, emojis, images, files.get("LICENSE", b"").decode(), path)


# The emoji.json fields a build reads, and their types (skin_variations: optional, a mapping of tones to entries
# that have an image name).
ENTRY_FIELDS = {"unified": str, "name": str, "image": str, "short_names": list, "category": str, "subcategory": str,
                "sort_order": int}


def check_entries(emojis, path: Path) -> None:
    """EmojiSourceError naming the tarball and the first entry of emoji.json that a build could not read."""
    def bad(what: str) -> EmojiSourceError:
        return EmojiSourceError(f"{path}: package/emoji.json {what} (not emoji-datasource's layout?)")

    if not isinstance(emojis, list):
        raise bad(f"is a {type(emojis).__name__}, not a list of emoji")
    if not emojis:
        raise bad("lists no emoji")
    for k, e in enumerate(emojis):
        if not isinstance(e, dict):
            raise bad(f"entry {k} is a {type(e).__name__}, not an object")
        for key, kind in ENTRY_FIELDS.items():
            if not isinstance(e.get(key), kind) or (kind is int and isinstance(e[key], bool)):
                what = {str: "a string", int: "an integer", list: "a list"}[kind]
                raise bad(f"entry {k} ({e.get('name', '?')}): {key!r} is missing or not {what}")
        variations = e.get("skin_variations") or {}
        if not isinstance(variations, dict) or not all(isinstance(v, dict) and isinstance(v.get("image"), str)
                                                       for v in variations.values()):
            raise bad(f"entry {k} ({e['name']}): 'skin_variations' is not a mapping of tones to entries with an "
                      f"'image'")


def items(package: Package) -> list[Item]:
    """Every image the package has for its style: each emoji and each of its skin-tone variations."""
    flag = f"has_img_{package.style}"
    found = []
    for e in package.emojis:  # `check_entries` has checked every field read here
        base = dict(unified=e["unified"], name=e["name"], short_names=tuple(e["short_names"]),
                    category=e["category"], subcategory=e["subcategory"])
        if e.get(flag):
            found.append(Item(image=e["image"], skin_tone="", **base))
        for tones, variation in (e.get("skin_variations") or {}).items():
            if variation.get(flag):
                found.append(Item(image=variation["image"], skin_tone=tone_words(tones), **base))
    return found


def tone_words(tones: str) -> str:
    """'1F3FB' -> 'light'; '1F3FB-1F3FF' (two people) -> 'light and dark'; the same tone twice is said once."""
    words = list(dict.fromkeys(SKIN_TONES.get(t, t.lower()) for t in tones.split("-")))
    return " and ".join(words)


# --- writing the dataset ----------------------------------------------------------------------


def categories(packages: list[Package]) -> list[str]:
    """Category names in emoji-datasource's order (that of their emoji's sort_order: smileys first, flags
    last), so label k means the same category whatever styles were chosen."""
    first: dict[str, int] = {}
    for package in packages:
        for e in package.emojis:
            first[e["category"]] = min(first.get(e["category"], e["sort_order"]), e["sort_order"])
    return sorted(first, key=first.get)


def category_folder(index: int, category: str) -> str:
    """'03-animals-nature': the index first, because the folder loader numbers classes by sorted folder name."""
    return f"{index:02d}-{re.sub(r'[^a-z0-9]+', '-', category.lower()).strip('-')}"


def heldout_concepts(concepts: set[str], fraction: float, seed: int) -> set[str]:
    """round(fraction * n) concepts (at least one when fraction > 0), those of lowest hash of (seed, code):
    the choice does not depend on the order of emoji.json or on Python's random module's implementation."""
    if fraction <= 0:
        return set()
    count = max(1, round(fraction * len(concepts)))
    rank = sorted(concepts, key=lambda code: hashlib.sha256(f"{seed}:{code}".encode()).hexdigest())
    return set(rank[:count])


def composite(png: bytes, size: int, background: tuple[int, int, int]) -> Image.Image:
    """An RGB image: the RGBA emoji over an opaque background (training reads RGB and would otherwise keep
    whatever colour the transparent pixels store), resized after compositing so edges blend with the
    background rather than with black."""
    with Image.open(io.BytesIO(png)) as img:
        rgba = img.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba).convert("RGB")
    return flat if flat.size == (size, size) else flat.resize((size, size), Image.Resampling.LANCZOS)


def parse_background(text: str) -> tuple[int, int, int]:
    """A colour name or #rrggbb -> (r, g, b)."""
    try:
        return ImageColor.getrgb(text)[:3]
    except ValueError:
        raise ValueError(f"background {text!r} is not a colour: give a name (white, black) or #rrggbb") from None


def build_emoji(tarballs: list[Path], out: str | Path, size: int = 64, background: str = "white",
                holdout: float = 0.05, seed: int = 0, overwrite: bool = False) -> dict:
    """Write the dataset into `out` (see the module's docstring) and return its summary (also in
    out/emoji-dataset.json). Rerunning with the same request does nothing; another request needs `overwrite`."""
    out = Path(out).expanduser()
    packages = [read_package(Path(t).expanduser()) for t in tarballs]
    styles = [p.style for p in packages]
    if len(set(styles)) < len(styles):
        raise ValueError(f"two tarballs of the same style ({', '.join(styles)}): give one per style")
    request = EmojiRequest(tuple(p.name for p in packages), size, parse_background(background), holdout, seed)
    done = read_marker(out)
    if done is not None and not overwrite:
        if done["request"] == json.loads(json.dumps(asdict(request))):
            print(f"{out} already holds this emoji dataset: nothing to do")
            return done
        raise ValueError(f"{out} holds an emoji dataset built from another request ({done['request']}): replace "
                         f"it with --overwrite, or choose another --out")
    # Reaching here means build: a fresh folder, an interrupted build or --overwrite. Anything else named like what
    # a build writes (train/, heldout/, NOTICE-*.txt) is the user's, and is not deleted unasked.
    if done is None and not overwrite and not (out / BUILDING).is_file() and out.is_dir():
        theirs = sorted({path.name for pattern in OWNED for path in out.glob(pattern)})
        if theirs:
            raise ValueError(f"{out} already holds {', '.join(theirs)}, not written by `liquidgen data emoji`: "
                             f"choose another --out, or delete them with --overwrite")
    chosen = select(packages, request)
    with claim(out, resume=False, overwrite=True, owned=OWNED, foreign=RUN_MARK + DATASET_MARK):
        (out / BUILDING).write_text(json.dumps(asdict(request)) + "\n")
        summary = write_dataset(packages, out, request, chosen)
        (out / BUILDING).unlink()
        return summary


def read_marker(out: Path) -> dict | None:
    path = out / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None  # a marker cut short is an unfinished build: it is rebuilt


@dataclass(frozen=True)
class Selection:
    """What a build writes: the images each style has (listed in emoji.json and present in its tarball), the
    held-out concepts, and the listed images the tarballs lack."""

    per_style: dict[str, list[Item]]
    held: set[str]
    missing: list[str]
    pictured: set[str]  # concepts with an image


def select(packages: list[Package], request: EmojiRequest) -> Selection:
    """The images to write, checked before anything is written: an error when no image or no training concept
    would be left, a warning naming the listed images that a tarball lacks (left out, not fatal)."""
    listed = {p.style: items(p) for p in packages}
    missing = [f"{p.style}/{i.image}" for p in packages for i in listed[p.style] if i.image not in p.images]
    # Drawn over every concept of emoji.json, with an image or not, so that each style's build holds out the same.
    held = heldout_concepts({e["unified"] for p in packages for e in p.emojis}, request.holdout, request.seed)
    per_style = {p.style: [i for i in listed[p.style] if i.image in p.images] for p in packages}
    chosen = Selection(per_style, held, missing, {i.unified for found in per_style.values() for i in found})
    if not chosen.pictured:
        raise EmojiSourceError(f"none of the images emoji.json lists is in {', '.join(str(p.path) for p in packages)}")
    if not chosen.pictured - held:
        raise ValueError(f"--holdout {request.holdout} holds out all {len(chosen.pictured)} concepts with an image, "
                         f"leaving no training images: lower --holdout")
    if missing:
        warn(f"{len(missing)} images that emoji.json lists are not in the tarball and are left out: "
             f"{', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
    if held - chosen.pictured:  # drawn over emoji.json, so concepts without an image shrink the held-out split
        warn(f"{len(held - chosen.pictured)} of the {len(held)} held-out concepts have no image here: the held-out "
             f"split holds {len(held & chosen.pictured)}")
    return chosen


def write_dataset(packages: list[Package], out: Path, request: EmojiRequest, chosen: Selection) -> dict:
    cats = categories(packages)
    folders = [category_folder(k, c) for k, c in enumerate(cats)]
    per_style, held, pictured = chosen.per_style, chosen.held, chosen.pictured
    splits = SPLITS if held else SPLITS[:1]
    for split in splits:  # every category folder in every split: labels come from the sorted folder names
        for folder in folders:
            (out / split / folder).mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[str]] = {split: [] for split in splits}
    for package in packages:
        for item in per_style[package.style]:
            label = cats.index(item.category)
            split = "heldout" if item.unified in held else "train"
            file_name = f"{folders[label]}/{Path(item.image).stem}-{package.style}.png"
            try:
                image = composite(package.images[item.image], request.size, request.background)
            except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
                why = "not an image PIL can identify" if isinstance(e, UnidentifiedImageError) else str(e)
                raise EmojiSourceError(f"{package.path}: package/img/{package.style}/{IMAGE_FOLDER}/{item.image} is "
                                       f"not a readable image ({why})") from None
            image.save(out / split / file_name)
            rows[split].append(json.dumps({
                "file_name": file_name, "text": item.caption(package.style), "label": label,
                "category": item.category, "subcategory": item.subcategory, "unified": item.unified,
                "skin_tone": item.skin_tone, "style": package.style, "name": item.name}))
    for split, lines in rows.items():
        (out / split / "metadata.jsonl").write_text("".join(line + "\n" for line in lines))
    write_notices(packages, out, request.size)
    summary = {"request": asdict(request), "categories": cats, "category_folders": folders,
               "images": {split: len(lines) for split, lines in rows.items()},
               "concepts": {"train": len(pictured - held), "heldout": len(pictured & held)},
               "heldout_concepts": sorted(pictured & held), "missing_images": chosen.missing}
    (out / MARKER).write_text(json.dumps(summary, indent=1) + "\n")
    return read_marker(out)


def write_notices(packages: list[Package], out: Path, size: int) -> None:
    """The licence of each style's images, and emoji-datasource's own (MIT, for emoji.json) beside the data:
    CC-BY asks for attribution wherever the images go, and both licences ask that changes be stated."""
    resized = f" and resized to {size}x{size}" if size != int(IMAGE_FOLDER) else ""
    for package in packages:
        (out / f"NOTICE-{package.style}.txt").write_text(
            f"The images in train/ and heldout/ named *-{package.style}.png are from {package.name} "
            f"(https://github.com/iamcal/emoji-data), changed: composited onto an opaque background{resized}.\n"
            f"{STYLES[package.style]}\n")
    if license_text := next((p.license for p in packages if p.license), ""):
        (out / "LICENSE-emoji-data.txt").write_text(
            "emoji.json (names, categories), from which the captions are made:\n\n" + license_text)
