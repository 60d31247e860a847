"""Run configuration: plain dataclasses, loaded from YAML presets (`configs/*.yaml`) and
`--set section.key=value` overrides. Unknown keys, ill-typed values and values out of range (RANGES) fail
before any work starts, naming the key and what is allowed."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .distributed import check_device_name
from .samplers import SAMPLERS, parse_grid


@dataclass
class ModelConfig:
    name: str = "liquid"  # backbone, see `liquidgen models`
    preset: str = "S"
    options: dict[str, Any] = field(default_factory=dict)  # architecture keys overriding the preset
    # Activation recomputation (block stacks: liquid, dit): the first N blocks keep only their inputs and
    # rerun their forward in the backward; -1: every block. Less memory for more compute; not part of the
    # model (checkpoints load either way).
    checkpointing: int = 0
    # Inpainting/outpainting variant: the known image and the mask enter as extra input channels whose
    # weights start at zero (so train.init_from can start from a plain model); training draws random masks.
    inpainting: bool = False


@dataclass
class DataConfig:
    name: str = "digits"  # digits | mnist | cifar10 | folder | npz | precomputed
    root: str | None = None  # dataset folder or file (not needed for digits); precomputed: precompute's output
    image_size: int | None = None  # resize to this square size (None: the dataset's own)
    hflip: bool = False  # random horizontal flips (not for digits!)
    limit: int | None = None  # keep only the first N images
    labels: bool = True  # condition on the class labels when the dataset has them (false: text or nothing)
    # folder datasets: leave out image files that cannot be decoded (counted, named in a warning)
    # instead of stopping at the first one
    skip_bad_images: bool = False


@dataclass
class ObjectiveConfig:
    name: str = "flow"
    options: dict[str, Any] = field(default_factory=dict)  # e.g. {time_sampling: uniform}


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | muon (Muon for linear layers' weights, AdamW for the rest; see optim.py)
    lr: float = 1e-4
    weight_decay: float = 0.01  # applied to weight matrices and kernels only (ndim >= 2)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 2.0  # max global grad norm; 0 disables
    warmup_steps: int = 0  # linear learning-rate warm-up
    schedule: str = "constant"  # constant | cosine (to 0 at train.steps, or at train.minutes if reached first)
    muon_momentum: float = 0.95  # Muon's (Nesterov) momentum


@dataclass
class TrainConfig:
    steps: int = 10_000  # optimizer steps
    # Stop earlier, after this many minutes of training steps (0: no limit). Evaluation, grids,
    # checkpoints and the first step after each (re)start (compilation, warm-up) are not counted;
    # the count survives resumes. `liquidgen bench quality` trains backbones to equal budgets with it.
    minutes: float = 0.0
    batch_size: int = 64  # per optimizer step, split into grad_accum micro-batches
    grad_accum: int = 1
    max_bad_steps: int = 20  # consecutive steps with a non-finite gradient (each skipped) before the run stops
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # effective decay min(decay, (1 + step) / (10 + step))
    # > 0: EDM2's power-function EMA of this relative width (sigma_rel, e.g. 0.1) instead of ema_decay/ema_warmup: an
    # average over the same fraction of any run's length
    ema_std: float = 0.0
    label_dropout: float = 0.1  # per-sample probability of the null class (for CFG)
    caption_dropout: float = 0.1  # per-sample probability of the learned null text context (for CFG)
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    compile: bool = False  # torch.compile the training step's model
    # torch.compile mode: default | reduce-overhead (CUDA graphs: no per-kernel launch cost, for small
    # models whose steps are launch-bound) | max-autotune | max-autotune-no-cudagraphs
    compile_mode: str = "default"
    # Inductor settings on top of the mode (COMPILE_TUNINGS below): default | coordinate (each generated kernel's
    # launch configuration tuned: a few % faster steps for minutes more compilation)
    compile_tuning: str = "default"
    log_every: int = 50
    # Also send metrics.jsonl's numbers to an experiment tracker: none | tensorboard (into <run>/tensorboard)
    # | wandb (the project liquidgen); the tracker's package must be installed.
    log_with: str = "none"
    sample_every: int = 1000  # 0 disables grids during training
    ckpt_every: int = 5000  # 0: only the final checkpoint
    ckpt_minutes: float = 0.0  # also every N minutes of training steps (0: never), counted as train.minutes
    keep_checkpoints: int = 3  # newest checkpoints kept (0 keeps all)
    keep_every: int = 0  # also keep every checkpoint whose step is a multiple of this (0: none)
    init_from: str = ""  # start from this checkpoint's EMA weights (fine-tuning); empty in sCD: the teacher's
    eval_every: int = 0  # score the EMA weights every N steps (0: never); needs eval_classifier
    eval_classifier: str = ""  # reference classifier .safetensors (`liquidgen eval fit-classifier`)
    eval_samples: int = 2000  # fixed-noise samples per evaluation
    eval_steps: int = 0  # sampling steps for evaluation (0: sample.steps)


@dataclass
class SampleConfig:
    """How a run's samples are drawn: training grids, `sample`, `interpolate`, `eval` and `bench` all
    start from these and override single fields (`with_`)."""

    sampler: str = "euler"
    grid: str = ""  # time grid spec, e.g. karras or consistency:theta_mid=0.9; empty: the sampler's default
    steps: int = 50
    cfg: float = 3.0  # classifier-free guidance scale (1 = off)
    # guidance only for flow times t in [low, high] (t = 1 is noise); None: at every step
    cfg_interval: tuple[float, float] | None = None
    per_class: int = 8  # grid: samples per class row (class-conditional models)
    n: int = 64  # grid: samples (unconditional models)

    def __post_init__(self):
        if self.cfg_interval is not None and not 0 <= self.cfg_interval[0] < self.cfg_interval[1] <= 1:
            raise ConfigError(f"sample.cfg_interval: expected 0 <= low < high <= 1, got {list(self.cfg_interval)}")

    def with_(self, **overrides) -> SampleConfig:
        """A copy with the fields given (None: keep this one's), checked like a config file's."""
        data = {**_plain(dataclasses.asdict(self)), **{k: v for k, v in overrides.items() if v is not None}}
        return from_dict(SampleConfig, data, "sample")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


class ConfigError(ValueError):
    pass


# Inductor settings a training run may add to its compile mode (`train.compile_tuning`). coordinate: coordinate
# descent on each generated Triton kernel's launch configuration; LiquidGen-S at batch 256 trained 3.9% faster
# (95.05 -> 91.33 ms a step, H100) after more than 150 s of compilation against the defaults' 53 s
# (benchmarks/results/2026-12-07-inductor-tuning-h100): for runs much longer than those minutes. In sampling the
# tuning did not come back from the compile cache whole (warm calls with it 64-82 s against 30-36 s,
# benchmarks/results/2026-12-07-sampling-tuning-h100): expect a new process, a resume too, to pay part of it again.
COMPILE_TUNINGS: dict[str, dict] = {"default": {}, "coordinate": {"coordinate_descent_tuning": True}}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Keys with a closed set of values; registries (backbones, datasets, samplers) check their own names.
CHOICES = {
    "sample.sampler": tuple(SAMPLERS),
    "optim.schedule": ("constant", "cosine"),
    "optim.name": ("adamw", "muon"),
    "train.precision": ("auto", "bf16", "fp32"),
    "train.compile_mode": COMPILE_MODES,
    "train.compile_tuning": tuple(COMPILE_TUNINGS),
    "train.log_with": ("none", "tensorboard", "wandb"),
}


@dataclass(frozen=True)
class Bound:
    """The numbers a key admits: from `low` up to `high` (None: no upper end); an open end excludes the
    value itself. Non-finite numbers never pass, so NaN and inf cannot slip through a comparison."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        high = f"2^{self.high.bit_length() - 1}" if self.high > 2**20 else self.high  # seeds' 2^63, not 19 digits
        return f"in {'(' if self.low_open else '['}{self.low}, {high}{')' if self.high_open else ']'}"


PROBABILITY = Bound(0, 1)
MOMENTUM = Bound(0, 1, high_open=True)  # 1 would never forget the first gradient
NONNEGATIVE = Bound(0)  # amounts, and counts where 0 means "off"
POSITIVE = Bound(0, low_open=True)
AT_LEAST_ONE = Bound(1)  # counts of things that must exist
EMA_STD = Bound(0, 12 ** -0.5, high_open=True)  # 0: off; a power-function EMA needs sigma_rel < 1/sqrt(12)
SEED = Bound(0, 2**63, high_open=True)  # numpy's SeedSequence refuses negatives; torch's generators 64 bits

# Numeric keys of every top-level config, by dotted key (a config loaded with the same section and field
# names shares them, as AutoencoderConfig's train.* does); tuples are checked element by element, None
# (an optional field left unset) is not checked. Other configs add their own keys with RANGES.update.
RANGES: dict[str, Bound] = {
    "train.label_dropout": PROBABILITY, "train.caption_dropout": PROBABILITY, "train.ema_decay": PROBABILITY,
    "train.ema_std": EMA_STD,
    "optim.betas": MOMENTUM, "optim.muon_momentum": MOMENTUM,
    "optim.lr": POSITIVE,
    "optim.weight_decay": NONNEGATIVE, "optim.grad_clip": NONNEGATIVE, "optim.warmup_steps": NONNEGATIVE,
    "train.minutes": NONNEGATIVE, "train.ckpt_minutes": NONNEGATIVE, "sample.cfg": NONNEGATIVE,
    "train.sample_every": NONNEGATIVE, "train.ckpt_every": NONNEGATIVE, "train.eval_every": NONNEGATIVE,
    "train.keep_checkpoints": NONNEGATIVE, "train.keep_every": NONNEGATIVE, "train.eval_steps": NONNEGATIVE,
    "train.steps": AT_LEAST_ONE, "train.batch_size": AT_LEAST_ONE, "train.grad_accum": AT_LEAST_ONE,
    "train.log_every": AT_LEAST_ONE, "train.max_bad_steps": AT_LEAST_ONE, "train.eval_samples": AT_LEAST_ONE,
    "sample.steps": AT_LEAST_ONE, "sample.per_class": AT_LEAST_ONE, "sample.n": AT_LEAST_ONE,
    "data.limit": AT_LEAST_ONE, "data.image_size": AT_LEAST_ONE,
    "train.seed": SEED,
    "model.checkpointing": Bound(-1),  # -1: all blocks; the upper end is the model's depth (set_checkpointing)
}


def check_grid_spec(spec: str) -> None:
    """An empty sample.grid (the sampler's own) or a grid spec such as "consistency:theta_mid=0.9"."""
    if spec:
        parse_grid(spec)


# Keys whose value a function checks (it raises ValueError saying what is wrong with the value).
VALUE_CHECKS = {"train.device": check_device_name, "sample.grid": check_grid_spec}


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check(value, hint, key: str):
    """Coerce `value` to the type `hint` (int -> float allowed, lists -> tuples), or raise naming `key`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {hint}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{key}: expected a non-empty list, got {value!r}")
        return [_check(v, typing.get_args(hint)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_check(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # names that look like numbers: preset 28, a folder called 2024
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads "2e-3" (no dot) as a string; accept any float literal Python accepts.
        try:
            return float(value)
        except ValueError:
            pass
    if hint is Any or (isinstance(hint, type) and isinstance(value, hint) and
                       not (hint is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def from_dict(cls, data: dict | None, prefix: str = ""):
    """Build dataclass `cls` from a nested dict, strictly."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]}; allowed keys: {', '.join(names)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        kwargs[name] = (from_dict(hint, value, key) if dataclasses.is_dataclass(hint)
                        else _check(value, hint, key))
        check_value(key, kwargs[name])
    return cls(**kwargs)


