"""Property-based tests (hypothesis) of what a training script may pass to the logging API.

Whatever the keys and values (unicode, empty, very long, `/`-separated and non-string keys;
ints beyond 2**53, bools, NaN, +-inf, None, strings, lists, NumPy scalars, 0-d arrays, objects
whose conversion raises), each value is either stored and read back exactly or refused with an
ExpmanWarning naming its key; the files stay readable by plain pyarrow/PyYAML, no other row or
value is lost, and the writer thread lives on. Names never lead a write outside the root.

Every example gets its own temporary root (hypothesis reruns the test body, so the function
scoped `root` fixture cannot be used). Example counts are kept moderate so the file runs in
seconds; set HYPOTHESIS_PROFILE-style overrides locally if you want more.
"""
import decimal
import fractions
import io
import math
import os
import tempfile
import urllib.parse
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import expman

np = pytest.importorskip("numpy")

SETTINGS = settings(max_examples=60, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
REFUSED = object()
MAX_EXACT = 2 ** 53


def same_float(a, b):
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


# -- values: each strategy yields (value, what it must read back as) ---------------------------

class RaisingFloat:
    """An object whose conversion blows up with something other than TypeError/ValueError."""

    def __float__(self):
        raise RuntimeError("conversion exploded")

    def __repr__(self):
        return "RaisingFloat()"


class DeviceScalar:
    """A stand-in for a 0-d GPU tensor: only .item()."""

    def __init__(self, value):
        self.value = value

    def item(self):
        return self.value

    def __repr__(self):
        return f"DeviceScalar({self.value!r})"


def _int_expected(i):
    return float(i) if abs(i) <= MAX_EXACT else REFUSED


floats = st.floats(allow_nan=True, allow_infinity=True)
exact_ints = st.integers(-MAX_EXACT, MAX_EXACT)
edge_ints = st.sampled_from([MAX_EXACT - 1, MAX_EXACT, MAX_EXACT + 1, MAX_EXACT + 2,
                             -MAX_EXACT - 1, 2 ** 63 - 1, -2 ** 63, 2 ** 64, 10 ** 30,
                             2 ** 1100])
big_ints = st.one_of(st.integers(min_value=MAX_EXACT + 1), st.integers(max_value=-MAX_EXACT - 1),
                     edge_ints)

def _scalar_values(text_want):
    """Plain Python values; a str reads back as text_want(str) (REFUSED as a metric, itself as
    a log_scalar summary)."""
    return st.one_of(
        floats.map(lambda x: (x, x)),
        st.one_of(exact_ints, big_ints, edge_ints).map(lambda i: (i, _int_expected(i))),
        st.booleans().map(lambda b: (b, float(b))),
        st.just((None, REFUSED)),
        st.text(max_size=8).map(lambda s: (s, text_want(s))),
        st.binary(max_size=4).map(lambda b: (b, REFUSED)),
        st.lists(floats, max_size=3).map(lambda v: (v, REFUSED)),
        st.tuples(floats).map(lambda v: (v, REFUSED)),
        st.complex_numbers(allow_nan=False, max_magnitude=10).map(lambda c: (c, REFUSED)),
        st.just((RaisingFloat(), REFUSED)),
        st.decimals(allow_nan=False, allow_infinity=False, places=3,
                    min_value=-10 ** 6, max_value=10 ** 6).map(lambda d: (d, float(d))),
        st.fractions(max_denominator=1000).map(lambda f: (f, float(f))),
    )


scalar_values = _scalar_values(lambda s: REFUSED)

numpy_values = st.one_of(
    floats.map(lambda x: (np.float64(x), x)),
    st.floats(width=32).map(lambda x: (np.float32(x), float(np.float32(x)))),
    st.floats(width=16).map(lambda x: (np.float16(x), float(np.float16(x)))),
    floats.map(lambda x: (np.longdouble(x), x)),
    st.integers(-2 ** 63, 2 ** 63 - 1).map(lambda i: (np.int64(i), _int_expected(i))),
    st.integers(0, 2 ** 64 - 1).map(lambda i: (np.uint64(i), _int_expected(i))),
    st.integers(-128, 127).map(lambda i: (np.int8(i), float(i))),
    st.booleans().map(lambda b: (np.bool_(b), float(b))),
    floats.map(lambda x: (np.array(x), x)),
    st.integers(-2 ** 63, 2 ** 63 - 1).map(lambda i: (np.array(i, dtype=np.int64),
                                                     _int_expected(i))),
    st.booleans().map(lambda b: (np.array(b), float(b))),
    st.lists(floats, min_size=2, max_size=3).map(lambda v: (np.array(v), REFUSED)),
    st.just((np.zeros((2, 2)), REFUSED)),
    st.just((np.array("text"), REFUSED)),
    st.just((np.complex128(1 + 2j), REFUSED)),
    st.just((np.datetime64("2024-01-01"), REFUSED)),
)

values = st.one_of(scalar_values, numpy_values,
                   st.one_of(scalar_values, numpy_values).map(
                       lambda pair: (DeviceScalar(pair[0]), pair[1])))
# log_scalar keeps text as it is (as expman-rs does); a str from .item() is still refused
summary_values = st.one_of(_scalar_values(lambda s: s), numpy_values,
                           st.one_of(scalar_values, numpy_values).map(
                               lambda pair: (DeviceScalar(pair[0]), pair[1])))

# -- keys: (key, accepted?) --------------------------------------------------------------------

unicode_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FFFF,
                                              blacklist_categories=("Cs",)),
                       min_size=1, max_size=24)
