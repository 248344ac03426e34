"""Rebuilding the run catalog (issue 13 item 1): a listing with no catalog reads every run's
files through fast paths (one open per file, a regex template per footer layout, YAML lines
read once a process). Each fast path must say exactly what the slow one says: the store's
reads, _footer_walk and pyarrow, PyYAML."""
import math
import os
import random
import shutil
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import expman
from _util import REPO, run_on_pty
from test_catalog import _pyarrow_min_max

EXP = "sweep"


def make_run(root, name, status="finished", config=None, steps=3):
    run = expman.Experiment(EXP, base_dir=str(root), run_name=name,
                            config={"lr": 0.1} if config is None else config, capture_git=False)
    for step in range(steps):
        run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 10}, step=step)
    run.close(status=status)
    return root / EXP / name


def pyyaml(data):
    return yaml.load(data, Loader=yaml.CSafeLoader)


def older_writer(run_path):
    """run.yaml as a writer before summary_min/summary_max left it (the listing then reads
    min/max off the metrics file's footer), metrics.parquet as pyarrow writes it (with
    statistics: expman's own plain writer leaves none)."""
    path = run_path / "metrics.parquet"
    pq.write_table(pq.read_table(path), path)
    meta = yaml.safe_load((run_path / "run.yaml").read_text())
    meta.pop("summary_min", None)
    meta.pop("summary_max", None)
    (run_path / "run.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def odd_experiment(root):
    """An experiment with every kind of run folder a rebuild meets."""
    make_run(root, "plain")
    make_run(root, "failed", status="failed", config={"lr": 1e-5, "model": {"depth": 3},
                                                      "tags": ["a", "b"], "note": "it's"})
    older_writer(make_run(root, "older"))
    older_writer(make_run(root, "older_no_stats"))
    pq.write_table(pa.table({"step": pa.array([0, 1], pa.int64()), "loss": [0.5, float("nan")]}),
                   root / EXP / "older_no_stats" / "metrics.parquet", write_statistics=False)
    cut = make_run(root, "truncated")
    data = (cut / "metrics.parquet").read_bytes()
    (cut / "metrics.parquet").write_bytes(data[:len(data) // 2])
    older_writer(make_run(root, "no_config"))
    os.remove(root / EXP / "no_config" / "config.yaml")
    commented = make_run(root, "commented")   # YAML the fast reader leaves to PyYAML
    text = (commented / "config.yaml").read_text()
    (commented / "config.yaml").write_text("# edited by hand\n" + text + "extra: \"quoted\"\n")
    garbled = make_run(root, "garbled")
    (garbled / "run.yaml").write_text("status: [unclosed\n")
    empty = make_run(root, "empty")
    (empty / "run.yaml").write_text("")
    seg = make_run(root, "leftover_segments")   # a compaction cut short: segments still there
    older_writer(seg)
    (seg / expman.SEGMENTS_DIR).mkdir(exist_ok=True)
    os.makedirs(root / EXP / "not_a_run")
    (root / EXP / "not_a_run" / "notes.txt").write_text("hello")


def store_path_read(root, name, now):
    """One run read the way a listing read it before the fast path: through the store,
    stamps first (the reference)."""
    store, exp_path = expman._open_store(str(root / EXP))
    run_path = store.join(exp_path, name)
    stamps = expman._file_stamps(store, run_path)
    found = expman._read_run_files(store, run_path, name, True)
    if found is None:
        return None, None
    row = expman._listed_run_row(store, run_path, name, *found, now)
    return row, expman._catalog_entry(found[0], row, *stamps)


@pytest.mark.parametrize("tail_bytes", [expman._TAIL_BYTES, 64])
def test_a_run_read_by_the_fast_path_equals_the_store_path(tmp_path, monkeypatch, tail_bytes):
    """Every row and catalog entry _read_listed_run makes equals the store path's, for each
    odd run; with a 64-byte tail the footer is re-read from the file (a footer beyond the
    tail) and must still agree."""
    odd_experiment(tmp_path)
    monkeypatch.setattr(expman, "_TAIL_BYTES", tail_bytes)
    store, exp_path = expman._open_store(str(tmp_path / EXP))
    names = sorted(expman._run_names(store, exp_path))
    assert len(names) == 11
    for name in names:
        expman._FOOTER_CHECKS.clear()
        fast = expman._read_listed_run(store, exp_path, name, 1e9)
        expman._FOOTER_CHECKS.clear()
        assert fast == store_path_read(tmp_path, name, 1e9), name
    rows = {n: expman._read_listed_run(store, exp_path, n, 1e9)[0] for n in names}
    assert rows["not_a_run"] is None
    assert rows["older"]["summary_min"] == {"loss": 1 / 3, "acc": 0.0}   # off the footer
    assert rows["older_no_stats"]["summary_min"] is None                  # unknown
    assert "truncated" in rows["truncated"]["metrics_error"]
    assert rows["commented"]["params"]["extra"] == "quoted"
    assert rows["garbled"]["corrupt"] and rows["empty"]["error"] == "empty run.yaml"
    assert rows["leftover_segments"]["summary_min"] == {"loss": 1 / 3, "acc": 0.0}
    assert rows["no_config"]["params"] == {}


def test_a_deleted_or_damaged_catalog_is_rebuilt_to_a_fresh_scan(tmp_path):
    odd_experiment(tmp_path)
    for i in range(70):   # enough runs that a rebuild writes a columnar base
        older_writer(make_run(tmp_path, f"r{i:02d}", config={"lr": 10 ** -(i % 4), "seed": i}))
    fresh = tmp_path / "fresh"
    shutil.copytree(tmp_path / EXP, fresh / EXP)

    def listing(root):   # the folder's path (in "path", in a garbled run.yaml's error) aside
        return [{k: v.replace(str(root), "ROOT") if k == "error" else v
                 for k, v in r.items() if k != "path"}
                for r in expman.list_runs(str(root), EXP)]

    first = listing(tmp_path)
    folder = tmp_path / EXP / expman.CATALOG_DIR
    assert any(n.endswith(expman._CATALOG_BASE) for n in os.listdir(folder))
    shutil.rmtree(fresh / EXP / expman.CATALOG_DIR, ignore_errors=True)
    reference = listing(fresh)
    assert first == reference and listing(tmp_path) == reference
    shutil.rmtree(folder)                                        # deleted
    assert listing(tmp_path) == reference
    for name in os.listdir(folder):                              # damaged: cut in half
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:len(data) // 2])
    (folder / "part-00000000000000000001-1-beef.ndjson").write_bytes(b"{not json\n")
    assert listing(tmp_path) == reference
    assert listing(tmp_path) == reference                        # and once more from it


# -- the footer: template == walk == pyarrow -------------------------------------------------

def footer(path):
    return expman._parquet_footer(str(path))


values = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64))
layouts = st.fixed_dictionaries({
    "keys": st.lists(st.sampled_from(["loss", "val/acc", "lr", "a b", "grad.norm", "x" * 40]),
                     min_size=0, max_size=4, unique=True),
    "rows": st.integers(1, 40),
    "group": st.integers(1, 40),
    "compression": st.sampled_from(["none", "snappy", "zstd"]),
    "stats": st.booleans(),
    "ints": st.booleans(),
    "dictionary": st.booleans(),
})


def write(path, layout, seed):
    rng = random.Random(seed)
    n = layout["rows"]
    pool = [None, float("nan"), -0.0, 0.0, 1.5, -2.0, 1e300, -math.inf, math.inf]
    cols = {"step": pa.array(range(n), pa.int64())}
    for key in layout["keys"]:
        cols[key] = pa.array([rng.choice(pool + [rng.uniform(-5, 5)]) for _ in range(n)],
                             pa.float64())
    if layout["ints"]:
        cols["count"] = pa.array([rng.randrange(100) for _ in range(n)], pa.int64())
    pq.write_table(pa.table(cols), path, row_group_size=layout["group"],
                   compression=layout["compression"], write_statistics=layout["stats"],
                   use_dictionary=layout["dictionary"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=layouts, seeds=st.tuples(st.integers(0, 999), st.integers(0, 999)))
def test_a_footer_template_answers_what_the_walk_and_pyarrow_answer(tmp_path, layout, seeds):
    """Two files of one layout with other values: the walk equals pyarrow on each, and the
    template made from the first answers for the second exactly what the walk answers (or
    does not match it at all)."""
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write(first, layout, seeds[0])
    write(second, layout, seeds[1])
    for path in (first, second):
        assert repr(expman._footer_walk(footer(path))) == repr(_pyarrow_min_max(str(path)))
    template = expman._FooterTemplate.of(footer(first))
    if template is None:
        assert not layout["keys"] and not layout["ints"] or expman._footer_walk(
            footer(first)) is not None
        return
    assert repr(template.min_max(footer(first))) == repr(expman._footer_walk(footer(first)))
    got = template.min_max(footer(second))
    if got is not None:
        assert repr(got) == repr(expman._footer_walk(footer(second)))
    for path in (first, second, first, second):   # what a listing calls: templates made on
        assert repr(expman._footer_min_max(footer(path))) == repr(_pyarrow_min_max(str(path)))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_footer_template_never_matches_a_footer_the_walk_reads_otherwise(data):
    """Bytes of a footer changed at random: whenever the template still matches, the walk
    of the changed bytes gives the same answer (the template matches only footers walked
    the same way)."""
    base = data.draw(st.sampled_from(FOOTERS))
    template = expman._FooterTemplate.of(base)
    assert template is not None
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(buf) - 1))
        buf[at] = data.draw(st.integers(0, 255))
    buf = bytes(buf)
    got = template.min_max(buf)
    if got is None:
        return
    assert repr(got) == repr(expman._footer_walk(buf))


