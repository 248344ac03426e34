"""The Media and Histograms panels in a real browser (headless Chromium via Playwright) against
a real Waitress server: images per tag with a step slider across runs, text shown as text,
audio, histogram heat maps drawn on canvas, and media arriving live over the stream.

Screenshots land in each test's tmp_path: look at them.
"""
import pytest

from _util import Child, child_env, open_page, playwright_or_skip, serving

sync_api = playwright_or_skip()
from test_dashboard import XSS  # noqa: E402

import expman  # noqa: E402

expect = sync_api.expect


def _solid_png(rgb, size=8):
    return expman._png_bytes(size, size, lambda x, y: rgb)


COLOURS = {0: (255, 0, 0), 10: (0, 255, 0), 20: (0, 0, 255)}


def _make_data(root):
    for name, shift in (("r1", 0.0), ("r2", 2.0)):
        with expman.Experiment("media", base_dir=root, run_name=name, capture_git=False) as exp:
            for step in range(30):
                exp.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
                if step in COLOURS:
                    exp.log_image("samples", _solid_png(COLOURS[step]), step=step)
                    exp.log_text("generation", f"{XSS} at step {step}", step=step)
                if step % 5 == 0:
                    exp.log_histogram("weights", [shift + (i % 50) / 10 + step / 30
                                                  for i in range(500)], step=step, bins=20)
            exp.log_audio("speech", b"RIFF\x24\x00\x00\x00WAVEfmt ", step=29, ext="wav")


@pytest.fixture(scope="module")
def media_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash_media") / "experiments"
    root.mkdir()
    _make_data(root)
    with serving(root) as srv:
        srv.root = root
        yield srv


CARD = "#media [data-testid=media-card][data-tag='{}']"


def _image_colour(page, run):
    """The colour of the image shown for run in the 'samples' card, once it has loaded."""
    return page.evaluate("""run => {
      const col = Array.from(document.querySelectorAll("#media [data-tag='samples'] [data-run-key]"))
        .find(e => e.dataset.runKey === run);
      const img = col && col.querySelector('img');
      if (!img || !img.complete || !img.naturalWidth) return null;
      const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
      return Array.from(ctx.getImageData(1, 1, 1, 1).data.slice(0, 3));
    }""", run)


def _set_slider(page, tag, index):
    page.evaluate("""([tag, i]) => {
      const s = document.querySelector("#media [data-tag='" + tag + "'] input[type=range]");
      s.value = String(i); s.dispatchEvent(new Event('input', { bubbles: true }));
    }""", [tag, index])


