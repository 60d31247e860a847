"""liquidgen: small image generators, trained and sampled on one GPU.

    pipe = liquidgen.load("runs/mnist")                         # a run folder or a checkpoint
    images = pipe(labels=[3, 7], steps=20, cfg=1.5, seed=0)    # PIL images (liquidgen.api)
    run = liquidgen.train("configs/digits-liquid-tiny.yaml", out="runs/demo")
"""
import importlib

__version__ = "0.1.0"
__all__ = ["load", "train", "LiquidPipeline"]


def __getattr__(name: str):
    # The API loads torch and the models on first use, so that `import liquidgen` stays quick. (`from . import`
    # would look the name up here again, endlessly.)
    if name == "train":  # the module liquidgen.train, which is callable (its `run`)
        return importlib.import_module(".train", __name__)
    if name in ("load", "LiquidPipeline"):
        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module 'liquidgen' has no attribute {name!r}")
