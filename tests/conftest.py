from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


class StepClock:
    """time.perf_counter for the trainer and the budget helper: each call advances it by `tick`, so each training
    step (the time between its two calls) counts one tick whatever the machine's load: the budgets' arithmetic is
    tested exactly, not raced against a shared CPU."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


@pytest.fixture
def step_clock(monkeypatch):
    import liquidgen.bench.budget
    import liquidgen.train
    clock = StepClock(0.0625)  # a power of two: the steps add up exactly
    monkeypatch.setattr(liquidgen.train, "time", clock)
    monkeypatch.setattr(liquidgen.bench.budget, "time", clock)
    return clock


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "MNIST").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_text_run(tmp_path_factory) -> Path:
    """A TLD-style text-to-image DiT trained for 2 steps on 32 digits captioned "a handwritten <digit>" and
    embedded by the packaged MiniLM: a text model for the tests of prompting."""
    import liquidgen
    from liquidgen.cli import main

    root = tmp_path_factory.mktemp("text")
    main(["precompute", "digits", "--size", "8", "--limit", "32", "--out", str(root / "captions"), "--text-encoder",
          "minilm", "--caption-template", "a handwritten {}", "--device", "cpu"])
    return liquidgen.train("configs/folder-dit-text-latent.yaml", out=root / "run",
                           overrides=["model.preset=tiny", "model.options.patch_size=2", "data.image_size=null",
                                      f"data.root={root / 'captions'}", "train.steps=4", "train.batch_size=8",
                                      "train.sample_every=0", "train.ckpt_every=0"])


TAESD_DIR = SHARED_DATA / "weights" / "taesd"


@pytest.fixture(scope="session")
def taef2_weights(tmp_path_factory) -> str:
    """The real taef2 weights when this machine has them, else randomly initialised ones in the same format
    (the pipeline is the same; only the pictures differ)."""
    if (TAESD_DIR / "taef2_encoder.pth").is_file():
        return str(TAESD_DIR)
    from liquidgen.autoencoders.taesd import make_decoder, make_encoder

    folder = tmp_path_factory.mktemp("taesd")
    torch.save(make_encoder(32, pool=True).half().state_dict(), folder / "taef2_encoder.pth")
    torch.save(make_decoder(32, pool=True).half().state_dict(), folder / "taef2_decoder.pth")
    return str(folder)