def _footers():
    import tempfile
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, layout in enumerate([
                {"keys": ["loss", "acc"], "rows": 30, "group": 10, "compression": "snappy",
                 "stats": True, "ints": True, "dictionary": True},
                {"keys": ["loss"], "rows": 5, "group": 5, "compression": "none",
                 "stats": True, "ints": False, "dictionary": False}]):
            path = os.path.join(tmp, f"{i}.parquet")
            write(path, layout, i)
            out.append(footer(path))
        run = expman.Experiment("e", base_dir=tmp, run_name="r", capture_git=False)
        for step in range(20):
            run.log_metrics({"loss": 1.0 / (step + 1), "val/acc": step * 0.5}, step=step)
        run.close()
        out.append(footer(os.path.join(tmp, "e", "r", "metrics.parquet")))
    return out


FOOTERS = _footers()


def test_a_sweep_s_footers_are_matched_by_one_template(tmp_path, monkeypatch):
    """The runs of a sweep (same keys, other values) cost one template, not a walk each."""
    monkeypatch.setattr(expman, "_FOOTER_TEMPLATES", [])
    monkeypatch.setattr(expman, "_FOOTER_HEADS", {})
    monkeypatch.setattr(expman, "_FOOTER_TEMPLATE_BUDGET", [32])   # fresh, as in a new process
    layout = {"keys": ["loss", "val/acc"], "rows": 30, "group": 30, "compression": "snappy",
              "stats": True, "ints": False, "dictionary": True}
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.parquet")
        write(paths[-1], layout, i)
    for path in paths:
        assert repr(expman._footer_min_max(footer(path))) == repr(_pyarrow_min_max(str(path)))
    assert len(expman._FOOTER_TEMPLATES) == 1
    assert all(expman._FOOTER_TEMPLATES[0].min_max(footer(p)) is not None for p in paths)


