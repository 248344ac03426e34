#!/usr/bin/env python3
"""Make docs/dashboard.png, the README's picture of the dashboard, from `expman demo`'s data.

    python3 docs/screenshot.py                 # writes docs/dashboard.png
    python3 docs/screenshot.py -o /tmp/x.png   # elsewhere

Writes the demo runs into a temporary directory (no live run: the picture must not depend on
when it was taken), serves them on a free port, opens the page in headless Chromium
(/usr/bin/chromium through Playwright, 1440x900) with the demo's resnet runs selected and a
log y axis, and
saves a PNG reduced to a palette so it stays small in the repository. Needs the dev
requirements (playwright; Pillow to shrink the PNG, optional).
"""
import argparse
import io
import os
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import expman  # noqa: E402

CHROMIUM = os.environ.get("EXPMAN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def shrink(png, colours=128):
    """The PNG reduced to a palette of `colours` (the page has few), when Pillow is there."""
    try:
        from PIL import Image
    except ImportError:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colours, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    return out.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=os.path.join(HERE, "dashboard.png"))
    args = parser.parse_args(argv)

    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory(prefix="expman-shot-") as tmp:
        root = os.path.join(tmp, "experiments")
        os.makedirs(root)
        expman._demo_data(root, live_secs=0)
        server = expman.make_server(root, host="127.0.0.1", port=0)
        thread = threading.Thread(target=server.run, name="screenshot-server", daemon=True)
        thread.start()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 900},
                                        color_scheme="light")
                page.set_default_timeout(60_000)
                page.goto(server.url + "/#exp=resnet_cifar10")
                rows = page.locator("#runs-table tbody tr[data-run]")
                expect(rows.first).to_be_visible()
                # curves drawn: the page reports points for the first chart's runs
                page.wait_for_function(
                    "() => { const e = window.expman; if (!e || !e.chartPoints) return false;"
                    " const p = e.chartPoints('train/loss') || {};"
                    " return Object.values(p).some(n => n > 0); }")
                # a log y axis: the diverged run would otherwise flatten every loss curve
                page.locator("label.switch:has(#logy)").click()
                expect(page.locator("#logy")).to_be_checked()
                page.wait_for_load_state("networkidle")
                page.evaluate("() => new Promise(r => requestAnimationFrame("
                              "() => requestAnimationFrame(r)))")
                png = page.screenshot(full_page=False)
                browser.close()
        finally:
            server.close()
            thread.join(10)
    data = shrink(png)
    with open(args.output, "wb") as f:
        f.write(data)
    print(f"{args.output}: {len(data) // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