keys = st.one_of(
    unicode_text.filter(lambda k: k not in ("step", "timestamp", "sentinel"))
    .map(lambda k: (k, True)),
    st.lists(st.text(alphabet="ab/ _.", max_size=4), min_size=1, max_size=5)
    .map("/".join).filter(bool).map(lambda k: (k, True)),
    st.integers(990, 1010).map(lambda n: ("k" * n, n <= 1000)),
    st.sampled_from(["", "step", "timestamp"]).map(lambda k: (k, False)),
    st.sampled_from(["\ud800", "loss\udc80", "\udfff/x"]).map(lambda k: (k, False)),
    st.one_of(st.integers(), st.floats(allow_nan=False), st.none(), st.booleans(),
              st.binary(max_size=3), st.tuples(st.integers())).map(lambda k: (k, False)),
)

rows_strategy = st.lists(st.lists(st.tuples(keys, values), max_size=4), min_size=1, max_size=4)


def new_root():
    tmp = tempfile.TemporaryDirectory(prefix="expman-prop-")
    return tmp, os.path.join(tmp.name, "experiments")


def check_files_are_plain(run_dir):
    """What kill -9, a user or another tool would read: plain Parquet and YAML."""
    table = pq.read_table(os.path.join(run_dir, "metrics.parquet"))
    for field in table.schema:
        if field.name not in ("step", "timestamp"):
            assert field.type == pa.float64(), field
    for name in ("run.yaml", "config.yaml"):
        with open(os.path.join(run_dir, name), encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        assert isinstance(data, dict), name
    return table


def names_key(messages, key, aliases=()):
    """Some message names key, or a key equal to it (0 and 0.0 are one dict key, and a batch
    of rows that logged both is warned about under the first)."""
    needles = {repr(k)[:30] for k in (key, *aliases) if _equal_key(k, key)}
    return any(needle in m for m in messages for needle in needles)


def _equal_key(a, b):
    try:
        return a == b and hash(a) == hash(b)
    except TypeError:
        return False


# The bugs this file found, pinned so that every run tries them (before the fix: silently
# stored rounded or as the real part, or the whole batch dropped).
@example(rows=[[(("a", True), (MAX_EXACT + 1, REFUSED))]])
@example(rows=[[(("a", True), (float("inf"), float("inf")))], [(("a", True), (2 ** 60, REFUSED))]])
@example(rows=[[(("c", True), (np.complex128(1 + 2j), REFUSED))]])
@example(rows=[[(("x", True), (np.longdouble(1.5), 1.5))], [(("x", True), (None, REFUSED))]])
@example(rows=[[(("good", True), (1.0, 1.0)), (("b", True), (RaisingFloat(), REFUSED))]])
@example(rows=[[(("good", True), (1.0, 1.0)), (("\ud800", False), (2.0, 2.0))]])
@example(rows=[[((0, False), (0.0, 0.0))], [((0.0, False), (None, REFUSED))]])
@SETTINGS
@given(rows=rows_strategy)
def test_any_metric_row_is_stored_exactly_or_refused_by_key(rows):
    tmp, root = new_root()
    with tmp, warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        exp = expman.Experiment("prop", base_dir=root, flush_interval_ms=5, capture_git=False)
        expected = []          # per row: {key: (accepted, expected value)}
        try:
            for i, pairs in enumerate(rows):
                row, want = {}, {}
                for (key, key_ok), (value, value_want) in pairs:
                    row[key] = value
                    want[key] = (key_ok, value_want)
                row["sentinel"] = float(i)
                exp.log_metrics(row)
                expected.append(want)
            exp.log_metrics({"sentinel": float(len(rows))})  # after the bad ones: still heard
            assert exp.flush() is True
            assert exp._writer.is_alive()
        finally:
            exp.close()
        assert not exp._writer.is_alive()
        messages = [str(w.message) for w in rec]
        # nothing was lost wholesale and the writer never gave up
        assert not [m for m in messages if "could not be stored" in m or "cannot write" in m
                    or "converting" in m], messages
        table = check_files_are_plain(str(exp.run_dir))
        data = expman.load_metrics(exp.run_dir).to_pydict()
        n = len(rows) + 1
        assert data["step"] == list(range(n))
        assert data["sentinel"] == [float(i) for i in range(n)]
        assert table.num_rows == n
        all_keys = [key for want in expected for key in want]
        for i, want in enumerate(expected):
            for key, (key_ok, value_want) in want.items():
                if not key_ok:
                    assert not (isinstance(key, str) and key in data
                                and key not in ("step", "timestamp")), key
                    assert names_key(messages, key, all_keys), (key, messages)
                    continue
                got = data.get(key, [None] * n)[i]
                if value_want is REFUSED:
                    assert got is None, (key, got)
                    assert names_key(messages, key, all_keys), (key, messages)
                else:
                    assert same_float(got, value_want), (key, got, value_want)
        assert expman.load_run(exp.run_dir)["status"] == "finished"


@example(pairs=[(("best", True), (np.float64(0.5), 0.5))])   # made run.yaml unwritable
@example(pairs=[(("", False), (1.0, 1.0)), (("k" * 1001, False), (1.0, 1.0))])
@SETTINGS
@given(pairs=st.lists(st.tuples(keys, summary_values), min_size=1, max_size=5))
def test_log_scalar_stores_or_refuses_and_run_yaml_stays_readable(pairs):
    tmp, root = new_root()
    with tmp, warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        exp = expman.Experiment("prop", base_dir=root, flush_interval_ms=5, capture_git=False)
        want = {}
        try:
            for (key, key_ok), (value, value_want) in pairs:
                exp.log_scalar(key, value)
                if key_ok and value_want is not REFUSED:
                    want[key] = value_want
            exp.log_metrics({"after": 1.0})
        finally:
            exp.close()
        messages = [str(w.message) for w in rec]
        check_files_are_plain(str(exp.run_dir))
        summary = expman.load_run(exp.run_dir)["summary"]
        assert summary.pop("after") == 1.0
        assert set(summary) == set(want), (summary, want)
        for key, value in want.items():
            assert same_float(summary[key], value), (key, summary[key], value)
        for (key, key_ok), (_value, value_want) in pairs:
            if not key_ok or value_want is REFUSED:
                assert names_key(messages, key, [k for (k, _), _v in pairs]), (key, messages)
        assert not [m for m in messages if "cannot write" in m], messages


# -- params, descriptions, tags ----------------------------------------------------------------

plain_scalars = st.one_of(st.none(), st.booleans(), st.integers(), unicode_text,
                          st.floats(allow_nan=False))
plain_params = st.recursive(
    plain_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(unicode_text, inner, max_size=3)),
    max_leaves=12)
