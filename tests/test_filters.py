"""The run filter language (section 9.6): the parser against a plain reference evaluation,
its errors and their positions, and the places it is used: load_runs(where=), `expman list
--where` in a real subprocess, and /api/experiments/<exp>/runs?where= on a real Waitress server.
"""
import json
import math
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import expman
from _util import REPO, child_env, make_experiment

# -- a plain reference evaluation ----------------------------------------------------------------

FIELDS = {"name": "name", "status": "status", "tag": "tags"}
PREFIX_FIELD = {"p:": "params", "m:": "summary", "min:": "summary_min", "max:": "summary_max"}


def ref_values(row, prefix, key):
    """The values a key names: the run's own field; a prefixed mapping; else param, metric."""
    if not prefix and key in FIELDS:
        value = row.get(FIELDS[key])
        return list(value) if key == "tag" else [value]
    if prefix:
        mapping = row.get(PREFIX_FIELD[prefix]) or {}
        return [mapping[key]] if key in mapping else []
    for field in ("params", "summary"):
        if key in (row.get(field) or {}):
            return [row[field][key]]
    return []


def is_number(v):
    return type(v) in (int, float)


def ref_equal(values, literal):
    if literal.lower() in ("null", "none") and (not values or None in values):
        return True
    try:
        number = float(literal)
    except ValueError:
        number = None
    for v in values:
        if is_number(v) and number is not None:
            if v == number or (math.isnan(v) and math.isnan(number)):
                return True
        elif isinstance(v, bool):
            if ("true" if v else "false") == literal.lower():
                return True
        elif isinstance(v, str) and v == literal:
            return True
        elif v is not None and not isinstance(v, str) and str(v) == literal:
            return True
    return False


