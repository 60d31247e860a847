"""`liquidgen serve`: the page's handler, and the page itself in headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium; `.ci/run` installs them and sets LIQUIDGEN_REQUIRE_BROWSER=1, so CI runs
the browser test rather than skipping it)."""
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import liquidgen

if os.environ.get("LIQUIDGEN_REQUIRE_BROWSER"):  # CI: a missing Gradio fails the suite rather than skipping this
    import gradio  # noqa: F401
else:
    pytest.importorskip("gradio")

from liquidgen.serve import ALL, MAX_IMAGES, make_generate, serve  # noqa: E402

QUICK = ["train.steps=60", "train.batch_size=32", "train.log_every=30", "train.sample_every=0", "train.ckpt_every=0",
         "data.image_size=8", "sample.steps=6", "sample.cfg=1.5"]
# The docs' screenshot: LIQUIDGEN_SCREENSHOT=docs/serve.png LIQUIDGEN_SERVE_RUN=runs/demo pytest tests/test_serve.py
SCREENSHOT = os.environ.get("LIQUIDGEN_SCREENSHOT")  # also save the page's screenshot there
SERVE_RUN = os.environ.get("LIQUIDGEN_SERVE_RUN")  # the browser test serves this run (8 px digits) if given


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return liquidgen.train("configs/digits-liquid-tiny.yaml", out=tmp_path_factory.mktemp("serve") / "run",
                           overrides=QUICK)


@pytest.fixture(scope="module")
def pipe(run):
    return liquidgen.load(run, device="cpu")


def test_generate_draws_a_class_grid_and_its_trajectory(pipe, tmp_path):
    generate = make_generate(pipe, tmp_path)
    grid, gif, status = generate(ALL, "", 6, 1.5, "euler", 3, 2)
    assert status.startswith("20 images") and grid.size == (2 * 96 + 3 * 2, 10 * 96 + 11 * 2)  # a row per class
    frames = Image.open(gif)
    assert frames.n_frames >= 6  # every step's estimate, then the samples (PIL merges a repeated last frame)
    first = pipe(num_images=2, steps=6, cfg=1.5, sampler="euler", seed=3)[0]  # the API's images, upscaled
    assert np.array_equal(np.asarray(grid.crop((2, 2, 98, 98))), np.asarray(first.resize((96, 96), Image.NEAREST)))
    again, _, _ = generate(ALL, "", 6, 1.5, "euler", 3, 2)
    assert np.array_equal(np.asarray(grid), np.asarray(again))  # a seed is a picture
    one, _, status = generate("7", "", 6, 1.5, "heun", 3, 4)
    assert status.startswith("4 images") and one.size == (2 * 96 + 3 * 2,) * 2


@pytest.mark.parametrize("args, message", [
    ((ALL, "", 0, 1.5, "euler", 0, 1), "steps must lie in [1, 1000]"),
    ((ALL, "", 6, float("nan"), "euler", 0, 1), "guidance must be a number >= 0"),
    ((ALL, "", 6, 1.5, "euler", -1, 1), "seed must lie in"),
    ((ALL, "", 6, 1.5, "euler", 0.5, 1), "seed must be a whole number"),
    ((ALL, "", 6, 1.5, "magic", 0, 1), "sampler must be one of"),
    (("eleven", "", 6, 1.5, "euler", 0, 1), "neither an index nor one of"),
    ((ALL, "", 6, 1.5, "euler", 0, MAX_IMAGES), f"more than {MAX_IMAGES} at once"),
])
def test_bad_input_is_a_status_message_not_an_exception(pipe, tmp_path, args, message):
    grid, gif, status = make_generate(pipe, tmp_path)(*args)
    assert grid is None and gif is None and status.startswith("**Could not generate:**") and message in status


def _browser():
    """Headless Chromium through the system's chromedriver (no Selenium Manager download), with every host
    but this machine unresolvable: the page must work offline."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("LIQUIDGEN_REQUIRE_BROWSER"):
            pytest.fail("the browser test needs Debian's chromium and chromium-driver (apt-get install chromium "
                        "chromium-driver)")
        pytest.skip("no chromium / chromedriver on this machine")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _choose(browser, css: str, value: str, attempts: int = 3):
    """Pick `value` in a Gradio dropdown by typing it and clicking its option. A CI run on a loaded machine once
    waited 60 s for the option list that never opened after the typing, so each attempt reopens the list; the
    last failure says what the list held. Gradio re-renders the list as it filters on each typed key, so an option
    found a moment ago may be gone when it is checked or clicked (a stale element, seen on CI): the wait looks it up
    again, and a click that lands on a replaced option counts as a failed attempt."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    option = (By.XPATH, f"//ul[@role='listbox']/li[@aria-label='{value}']")
    for _ in range(attempts):
        field = WebDriverWait(browser, 60).until(ec.element_to_be_clickable((By.CSS_SELECTOR, css)))
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(value)
        try:
            WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,)).until(
                ec.element_to_be_clickable(option)).click()
            return
        except (TimeoutException, StaleElementReferenceException):
            field.send_keys(Keys.ESCAPE)
    shown = [li.get_attribute("aria-label") for li in browser.find_elements(By.XPATH, "//ul[@role='listbox']/li")]
    pytest.fail(f"option {value!r} of {css} never became clickable in {attempts} tries; the list showed {shown}")