weird_scalars = st.one_of(plain_scalars, st.floats(), st.sampled_from(
    ["\ud800", "a\udcffb", b"bytes\xff", np.float32(0.5), np.int64(2 ** 62), np.array(3.0),
     np.arange(3), {1, 2}, frozenset(), (1, "x"), RaisingFloat(), DeviceScalar(2),
     decimal.Decimal("1.5"), fractions.Fraction(1, 3), complex(1, 2)]))
weird_keys = st.one_of(unicode_text, st.integers(), st.none(), st.booleans(),
                       st.sampled_from(["\ud800", "", "a.b", "x/y"]))
weird_params = st.recursive(
    weird_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(weird_keys, inner, max_size=3)),
    max_leaves=12)


@SETTINGS
@given(params=st.dictionaries(unicode_text, plain_params, max_size=4))
def test_plain_params_round_trip_exactly(params):
    tmp, root = new_root()
    with tmp:
        with expman.Experiment("prop", base_dir=root, capture_git=False,
                               flush_interval_ms=5) as exp:
            exp.log_params(params)
        check_files_are_plain(str(exp.run_dir))
        assert expman.load_config(exp.run_dir) == params


@example(params={"\ud800": "\udcff"}, description="\ud800", tags=["\udc80"])
@SETTINGS
@given(params=st.dictionaries(weird_keys, weird_params, max_size=4),
       description=st.one_of(st.none(), st.text(max_size=20),
                             st.sampled_from(["\ud800 bad", "<b>x</b>", "a\0b"])),
       tags=st.lists(st.one_of(st.text(max_size=8), st.sampled_from(["\udc80", "x y"])),
                     max_size=3))