def text_of(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def ref_leaf(node, row):
    kind = node[0]
    if kind == "word":
        hay = [row["name"], row["status"], *row["tags"]]
        hay += [f"{k}={text_of(v)}" for k, v in row["params"].items()]
        return any(node[1].lower() in h.lower() for h in hay)
    if kind == "tagword":
        return node[1] in row["tags"]
    _cmp, prefix, key, op, literal = node
    values = ref_values(row, prefix, key)
    if op in ("=", "=="):
        return ref_equal(values, literal)
    if op == "!=":
        return not ref_equal(values, literal)
    if op in ("~", "!~"):
        if literal.startswith("/"):
            import re
            pattern = re.compile(literal[1:-1])
            hit = any(v is not None and pattern.search(text_of(v)) for v in values)
        else:
            hit = any(v is not None and literal.lower() in text_of(v).lower() for v in values)
        return hit if op == "~" else not hit
    number = float(literal)
    ops = {"<": lambda a: a < number, "<=": lambda a: a <= number,
           ">": lambda a: a > number, ">=": lambda a: a >= number}
    return any(is_number(v) and ops[op](float(v)) for v in values)


def ref_eval(node, row):
    if node[0] == "not":
        return not ref_eval(node[1], row)
    if node[0] == "and":
        return ref_eval(node[1], row) and ref_eval(node[2], row)
    if node[0] == "or":
        return ref_eval(node[1], row) or ref_eval(node[2], row)
    return ref_leaf(node, row)


# -- random rows and expressions -----------------------------------------------------------------

NUMBERS = [0, 0.01, 0.1, 1, 3, 10, -2.5]
NUMBER_TEXT = {0: ["0", "0.0"], 0.01: ["0.01", "1e-2", "0.010"], 0.1: ["0.1"], 1: ["1", "1.0"],
               3: ["3"], 10: ["10", "1e1"], -2.5: ["-2.5"]}
STRINGS = ["adam", "sgd", "Adam", "ad"]
TAGS = ["base", "cifar", "tiny"]


def numbers():
    return st.one_of(st.sampled_from(NUMBERS), st.just(float("nan")))


@st.composite
def rows(draw):
    params = {}
    if draw(st.booleans()):
        params["lr"] = draw(st.sampled_from(NUMBERS))
    if draw(st.booleans()):
        params["epochs"] = draw(st.sampled_from([1, 3, 10]))
    if draw(st.booleans()):
        params["opt"] = draw(st.sampled_from(STRINGS))
    if draw(st.booleans()):
        params["flag"] = draw(st.booleans())
    summary, low, high = {}, {}, {}
    for key in ("lr", "val/loss", "acc"):
        if draw(st.booleans()):
            summary[key] = draw(numbers())
            low[key] = draw(numbers())
            high[key] = draw(numbers())
    return {"name": draw(st.sampled_from(["run_a", "run_b", "base_c"])),
            "status": draw(st.sampled_from(["finished", "running", "failed"])),
            "tags": sorted(draw(st.sets(st.sampled_from(TAGS)))),
            "params": params, "summary": summary, "summary_min": low, "summary_max": high}


@st.composite
def leaves(draw):
    """(tree node, text) of one term."""
    kind = draw(st.sampled_from(["num", "eq", "sub", "field", "word", "tag"]))
    if kind == "word":
        word = draw(st.sampled_from(["run", "BASE", "adam", "lr=0.01", "tiny", "zzz"]))
        return ("word", word), word if word != "lr=0.01" else '"lr=0.01"'
    if kind == "tag":
        tag = draw(st.sampled_from(TAGS + ["nope"]))
        return ("tagword", tag), f"tag:{tag}"
    if kind == "field":
        key = draw(st.sampled_from(["name", "status", "tag"]))
        op = draw(st.sampled_from(["=", "!=", "~", "!~"]))
        literal = draw(st.sampled_from(["run_a", "running", "base", "fin", "/^run/", "x"]))
        if literal.startswith("/") and op not in ("~", "!~"):
            literal = "run_a"
        return ("cmp", "", key, op, literal), f"{key}{op}{literal}"
    prefix = draw(st.sampled_from(["", "p:", "m:", "min:", "max:"]))
    key = draw(st.sampled_from(["lr", "epochs", "opt", "flag", "val/loss", "acc", "missing"]))
    if kind == "num":
        op = draw(st.sampled_from(["<", "<=", ">", ">="]))
        number = draw(st.sampled_from(NUMBERS))
        literal = draw(st.sampled_from(NUMBER_TEXT[number]))
    elif kind == "eq":
        op = draw(st.sampled_from(["=", "==", "!="]))
        number = draw(st.sampled_from(NUMBERS))
        literal = draw(st.sampled_from(NUMBER_TEXT[number] + STRINGS + ["null", "true",
                                                                        "FALSE", "nan"]))
    else:
        op = draw(st.sampled_from(["~", "!~"]))
        literal = draw(st.sampled_from(["ad", "AD", "0.0", "/^a/", "/d$/", "1"]))
    return ("cmp", prefix, key, op, literal), f"{prefix}{key}{op}{literal}"


def trees():
    return st.recursive(leaves(), lambda kid: st.one_of(
        st.tuples(st.sampled_from(["NOT ", "not ", "!", "! "]), kid).map(
            lambda t: (("not", t[1][0]), f"{t[0]}({t[1][1]})")),
        st.tuples(kid, st.sampled_from([" AND ", " and ", " && ", "&&", " "]), kid).map(
            lambda t: (("and", t[0][0], t[2][0]), f"({t[0][1]}){t[1]}({t[2][1]})")),
        st.tuples(kid, st.sampled_from([" OR ", " Or ", " || ", "||"]), kid).map(
            lambda t: (("or", t[0][0], t[2][0]), f"({t[0][1]}){t[1]}({t[2][1]})"))),
        max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(trees(), st.lists(rows(), min_size=1, max_size=6))
def test_filter_agrees_with_a_plain_reference(tree, sample):
    node, text = tree
    predicate = expman._run_filter(text)
    for row in sample:
        assert predicate(row) is ref_eval(node, row), (text, row)


@settings(max_examples=200, deadline=None)
@given(trees(), st.sampled_from([" AND", " OR", " NOT", " (", " )", " lr>", " lr>abc",
                                 " x~/[/", ' name="open']))
def test_a_broken_end_is_reported_where_it_is(tree, tail):
    text = tree[1] + tail
    with pytest.raises(expman.InvalidInputError) as err:
        expman._run_filter(text)
    where = {" AND": len(text), " OR": len(text), " NOT": len(text), " (": len(text),
             " )": len(text) - 1, " lr>": len(text), " lr>abc": len(text) - 3,
             " x~/[/": len(text) - 2, ' name="open': len(text) - 5}[tail]
    assert err.value.position == where, (text, str(err.value))
    assert f"position {where}" in str(err.value)
    caret = err.value.caret().splitlines()
    assert caret[1].index("^") - 2 == where


ROW = {"name": "r1", "status": "finished", "tags": ["base", "my tag"], "project": "vision",
       "group": None, "hostname": "gpu1", "description": "first try", "rank": None,
       "last_step": 99, "rows": 100, "duration_secs": 12.5,
       "params": {"lr": 0.01, "epochs": 10, "opt": "adam", "model.depth": 18, "flag": True,
                  "note": "0.010"},
       "summary": {"lr": 0.5, "val/loss": 0.25, "acc": float("nan"), "eval:f1": 0.7},
       "summary_min": {"val/loss": 0.2, "lr": 0.001}, "summary_max": {"val/loss": 2.0}}


@pytest.mark.parametrize("text, expected", [
    ("lr>0.001", True), ("lr>0.01", False), ("lr>=0.01", True), ("lr=0.010", True),
    ("lr=1e-2", True), ("lr==0.01", True), ("lr=0.0100001", False),
    ("m:lr=0.5", True), ("metric:lr>0.4", True), ("p:lr>0.4", False), ("param:lr<1", True),
    ("last:lr=0.5", True), ("min:lr<0.01", True), ("max:lr>0", False),
    ("val/loss<=0.3", True), ("val/loss<0.25", False), ("min:val/loss<0.3", True),
    ("max:val/loss>1.5", True), ("max:val/loss<1.5", False),
    ("epochs!=10", False), ("epochs!=11", True), ("missing!=1", True), ("missing=null", True),
    ("epochs=null", False), ("missing>0", False),
    ("opt=adam", True), ("opt=Adam", False), ("opt=ada", False), ("opt~AD", True),
    ("opt~/^a.a/", True), ("opt~/^A/", False), ("opt~/^A/i", True), ("opt!~dam", False),
    ("note=0.010", True), ("note=0.01", False), ("note>0", False),   # text is not a number
    ("flag=true", True), ("flag=True", True), ("flag=false", False), ("flag>0", False),
    ("acc<1", False), ("acc>1", False), ("acc=nan", True), ("acc!=0.5", True),
    ("model.depth>=18", True), ("eval:f1>0.5", True), ('"eval:f1">0.5', True),
    ("status=finished", True), ("status=running", False), ("status~fin", True),
    ("tag:base", True), ("tag:bas", False), ("tag=base", True), ("tag~as", True),
    ('tag="my tag"', True), ("tag!=base", False), ("name=r1", True), ("name~R", True),
    ("project=vision", True), ("host=gpu1", True), ("step>=99", True), ("rows<100", False),
    ("duration>12", True), ("description~TRY", True), ("group=null", True),
    ("base", True), ("BASE", True), ("first", True), ("gpu", True), ("vision", True),
    ("opt=adam", True), ('"my tag"', True), ('"lr=0.01"', True), ("zzz", False),
    ("lr>0.001 epochs=10", True), ("lr>0.001 epochs=11", False),
    ("lr>0.1 OR epochs=10", True), ("NOT lr>0.1", True), ("!(lr>0.1)", True),
    ("!tag:base", False), ("lr>0.1 || tag:base && opt=sgd", False),
    ("(lr>0.1 || tag:base) && opt=adam", True), ("not (a or b) and c", False),
    ("", True), ("   ", True),
])
def test_terms(text, expected):
    predicate = expman._run_filter(text)
    assert (True if predicate is None else predicate(ROW)) is expected


@pytest.mark.parametrize("text, position", [
    ("lr>", 3), ("lr>abc", 3), ("lr>=nan", 4), ("(lr>1", 5), ("lr>1)", 4), ("AND a", 0),
    ("a OR", 4), ("a AND AND b", 6), ("x~/[a/", 3), ('name="abc', 5), ('"abc', 0),
    ("lr=>1", 3), ("=1", 0), ("a ! ", 4), ("a !", 3), ("()", 1), ("lr>1 OR (b AND NOT)", 18),
])
def test_malformed_filters_name_the_position(text, position):
    with pytest.raises(expman.InvalidInputError) as err:
        expman._run_filter(text)
    assert err.value.position == position, str(err.value)
    assert f"position {position}" in str(err.value) and "filter" in str(err.value)


def test_deep_filters_are_refused_not_a_crash():
    with pytest.raises(expman.InvalidInputError, match="nesting"):
        expman._run_filter("(" * 5000 + "a" + ")" * 5000)
    with pytest.raises(expman.InvalidInputError, match="nesting"):
        expman._run_filter("!" * 5000 + "a")


def test_tag_expressions_are_the_same_parser_in_its_tag_dialect():
    """Today's --tags expressions read as before: a bare word is a tag, exactly; and the
    && || ! spellings work there too."""
    match = expman._parse_tag_expr("base && (cifar || ! tiny)")
    assert match({"base", "cifar"}) and match({"base"}) and not match({"base", "tiny"})
    assert expman._parse_tag_expr("lr=0.1")({"lr=0.1"})
    assert not expman._parse_tag_expr("bas")({"base"})
    with pytest.raises(expman.InvalidInputError, match="position 2"):
        expman._parse_tag_expr("a b")


# -- where it is used ----------------------------------------------------------------------------

SPEC = {  # run: (params, tags, metric rows of (val/loss, lr))
    "r1": ({"lr": 0.1, "epochs": 10, "opt": "adam"}, ["base"], [(0.9, 0.5), (0.3, 0.4)]),
    "r2": ({"lr": 0.01, "epochs": 5, "opt": "sgd"}, ["base", "cifar"], [(0.8, 0.5), (0.2, 0.3)]),
    "r3": ({"lr": 0.001, "epochs": 10, "opt": "adam"}, [], [(1.0, 0.5), (0.6, 0.2)]),
}


@pytest.fixture
def filled(root):
    for name, (params, tags, values) in SPEC.items():
        with make_experiment(root, "exp", run_name=name, tags=tags, config=params) as exp:
            for step, (loss, lr) in enumerate(values):
                exp.log_metrics({"val/loss": loss, "lr": lr}, step=step)
    return root


def test_load_runs_where(filled):
    def names(**kw):
        return sorted(expman.load_runs(filled, "exp", **kw).column("run").to_pylist())
    assert names(where="lr>0.005") == ["r1", "r2"]
    assert names(where="m:lr>0.25") == ["r1", "r2"]            # the metric of a shared name
    assert names(where="val/loss<=0.3 AND tag:base") == ["r1", "r2"]
    assert names(where="opt=adam OR epochs!=10") == ["r1", "r2", "r3"]
    assert names(where="NOT opt=adam") == ["r2"]
    assert names(where="opt=adam", tags="base") == ["r1"]
    assert names(where="") == ["r1", "r2", "r3"]
    with pytest.raises(expman.InvalidInputError, match="position 3"):
        expman.load_runs(filled, "exp", where="lr>")


def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "expman.py"), *args],
                          capture_output=True, text=True, timeout=60, env=child_env())


