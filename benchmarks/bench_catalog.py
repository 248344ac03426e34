#!/usr/bin/env python
"""Listing and serving 10,000 runs: `expman list DIR -e E`, `expman list DIR`, `expman serve`
(time to the first answer, CPU while idle), before/after.

    python benchmarks/bench_catalog.py                       # 10,000 runs, cached in /tmp
    python benchmarks/bench_catalog.py --runs 2000 --repeat 3
    python benchmarks/bench_catalog.py --baseline /tmp/old_expman.py   # side by side
    python benchmarks/bench_catalog.py --page --baseline /tmp/main_expman.py   # the runs table
    python benchmarks/bench_catalog.py --baseline OLD --drop-caches --idle-secs 60
    python benchmarks/bench_catalog.py --baseline OLD --cold-repeat 3 --idle-secs 0 --installed

The experiment is written straight into the storage layout (what a finished sweep leaves:
run.yaml, config.yaml with 5 params, metrics.parquet of 200 steps x 5 metrics), once, into a
`--data` folder reused by later runs: logging 10,000 runs through the library takes minutes
and measures the writer, not the listing. Each timing is a fresh `python expman.py ...`
process (interpreter start, imports, listing, printing to a pipe), wall clock from spawn to
exit. "cold" is the first listing with no catalog (it builds one), "warm" the median of the
next N. With `--baseline FILE`, the same commands run against that copy of expman.py (e.g.
main before the catalog), alternating, so both see the same machine load.

`--page` times the dashboard's runs table on the experiment instead, in headless Chromium
(Playwright, /usr/bin/chromium): `expman serve` is started in a child (its catalog left as
it is), and once /api/health answers a fresh page opens `/#exp=sweep`. "first paint" is from
navigation until the first run row is in the table; "settled" until the sidebar lists the
experiments and a chart of the auto-selected runs is in (sort and filter are timed after
that, as a person would use them); "sort" from a click on the seed column's header until the
first row is another run (measured inside the page: performance.now() then
polling each animation frame); "filter" from an input event on the filter box (its 80 ms
debounce included) until the run count says "N of"; "runs JSON" the bytes of every answer of
the runs route the page received during the open (sizes of the bodies, not compressed).
Then, filter cleared, `--group` (default p:seed: one group per run) is chosen in the group-by
box: "shown" until the first group row is in the table, "sort" from a click on its column's
header until the first group row is another, and the bytes of the runs answers meanwhile.
`--drop-caches` (root only) adds "cold cache": the catalog is there, but the kernel's page
cache is dropped first (echo 3 > /proc/sys/vm/drop_caches), so every file is read from disk.
Serving: `expman serve DIR --port 0` is started for each expman side by side; "ready" is the
wall clock from spawn until GET /api/health answers, "experiments" until GET
/api/experiments (10,000 runs listed) answers; then, with no page open, the CPU the process
burns over `--idle-secs` is read from /proc/<pid>/stat (utime + stime), as % of one core.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def generate(exp_dir, runs):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    steps = 200
    table = pa.table({"step": pa.array(range(steps), pa.int64()),
                      "timestamp": pa.array([1_760_000_000_000_000 + i for i in range(steps)],
                                            pa.timestamp("us", tz="UTC")),
                      **{f"m{k}": pa.array([1.0 / (i + k + 1) for i in range(steps)])
                         for k in range(5)}})
    os.makedirs(exp_dir, exist_ok=True)
    for i in range(runs):
        path = os.path.join(exp_dir, f"run{i:05d}")
        os.makedirs(path, exist_ok=True)
        started = f"2026-11-{1 + i % 28:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00"
        meta = {"name": f"run{i:05d}", "experiment": os.path.basename(exp_dir),
                "status": "failed" if i % 50 == 49 else "finished", "started_at": started,
                "finished_at": started, "duration_secs": 12.5, "hostname": "bench",
                "pid": 1, "rows": steps, "last_step": steps - 1, "tags": ["bench"],
                "summary": {f"m{k}": 1.0 / (steps + k) for k in range(5)}}
        with open(os.path.join(path, "run.yaml"), "w") as f:
            yaml.safe_dump(meta, f, sort_keys=False)
        with open(os.path.join(path, "config.yaml"), "w") as f:
            yaml.safe_dump({"lr": 10 ** -(i % 5), "batch": 32 * (1 + i % 4), "seed": i,
                            "model": {"depth": i % 7, "width": 64}}, f)
        pq.write_table(table, os.path.join(path, "metrics.parquet"))


# `python expman.py` compiles the 20,000-line script on every start (a script's bytecode is
# never cached): 0.25 s quiet, over 1 s at load 5. The `expman` command pip installs imports
# the module, whose bytecode is cached; --installed starts it that way.
INSTALLED = ("import importlib.util, sys\n"
             "sys.dont_write_bytecode = False\n"   # as pip leaves it (PYTHONDONTWRITEBYTECODE)
             "spec = importlib.util.spec_from_file_location('expman', sys.argv.pop(1))\n"
             "module = importlib.util.module_from_spec(spec)\n"
             "sys.modules['expman'] = module\n"
             "spec.loader.exec_module(module)\n"
             "sys.exit(module.main(sys.argv[1:]))\n")


def launch(module, cmd, installed=False):
    """The command line of one listing: `python expman.py ...`, or as the installed command."""
    if installed:
        return [sys.executable, "-c", INSTALLED, module, *cmd]
    return [sys.executable, module, *cmd]


CPU = {}   # the last timed() command's user + sys CPU seconds (steadier than wall when loaded)


def timed(cmd):
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr[-2000:]}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["last"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, len(proc.stdout)


def _serve(module, root):
    """(process, url) of `expman serve root --port 0` once it answers /api/health."""
    import re
    import urllib.request
    proc = subprocess.Popen([sys.executable, module, "serve", root, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if found:
            url = found.group(1)
            break
    else:
        raise SystemExit(f"{module} serve printed no URL")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/api/health", timeout=5).read()
            return proc, url
        except OSError:
            time.sleep(0.05)  # polling with a deadline
    raise SystemExit(f"{module} serve did not answer")


_UNTIL_FIRST_ROW_CHANGES = """async sel => {
  const first = () => { const tr = document.querySelector('#runs-table tbody tr[data-run]');
                        return tr && tr.getAttribute('data-run'); };
  const before = first(), t0 = performance.now();
  document.querySelector(sel).click();
  while (first() === before) await new Promise(r => requestAnimationFrame(r));
  return performance.now() - t0;
}"""
_UNTIL_FILTERED = """async text => {
  const box = document.querySelector('#filter'), t0 = performance.now();
  box.value = text; box.dispatchEvent(new Event('input', { bubbles: true }));
  const count = () => document.querySelector('#runs-count').textContent;
  while (!/^\\d+ of /.test(count())) await new Promise(r => requestAnimationFrame(r));
  return [performance.now() - t0, count()];
}"""


_UNTIL_GROUPED = """async by => {
  const sel = document.querySelector('#group-by'), t0 = performance.now();
  if (!Array.from(sel.options).some(o => o.value === by)) return -1;
  sel.value = by; sel.dispatchEvent(new Event('change', { bubbles: true }));
  while (!document.querySelector('#runs-table tbody tr[data-group]'))
    await new Promise(r => requestAnimationFrame(r));
  return performance.now() - t0;
}"""
_UNTIL_FIRST_GROUP_CHANGES = """async sel => {
  const first = () => { const tr = document.querySelector('#runs-table tbody tr[data-group]');
                        return tr && tr.getAttribute('data-group'); };
  const before = first(), t0 = performance.now();
  document.querySelector(sel).click();
  while (first() === before) {   // the order asked may start with the same group: -1
    if (performance.now() - t0 > 20000) return -1;
    await new Promise(r => requestAnimationFrame(r));
  }
  return performance.now() - t0;
}"""
_UNFILTERED = """async () => {
  const box = document.querySelector('#filter');
  box.value = ''; box.dispatchEvent(new Event('input', { bubbles: true }));
  const count = () => document.querySelector('#runs-count').textContent;
  while (/ of /.test(count())) await new Promise(r => requestAnimationFrame(r));
}"""


def group_bench(page, sizes, by):
    """(ms until the first group row is shown after choosing group-by ``by``, ms until a sort
    by that column reorders the groups, bytes of the runs answers meanwhile)."""
    page.evaluate(_UNFILTERED)
    before = len(sizes)
    grouped = page.evaluate(_UNTIL_GROUPED, by)
    if grouped < 0:
        raise SystemExit(f"the page offers no group-by {by!r}")
    sort = page.evaluate(_UNTIL_FIRST_GROUP_CHANGES, f"th[data-col='{by}']")
    if sort < 0:   # sorted by that column already: the other way round
        sort = page.evaluate(_UNTIL_FIRST_GROUP_CHANGES, f"th[data-col='{by}']")
    return grouped, sort, int(sum(sizes[before:]))


def page_bench(args, root, modules):
    """First paint, sort and filter of the runs table, each expman side by side."""
    from playwright.sync_api import sync_playwright
    results = {which: [] for which in modules}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                     args=["--no-sandbox", "--disable-gpu"])
        exp_dir = os.path.join(root, "sweep")
        for which, module in modules.items():   # each server reads the catalog its own
            shutil.rmtree(os.path.join(exp_dir, ".catalog"), ignore_errors=True)   # expman
            timed(launch(module, ["list", root, "-e", "sweep"], True))             # wrote
            keep_catalog(exp_dir, which, len(modules))
        for _ in range(args.repeat):
            for which, module in modules.items():  # alternating: the same load for both
                use_catalog(exp_dir, which, len(modules))
                proc, url = _serve(module, root)
                try:
                    context = browser.new_context(viewport={"width": 1440, "height": 900})
                    page = context.new_page()
                    page.set_default_timeout(300_000)
                    sizes = []

                    def on_response(resp, sizes=sizes):
                        if "/api/experiments/sweep/runs" in resp.url and \
                                "/runs/" not in resp.url.split("?")[0][-7:]:
                            try:
                                sizes.append(len(resp.body()))
                            except Exception:  # noqa: BLE001 - a page gone away
                                pass
                    page.on("response", on_response)
                    t0 = time.perf_counter()
                    page.goto(url + "/#exp=sweep")
                    page.locator("#runs-table tbody tr[data-run]").first.wait_for()
                    first = time.perf_counter() - t0
                    opened = sum(sizes)
                    # settled: the sidebar's experiments and the selected runs' charts are in
                    page.locator("#experiments [data-exp]").first.wait_for()
                    page.locator("#charts [data-key]").first.wait_for()
                    settled = time.perf_counter() - t0
                    sort_ms = page.evaluate(_UNTIL_FIRST_ROW_CHANGES, "th[data-col='p:seed']")
                    sort2_ms = page.evaluate(_UNTIL_FIRST_ROW_CHANGES, "th[data-col='p:seed']")
                    filter_ms, count = page.evaluate(_UNTIL_FILTERED, args.filter)
                    grouped = group_bench(page, sizes, args.group) if args.group else None
                    results[which].append({"first_paint_s": first, "settled_s": settled,
                                           "sort_ms": sort_ms,
                                           "sort_again_ms": sort2_ms, "filter_ms": filter_ms,
                                           "filter_count": count, "open_json_bytes": opened,
                                           "all_json_bytes": int(sum(sizes))})
                    if grouped is not None:
                        results[which][-1].update(zip(("group_ms", "group_sort_ms",
                                                       "group_json_bytes"), grouped))
                    context.close()
                finally:
                    proc.terminate()
                    proc.wait(30)
        browser.close()
    load = os.getloadavg()
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    out = [{"expman": which, "runs": args.runs, **{k: round(med(rs, k), 3) for k in (
        "first_paint_s", "settled_s", "sort_ms", "sort_again_ms", "filter_ms", "open_json_bytes",
        "all_json_bytes") + (("group_ms", "group_sort_ms", "group_json_bytes")
                              if args.group else ())},
        "filter_count": rs[-1]["filter_count"], "repeats": len(rs)}
        for which, rs in results.items()]
    if args.json:
        print(json.dumps({"load_avg": load, "results": out}, indent=1))
        return
    print(f"runs table, {args.runs} runs, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}, median of {args.repeat}")
    print(f"{'expman':<9} {'first paint s':>13} {'settled s':>9} {'sort ms':>8} {'again ms':>9} "
          f"{'filter ms':>10} {'JSON on open':>13} {'JSON in all':>12}")
    for r in out:
        print(f"{r['expman']:<9} {r['first_paint_s']:>13.3f} {r['settled_s']:>9.3f} {r['sort_ms']:>8.0f} "
              f"{r['sort_again_ms']:>9.0f} {r['filter_ms']:>10.0f} {r['open_json_bytes']:>13,} "
              f"{r['all_json_bytes']:>12,}")
    if args.group:
        print(f"grouped by {args.group}: {'expman':<9} {'shown ms':>9} {'sort ms':>8} "
              f"{'JSON':>12}")
        for r in out:
            print(f"{'':<{13 + len(args.group)}}{r['expman']:<9} {r['group_ms']:>9.0f} "
                  f"{r['group_sort_ms']:>8.0f} {r['group_json_bytes']:>12,}")
def keep_catalog(exp_dir, which, sides):
    """Side by side, each expman's warm listings read the catalog its own cold listing
    wrote (a newer expman's base holds columns an older one ignores, and reading one the
    other wrote would time the wrong file): a copy of it is kept beside the experiment."""
    if sides > 1:
        kept = _kept_catalog(exp_dir, which)
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(os.path.join(exp_dir, ".catalog"), kept)


def use_catalog(exp_dir, which, sides):
    """Put back the catalog keep_catalog kept for this expman (untimed)."""
    if sides > 1:
        shutil.rmtree(os.path.join(exp_dir, ".catalog"), ignore_errors=True)
        shutil.copytree(_kept_catalog(exp_dir, which), os.path.join(exp_dir, ".catalog"))


def _kept_catalog(exp_dir, which):
    """Where keep_catalog keeps an expman's catalog: beside the runs folder of --data."""
    return os.path.join(os.path.dirname(os.path.dirname(exp_dir)), f"catalog-{which}")


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def cpu_secs(pid):
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(url, timeout=60):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def start_serving(module, root):
    """(process, url, seconds to /api/health, seconds to /api/experiments)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, module, "serve", root, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"(http://[^\s/]+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"{module} serve printed {line!r}")
    url = match.group(1)
    while True:
        try:
            get(url + "/api/health", timeout=5)
            break
        except OSError:
            time.sleep(0.01)
    ready = time.perf_counter() - t0
    get(url + "/api/experiments")
    return proc, url, ready, time.perf_counter() - t0


def bench_serve(modules, root, idle_secs):
    """{which: {"ready_s", "experiments_s", "idle_cpu_pct"}}: servers measured one after the
    other for start-up (each alone on the machine), then idle side by side."""
    out, procs = {}, {}
    try:
        for which, module in modules.items():
            proc, url, ready, listed = start_serving(module, root)
            procs[which] = proc
            out[which] = {"ready_s": round(ready, 3), "experiments_s": round(listed, 3)}
        time.sleep(2.0)  # past start-up work (a watcher's first pass, catalog writes)
        before = {w: cpu_secs(p.pid) for w, p in procs.items()}
        t0 = time.perf_counter()
        time.sleep(idle_secs)
        wall = time.perf_counter() - t0
        for which, proc in procs.items():
            out[which]["idle_cpu_pct"] = round(100 * (cpu_secs(proc.pid) - before[which]) / wall,
                                               2)
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
            proc.stdout.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data", default="/tmp/expman-bench-catalog")
    ap.add_argument("--baseline", help="another expman.py to time side by side")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--page", action="store_true",
                    help="time the dashboard's runs table instead of the CLI")
    ap.add_argument("--filter", default="seed>9990", help="what --page types in the filter")
    ap.add_argument("--group", default="p:seed",
                    help="--page: the group-by chosen after the filter ('' for none): time "
                         "until its first group row, and a sort of its column")
    ap.add_argument("--drop-caches", action="store_true",
                    help="also time a listing after dropping the page cache (root only)")
    ap.add_argument("--idle-secs", type=float, default=60.0,
                    help="how long an idle server's CPU is measured (0: no serving figures)")
    ap.add_argument("--only-serve", action="store_true", help="serving figures only")
    ap.add_argument("--commands", default="list -e,list,list -e --json",
                    help="which listings to time, comma-separated")
    ap.add_argument("--installed", action="store_true",
                    help="start each listing as the installed `expman` command does (an "
                         "import: bytecode cached), not as `python expman.py` (compiled)")
    ap.add_argument("--cold-repeat", type=int, default=1,
                    help="no-catalog listings per expman (alternating; the median is shown)")
    args = ap.parse_args()

    root = os.path.join(args.data, f"runs{args.runs}")
    exp_dir = os.path.join(root, "sweep")
    if not os.path.isfile(os.path.join(exp_dir, f"run{args.runs - 1:05d}", "metrics.parquet")):
        t0 = time.perf_counter()
        generate(exp_dir, args.runs)
        print(f"generated {args.runs} runs in {time.perf_counter() - t0:.1f} s into {root}",
              file=sys.stderr)
    modules = {"this": os.path.join(REPO, "expman.py")}
    if args.baseline:
        modules["baseline"] = args.baseline
    if args.page:
        return page_bench(args, root, modules)
    commands = {"list -e": ["list", root, "-e", "sweep"], "list": ["list", root],
                "list -e --json": ["list", root, "-e", "sweep", "--json"]}
    wanted = [c.strip() for c in args.commands.split(",")]
    commands = {label: cmd for label, cmd in commands.items() if label in wanted}
    if args.only_serve:
        commands = {}
    results = {}
    for label, cmd in commands.items():
        for attempt in range(args.cold_repeat):
            for which, module in modules.items():
                shutil.rmtree(os.path.join(exp_dir, ".catalog"), ignore_errors=True)
                cold, size = timed(launch(module, cmd, args.installed))
                r = results.setdefault((label, which), {
                    "cold": [], "cold_cpu": [], "warm": [], "warm_cpu": [], "bytes": size,
                    "cold_cache": None})
                r["cold"].append(cold)
                r["cold_cpu"].append(CPU["last"])
                if args.drop_caches and attempt == 0:  # the catalog just written, from disk
                    drop_caches()
                    r["cold_cache"] = timed(launch(module, cmd, args.installed))[0]
                keep_catalog(exp_dir, which, len(modules))
        # one untimed listing each: when the two keep their catalogs in different files, the
        # second one's cold run (which deletes .catalog/) left the first without its own
        for which, module in modules.items():
            use_catalog(exp_dir, which, len(modules))
            timed(launch(module, cmd, args.installed))
            keep_catalog(exp_dir, which, len(modules))
        for _ in range(args.repeat):
            for which, module in modules.items():  # alternating: the same load for both
                use_catalog(exp_dir, which, len(modules))
                results[(label, which)]["warm"].append(
                    timed(launch(module, cmd, args.installed))[0])
                results[(label, which)]["warm_cpu"].append(CPU["last"])
    load = os.getloadavg()
    out = []
    for (label, which), r in results.items():
        out.append({"command": f"expman {label}", "expman": which, "runs": args.runs,
                    "cold_s": round(statistics.median(r["cold"]), 3),
                    "cold_cpu_s": round(statistics.median(r["cold_cpu"]), 3),
                    "cold_cache_s": r["cold_cache"] and round(r["cold_cache"], 3),
                    "warm_median_s": round(statistics.median(r["warm"]), 3),
                    "warm_cpu_s": round(statistics.median(r["warm_cpu"]), 3),
                    "warm_min_s": round(min(r["warm"]), 3), "stdout_bytes": r["bytes"]})
    serving = bench_serve(modules, root, args.idle_secs) if args.idle_secs > 0 else {}
    load_after = os.getloadavg()
    if args.json:
        print(json.dumps({"load_avg": load, "results": out, "serve": serving,
                          "load_avg_after_serve": load_after}, indent=1))
        return
    if out:
        print(f"{args.runs} runs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"{'command':<26} {'expman':<9} {'no catalog s':>13} {'(CPU s)':>8} "
              f"{'cold cache s':>13} {'warm s':>8} {'(CPU s)':>8} {'min s':>8}")
        for r in out:
            cc = f"{r['cold_cache_s']:>13.3f}" if r["cold_cache_s"] is not None else f"{'-':>13}"
            print(f"{r['command']:<26} {r['expman']:<9} {r['cold_s']:>13.3f} "
                  f"{r['cold_cpu_s']:>8.3f} {cc} {r['warm_median_s']:>8.3f} "
                  f"{r['warm_cpu_s']:>8.3f} {r['warm_min_s']:>8.3f}")
    if serving:
        print(f"serve, {args.runs} runs, idle {args.idle_secs:.0f} s, load average after "
              f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        print(f"{'expman':<9} {'ready s':>8} {'experiments s':>14} {'idle CPU %':>11}")
        for which, r in serving.items():
            print(f"{which:<9} {r['ready_s']:>8.3f} {r['experiments_s']:>14.3f} "
                  f"{r['idle_cpu_pct']:>11.2f}")


if __name__ == "__main__":
    main()