# -- YAML: the fast reader == PyYAML on what expman writes, PyYAML's on the rest ---------------

plain_keys = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) |
          st.text(max_size=20) | st.sampled_from(["1e-05", "yes", "null", "0x1F", "it's", "",
                                                  "2026-01-01", "a: b", "- x", "#c"]))
configs = st.recursive(
    leaves | st.lists(leaves, max_size=3),
    lambda inner: st.dictionaries(plain_keys | st.text(min_size=1, max_size=8), inner,
                                  max_size=4),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(plain_keys, configs, max_size=6))
def test_configs_as_expman_writes_them_read_as_pyyaml_reads_them(config):
    data = expman._yaml_dump(expman._to_plain(config))
    expected = pyyaml(data)
    for _ in range(2):   # the second time from the line cache
        try:
            fast = expman._simple_yaml(data)
        except expman._NotSimple:
            continue
        assert repr(fast) == repr(expected)
    assert repr(expman._read_listed_yaml(None, "config.yaml", data) or None) == \
        repr(expected or None)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(plain_keys, st.integers() | st.floats(allow_nan=False, width=32) |
                       st.booleans() | st.from_regex(r"[a-z]{1,10}", fullmatch=True) |
                       st.dictionaries(plain_keys, st.integers(), max_size=3),
                       min_size=1, max_size=8))
