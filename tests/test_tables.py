"""Many runs as one table: load_runs with tag expressions, load_experiment(s) through
pyarrow.dataset (closed and live runs), and the same tree read by DuckDB."""
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import expman
from _util import make_experiment


# -- the tag-expression parser ----------------------------------------------------------------

@pytest.mark.parametrize("expr, tags, expected", [
    ("a", {"a"}, True),
    ("a", {"b"}, False),
    ("a AND b", {"a", "b"}, True),
    ("a AND b", {"a"}, False),
    ("a OR b", {"b"}, True),
    ("NOT a", {"b"}, True),
    ("not a", {"a"}, False),
    ("a AND (b OR c)", {"a", "c"}, True),
    ("a AND (b OR c)", {"b", "c"}, False),
    ("a AND b OR c", {"c"}, True),          # AND binds tighter than OR
    ("a OR b AND c", {"a"}, True),
    ("NOT a AND b", {"b"}, True),           # NOT binds tightest
    ("NOT (a AND b)", {"a"}, True),
    ("NOT NOT a", {"a"}, True),
    ('"and" OR x', {"and"}, True),          # a tag named like an operator, quoted
    ('"my tag"', {"my tag"}, True),
    ("lr=0.1 AND v1.2-rc", {"lr=0.1", "v1.2-rc"}, True),
    ("((a))", {"a"}, True),
])
def test_tag_expressions(expr, tags, expected):
    assert expman._parse_tag_expr(expr)(tags) is expected


@pytest.mark.parametrize("expr, position", [
    ("a AND", 5), ("(a OR b", 7), ("a b", 2), ("AND a", 0), ("a OR )", 5), ("", None),
    ("   ", None), ('"unterminated', 0), ("NOT", 3), ("a )", 2), ("()", 1),
])
def test_malformed_tag_expressions_name_the_position(expr, position):
    with pytest.raises(expman.InvalidInputError) as err:
        expman._parse_tag_expr(expr)
    text = str(err.value)
    assert "tag expression" in text
    if position is None:
        assert "empty" in text
    else:
        assert f"position {position}" in text


def test_deep_nesting_is_refused_not_a_crash():
    with pytest.raises(expman.InvalidInputError, match="nesting"):
        expman._parse_tag_expr("(" * 5000 + "a" + ")" * 5000)
    with pytest.raises(expman.InvalidInputError, match="nesting"):
        expman._parse_tag_expr("NOT " * 5000 + "a")


TAGS = ["a", "b", "c", "d"]


def trees():
    leaf = st.sampled_from(TAGS).map(lambda t: ("tag", t))
    return st.recursive(leaf, lambda kid: st.one_of(
        kid.map(lambda x: ("not", x)),
        st.tuples(st.just("and"), kid, kid),
        st.tuples(st.just("or"), kid, kid)), max_leaves=12)


def render(node):
    """Fully parenthesised text of a tree, with random operator case."""
    if node[0] == "tag":
        return node[1]
    if node[0] == "not":
        return f"NOT ({render(node[1])})"
    return f"({render(node[1])}) {node[0].upper()} ({render(node[2])})"


def truth(node, tags):
    if node[0] == "tag":
        return node[1] in tags
    if node[0] == "not":
        return not truth(node[1], tags)
    if node[0] == "and":
        return truth(node[1], tags) and truth(node[2], tags)
    return truth(node[1], tags) or truth(node[2], tags)


@settings(max_examples=300, deadline=None)
@given(trees(), st.sets(st.sampled_from(TAGS)))
def test_parser_agrees_with_the_tree_it_was_printed_from(tree, tags):
    assert expman._parse_tag_expr(render(tree))(tags) is truth(tree, tags)


# -- load_runs ---------------------------------------------------------------------------------