def test_any_params_description_and_tags_leave_readable_files(params, description, tags):
    tmp, root = new_root()
    with tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", expman.ExpmanWarning)
        exp = expman.Experiment("prop", base_dir=root, capture_git=False, flush_interval_ms=5,
                                config=params, description=description, tags=tags)
        try:
            exp.log_params(params)
            exp.log_metrics({"x": 1.0})
            assert exp.flush() is True
            assert exp._writer.is_alive() and exp._writer.failures == 0
        finally:
            exp.close()
        check_files_are_plain(str(exp.run_dir))
        run = expman.load_run(exp.run_dir)
        assert run["status"] == "finished" and run["rows"] == 1
        assert isinstance(run["config"], dict) and isinstance(run["description"], str)
        assert len(run["tags"]) == len(tags)


# -- names -------------------------------------------------------------------------------------

name_text = st.one_of(
    st.text(alphabet=st.sampled_from(list("./\\ :*?<>|\"'~$%\0\n\t-_=+@") + ["é", "日", "😀",
                                                                         "\u202e", "\ud800"]),
            max_size=12),
    st.sampled_from(["..", ".", "../x", "/etc/passwd", "a/../../b", "~root", "$HOME", " ",
                     "con", "a" * 300, "x" * 200, "\0", "..\\..\\x", "%2e%2e", "-rf"]),
    unicode_text)


def wsgi_get(app, path):
    """GET path from a bottle app without a socket (PEP 3333 environ)."""
    raw, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "",
               "PATH_INFO": urllib.parse.unquote(raw).encode("utf-8").decode("latin-1"),
               "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
               "HTTP_HOST": "127.0.0.1:8000", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
               "wsgi.errors": io.StringIO(), "wsgi.multithread": True,
               "wsgi.multiprocess": False, "wsgi.run_once": False}
    status = []
    body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    return int(status[0].split()[0]), body


@SETTINGS
@given(exp_name=name_text, run_name=name_text)
def test_names_are_refused_or_made_safe_inside_the_root(exp_name, run_name):
    tmp, root = new_root()
    with tmp:
        os.makedirs(root)
        try:
            exp = expman.Experiment(exp_name, base_dir=root, run_name=run_name,
                                    capture_git=False)
        except expman.InvalidInputError as exc:
            assert str(exc)  # refused with a clear error: nothing was written
            assert not os.listdir(root) or all(
                os.path.isdir(os.path.join(root, d)) for d in os.listdir(root))
            return
        exp.log_metrics({"x": 1.0})
        exp.close()
        real_root = os.path.realpath(root)
        run_dir = os.path.realpath(exp.run_dir)
        exp_dir = os.path.dirname(run_dir)
        assert os.path.dirname(exp_dir) == real_root, (exp_dir, real_root)
        for part in (os.path.basename(exp_dir), os.path.basename(run_dir)):
            assert not part.startswith(".") and part.strip() == part and part
            assert "/" not in part and "\\" not in part and "\0" not in part
        for base, _dirs, files in os.walk(tmp.name):   # nothing written beside the root
            for name in files:
                assert os.path.realpath(os.path.join(base, name)).startswith(real_root + os.sep)
        # whatever name it got, every reader and the server find it by that name
        [listed] = expman.list_experiments(root)
        assert listed["name"] == exp.experiment
        assert [r["name"] for r in expman.list_runs(root, exp.experiment)] == [exp.run_name]
        app = expman.make_app(root, live=False)
        q = urllib.parse.quote
        status, body = wsgi_get(app, f"/api/experiments/{q(exp.experiment, safe='')}/runs/"
                                     f"{q(exp.run_name, safe='')}/metrics")
        assert status == 200, body
        status, _ = wsgi_get(app, f"/api/experiments/{q(exp_name, safe='', errors='replace')}"
                                  f"/runs")
        assert status in (200, 404)    # the raw name, if it differs: a clean 404, never 500