def test_a_sweep_s_config_takes_the_fast_path(config):
    """The common shape (plain keys; numbers, words, nested mappings) is read without PyYAML."""
    data = expman._yaml_dump(config)
    assert repr(expman._simple_yaml(data)) == repr(pyyaml(data))


def test_real_run_files_and_the_line_cache(tmp_path):
    run = make_run(tmp_path, "r", config={"lr": 0.001, "layers": [64, 64], "empty": [],
                                          "none": {}, "name": "resnet"})
    for name in ("run.yaml", "config.yaml"):
        data = (run / name).read_bytes()
        assert repr(expman._simple_yaml(data)) == repr(pyyaml(data))
    data = b"a: []\nb: {}\nc:\n- 1\n"
    one, two = expman._simple_yaml(data), expman._simple_yaml(data)
    one["a"].append(1)
    one["b"]["x"] = 1
    assert two == {"a": [], "b": {}, "c": [1]}   # a cached line never hands out one list twice


@pytest.mark.parametrize("text", [
    "a: 1 # comment\n", 'a: "quoted\\n"\n', "a: &x 1\nb: *x\n", "a: [1, 2]\n", "a: {b: 1}\n",
    "a: |\n  text\n", "a: >\n  folded\n", "a: multi\n  line\n", "a:\n\t- 1\n", "a: 2026-01-01\n",
    "a: 0x1F\n", "a: 1_000\n", "? a\n: b\n", "a: !!str 1\n", "- 1\n- 2\n",
    "a:\n  - - 1\n", "a: b: c\n", "%YAML 1.1\n---\na: 1\n", "a: 1\n...\n", "\ufeffa: 1\n",
    "a: 12:30\n", "<<: {b: 1}\n"])
def test_odd_yaml_is_left_to_pyyaml(text):
    data = text.encode()
    with pytest.raises(expman._NotSimple):
        expman._simple_yaml(data)
    try:
        expected = expman._yaml_load(data)
    except expman.ExpmanError as exc:
        with pytest.raises(expman.ExpmanError) as got:
            expman._read_listed_yaml(expman._open_store(".")[0], "x.yaml", data)
        assert str(exc) in str(got.value)
    else:
        assert repr(expman._read_listed_yaml(None, "x.yaml", data)) == repr(expected)


# -- the runs table: each distinct value formatted once, as if each were formatted alone ---------

cells = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(
    [0.0, -0.0, float("nan"), 1.0, math.inf, 1e300, "x", "1", "", "a long text " * 4]),
    st.floats(), st.lists(st.integers(), max_size=2), st.just(expman._MISSING))


@settings(max_examples=300, deadline=None)
@given(st.lists(cells, max_size=30))
def test_memo_cells_equal_formatting_each_value_alone(values):
    runs = [{"params": {} if v is expman._MISSING else {"k": v},
             "summary": {} if v is expman._MISSING else {"k": v}} for v in values]
    for field, missing, fmt in (("params", expman._MISSING, expman._param_text),
                                ("summary", None, expman._metric_text)):
        alone = [fmt(r[field].get("k", missing)) for r in runs]
        assert expman._memo_cells(runs, field, "k", missing, fmt) == alone


def test_list_runs_without_the_cyclic_collector_and_turns_it_back_on(tmp_path, capsys):
    """`expman list` makes one row per run and no cycles: the collector is off while it
    lists (no collection at all during a 300-run rebuild) and on again after."""
    import gc
    for i in range(300):
        (tmp_path / EXP / f"r{i:03d}").mkdir(parents=True)
        (tmp_path / EXP / f"r{i:03d}" / "run.yaml").write_text(
            f"name: r{i:03d}\nstatus: finished\nstarted_at: '2026-01-01T00:00:{i % 60:02d}+00:00'\n")
        (tmp_path / EXP / f"r{i:03d}" / "config.yaml").write_text(f"lr: {i}\n")
    seen = []

    def count(phase, info):   # a collection, and whether it came during the listing
        if phase == "start":
            frame, listing = sys._getframe(1), False
            while frame is not None:
                listing = listing or frame.f_code is expman._list.__code__
                frame = frame.f_back
            seen.append(listing)

    gc.callbacks.append(count)
    try:
        assert gc.isenabled()
        assert expman.main(["list", str(tmp_path), "-e", EXP]) == 0
        gc.collect()
    finally:
        gc.callbacks.remove(count)
    assert "r299" in capsys.readouterr().out
    assert True not in seen and gc.isenabled() and seen[-1] is False