def check_value(key: str, value) -> None:
    """Raise ConfigError naming `key` if `value` (already of the right type) is outside what the key
    admits: CHOICES, RANGES or VALUE_CHECKS."""
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(CHOICES[key])}")
    if key in RANGES:
        _check_range(key, value, RANGES[key])
    if key in VALUE_CHECKS:
        try:
            VALUE_CHECKS[key](value)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None


def _check_range(key: str, value, bound: Bound) -> None:
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_range(f"{key}[{i}]", v, bound)
    elif value is not None and not bound.admits(value):
        raise ConfigError(f"{key}: must be {bound}, got {value}")


def parse_assignment(text: str, flag: str) -> tuple[str, Any]:
    """`KEY=VALUE` -> (key, value read as YAML: numbers, booleans, lists, strings); `flag` names where it
    came from in the error (--set, --ae-option, a bench contender)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{flag} expects KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"{flag} {text!r}: the value is not valid YAML ({e.problem})") from None


def parse_options(items: typing.Iterable[str], flag: str) -> dict[str, Any]:
    """KEY=VALUE strings -> a dict."""
    return dict(parse_assignment(item, flag) for item in items)


def apply_override(data: dict, assignment: str) -> None:
    """Apply `a.b.c=value` to a nested dict in place."""
    key, value = parse_assignment(assignment, "--set")
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    # `--set model=` would replace a whole section by nothing, i.e. by its defaults (another backbone, say)
    if not isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
        raise ConfigError(f"--set {assignment}: {key} is a section of the config, not a value; set its keys one by "
                          f"one ({key}.KEY=VALUE)")
    node[parts[-1]] = value


def read_yaml(path: Path) -> dict:
    """A config file's mapping; a missing file, a folder, YAML syntax and a top level that is not a mapping
    are ConfigErrors naming the file (and the line and column, for syntax)."""
    if path.is_dir():
        raise ConfigError(f"config {path} is a folder; give a YAML file such as configs/digits-liquid-tiny.yaml")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as e:
        raise ConfigError(f"config {path}{_yaml_where(e)}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        # a reader error (a control character, say) spans lines; its first says what is wrong
        raise ConfigError(f"config {path}: not a YAML text file ({str(e).splitlines()[0]})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping of sections (model:, data:, ...), "
                          f"got a {type(data).__name__}")
    return data or {}


def _yaml_where(e: yaml.MarkedYAMLError) -> str:
    """':LINE:COLUMN: invalid YAML: problem', plus where the construct it broke began (an unclosed bracket's
    line, say) when that is another line."""
    mark = e.problem_mark or e.context_mark
    text = (f":{mark.line + 1}:{mark.column + 1}" if mark else "") + f": invalid YAML: {e.problem or e.context}"
    if e.problem and e.context and e.context_mark and mark and e.context_mark.line != mark.line:
        text += f" ({e.context} at line {e.context_mark.line + 1})"
    return text


def load_config(path: str | Path | Config | None = None, overrides: typing.Sequence[str] = (), cls: type = Config):
    """A `cls` (Config, or another top-level config such as train-autoencoder's) from a YAML file, or a copy of a
    config object, with `section.key=value` overrides (checked as a config file is: a dataclass checks nothing
    itself)."""
    if path is None:
        data = {}
    elif dataclasses.is_dataclass(path):
        data = _plain(dataclasses.asdict(path))
    else:
        data = read_yaml(Path(path))
    for assignment in overrides:
        apply_override(data, assignment)
    return from_dict(cls, data)