def test_cli_list_where_in_a_subprocess(filled):
    proc = run_cli("list", str(filled), "-e", "exp", "--where", "lr>0.005 && epochs=10")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("r1 ") for line in lines)
    assert not any(line.startswith(("r2 ", "r3 ")) for line in lines)
    proc = run_cli("list", str(filled), "-e", "exp", "--where", "m:lr<0.25", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["name"] for r in json.loads(proc.stdout)["runs"]] == ["r3"]
    proc = run_cli("list", str(filled), "-e", "exp", "--where", "opt=nope")
    assert proc.returncode == 0 and "no runs matching the filters" in proc.stdout
    proc = run_cli("list", str(filled), "-e", "exp", "--where", "lr>0.1 AND (opt=adam")
    assert proc.returncode == 2
    err = proc.stderr.splitlines()
    assert err[0].startswith("expman: error: filter") and "position 20" in err[0]
    assert err[1] == "  lr>0.1 AND (opt=adam" and err[2] == "  " + " " * 20 + "^"
    proc = run_cli("list", str(filled), "--where", "lr>1")
    assert proc.returncode == 2 and "add -e" in proc.stderr


@pytest.fixture
def server(filled):
    srv = expman.make_server(filled, host="127.0.0.1", port=0)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield srv
    srv.close()
    thread.join(5)