def test_a_footer_nested_without_end_is_left_to_pyarrow(tmp_path):
    """Struct headers nested thousands deep (a damaged or hostile file) exhaust the reader's
    recursion: the listing asks pyarrow (which refuses it) instead of failing."""
    run = make_run(tmp_path, "r")
    older_writer(run)
    body = b"\x15\x02" + b"\x1c" * 20000
    (run / "metrics.parquet").write_bytes(b"PAR1" + body + len(body).to_bytes(4, "little") + b"PAR1")
    with pytest.raises(RecursionError):
        expman._footer_min_max(body)
    (row,) = expman.list_runs(str(tmp_path), EXP)
    assert row["summary_min"] is None and row["summary_max"] is None


def test_a_rebuild_shows_its_progress_on_a_terminal_only(tmp_path):
    """`expman list -e` over 3,000 runs with no catalog draws a progress line on a terminal's
    stderr while it reads them, and nothing with --json or when stderr is piped."""
    import subprocess
    for i in range(3000):
        run = tmp_path / EXP / f"r{i:04d}"
        run.mkdir(parents=True)
        (run / "run.yaml").write_text(
            f"name: r{i:04d}\nstatus: finished\nstarted_at: '2026-01-01T00:{i // 60 % 60:02d}:"
            f"{i % 60:02d}+00:00'\nsummary:\n  loss: {1 / (i + 1)!r}\n")
        (run / "config.yaml").write_text(f"lr: {i / 1000!r}\nseed: {i}\n")
    argv = [sys.executable, os.path.join(REPO, "expman.py"), "list", str(tmp_path), "-e", EXP]

    def fresh():
        shutil.rmtree(tmp_path / EXP / expman.CATALOG_DIR, ignore_errors=True)

    fresh()
    code, terminal, piped = run_on_pty(argv, terminal="stderr", timeout=120)
    assert code == 0, terminal
    assert b"reading runs of sweep" in terminal and b"/3000 runs" in terminal
    assert piped.count(b"\n") == 3001   # every run, to the pipe
    fresh()
    code, terminal, piped = run_on_pty(argv + ["--json"], terminal="stderr", timeout=120)
    assert code == 0 and b"reading runs" not in terminal and b'"r2999"' in piped
    fresh()
    done = subprocess.run(argv, capture_output=True, timeout=120)
    assert done.returncode == 0 and done.stderr == b""


# -- a rebuild split across processes (the CLI, with no catalog yet) ------------------------------

FORKED_LIST = """
import os, sys
import expman
expman._FORK_SHARE = 20                          # 100+ runs: four processes
os.sched_getaffinity = lambda pid: set(range(4))  # four cores, whatever this machine has
expman._busy_cores = lambda: {load}                # and as busy as the test says
parent = os.getpid()
if {fail!r}:   # a child that dies on some runs: the parent must read its share itself
    real = expman._read_listed_run
    def flaky(store, exp_path, name, now):
        if os.getpid() != parent:
            os._exit(3)
        return real(store, exp_path, name, now)
    expman._read_listed_run = flaky
if not {fork!r}:
    expman._FORK_MAX = 1
sys.exit(expman.main(["list", {root!r}, "-e", "sweep", "--json"]))
"""


def forked_experiment(root):
    odd_experiment(root)
    for i in range(90):
        run = root / EXP / f"r{i:03d}"
        run.mkdir(parents=True)
        (run / "run.yaml").write_text(
            f"name: r{i:03d}\nstatus: {'failed' if i % 9 == 0 else 'finished'}\n"
            f"started_at: '2026-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00'\n"
            f"summary:\n  loss: {1 / (i + 1)!r}\n")
        (run / "config.yaml").write_text(f"lr: {i / 1000!r}\nseed: {i}\nname: x{i}\n")