def test_load_runs_filters_by_tags_status_and_project(root, capsys):
    spec = {"r1": ["base", "cifar"], "r2": ["base", "tiny"], "r3": ["cifar"], "r4": []}
    for name, tags in spec.items():
        with make_experiment(root, "exp", run_name=name, tags=tags,
                             config={"lr": 0.1, "opt": {"name": "sgd"}},
                             project="p1" if name != "r4" else "p2") as exp:
            exp.log_metrics({"loss": 0.5, "status": 1.0, "run": 2.0}, step=0)
    runs = expman.load_runs(root, "exp", tags="base AND (cifar OR NOT tiny)")
    assert runs.column("run").to_pylist() == ["r1"]
    assert sorted(expman.load_runs(root, tags="NOT base").column("run").to_pylist()) == [
        "r3", "r4"]
    assert sorted(expman.load_runs(root, tags=["base"]).column("run").to_pylist()) == [
        "r1", "r2"]
    assert sorted(expman.load_runs(root, project="p1", tags="cifar").column(
        "run").to_pylist()) == ["r1", "r3"]
    table = expman.load_runs(root, "exp")
    assert table.column_names[:10] == ["experiment", "run", "project", "group", "rank",
                                       "status", "started_at", "duration_secs", "rows", "tags"]
    row = {r["run"]: r for r in table.to_pylist()}["r1"]
    # metrics named like fixed columns do not overwrite them
    assert row["status"] == "finished" and row["metrics.status"] == 1.0
    assert row["run"] == "r1" and row["metrics.run"] == 2.0
    assert row["params.lr"] == 0.1 and row["params.opt.name"] == "sgd" and row["loss"] == 0.5
    df = expman.load_runs(root, tags="tiny", to_pandas=True)
    assert list(df["run"]) == ["r2"]
    with pytest.raises(expman.InvalidInputError, match="position 8"):
        expman.load_runs(root, tags="base AND")
    # and the CLI
    assert expman.main(["list", str(root), "-e", "exp", "--tags", "cifar AND NOT base"]) == 0
    out = capsys.readouterr().out
    assert "r3" in out and "r1" not in out
    assert expman.main(["list", str(root), "-e", "exp", "--tags", "(cifar"]) == 1
    assert "position 6" in capsys.readouterr().err
    assert expman.main(["list", str(root), "--tags", "x"]) == 2


def test_load_runs_of_an_empty_root(root):
    table = expman.load_runs(root)
    assert table.num_rows == 0 and table.column_names[:2] == ["experiment", "run"]


def test_load_runs_keeps_its_column_types_when_nothing_matches(root):
    """No match used to give ten string columns: rank, duration_secs and rows are numbers
    whether or not a run matched (and a rank column of nulls is still int64)."""
    with make_experiment(root, "exp", run_name="r1") as exp:
        exp.log_metrics({"loss": 0.5}, step=0)
    types = {"experiment": "string", "run": "string", "project": "string", "group": "string",
             "rank": "int64", "status": "string", "started_at": "string",
             "duration_secs": "double", "rows": "int64", "tags": "string"}
    for table in (expman.load_runs(root, status="failed"), expman.load_runs(root),
                  expman.load_runs(root, tags="nothing")):
        assert {f.name: str(f.type) for f in table.schema if f.name in types} == types
    assert expman.load_runs(root, status="failed").num_rows == 0


# -- load_experiment(s) through pyarrow.dataset ------------------------------------------------