def get(srv, path):
    try:
        with urllib.request.urlopen(srv.url + path, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_api_runs_where(server):
    def names(expr):
        status, body = get(server, "/api/experiments/exp/runs?where=" +
                           urllib.parse.quote(expr))
        assert status == 200, body
        return sorted(r["name"] for r in body["runs"])
    assert names("lr>0.005") == ["r1", "r2"]
    assert names("p:lr<0.05 && m:lr>0.25") == ["r2"]
    assert names("tag:cifar || opt~/^ad/") == ["r1", "r2", "r3"]
    assert names("") == ["r1", "r2", "r3"]
    assert names("épreuve") == []                                 # not UTF-8 mangled into a 500
    status, body = get(server, "/api/experiments/exp/runs?where=" +
                       urllib.parse.quote("lr>0.1 OR (x"))
    assert status == 400
    assert body["position"] == 12 and body["expression"] == "lr>0.1 OR (x"
    assert "position 12" in body["error"]
    assert names("epochs=5") == ["r2"]
    assert get(server, "/api/experiments/nope/runs?where=lr>1")[0] == 404


# -- min / max of each metric (issue 14 "best-run finding") -------------------------------------

FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.sampled_from([float("nan"), 0.0, -0.0, 1.5, -1e300]))


def brute_min_max(batches):
    """{key: (min, max)} over every logged value, NaN ignored; keys with no other value out."""
    seen = {}
    for batch in batches:
        for row in batch:
            for key, value in row.items():
                if value == value:
                    seen.setdefault(key, []).append(value)
    return {k: (min(v), max(v)) for k, v in seen.items()}