def test_media_panel_images_slider_text_and_histograms(ui, media_server, tmp_path):
    page = open_page(ui, media_server, "#exp=media&runs=media/r1,media/r2")
    expect(page.locator("[data-testid=media-panel]")).to_be_visible()
    samples = page.locator(CARD.format("samples"))
    expect(samples).to_be_visible()
    expect(samples.locator("[data-testid=media-run]")).to_have_count(2)  # side by side
    expect(samples.locator("[data-testid=media-step]")).to_have_text("20")  # newest first
    page.wait_for_function("() => document.querySelectorAll(\"#media [data-tag='samples'] img\")"
                           ".length === 2 && Array.from(document.querySelectorAll("
                           "\"#media [data-tag='samples'] img\")).every(i => i.naturalWidth > 0)")
    assert _image_colour(page, "media/r1") == [0, 0, 255]
    # the slider moves both runs to step 0 (red), then to 10 (green)
    _set_slider(page, "samples", 0)
    expect(samples.locator("[data-testid=media-step]")).to_have_text("0")
    page.wait_for_function("() => Array.from(document.querySelectorAll(\"#media [data-tag="
                           "'samples'] img\")).every(i => i.complete && i.naturalWidth > 0)")
    for run in ("media/r1", "media/r2"):
        assert _image_colour(page, run) == [255, 0, 0]
    _set_slider(page, "samples", 1)
    expect(samples.locator("[data-testid=media-run]").first).to_have_attribute("data-step", "10")
    page.wait_for_function("() => Array.from(document.querySelectorAll(\"#media [data-tag="
                           "'samples'] img\")).every(i => i.complete && i.naturalWidth > 0)")
    assert _image_colour(page, "media/r2") == [0, 255, 0]

    # text samples: shown as text, the markup inert
    text = page.locator(CARD.format("generation")).locator("[data-testid=media-text]")
    expect(text).to_have_count(2)
    expect(text.first).to_have_text(f"{XSS} at step 20")
    assert page.locator("#media pre img").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    # audio gets a player whose source the server sends as audio/wav
    audio = page.locator(CARD.format("speech")).locator("audio")
    expect(audio).to_have_count(2)
    src = audio.first.get_attribute("src")
    resp = page.request.get(media_server.url + src)
    assert resp.headers["content-type"] == "audio/wav"
    assert resp.headers["x-content-type-options"] == "nosniff"

    # histograms: one heat map per run, with coloured cells drawn
    hist = page.locator("[data-testid=hist-panel]")
    expect(hist).to_be_visible()
    expect(hist.locator("[data-testid=hist-card]")).to_have_count(2)
    page.wait_for_function("""() => Array.from(document.querySelectorAll('#hists canvas')).every(c => {
        if (!c.width) return false;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 40) n++;
        return n > 2000; })""")
    canvas = hist.locator("canvas").first
    box = canvas.bounding_box()
    canvas.hover(position={"x": box["width"] * 0.6, "y": box["height"] * 0.5})
    expect(hist.locator(".hist-tip").first).to_contain_text("step")
    page.screenshot(path=str(tmp_path / "media.png"), full_page=True)


def test_media_arrives_live_over_the_stream(ui, media_server, tmp_path):
    root = media_server.root
    go = tmp_path / "go"
    child = Child(f"""
        import os, time, expman

        def wait(name):
            while not os.path.exists({str(go)!r} + name):
                time.sleep(0.01)
        exp = expman.Experiment("media", base_dir={str(root)!r}, run_name="live",
                                flush_interval_ms=100, capture_git=False)
        png = expman._png_bytes(8, 8, lambda x, y: (0, 0, 255))
        exp.log_metrics({{"loss": 1.0}}, step=0)
        exp.log_image("samples", png, step=0)
        exp.log_histogram("weights", [1, 2, 3], step=0)
        exp.flush()
        print("first", flush=True)
        wait("1")
        exp.log_metrics({{"loss": 0.5}}, step=1)
        exp.log_image("samples", expman._png_bytes(8, 8, lambda x, y: (0, 255, 0)))
        exp.log_text("note", "<b>live</b>")
        exp.log_histogram("weights", [2, 3, 4])
        exp.flush()
        print("second", flush=True)
        wait("2")
        exp.close()
    """, cwd=str(tmp_path), env=child_env())
    try:
        child.wait_line(lambda line: line == "first")
        page = open_page(ui, media_server, "#exp=media&runs=media/live")
        samples = page.locator(CARD.format("samples"))
        expect(samples.locator("[data-testid=media-step]")).to_have_text("0")
        expect(page.locator("[data-testid=hist-card]")).to_have_count(1)
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        (tmp_path / "go1").write_text("")
        child.wait_line(lambda line: line == "second")
        # the stream announces the new media: the page fetches only what is new
        expect(samples.locator("[data-testid=media-step]")).to_have_text("1", timeout=15_000)
        expect(page.locator(CARD.format("note")).locator("pre")).to_have_text("<b>live</b>")
        media_calls = [u for u in requests if "/media?" in u]
        assert media_calls and all("since=0" not in u for u in media_calls), media_calls
        assert len(media_calls) <= 3, f"the page polled the media index: {media_calls}"
        page.wait_for_function("() => document.querySelectorAll('#hists canvas').length === 1")
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
    finally:
        (tmp_path / "go1").write_text("")
        (tmp_path / "go2").write_text("")
        assert child.wait() == 0, child.stderr