def catalog_state(root):
    """({run name: catalog entry}, {pid of each catalog file's writer})."""
    store, exp_path = expman._open_store(str(root / EXP))
    entries = dict(expman._Catalog(store, exp_path).load().all_entries())
    pids = {n.split("-")[2] for n in os.listdir(root / EXP / expman.CATALOG_DIR)}
    return entries, pids


@pytest.mark.parametrize("fail", [False, True])
def test_a_rebuild_split_across_processes_lists_and_catalogs_what_one_process_does(tmp_path,
                                                                                   fail):
    """`expman list -e` with no catalog splits the reading across forked processes: the
    output, the warning about a damaged run.yaml and the catalog left behind (every closed
    run, each entry equal) are those of one process; each process wrote its own catalog file.
    A child that dies has its share read by the parent: nothing missing, nothing skipped."""
    import subprocess
    forked_experiment(tmp_path)

    def listing(fork):
        shutil.rmtree(tmp_path / EXP / expman.CATALOG_DIR, ignore_errors=True)
        code = FORKED_LIST.format(fail=fail and fork, fork=fork, root=str(tmp_path), load=0)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": REPO})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout, proc.stderr, catalog_state(tmp_path)

    out, err, (entries, pids) = listing(fork=True)
    # the catalog the processes left is read back as the same listing
    warm = subprocess.run([sys.executable, os.path.join(REPO, "expman.py"), "list",
                           str(tmp_path), "-e", EXP, "--json"], capture_output=True, text=True,
                          timeout=60)
    ref_out, ref_err, (ref_entries, ref_pids) = listing(fork=False)
    assert out == ref_out and '"r089"' in out and '"garbled"' in out
    assert warm.returncode == 0 and warm.stdout == ref_out
    assert "garbled" in err and "garbled" in ref_err   # reported, by whichever process read it
    # each process wrote its own file; children that died wrote none (the parent did)
    assert len(ref_pids) == 1 and len(pids) == (1 if fail else 4)
    assert entries.keys() == ref_entries.keys() and len(entries) >= 90
    for name, entry in ref_entries.items():
        assert entries[name] == entry, name


# -- YAML lines new to the process: "key: value" read in one match -----------------------------

pair_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_./-]{0,8}", fullmatch=True) | \
    st.sampled_from(["on", "No", "null", "True", "y", "n", "nan", "inf", "e5", "a-", "_"])
pair_values = st.one_of(
    st.from_regex(r"'[^'\n#\"\t\r]{0,12}'", fullmatch=True),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=6).map(   # any character
        lambda t: "'" + t.replace("'", "''") + "'"),
    st.from_regex(r"[-+]?[0-9]{1,4}\.[0-9]{0,4}([eE][-+][0-9]{1,3})?", fullmatch=True),
    st.from_regex(r"[-+]?(0|[1-9][0-9]{0,12})", fullmatch=True),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_./-]{0,8}", fullmatch=True),
    st.sampled_from(["yes", "OFF", "Null", "NULL", "~", "007", "1_000", "0x1F", "1e5", ".5",
                     "[]", "{}", "[ ]", "{a: 1}",
                     "'it''s'", "1.5e3", "2026-01-01", "a:", "-", "12:30", "nan", ".nan"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", "  "]), pair_keys, pair_values), min_size=1,
                max_size=6))
def test_key_value_lines_read_in_one_match_equal_pyyaml(pairs):
    """Lines of the shape _YAML_PAIR_LINE reads (and near misses it leaves to the long way)
    read as PyYAML reads them, from the match and again from the line cache."""
    text = "top:\n" + "".join(f"{indent}{key}: {value}\n" for indent, key, value in pairs)
    try:
        expected = pyyaml(text)
    except yaml.YAMLError:
        expected = None
    for _ in range(2):
        expman._YAML_LINES.clear() if _ == 0 else None
        try:
            fast = expman._simple_yaml(text.encode())
        except expman._NotSimple:
            continue
        assert expected is not None and repr(fast) == repr(expected), text