BATCHES = st.lists(st.lists(st.dictionaries(st.sampled_from(["loss", "acc", "val/loss"]), FLOATS,
                                            min_size=1), min_size=1, max_size=30),
                   min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(BATCHES)
def test_min_max_equal_brute_force(tmp_path_factory, batches):
    root = tmp_path_factory.mktemp("mm")
    with make_experiment(root, "exp", run_name="r") as exp:
        step = 0
        for batch in batches:      # each batch flushed on its own: min/max fold across flushes
            for row in batch:
                exp.log_metrics(row, step=step)
                step += 1
            exp.flush()
        live = expman.list_runs(root, "exp")[0]
    expected = brute_min_max(batches)
    run = expman.list_runs(root, "exp")[0]
    for row in (live, run):
        assert row["summary_min"] == {k: v[0] for k, v in expected.items()}
        assert row["summary_max"] == {k: v[1] for k, v in expected.items()}


@settings(max_examples=30, deadline=None)
@given(BATCHES)
def test_min_max_of_older_runs_from_parquet_statistics(tmp_path_factory, batches):
    """A run.yaml without them (an older expman, expman-rs): read off the Parquet statistics
    of its metrics file (one row group per batch here), or nothing when it has none."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    root = tmp_path_factory.mktemp("old")
    expected = brute_min_max(batches)
    for name, stats in (("with", True), ("without", False)):
        run = root / "exp" / name
        run.mkdir(parents=True)
        (run / "run.yaml").write_text(f"name: {name}\nstatus: finished\nrows: 1\n")
        keys = sorted({k for batch in batches for row in batch for k in row})
        with pq.ParquetWriter(run / "metrics.parquet", pa.schema(
                [("step", pa.int64())] + [(k, pa.float64()) for k in keys]),
                write_statistics=stats) as writer:
            for batch in batches:
                writer.write_table(pa.table({"step": pa.array(range(len(batch)), pa.int64()),
                                             **{k: pa.array([row.get(k) for row in batch],
                                                            pa.float64()) for k in keys}}))
    rows = {r["name"]: r for r in expman.list_runs(root, "exp")}
    assert rows["with"]["summary_min"] == {k: v[0] for k, v in expected.items()}
    assert rows["with"]["summary_max"] == {k: v[1] for k, v in expected.items()}
    assert rows["without"]["summary_min"] is None and rows["without"]["summary_max"] is None


def test_min_max_reach_the_catalog_the_api_and_the_filters(filled, server):
    runs = {r["name"]: r for r in expman.list_runs(filled, "exp")}   # now from the catalog
    assert runs["r1"]["summary_min"] == {"val/loss": 0.3, "lr": 0.4}
    assert runs["r1"]["summary_max"] == {"val/loss": 0.9, "lr": 0.5}
    table = expman.load_runs(filled, "exp", where="min:val/loss<0.25 OR max:val/loss>=1")
    assert sorted(table.column("run").to_pylist()) == ["r2", "r3"]
    status, body = get(server, "/api/experiments/exp/runs?where=" +
                       urllib.parse.quote("max:lr>=0.5 AND min:lr<0.25"))
    assert status == 200 and [r["name"] for r in body["runs"]] == ["r3"]
    assert body["runs"][0]["summary_min"] == {"val/loss": 0.6, "lr": 0.2}
    assert body["runs"][0]["summary_max"] == {"val/loss": 1.0, "lr": 0.5}


def test_runs_without_min_max_show_nothing(root):
    """An expman-rs run.yaml (vectors:, no summary_min) with no metrics file: None, not {}."""
    run = root / "exp" / "rs"
    run.mkdir(parents=True)
    (run / "run.yaml").write_text("name: rs\nstatus: FINISHED\nvectors: {loss: 0.5}\n")
    row = expman.list_runs(root, "exp")[0]
    assert row["summary"] == {"loss": 0.5}
    assert row["summary_min"] is None and row["summary_max"] is None
    assert expman._run_filter("min:loss<1")(row) is False
    assert expman._run_filter("m:loss<1")(row) is True


def test_list_heads_a_shared_name_apart_and_shows_the_best(filled, capsys):
    """`expman list`: the lr param and the lr metric get p:lr and m:lr (issue 14 defect 11);
    val/loss, whose name says lower is better, gets a min:val/loss column beside its last
    value once some run's best is not its last; --json carries summary_min/summary_max."""
    import re

    def table():
        assert expman.main(["list", str(filled), "-e", "exp"]) == 0
        lines = capsys.readouterr().out.splitlines()
        header = re.split(r"\s{2,}", lines[0].strip())
        return header, {line.split()[0]: dict(zip(header, re.split(r"\s{2,}", line.strip())))
                        for line in lines[1:]}
    header, cells = table()
    assert "p:lr" in header and "m:lr" in header and "lr" not in header
    assert "val/loss" in header and "min:val/loss" not in header   # every best is the last
    assert cells["r1"]["p:lr"] == "0.1" and cells["r1"]["m:lr"] == "0.4"
    with make_experiment(filled, "exp", run_name="r4", config={"lr": 0.5}) as exp:
        for step, loss in enumerate([0.7, 0.1, 0.4]):
            exp.log_metrics({"val/loss": loss}, step=step)
    header, cells = table()
    assert "min:val/loss" in header
    assert cells["r4"]["val/loss"] == "0.4" and cells["r4"]["min:val/loss"] == "0.1"
    assert cells["r3"]["val/loss"] == "0.6" and cells["r3"]["min:val/loss"] == "0.6"
    assert cells["r4"]["m:lr"] == "-"
    assert expman.main(["list", str(filled), "-e", "exp", "--json"]) == 0
    runs = {r["name"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert runs["r2"]["summary_min"] == {"val/loss": 0.2, "lr": 0.3}
    assert runs["r2"]["summary_max"] == {"val/loss": 0.8, "lr": 0.5}


def test_a_crashed_runs_min_max_take_in_the_rows_after_its_last_heartbeat(root):
    """A crashed run's run.yaml stops at its last heartbeat; the rows on disk after it count
    for min/max as they do for the last value (issue 14 defect 7)."""
    import yaml
    with make_experiment(root, "exp", run_name="k") as exp:
        for step, loss in enumerate([2.0, 1.0, 3.0]):
            exp.log_metrics({"loss": loss}, step=step)
        exp.flush()
        early = yaml.safe_load((root / "exp" / "k" / "run.yaml").read_text())
        for step, loss in enumerate([0.5, 4.0, 1.5], start=3):
            exp.log_metrics({"loss": loss}, step=step)
    assert early["rows"] == 3 and early["summary_min"] == {"loss": 1.0}
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    early.update(status="running", pid=proc.pid, finished_at=None)
    (root / "exp" / "k" / "run.yaml").write_text(yaml.safe_dump(early))
    row = expman.list_runs(root, "exp")[0]
    assert row["status"] == "crashed" and row["rows"] == 6
    assert row["summary"] == {"loss": 1.5}
    assert row["summary_min"] == {"loss": 0.5} and row["summary_max"] == {"loss": 4.0}


@settings(max_examples=200, deadline=None)
@given(st.lists(FLOATS, max_size=200))
def test_writer_min_max_helper_both_paths(values):
    """_min_max_valid: NumPy's fmin/fmax past 32 values (when NumPy is loaded), min()/max()
    below; both equal the plain answer, NaN ignored."""
    import array

    import numpy  # noqa: F401 - loaded, so lists past 32 values take the NumPy path
    finite = [v for v in values if v == v]
    want = (min(finite), max(finite)) if finite else (None, None)
    assert expman._min_max_valid(array.array("d", values)) == want


def test_min_max_of_a_big_batch_with_nan_first(root):
    with make_experiment(root, "exp", run_name="big") as exp:
        for step in range(2000):
            exp.log_metrics({"loss": float("nan") if step % 7 == 0 else (step - 900) ** 2 / 1e3,
                             "acc": float("nan")}, step=step)
    row = expman.list_runs(root, "exp")[0]
    losses = [(step - 900) ** 2 / 1e3 for step in range(2000) if step % 7]
    assert row["summary_min"] == {"loss": min(losses)} == {"loss": 0.0}
    assert row["summary_max"] == {"loss": max(losses)}
