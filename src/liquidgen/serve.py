"""`liquidgen serve RUN`: a local web page to sample a trained model, built on Gradio (`pip install
liquidgen[web]`). The model loads once; each press of Generate draws a grid and the denoising trajectory
(the estimate of the clean images after every step) as a GIF. Bad input is answered on the page, in the
status line, never by a dead page. Nothing is fetched at run time: Gradio's fonts are served locally,
its analytics are off, and the server binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .api import LiquidPipeline, load
from .plots import image_grid, save_gif
from .runtime import StopRequest
from .samplers import SAMPLERS

ALL = "all classes"
MAX_IMAGES = 64  # per press: a page, not a batch job (`liquidgen sample` makes thousands)
MAX_STEPS = 1000
DISPLAY_CELL = 96  # px per image on the page; 8-28 px models are upscaled, nearest neighbour


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline tool
    try:
        import gradio as gr
    except ImportError as e:
        raise SystemExit("liquidgen serve needs Gradio: pip install 'liquidgen[web]'") from e
    return gr


def _integer(value, name: str, low: int, high: int | None = None) -> int:
    """A whole number from a form field (Gradio's numbers arrive as floats), or a ValueError naming the field."""
    if value is None or value == "" or float(value) != int(float(value)):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    number = int(float(value))
    if number < low or (high is not None and number > high):
        raise ValueError(f"{name} must lie in [{low}, {high}], got {number}" if high is not None
                         else f"{name} must be >= {low}, got {number}")
    return number


def make_generate(pipe: LiquidPipeline, out_dir: Path) -> Callable:
    """The page's Generate handler: (class, prompts, steps, cfg, sampler, seed, images) -> (grid, GIF path,
    status). Every failure becomes the status text, with no images."""

    def generate(label, prompts, steps, cfg, sampler, seed, images):
        try:
            steps = _integer(steps, "steps", 1, MAX_STEPS)
            count = _integer(images, "images", 1, MAX_IMAGES)
            seed = _integer(seed, "seed", 0, 2**63 - 1)
            if cfg is None or not math.isfinite(float(cfg)) or float(cfg) < 0:
                raise ValueError(f"guidance must be a number >= 0 (1 = off), got {cfg!r}")
            if sampler not in SAMPLERS:
                raise ValueError(f"sampler must be one of {', '.join(sorted(SAMPLERS))}, got {sampler!r}")
            lines = [line.strip() for line in (prompts or "").splitlines() if line.strip()]
            if pipe.text and not lines:
                raise ValueError("write a prompt (one per line)")
            every_class = bool(pipe.class_names) and not pipe.text and label in (None, "", ALL)
            rows = len(lines) if pipe.text else len(pipe.class_names) if every_class else 1
            if count * rows > MAX_IMAGES:
                raise ValueError(f"{count} images for each of {rows} {'prompts' if pipe.text else 'classes'} is "
                                 f"more than {MAX_IMAGES} at once: ask for fewer")
            estimates: list[torch.Tensor] = []
            x = pipe(labels=None if every_class or pipe.text else label, prompt=lines or None, num_images=count,
                     steps=steps, cfg=float(cfg), sampler=sampler, seed=seed, output="pt",
                     callback=lambda t, x0: estimates.append(x0.float().cpu()))
        except (ValueError, RuntimeError) as e:  # bad input, or a device out of memory: say so on the page
            return None, None, f"**Could not generate:** {e}"
        # One row per class or prompt when there are several; otherwise a square.
        nrow = (count if count > 1 else rows) if rows > 1 else math.ceil(math.sqrt(len(x)))
        scale = max(1, math.ceil(DISPLAY_CELL / x.shape[-1]))
        grid = image_grid(x * 2 - 1, nrow=nrow, scale=scale)  # image_grid reads floats in [-1, 1]
        frames = [pipe.pipeline.decode(e.to(pipe.device)).clamp(-1, 1).cpu() for e in estimates] + [x * 2 - 1]
        gif = Path(tempfile.mkstemp(suffix=".gif", dir=out_dir)[1])
        save_gif(frames, gif, nrow=nrow, duration_ms=max(40, 3000 // len(frames)), scale=scale)
        return grid, str(gif), f"{len(x)} images, {steps} {sampler} steps, guidance {float(cfg):g}, seed {seed}"

    return generate


def build_app(pipe: LiquidPipeline, title: str = "liquidgen"):
    """The page as a Gradio Blocks app (not launched)."""
    gr = _gradio()
    settings = pipe.pipeline.settings
    spec = pipe.pipeline.spec
    # The trajectories' GIFs: removed when the server stops (`serve`), at the latest with the app or at exit.
    scratch = tempfile.TemporaryDirectory(prefix="liquidgen-serve-")
    out_dir = Path(scratch.name)
    with gr.Blocks(title=title) as app:
        kind = ("text-conditioned" if pipe.text else f"{len(pipe.class_names)} classes" if pipe.class_names
                else "unconditional")
        gr.Markdown(f"## {title}\n{spec.name} {spec.preset}, {kind}, on {pipe.device}")
        with gr.Row():
            with gr.Column(scale=1):
                label = gr.Dropdown([ALL, *pipe.class_names], value=ALL, label="class", elem_id="class",
                                    visible=bool(pipe.class_names) and not pipe.text)
                prompts = gr.Textbox(label="prompt (one per line)", lines=3, elem_id="prompt", visible=pipe.text)
                steps = gr.Slider(1, 200, value=settings.steps, step=1, label="steps", elem_id="steps")
                cfg = gr.Number(value=settings.cfg, label="guidance (1 = off)", elem_id="cfg")
                sampler = gr.Dropdown(sorted(SAMPLERS), value=settings.sampler, label="sampler", elem_id="sampler")
                seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
                images = gr.Slider(1, 16, value=4, step=1, label="images (per class when all classes)",
                                   elem_id="images")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                grid = gr.Image(label="samples", type="pil", elem_id="grid", format="png")
                trajectory = gr.Image(label="denoising trajectory", type="filepath", elem_id="trajectory")
        button.click(make_generate(pipe, out_dir), [label, prompts, steps, cfg, sampler, seed, images],
                     [grid, trajectory, status])
    app.out_dir, app.scratch = out_dir, scratch
    return app


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          ema: bool = True, block: bool = True):
    """Load `run` once and serve its page at http://host:port until Ctrl-C (or SIGTERM); `block` False returns the
    app once it listens (tests; `app.close()` stops it)."""
    pipe = load(run, device=device, ema=ema, compile="off")  # compiling would stall the first press
    app = build_app(pipe, f"liquidgen · {Path(run).name}")
    if block:
        print(f"serving {run} at http://{host}:{port} (Ctrl-C stops)", flush=True)
    # A blocking serve takes Ctrl-C itself rather than as a KeyboardInterrupt: one that came while gradio's launch
    # was still checking its own server (the faulthandler dump of a serve that outlived SIGINT in a loaded test run)
    # vanished inside that code, and the process served on. The handler only records it; a second Ctrl-C raises.
    stop = StopRequest() if block else None
    try:
        # show_error: an exception the handler does not turn into a status line (a TypeError from a client's
        # malformed request, a bug) reaches the client with its message, not as {"error": null}
        app.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=not block,
                   show_error=True, ssr_mode=False, footer_links=[], allowed_paths=[str(app.out_dir)])
        while stop is not None and stop.signal is None:
            time.sleep(0.1)
    finally:
        if stop is not None:
            stop.restore()
            if stop.signal:
                print(f"\nstopped by {stop.signal}; closing the server", flush=True)
            app.close()
            app.scratch.cleanup()  # the page's images go with the server
    return app