def test_a_run_yaml_s_new_lines_need_no_scalar_parsing(monkeypatch):
    """The lines new in each run.yaml of a sweep (name, times, values, seed) are read by
    the one-match path: with the long way's scalar and key readers broken, they still read."""
    text = (b"name: run00042\nstatus: finished\nstarted_at: '2026-11-15T00:00:42+00:00'\n"
            b"pid: 12345\nok: yes\nsummary:\n  m0: 0.004975124378109453\n  m1: -3\n"
            b"  m2: 1.5e-05\n  on: 1\ntags: []\nscalars: {}\n")
    expected = pyyaml(text)

    def broken(*args, **kwargs):
        raise AssertionError("the long way")

    expman._YAML_LINES.clear()
    monkeypatch.setattr(expman, "_simple_scalar", broken)
    monkeypatch.setattr(expman, "_simple_key", broken)
    lines = text.decode().splitlines()
    for line in lines[:5] + lines[6:9]:
        assert expman._simple_line(line) is expman._YAML_LINES[line]
    for line in lines[10:]:   # an empty list or mapping: kept as a kind, made for each file
        assert expman._simple_line(line) is expman._YAML_LINES[line]
        assert expman._YAML_LINES[line][1] in (expman._YAML_NEW_LIST, expman._YAML_NEW_MAP)
    with pytest.raises(AssertionError, match="the long way"):   # the key "on" is a bool
        expman._simple_line("  on: 1")
    monkeypatch.undo()
    one, two = expman._simple_yaml(text), expman._simple_yaml(text)
    assert repr(one) == repr(two) == repr(expected)
    assert one["tags"] is not two["tags"] and one["scalars"] is not two["scalars"]
    assert expected["summary"][True] == 1 and expected["ok"] is True


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[-+]?[0-9]{1,6}\.[0-9]{0,6}([eE][-+][0-9]{1,3})?", fullmatch=True) |
       st.from_regex(r"[-+]?(0|[1-9][0-9]{0,18})", fullmatch=True))
def test_plain_numbers_skip_the_resolver_loop_and_equal_pyyaml(text):
    """A plain decimal (a list item, a key, a value after two spaces) is read as PyYAML
    reads it without asking PyYAML's resolvers (a loop of regex matches per scalar)."""
    real = expman._yaml_resolvers
    expman._yaml_resolvers = None   # called: a TypeError
    try:
        value = expman._plain_scalar(text, text[0])
    finally:
        expman._yaml_resolvers = real
    expected = pyyaml(f"- {text}\n")[0]
    assert type(value) is type(expected) and repr(value) == repr(expected)


def test_a_rebuild_forks_only_onto_idle_cores(tmp_path):
    """Four cores: with no other task running a rebuild reads in four processes, with two
    in two, and with every core busy (six others) in this one only (a child would only add
    its costs)."""
    import subprocess
    forked_experiment(tmp_path)
    found = {}
    for load in (0, 2, 6):
        shutil.rmtree(tmp_path / EXP / expman.CATALOG_DIR, ignore_errors=True)
        code = FORKED_LIST.format(fail=False, fork=True, root=str(tmp_path), load=load)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": REPO})
        assert proc.returncode == 0, proc.stderr
        found[load] = (proc.stdout, len(catalog_state(tmp_path)[1]))
    assert [found[load][1] for load in (0, 2, 6)] == [4, 2, 1]
    assert found[0][0] == found[2][0] == found[6][0] and '"r089"' in found[6][0]


def test_an_interrupted_rebuild_does_not_wait_for_ever_on_its_readers(tmp_path):
    """Interrupted while it reads its own share (Ctrl-C sent to it alone), `expman list`
    ends: a child blocked writing more rows than a pipe holds is not waited for for ever."""
    import subprocess
    for i in range(600):
        run = tmp_path / EXP / f"r{i:03d}"
        run.mkdir(parents=True)
        (run / "run.yaml").write_text(f"name: r{i:03d}\nstatus: finished\nsummary:\n"
                                      f"  loss: {1 / (i + 1)!r}\n  note: '{'x' * 300}'\n")
    code = FORKED_LIST.format(fail=False, fork=True, root=str(tmp_path), load=2).replace(
        "sys.exit(", """real_read = expman._read_listed_run
count = [0]
def interrupted(store, exp_path, name, now):
    count[0] += 1
    if os.getpid() == parent and count[0] == 200:
        raise KeyboardInterrupt
    return real_read(store, exp_path, name, now)
expman._read_listed_run = interrupted
sys.exit(""")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode != 0 and '"r599"' not in proc.stdout