def test_closed_and_live_runs_in_one_table(root):
    with make_experiment(root, "a", run_name="closed") as exp:
        for step in range(10):
            exp.log_metrics({"loss": float(step), "run": -1.0}, step=step)
    live = make_experiment(root, "a", run_name="live", flush_interval_ms=20)
    try:
        for step in range(7):
            live.log_metrics({"acc": step / 10}, step=step)
            live.flush()  # one segment per row: several files for this run
        assert len(list((live.run_dir / "metrics").glob("seg-*.parquet"))) == 7
        (live.run_dir / "metrics" / ".seg-tmp-half.parquet").write_bytes(b"PAR1garbage")
        with make_experiment(root, "b", run_name="other") as other:
            other.log_metrics({"loss": 9.0, "experiment": 3.0})
        (root / "a" / "not-a-run").mkdir()

        table = expman.load_experiment(root, "a")
        assert table.column_names == ["experiment", "run", "step", "timestamp", "loss",
                                      "metrics.run", "acc"]
        assert table.column("run").to_pylist() == ["closed"] * 10 + ["live"] * 7
        assert table.column("step").to_pylist() == list(range(10)) + list(range(7))
        assert table.column("acc").to_pylist()[10:] == [s / 10 for s in range(7)]
        assert table.column("acc").null_count == 10 and table.column("loss").null_count == 7
        assert table.column("metrics.run").to_pylist()[:10] == [-1.0] * 10

        both = expman.load_experiments(root)
        assert set(both.column("experiment").to_pylist()) == {"a", "b"}
        assert both.num_rows == 18 and "metrics.experiment" in both.column_names
        some = expman.load_experiments(root, ["b"], keys=["loss", "nope"])
        assert some.column_names == ["experiment", "run", "step", "timestamp", "loss"]
        assert some.to_pylist()[0]["loss"] == 9.0
        with pytest.raises(expman.InvalidInputError, match="no experiment 'zzz'"):
            expman.load_experiments(root, ["zzz"])
    finally:
        live.close()
    after = expman.load_experiment(root, "a")  # compacted now: one file per run
    assert after.column("run").to_pylist() == ["closed"] * 10 + ["live"] * 7


def test_a_truncated_file_is_skipped_with_a_warning(root):
    for name in ("good", "bad"):
        with make_experiment(root, run_name=name) as exp:
            exp.log_metrics({"x": 1.0})
    path = root / "exp" / "bad" / "metrics.parquet"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.warns(expman.ExpmanWarning, match="bad"):
        table = expman.load_experiment(root, "exp")
    assert table.column("run").to_pylist() == ["good"]


def test_projects_select_experiments(root):
    with make_experiment(root, "a", project="p"):
        pass
    with make_experiment(root, "b") as exp:
        exp.log_metrics({"x": 1.0})
    assert expman.load_experiments(root, project="p").num_rows == 0
    assert expman.load_experiments(root, project="q").column_names[:2] == ["experiment", "run"]
    assert expman.load_experiments(root).num_rows == 1


def test_duckdb_and_polars_read_the_same_tree(root):
    import duckdb  # a dev requirement: a missing one must fail, not skip
    import polars as pl
    for name, n in (("r1", 5), ("r2", 3)):
        with make_experiment(root, "exp", run_name=name) as exp:
            for step in range(n):
                exp.log_metrics({"loss": 1.0 / (step + 1)} if name == "r1" else
                                {"loss": 2.0, "acc": 0.5}, step=step)
    pattern = str(root / "*" / "*" / "metrics.parquet")
    con = duckdb.connect()
    rows = con.execute(f"""
        SELECT split_part(filename, '/', -3) AS experiment,
               split_part(filename, '/', -2) AS run,
               count(*) AS n, min(loss) AS best, count(acc) AS with_acc
        FROM read_parquet('{pattern}', filename=true, union_by_name=true)
        GROUP BY ALL ORDER BY run""").fetchall()
    assert rows == [("exp", "r1", 5, 0.2, 0), ("exp", "r2", 3, 2.0, 3)]
    # the same answer as expman's own table
    ours = expman.load_experiment(root, "exp")
    got = con.execute("SELECT run, count(*), min(loss) FROM ours GROUP BY run ORDER BY run"
                      ).fetchall()
    assert got == [("r1", 5, 0.2), ("r2", 3, 2.0)]
    assert isinstance(ours, pa.Table)
    # the README's Polars recipes
    df = pl.from_arrow(expman.load_experiments(root))
    assert df.group_by("run").len().sort("run").rows() == [("r1", 5), ("r2", 3)]
    scanned = (pl.scan_parquet(pattern, missing_columns="insert", extra_columns="ignore",
                               include_file_paths="file")
               .with_columns(experiment=pl.col("file").str.split("/").list.get(-3),
                             run=pl.col("file").str.split("/").list.get(-2))
               .collect())
    assert scanned.group_by("experiment", "run").len().sort("run").rows() == [
        ("exp", "r1", 5), ("exp", "r2", 3)]
