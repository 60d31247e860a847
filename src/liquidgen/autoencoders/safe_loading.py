"""Loading third-party model folders (diffusers, transformers, sentence-transformers) without running code
from them: weights from safetensors only, never unpickled, and no code shipped with a model.

A pickle file (pytorch_model.bin, diffusion_pytorch_model.bin, *.pt, *.ckpt) can run arbitrary code when
loaded, so a local folder that holds weights only in that form is refused here, before any library sees it,
with the command that converts it; the libraries are also called with their safetensors-only options, which
covers hub downloads."""
from __future__ import annotations

from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# from_pretrained options of transformers and diffusers models: safetensors only, no remote code. diffusers'
# models take no trust_remote_code (they never run code from a folder).
TRANSFORMERS_SAFE = {"use_safetensors": True, "trust_remote_code": False}
DIFFUSERS_SAFE = {"use_safetensors": True}


def first_line(error: BaseException) -> str:
    """`Type: first line of the message`, for one-line errors wrapping a library's multi-line ones."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0].strip()}" if text else type(error).__name__


def pickle_only_files(folder: Path) -> list[Path]:
    """Pickle-format weight files under `folder` (and its direct subfolders, where sentence-transformers keeps
    its modules) with no .safetensors file beside them."""
    found = []
    for place in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        files = [p for p in place.iterdir() if p.is_file()]
        if not any(p.suffix == ".safetensors" for p in files):
            found += sorted(p for p in files if p.suffix in PICKLE_SUFFIXES)
    return found


def convert_command(pickle_file: Path) -> str:
    """A command that rewrites one pickle weight file as the .safetensors file the libraries look for
    (pytorch_model*.bin -> model*.safetensors, otherwise the same stem), reading it with weights_only."""
    stem = pickle_file.stem
    target = pickle_file.with_name(("model" + stem[len("pytorch_model"):] if stem.startswith("pytorch_model")
                                    else stem) + ".safetensors")
    return (f"python -c \"import torch; from safetensors.torch import save_file; save_file({{k: v.contiguous().clone() "
            f"for k, v in torch.load('{pickle_file}', weights_only=True).items()}}, '{target}')\"")


def require_safetensors(folder: Path, what: str) -> None:
    """ValueError when the model folder `folder` ("`what` FOLDER" in the message) has weights only in pickle
    form, with the command that converts them (for someone who trusts the files)."""
    pickles = pickle_only_files(folder)
    if pickles:
        names = ", ".join(str(p.relative_to(folder)) for p in pickles[:3])
        raise ValueError(f"{what} {folder} holds its weights only as pickle files ({names}), which liquidgen does "
                         f"not load because unpickling can run code; safetensors are required. If you trust the "
                         f"files, convert {'each' if len(pickles) > 1 else 'it'} once, e.g.: "
                         f"{convert_command(pickles[0])}")