# -- a warm listing's stats, made in a forked child while the catalog is read -------------------

STAT_LIST = """
import os, sys
import expman
expman._StatChild.MIN_RUNS = {min_runs}
os.sched_getaffinity = lambda pid: set(range(2))   # two cores, one of them idle
expman._busy_cores = lambda: 0
parent = os.getpid()
real = expman._stat_run
count = [0]
def counted(base, metrics=True):
    count[0] += 1
    if {fail!r} and os.getpid() != parent and count[0] > 3:
        os._exit(3)   # a child that dies after 3 runs: the parent stats the rest
    return real(base, metrics)
expman._stat_run = counted
result = expman._StatChild.result
def told(self):
    forked = self.pid is not None
    found = result(self)
    print(f"stats: forked={{forked}} all={{found is not None and len(found) == len(self.names)}}",
          file=sys.stderr)
    return found
expman._StatChild.result = told
sys.exit(expman.main(["list", {root!r}, "-e", "sweep"] + {more!r}))
"""


def test_a_warm_listing_s_stats_from_a_forked_child_see_what_its_own_stats_see(tmp_path):
    """`expman list -e` of every run stats the runs' files in a forked child while it reads
    the catalog, then from the last run back until it meets the child. Its verdicts are
    those of stats made in the listing's own process: a
    run.yaml and a config.yaml edited in place, a metrics file cut short, a run.yaml that
    became a symlink and a deleted run are seen either way; a child that dies before it
    gets to all the runs costs nothing but the time (the parent stats the rest)."""
    import subprocess
    forked_experiment(tmp_path)
    make_run(tmp_path, "cut_later", steps=50)

    def listing(min_runs=10, fail=False, more=("--json",)):
        if kept.exists():   # each listing meets the catalog as it was before the edits
            shutil.rmtree(exp / expman.CATALOG_DIR)
            shutil.copytree(kept, exp / expman.CATALOG_DIR)
        code = STAT_LIST.format(min_runs=min_runs, fail=fail, root=str(tmp_path),
                                more=list(more))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": REPO})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout, proc.stderr

    exp, kept = tmp_path / EXP, tmp_path / "kept-catalog"
    listing(min_runs=10 ** 9)   # the catalog, written by a listing that stats for itself
    assert len(catalog_state(tmp_path)[0]) >= 90
    shutil.copytree(exp / expman.CATALOG_DIR, kept)
    (exp / "r005" / "config.yaml").write_text("lr: 0.5\nseed: 5\nname: edited\n")
    with open(exp / "r006" / "run.yaml", "a") as fh:   # in place: the folder's mtime stays
        fh.write("description: edited in place\n")
    cut = exp / "cut_later" / "metrics.parquet"
    with open(cut, "r+b") as fh:
        fh.truncate(cut.stat().st_size // 2)
    real = exp / "r007" / "run.yaml"
    moved = tmp_path / "r007.yaml"
    os.replace(real, moved)
    os.symlink(moved, real)
    shutil.rmtree(exp / "r008")

    out, err = listing()
    assert "stats: forked=True all=True" in err
    own, own_err = listing(min_runs=10 ** 9)
    assert "stats: forked=False all=False" in own_err
    died, died_err = listing(fail=True)
    assert "stats: forked=True all=True" in died_err
    assert out == own == died
    # the piped table (from the catalog's columns; no metrics file stat-ed) sees them too
    table, table_err = listing(more=())
    assert "stats: forked=True all=True" in table_err
    assert table == listing(min_runs=10 ** 9, more=())[0] == listing(fail=True, more=())[0]
    assert "edited" in table and "r008" not in table and "r089" in table
    runs = {run["name"]: run for run in __import__("json").loads(out)["runs"]}
    assert runs["r005"]["params"]["name"] == "edited" and runs["r005"]["params"]["lr"] == 0.5
    assert runs["r006"]["description"] == "edited in place"
    assert runs["cut_later"].get("metrics_error") and runs["r007"]["name"] == "r007"
    assert "r008" not in runs and "r089" in runs