def test_the_page_in_a_browser_generates_a_class(run, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    app = serve(SERVE_RUN or run, port=port, device="cpu", block=False)
    browser = _browser()
    try:
        url = f"http://127.0.0.1:{port}/"
        browser.get(url)
        wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))  # see _choose
        _choose(browser, "#class input", "7")
        browser.find_element(By.CSS_SELECTOR, "#generate").click()
        image = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#grid img")))
        wait.until(lambda b: "4 images" in b.find_element(By.CSS_SELECTOR, "#status").text)
        src = image.get_attribute("src")
        data = urllib.request.urlopen(src).read() if src.startswith("http") else None
        assert data, f"the grid's src is not a URL of the page: {src[:80]}"
        grid = Image.open(io.BytesIO(data))
        grid.load()  # decodes
        assert grid.size == (2 * 96 + 3 * 2,) * 2 and np.asarray(grid.convert("L")).std() > 10  # not blank
        assert browser.find_element(By.CSS_SELECTOR, "#trajectory img").get_attribute("src")
        browser.save_screenshot(str(tmp_path / "page.png"))
        assert Image.open(tmp_path / "page.png").size[0] > 0
        if SCREENSHOT:
            Path(SCREENSHOT).write_bytes((tmp_path / "page.png").read_bytes())

        seed = browser.find_element(By.CSS_SELECTOR, "#seed input")  # bad input: a message, the page lives on
        seed.send_keys(Keys.CONTROL, "a")
        seed.send_keys("-5")
        browser.find_element(By.CSS_SELECTOR, "#generate").click()
        wait.until(lambda b: "Could not generate" in b.find_element(By.CSS_SELECTOR, "#status").text)
        assert "seed must lie in" in browser.find_element(By.CSS_SELECTOR, "#status").text
    finally:
        browser.quit()
        app.close()


def call_generate(port: int, data: list) -> str:
    """The event stream answering one Generate request sent through Gradio's HTTP API, as any client may."""
    url = f"http://127.0.0.1:{port}/gradio_api/call/generate"
    request = urllib.request.Request(url, json.dumps({"data": data}).encode(), {"Content-Type": "application/json"})
    event = json.load(urllib.request.urlopen(request))["event_id"]
    return urllib.request.urlopen(f"{url}/{event}").read().decode()


def test_an_error_the_handler_does_not_catch_reaches_the_client_with_its_message(run):
    port = _free_port()
    app = serve(run, port=port, device="cpu", block=False)
    try:
        stream = call_generate(port, [ALL, "", 6, 1.5, ["euler"], 0, 1])  # a TypeError in the handler
    finally:
        app.close()
    assert "event: error" in stream and "unhashable type: 'list'" in stream, stream


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_removes_its_scratch_folder_when_stopped(run, tmp_path, stop):
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONFAULTHANDLER": "1"}
    server = subprocess.Popen([sys.executable, "-m", "liquidgen.cli", "serve", str(run), "--port", str(port),
                               "--device", "cpu"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("liquidgen-serve-*")) or not _listening(port):
            assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        server.send_signal(stop)
        try:
            status = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # SIGABRT makes faulthandler print every thread's stack to the captured stderr: the failure shows where
            # serve hangs (how a Ctrl-C lost inside gradio's launch was found)
            server.send_signal(signal.SIGABRT)
            server.wait(timeout=10)
            pytest.fail(f"serve outlived {stop.name} by 30 s; its threads' stacks are in the captured stderr")
        # serve took the signal itself, whenever it came after loading, and stopped cleanly
        assert status == 0 and f"stopped by {stop.name}" in server.stdout.read()
    finally:
        server.kill()
    assert not list(tmp_path.glob("liquidgen-serve-*"))


# The user's Ctrl-C lands while gradio's launch still checks its own server: before serve took signals itself, one
# there could vanish inside gradio's code and leave the server running (a loaded test run caught it); made certain here.
CTRL_C_DURING_LAUNCH = """
import os, signal, sys
import gradio.networking
from liquidgen.serve import serve
url_ok = gradio.networking.url_ok
def url_ok_after_a_ctrl_c(url):
    os.kill(os.getpid(), signal.SIGINT)
    return url_ok(url)
gradio.networking.url_ok = url_ok_after_a_ctrl_c
serve(sys.argv[1], port=int(sys.argv[2]), device="cpu")
"""


def test_a_ctrl_c_during_launch_stops_serve_as_soon_as_it_is_up(run, tmp_path):
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run([sys.executable, "-c", CTRL_C_DURING_LAUNCH, str(run), str(port)], env=env, timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stopped by SIGINT" in done.stdout
    assert not list(tmp_path.glob("liquidgen-serve-*")) and not _listening(port)


@pytest.mark.slow
def test_a_text_model_is_prompted_one_row_per_prompt(tiny_text_run, tmp_path):
    pipe = liquidgen.load(tiny_text_run, device="cpu")
    generate = make_generate(pipe, tmp_path)
    grid, gif, status = generate(ALL, "a handwritten seven\n\na handwritten one\n", 2, 1.5, "euler", 0, 3)
    assert status.startswith("6 images") and Image.open(gif).n_frames >= 2
    expected = pipe(prompt=["a handwritten seven", "a handwritten one"], num_images=3, steps=2, cfg=1.5, seed=0)
    width = expected[0].width
    cell = width * max(1, -(-96 // width))  # each image upscaled to >= 96 px
    assert grid.size == (3 * cell + 4 * 2, 2 * cell + 3 * 2)  # a row per prompt, num_images across
    _, _, status = generate(ALL, "  \n", 2, 1.5, "euler", 0, 1)
    assert "write a prompt" in status
