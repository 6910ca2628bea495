"""The web demo in a real browser: headless Chromium (Debian's, driven by Playwright) against the server.

The server runs in-process (uvicorn in a thread, a free loopback port) with the embedded nano model, unpatched:
upload, the task buttons, the Gradio queue, the engine, `generate`, streaming and box drawing are all real.

Needs `chromium` on PATH (`apt-get install -y chromium`; scripts/setup.sh installs it when run as root).
"""
import io
import os
import random
import shutil
import tempfile

import pytest
from PIL import Image

from minigptv2 import load
from minigptv2.serve import server as srv
from minigptv2.boxes import parse_boxes
from minigptv2.synthetic import NUMBERS, make_scene
from test_server import live_server

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
TIMEOUT_MS = 90_000     # generous: CI shares 2 cores


def _chromium() -> str:
    path = os.environ.get("MINIGPTV2_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is not installed, so the web demo cannot be tested: run `apt-get install -y chromium` "
                    "(scripts/setup.sh does when run as root), or point MINIGPTV2_CHROMIUM at a Chromium binary")
    return path


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    model, proc = load()                                   # the embedded nano model
    engine = srv.Engine(model, proc, "nano")
    try:
        with live_server(srv.create_app(engine, srv.Limits())) as url:
            yield url
    finally:
        engine.close()


def test_refer_and_a_follow_up_turn_in_the_web_demo(demo_url, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'")
    chromium = _chromium()
    scene = make_scene(random.Random(7))
    count = NUMBERS[len(scene.objects)]
    scene_file = tmp_path / "scene.png"
    scene.image.save(scene_file)
    shot = tmp_path / "webui.png"

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tempfile.mkdtemp(dir=tmp_path, prefix="profile")),
                                                   executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                                                   viewport={"width": 1400, "height": 1000})
        try:
            page = ctx.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(demo_url + "/")
            prompt = page.locator("#prompt textarea")
            prompt.wait_for()

            # a file set before the editor has mounted its drawing canvas is dropped; its "Upload an image"
            # placeholder leaves only once the image is in, and a send before that goes without it
            placeholder = page.locator("#image-input .empty")
            page.locator("#image-input canvas").first.wait_for()
            placeholder.wait_for()
            page.locator("#image-input input[type=file]").set_input_files(str(scene_file))
            placeholder.wait_for(state="detached")
            page.locator("#task-refer").click()
            page.wait_for_function("document.querySelector('#prompt textarea').value === '[refer] '")
            assert "Name one object" in page.locator("#hint").inner_text()
            prompt.press("End")
            prompt.press_sequentially(scene.objects[0].name)
            page.locator("#send").click()

            page.wait_for_function(r"/\{<\d+><\d+><\d+><\d+>\}/.test(document.querySelector('#chatbot').innerText)")
            page.locator("#annotated img").wait_for()
            first = page.locator("#chatbot").inner_text()
            src = page.locator("#annotated img").get_attribute("src")
            annotated = Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")

            # a follow-up turn in the same conversation (issue #31: the model installed before answered "yes")
            page.locator("#task-vqa").click()
            page.wait_for_function("document.querySelector('#prompt textarea').value === '[vqa] '")
            prompt.press("End")
            prompt.press_sequentially("how many shapes are there?")
            page.locator("#send").click()
            page.wait_for_function(f"document.querySelector('#chatbot').innerText.includes({count!r})")
            chat = page.locator("#chatbot").inner_text()
        finally:
            try:
                page.screenshot(path=str(shot))
                print(f"\nscreenshot of the web demo: {shot}")
            finally:
                ctx.close()

    assert f"[refer] {scene.objects[0].name}" in chat and first in chat
    assert chat.index(first) == 0 and chat.rstrip().endswith(count)      # the second answer is the last line
    [box] = parse_boxes(first.split(scene.objects[0].name, 1)[1])
    # the annotated image is the uploaded scene with the answer's box drawn in the first colour (red, 3 px)
    assert annotated.size == scene.image.size
    W, H = annotated.size
    bx1, by1, bx2, by2 = box.pixels(W, H)
    x1, y_mid = int(bx1) + 1, int((by1 + by2) / 2)
    assert annotated.getpixel((x1, y_mid)) == (255, 0, 0)
    assert annotated.getpixel((x1, y_mid)) != scene.image.getpixel((x1, y_mid))
