#!/usr/bin/env python3
"""expman: a fast, local-first experiment manager for machine learning, in one file.

Log from a training script without ever waiting on I/O, keep everything as plain Parquet and
YAML, and watch every run live in a browser::

    import expman
    expman.init("resnet_cifar10", config={"lr": 1e-3})
    for step in range(1000):
        expman.log_metrics({"train/loss": 1 / (step + 1)}, step=step)
    # closed (and flushed) automatically when the script exits

    $ expman serve ./experiments        # dashboard at http://127.0.0.1:8000

Copy this file into a project and ``import expman``: it needs only pyarrow and pyyaml to log;
bottle and waitress are imported only to serve the dashboard.

Where things are (``grep -n '^# [0-9]\\|^# --\\|^// --- [0-9]' expman.py`` prints the full map)::

    1 Imports & compat         lazy modules, optional imports
    2 Constants & environment  every EXPMAN_* variable and every limit
    3 Errors                   ExpmanError, InvalidInputError, ExpmanWarning
    4 Small utilities          names, time, JSON, _Progress, PNG encoding
    5 Storage layout           the folder drawing, stores (local, s3://), 5.1 _SegmentLog,
                               5.2 chart summaries
    6 Data model               statuses, metric values, 6.1 metric goals, 6.2 media items
    7 Writer engine            _Writer: the thread a log call's row goes to, flushes, close
    8 Public logging API       8.2 Experiment (log_metrics...), 8.3 exit hooks, 8.5 shortcuts
    9 Readers & queries        9.1 run catalog, 9.2 load_metrics, 9.5 load_experiment, 9.7 reap
    10 Integrations            TensorBoard import/export, SummaryWriter, framework callbacks
    11 Server & JSON API       11.3 routes, 11.4 the SSE stream, 11.5 security, 11.6 serving
    12 CLI                     one subsection per command, 12.12 the parser, main()
    13 Dashboard page          DASHBOARD_HTML; its script's map is // --- 13.N (13.4 charts)

MIT License

Copyright (c) 2026 the expman authors

Permission is hereby granted, free of charge, to any person obtaining a copy of this software
and associated documentation files (the "Software"), to deal in the Software without
restriction, including without limitation the rights to use, copy, modify, merge, publish,
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

__version__ = "0.1.0"

__all__ = [
    # logging
    "Experiment", "init", "log_params", "log_metrics", "log_vector", "log_scalar", "info",
    "warn", "save_artifact", "flush", "close", "get_run", "is_primary",
    "log_image", "log_figure", "log_histogram", "log_audio", "log_video", "log_text",
    # reading
    "list_experiments", "list_runs", "load_run", "load_config", "load_metrics", "metric_keys",
    "metric_stats", "load_log", "list_artifacts", "load_experiment", "load_experiments",
    "load_runs", "read_media", "read_media_bytes", "read_histograms",
    # serving
    "make_app", "make_server", "serve",
    # integrations
    "SummaryWriter", "LightningLogger", "TransformersCallback", "KerasCallback",
    # errors and constants
    "ExpmanError", "InvalidInputError", "ExpmanWarning", "STATUSES", "main",
]


# 1 Imports & compat #########################################################################

import array
import atexit
import collections
import collections.abc
import contextlib
import copy
import datetime as _dt
import getpass
import importlib
import io
import itertools
import json
import math
import operator
import os
import pathlib
import re
import shutil
import signal
import struct
import sys
import threading
import time
import warnings
import zlib

_PY_VERSION = sys.version.split()[0]   # platform.python_version(), without platform
_IS_WINDOWS = os.name == "nt"


class _LazyModule:
    """A module imported on first attribute access.

    ``import pyarrow`` costs 100-200 ms (it pulls in NumPy). Training scripts should not pay it
    at ``import expman``; the writer thread pays it in the background after ``init()``. On first
    use the proxy replaces itself in this module's globals, so later lookups are plain globals.
    """

    def __init__(self, global_name, module_name):
        self._global_name, self._module_name = global_name, module_name

    def __getattr__(self, attr):
        module = importlib.import_module(self._module_name)
        globals()[self._global_name] = module
        return getattr(module, attr)


# Not needed to log, so not paid by ``import expman`` (together 30-40 ms; logging alone pulls
# in traceback and tokenize): yaml is first used by init(), the others by the CLI, server, git.
yaml = _LazyModule("yaml", "yaml")
logging = _LazyModule("logging", "logging")
platform = _LazyModule("platform", "platform")
socket = _LazyModule("socket", "socket")
subprocess = _LazyModule("subprocess", "subprocess")
pa = _LazyModule("pa", "pyarrow")
pq = _LazyModule("pq", "pyarrow.parquet")
pc = _LazyModule("pc", "pyarrow.compute")
pafs = _LazyModule("pafs", "pyarrow.fs")
pads = _LazyModule("pads", "pyarrow.dataset")



class _LazyLog:
    """``logging.getLogger("expman")``, made on first use (see the lazy modules above)."""

    def __getattr__(self, attr):
        logger = logging.getLogger(__name__)
        globals()["_log"] = logger
        return getattr(logger, attr)


_log = _LazyLog()


# 2 Constants & environment ##################################################################

STATUSES = ("running", "finished", "failed", "interrupted", "crashed")
ENV_DIR = "EXPMAN_DIR"                 # default root instead of ./experiments
ENV_RUN_NAME = "EXPMAN_RUN_NAME"       # default run name
ENV_HOSTNAME = "EXPMAN_HOSTNAME"       # host name recorded in run.yaml (pid checks apply there)
ENV_REMOTE_FLUSH_MS = "EXPMAN_REMOTE_FLUSH_MS"  # minimum flush interval on object stores
ENV_PROJECT = "EXPMAN_PROJECT"         # default project of new runs (init(project=...))
ENV_TAGS = "EXPMAN_TAGS"               # comma-separated tags added to every new run
ENV_RANK = "EXPMAN_RANK"               # this process's rank (overrides RANK, SLURM_PROCID...)
ENV_GROUP = "EXPMAN_GROUP"             # the group of a distributed job's runs (overrides job ids)
ENV_TOKEN = "EXPMAN_TOKEN"             # `serve` access token (instead of --token on the command line)
ENV_DEBUG = "EXPMAN_DEBUG"             # the CLI prints full tracebacks instead of one line
# Object stores (s3://...): each falls back to the usual AWS_* variable named beside it.
ENV_S3_ENDPOINT = "EXPMAN_S3_ENDPOINT"      # AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL
ENV_S3_REGION = "EXPMAN_S3_REGION"          # AWS_REGION, AWS_DEFAULT_REGION
ENV_S3_ACCESS_KEY = "EXPMAN_S3_ACCESS_KEY"  # AWS_ACCESS_KEY_ID
ENV_S3_SECRET_KEY = "EXPMAN_S3_SECRET_KEY"  # AWS_SECRET_ACCESS_KEY
ENV_S3_SESSION_TOKEN = "EXPMAN_S3_SESSION_TOKEN"  # AWS_SESSION_TOKEN
DEFAULT_ROOT = "experiments"
DEFAULT_FLUSH_INTERVAL_MS = 500
DEFAULT_HEARTBEAT_SECS = 5.0
STALE_HEARTBEATS = 6                   # a heartbeat older than this many intervals: crashed
DRAIN_CHUNK_ROWS = 2_048               # the writer converts queued rows this many at a time
# The writer hands the GIL back to the training thread after holding it this long (between two
# slices of its work: a drain chunk, one column of a segment), sleeping this long so the waiting
# thread takes it; else a log call waits for CPython's forced switch (5 ms) and a C step after it.
# Each hand-over costs one log call about a slice: 3 ms keeps that under the 5 ms target and the
# hand-overs few (~300 in a 1M-row loop: under its 0.1 % of calls, so p99.9 is not one of them).
WRITER_GIL_SLICE_SECS = 0.003
WRITER_GIL_PAUSE_SECS = 0.00005
MAX_PENDING_BYTES = 64 << 20           # queued rows' estimated size beyond which log calls wait
IMPORT_PENDING_BYTES = 8 << 20         # the same for an import: no training loop to keep moving
PENDING_CHECK_ROWS = 4096              # a log call looks at the backlog every this many rows
BACKPRESSURE_SLICE_SECS = 0.002        # the longest one log call waits for the writer
MAX_STAGED_ROWS = 2_000_000            # rows kept in memory while the disk refuses writes
PLAIN_FINAL_MAX_CELLS = 1 << 40        # a run with fewer values closes without pyarrow
PLAIN_SUMMARY_MIN_CELLS = 1 << 21      # a run joined at close gets a chart summary past this
SEGMENT_FAN_IN = 16                    # this many same-tier segments merge into one
SEGMENT_MAX_ROWS = 100_000             # a staged batch this large is flushed at once
MERGE_MAX_ROWS = 2_000_000             # segments are not merged past this many rows
CLOSE_TIMEOUT_SECS = 300.0             # bounded join of the writer on close/exit
# On object stores every flush is a PUT (billed, rate-limited, ~10-100 ms): a run flushes at
# most this often there whatever flush_interval_ms says, so a run costs about one PUT a second.
REMOTE_FLUSH_INTERVAL_MS = 1000
RESERVED_COLUMNS = ("step", "timestamp")
DEFAULT_SYSTEM_METRICS_SECS = 5.0      # system_metrics=True samples this often
CAPTURE_MAX_BYTES = 64 << 20           # capture_output stops teeing into run.log past this
CAPTURE_MAX_LINE = 64 << 10            # a line longer than this (no newline) is cut and kept
MAX_MEDIA_BYTES = 256 << 20            # one image/audio/video item
MAX_TEXT_CHARS = 1_000_000             # one log_text sample (stored inline in the index)
MAX_HISTOGRAM_BINS = 10_000
MAX_PENDING_MEDIA_BYTES = 1 << 30      # media waiting for the writer; beyond, new ones drop
# What log_audio/log_video accept, and the only types the server sends media as (never HTML
# or SVG, which can carry script).
AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac"}
VIDEO_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "gif": "image/gif"}
IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
MAX_GIT_DIFF_BYTES = 5 << 20           # save_git_diff stores at most this much of `git diff`
# Distributed launchers, in order of trust: torchrun's global RANK first (it may run inside a
# SLURM task whose SLURM_PROCID counts nodes, not processes), then the schedulers' own.
_RANK_VARS = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
_LOCAL_RANK_VARS = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")
_WORLD_VARS = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
# One id shared by every process of a job (its ranks' runs form one group).
_JOB_VARS = ("SLURM_JOB_ID", "LSB_JOBID", "PBS_JOBID", "TORCHELASTIC_RUN_ID", "FLUX_JOB_ID",
             "COBALT_JOBID", "PMIX_NAMESPACE")
# Scheduler variables recorded in run.yaml (`scheduler:`): enough to find the job again.
_SCHEDULER_VARS = (
    "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
    "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_NODELIST", "SLURM_NODEID",
    "SLURM_CLUSTER_NAME", "SLURM_JOB_PARTITION", "SLURM_JOB_ACCOUNT",
    "PBS_JOBID", "PBS_JOBNAME", "PBS_ARRAY_INDEX", "PBS_QUEUE",
    "LSB_JOBID", "LSB_JOBNAME", "LSB_JOBINDEX", "LSB_QUEUE",
    "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "GROUP_RANK", "LOCAL_WORLD_SIZE",
    "MASTER_ADDR", "MASTER_PORT", "FLUX_JOB_ID", "COBALT_JOBID", "PMIX_NAMESPACE",
)
# Packages whose versions are recorded when the script has already imported them (never
# imported by expman: a version is not worth a 1 s torch import).
_PROVENANCE_PACKAGES = ("numpy", "torch", "pandas", "polars", "jax", "tensorflow", "keras",
                        "transformers", "lightning", "pytorch_lightning", "sklearn", "scipy")

# A dead pid proves a crash only on the host that ran it, so the name must tell hosts apart:
# containers and cluster pods often share one, and EXPMAN_HOSTNAME (e.g. the node name) fixes it.
_HOSTNAME = os.environ.get(ENV_HOSTNAME) or (os.uname().nodename if hasattr(os, "uname")
                                              else socket.gethostname())
_NAME_BAD_CHARS = re.compile(r"[^\w.+=@-]")
_SEGMENT_RE = re.compile(r"^seg-(\d{12})-(\d{12})\.parquet$")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _default_root():
    return os.environ.get(ENV_DIR) or DEFAULT_ROOT


def _remote_flush_secs():
    """The minimum flush interval on object stores (EXPMAN_REMOTE_FLUSH_MS, default 1 s)."""
    try:
        return max(0.0, float(os.environ[ENV_REMOTE_FLUSH_MS]) / 1000.0)
    except (KeyError, ValueError):
        return REMOTE_FLUSH_INTERVAL_MS / 1000.0


# 3 Errors ###################################################################################

class ExpmanError(Exception):
    """Base class of every error expman raises."""


class InvalidInputError(ExpmanError, ValueError):
    """Bad input from the user: a bad status, name, path or argument. Its message says which."""


class ExpmanWarning(UserWarning):
    """Something was wrong but nothing stopped: a skipped value, a slow disk, a corrupt file."""


# 4 Small utilities ##########################################################################

def _warn(message):
    """One user-facing warning: an ExpmanWarning (filterable, shown once per place)."""
    warnings.warn(message, ExpmanWarning, stacklevel=3)


def _utcnow():
    return _dt.datetime.now(_dt.timezone.utc)


def _iso(ts=None):
    """ISO-8601 UTC text for a POSIX time (now when None): what every YAML file stores."""
    if ts is None:
        return _utcnow().isoformat()
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat()


def _parse_iso(text):
    """POSIX seconds from ISO text, or None for missing/garbled values (never raises)."""
    if isinstance(text, _dt.datetime):  # a hand-edited YAML file may hold a bare timestamp
        return (text if text.tzinfo else text.replace(tzinfo=_dt.timezone.utc)).timestamp()
    if not isinstance(text, str):
        return None
    try:
        parsed = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.timestamp()


def _safe_name(name, what="name"):
    """A file-system-safe version of an experiment or run name.

    Letters (unicode too), digits and ``_ . + = @ -`` are kept; anything else (``/``, spaces,
    ``:``) becomes ``_``; a leading dot is replaced so ``..`` can never name a parent.
    """
    if not isinstance(name, str):
        raise InvalidInputError(f"{what} must be a string, got {type(name).__name__}")
    cleaned = _NAME_BAD_CHARS.sub("_", name.strip())
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    if not cleaned.strip("_"):
        raise InvalidInputError(f"{what} {name!r} is empty once unsafe characters are removed")
    if len(cleaned) > 200:
        raise InvalidInputError(f"{what} is {len(cleaned)} characters long; the limit is 200")
    return cleaned


_YAML = []                  # [loader, dumper] once yaml is imported (see _yaml_classes)


def _yaml_classes():
    """(loader, dumper): PyYAML's C-based safe ones (~10x faster; listing 1,000 runs depends
    on it) or its pure-Python ones. Built on first use, so ``import expman`` skips PyYAML.

    The dumper writes subclasses of str, int and float (a StrEnum or IntEnum param, torch's
    TorchVersion in run.yaml's package versions) as their plain values: the safe dumper
    refused them, and init() or log_params raised RepresenterError.
    """
    if not _YAML:
        try:
            loader, base = yaml.CSafeLoader, yaml.CSafeDumper
        except AttributeError:  # pragma: no cover - PyYAML built without libyaml
            loader, base = yaml.SafeLoader, yaml.SafeDumper

        class _Dumper(base):
            pass

        _Dumper.add_multi_representer(str, lambda d, v: d.represent_str(str.__str__(v)))
        _Dumper.add_multi_representer(int, lambda d, v: d.represent_int(int.__int__(v)))
        _Dumper.add_multi_representer(float, lambda d, v: d.represent_float(float.__float__(v)))
        _YAML[:] = [loader, _Dumper]
    return _YAML


def _yaml_dump(data):
    try:
        return yaml.dump(data, Dumper=_yaml_classes()[1], sort_keys=False, allow_unicode=True,
                         default_flow_style=False).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate in a description, tag, param or name is not UTF-8: it made every
        # write of run.yaml fail (a run that never recorded its end) or init() raise. Store
        # U+FFFD in its place; the rest of the file is kept as it was.
        return _yaml_dump(_scrub_surrogates(data))


def _scrub_surrogates(value):
    if isinstance(value, str):
        return _SURROGATES.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrub_surrogates(k): _scrub_surrogates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_surrogates(v) for v in value]
    return value


def _yaml_load(data):
    """Parse YAML text; returns {} for an empty file. Raises ExpmanError on garbage."""
    try:
        value = yaml.load(data, Loader=_yaml_classes()[0])
    except yaml.YAMLError as exc:
        raise ExpmanError(f"invalid YAML: {str(exc).splitlines()[0]}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ExpmanError(f"expected a mapping, found {type(value).__name__}")
    return value


PLAIN_MAX_ITEMS = 50_000    # params expanded by _to_plain beyond this are cut (shared parts)


def _to_plain(value, _depth=0, _walk=None):
    """Turn params into what YAML can store: NumPy/torch scalars, paths, tuples, sets, objects.

    Never raises: a container holding itself becomes "<recursive ...>", expansion stops after
    PLAIN_MAX_ITEMS values (a dict that refers to the same big dict at every level used to
    expand exponentially and hang the training thread), and an object whose ``__str__``
    raises becomes "<TypeName>". Each of these is noted in ``_walk["cut"]`` for the caller.
    """
    walk = {"path": set(), "count": 0, "cut": []} if _walk is None else _walk
    walk["count"] += 1
    if walk["count"] > PLAIN_MAX_ITEMS or _depth > 50:
        if not walk["cut"] or walk["cut"][-1] != "size":
            walk["cut"].append("size")
        return "<cut: too large or too deep>"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        if id(value) in walk["path"]:  # on the way down already: a cycle
            walk["cut"].append("cycle")
            return f"<recursive {type(value).__name__}>"
        walk["path"].add(id(value))
        try:
            if isinstance(value, dict):
                return {_plain_text(k, walk): _to_plain(v, _depth + 1, walk)
                        for k, v in list(value.items())}
            items = value
            if isinstance(value, (set, frozenset)):
                items = sorted(value, key=lambda v: _plain_text(v, walk))
            return [_to_plain(v, _depth + 1, walk) for v in items]
        finally:
            walk["path"].discard(id(value))
    item = getattr(value, "item", None)
    if callable(item):  # NumPy scalars, 0-d arrays and tensors
        try:
            return _to_plain(item(), _depth + 1, walk)
        except Exception:  # noqa: BLE001 - a non-scalar array: fall through to its text
            pass
    if isinstance(value, os.PathLike):
        try:
            return os.fspath(value)
        except Exception:  # noqa: BLE001 - a broken __fspath__: its text below
            pass
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return _plain_text(value, walk)


def _plain_text(value, walk):
    """str(value); "<TypeName>" when its __str__ (and __repr__) raise."""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a user's __str__ may raise anything
        walk["cut"].append("str")
        try:
            return repr(value)
        except Exception:  # noqa: BLE001
            return f"<{type(value).__name__}>"


def _deep_merge(base, update):
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _flatten(mapping, prefix=""):
    """{"opt": {"lr": 1}} -> {"opt.lr": 1}; lists become JSON text so every value is a scalar."""
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(_to_plain(value))
        else:
            flat[name] = value
    return flat


def _pid_alive(pid):
    """True when a process with this pid exists (and is not a zombie) on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    try:  # a killed child that nobody reaped yet still answers kill(0)
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _human_bytes(n):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _human_duration(secs):
    if secs is None:
        return "-"
    secs = float(secs)
    if secs < 60:
        return f"{secs:.1f}s"
    minutes, secs = divmod(int(secs), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _human_count(n):
    """1234 -> "1234", 1234567 -> "1.23M": short counts for progress lines."""
    n = float(n)
    for unit, size, threshold in (("G", 1e9, 1e9), ("M", 1e6, 1e6), ("k", 1e3, 1e4)):
        if abs(n) >= threshold:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}" if n == int(n) else f"{n:.1f}"


class _Progress:
    """A progress line on stderr for long CLI operations (export, import, clean, reap).

    Shows count/total, a bar, the rate and the ETA; with an unknown total (None), count and
    rate only. It draws only when stderr is a terminal and ``enabled`` is true (the CLI passes
    ``not args.json``), so piped output, logs and ``--json`` stay clean. Redraws are throttled
    to ~10 a second, so ``update`` costs a counter bump and a clock read. The line is cleared
    at the end, leaving the terminal as it was::

        with _Progress("export", total=n_rows, unit="rows") as bar:
            for batch in batches:
                bar.update(batch.num_rows)
    """

    INTERVAL = 0.1  # seconds between redraws

    def __init__(self, label, total=None, unit="", enabled=True, stream=None,
                 clock=time.monotonic):
        self.label, self.total, self.unit = label, total, unit
        self.stream = sys.stderr if stream is None else stream
        self.count = 0
        self._clock = clock
        self._start = clock()
        self._next_draw = self._start + self.INTERVAL  # nothing for operations under 0.1 s
        self._drawn = False
        try:
            tty = bool(enabled) and self.stream is not None and self.stream.isatty()
        except (AttributeError, ValueError, OSError):  # a closed or odd stream
            tty = False
        self.enabled = tty

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def update(self, n=1):
        self.count += n
        if self.enabled:
            now = self._clock()
            if now >= self._next_draw:
                self._next_draw = now + self.INTERVAL
                self._draw(now)

    def line(self, now=None):
        """The text of the progress line (without the carriage return)."""
        elapsed = max((self._clock() if now is None else now) - self._start, 1e-9)
        rate = self.count / elapsed
        unit = f" {self.unit}" if self.unit else ""
        rate_text = f"{_human_count(rate)}{unit}/s"
        if not self.total:
            return f"{self.label}: {_human_count(self.count)}{unit}, {rate_text}"
        done = min(self.count / self.total, 1.0)
        filled = int(done * 20)
        bar = "#" * filled + "-" * (20 - filled)
        eta = _human_duration((self.total - self.count) / rate) if rate > 0 else "?"
        return (f"{self.label}: [{bar}] {done:4.0%} {_human_count(self.count)}/"
                f"{_human_count(self.total)}{unit}, {rate_text}, ETA {eta}")

    def _draw(self, now):
        width = shutil.get_terminal_size((80, 24)).columns
        try:
            self.stream.write("\r" + self.line(now)[:max(width - 1, 10)] + "\x1b[K")
            self.stream.flush()
            self._drawn = True
        except (OSError, ValueError):  # the terminal went away: stop drawing, keep working
            self.enabled = False

    def close(self):
        """Clear the line if one was drawn. Safe to call twice."""
        if self._drawn:
            self._drawn = False
            try:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            except (OSError, ValueError):
                pass


def _git_info(cwd, diff=False):
    """Commit, branch and dirtiness of the repository around cwd, or {} outside one.

    With ``diff``, the key ``"_diff"`` holds ``git diff HEAD`` (staged and unstaged changes
    of tracked files; untracked files are not in it) as bytes, cut at MAX_GIT_DIFF_BYTES.
    Runs git, so it belongs on the writer thread, never on init's path.
    """
    def git(*args, raw=False):
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=not raw,
                             timeout=5 if not raw else 30, check=False)
        if out.returncode != 0:
            return None
        return out.stdout if raw else out.stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        if not commit:
            return {}
        status = git("status", "--porcelain", "--untracked-files=no")
        info = {"commit": commit, "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
                "dirty": bool(status)}
        remote = git("config", "--get", "remote.origin.url")
        if remote:  # https://user:token@host/x.git must not end up in run.yaml
            info["remote"] = re.sub(r"^([a-z+]+://)[^/@]*@", r"\1", remote)
        if diff and status:
            patch = git("diff", "HEAD", "--no-color", "--no-ext-diff", raw=True) or b""
            info["_diff"] = patch
        return info
    except (OSError, subprocess.SubprocessError):
        return {}


def _loaded_packages():
    """{name: version} of the packages of _PROVENANCE_PACKAGES the script already imported."""
    out = {}
    for name in _PROVENANCE_PACKAGES:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module is not None else None
        if isinstance(version, str):
            out["scikit-learn" if name == "sklearn" else name] = version
    return out


def _scheduler_ids(environ=None):
    """The job ids and placement variables of SLURM, PBS, LSF and torchelastic that are set."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in _SCHEDULER_VARS if environ.get(k)}


def _json_number(value):
    """JSON has no NaN/inf: the HTTP API sends them as the strings JavaScript's Number() reads."""
    if value is None or math.isfinite(value):
        return value
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def _json_safe(value):
    """A copy of value that JSON can hold: NaN/inf as the strings above, datetimes as ISO
    text, other objects as their str()."""
    if isinstance(value, float):
        return _json_number(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _json_dumps(value):
    """Compact JSON for the HTTP API and the CLI. The walk of _json_safe only happens when a
    NaN/inf is present (plain json.dumps would write bare NaN, which JavaScript rejects)."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError):  # NaN/inf, or a datetime from a hand-edited YAML file
        return json.dumps(_json_safe(value), separators=(",", ":"))


# -- 4.1 images: sniffing and a zlib-only PNG encoder (media logging, the demo) --------------------

def _png_encode(width, height, channels, rows):
    """A PNG from raw 8-bit rows (bytes, each row already prefixed with its filter byte 0).

    channels: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA. zlib alone: no PIL needed."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    color = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                                             color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))


def _png_bytes(width, height, pixel):
    """A PNG of width x height from pixel(x, y) -> (r, g, b), encoded with zlib alone."""
    raw = b"".join(b"\0" + bytes(c for x in range(width) for c in pixel(x, y))
                   for y in range(height))
    return _png_encode(width, height, 3, raw)


# the image formats log_image takes as bytes or files (magic bytes -> extension, MIME type)
_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png", "image/png"), (b"\xff\xd8\xff", "jpg", "image/jpeg"),
                (b"GIF87a", "gif", "image/gif"), (b"GIF89a", "gif", "image/gif"))


def _sniff_image(head):
    """(ext, mime) of PNG/JPEG/GIF/WebP bytes from their first 12 bytes, else None."""
    for magic, ext, mime in _IMAGE_MAGIC:
        if head.startswith(magic):
            return ext, mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp", "image/webp"
    return None


def _image_size(data, ext):
    """(width, height) read from an image's header, or (None, None) when it cannot tell."""
    import struct
    try:
        if ext == "png" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if ext == "gif":
            return struct.unpack("<HH", data[6:10])
        if ext == "webp":
            kind = data[12:16]
            if kind == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if kind == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if kind == b"VP8X":
                return (int.from_bytes(data[24:27], "little") + 1,
                        int.from_bytes(data[27:30], "little") + 1)
        if ext == "jpg":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    i += 1
                    continue
                marker = data[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    i += 1 if marker == 0xFF else 2
                    continue
                length = struct.unpack(">H", data[i + 2:i + 4])[0]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", data[i + 5:i + 9])
                    return w, h
                i += 2 + length
    except (struct.error, IndexError):
        pass
    return None, None


# 5 Storage layout ###########################################################################
#
#   experiments/                        root (EXPMAN_DIR, or a URI such as s3://bucket/prefix)
#   └── <experiment>/
#       ├── experiment.yaml             display_name, description, tags, created_at
#       ├── .views/<name>.json          the dashboard's saved views (a URL hash each)
#       ├── .catalog/                   the run catalog: one summary row per closed run
#       │   ├── base-<ns>-<id>.jsonl    compacted rows (JSON lines), rewritten now and then
#       │   └── part-<ns>-<id>.jsonl    rows added since: one file per close or listing
#       └── <run>/                      YYYYMMDD_HHMMSS, made unique with _2, _3 ... on collision
#           ├── run.yaml                status, times, host, pid, git, summary, heartbeat
#           ├── config.yaml             params, deep-merged across log_params calls
#           ├── run.log                 info/warn lines and expman's own warnings
#           ├── artifacts/              files saved with save_artifact
#           ├── metrics/                while the run is live: immutable segments
#           │   ├── seg-000000000000-000000004096.parquet   rows [0, 4096)
#           │   └── seg-000000004096-000000004211.parquet   rows [4096, 4211)
#           ├── metrics.summary/        while live: chart summaries of the big segments
#           │   └── sum-000000000000-000000327680.parquet  summary of rows [0, 327680)
#           ├── metrics.parquet         once the run is closed: every row, one file
#           ├── metrics.summary.parquet chart summary of metrics.parquet (section 5.2)
#           ├── media/                  log_image/log_figure/log_audio/log_video/log_text
#           │   ├── index.jsonl         one JSON line per item, appended once per flush
#           │   └── <tag>/<step>-<seq>.<ext>    one file per image/audio/video item
#           ├── histograms/             while live: immutable segments, like metrics/
#           └── histograms.parquet      once closed: tag, step, timestamp, edges, counts, ...
#
# A flush writes one new segment (temp name + rename locally; one whole-object PUT on object
# stores), so a flush costs O(rows in the flush) and a reader never sees half a file. Row
# ranges live in the names, so a reader that holds N rows lists one directory and reads only
# the segments past N. Sixteen segments of one tier merge into one of the next tier (written
# before the small ones are deleted), which keeps a day-long run to a few dozen files; readers
# pick the widest segment covering each range, so a merge in progress is invisible. On close
# the segments are compacted into metrics.parquet (a lone segment is renamed, not rewritten),
# which wins once the segments no longer tile from row 0. Every file records the rows it holds
# in its schema metadata ("expman.rows": "start end"), so compaction (at close, or
# `reap --compact` after a crash) decides from ranges and is safe to kill and rerun: _SegmentLog.
#
# The chart summary is a cache too: per key, for buckets of 2^k rows (k = 8, 9, ...), the
# first, last, min, max and first NaN with their row, step and time, so a chart of a 100M-row
# run reads a few thousand summary rows (section 5.2). It names the metrics.parquet it was
# made from (rows and bytes); a missing, stale or unreadable one means the exact rows are read.
# While a run is live, each segment of SEGMENT_SUMMARY_MIN_ROWS rows or more gets its own
# summary in metrics.summary/, named after the segment's rows (made when the segment is merged,
# mostly from its parts' summaries); a chart of a live run combines them with the rows of the
# small segments, and close builds metrics.summary.parquet from them instead of every row.
#
# The catalog is a cache, never the truth: a listing reads it instead of every closed run's
# run.yaml and config.yaml, and rebuilds any row it cannot trust (no row, run.yaml changed
# since, run folder gone) from the run itself. Its files are immutable and written whole
# under unique names, so any number of writers and readers share it without a lock.
#
# Media: every blob is its own file (written whole, atomically, then indexed), so a run that
# logs an image every 100 steps for 100k steps holds 1,000 files: log media sparingly. Text is
# stored inline in the index. The index is appended once per flush (on object stores, which
# cannot append, it is rewritten whole from the writer's memory: one PUT per flush); a reader
# skips a torn last line. Histograms are rows of a small Parquet table, segmented and
# compacted exactly like the metrics.

RUN_YAML, CONFIG_YAML, RUN_LOG = "run.yaml", "config.yaml", "run.log"
EXPERIMENT_YAML, METRICS_FILE = "experiment.yaml", "metrics.parquet"
SEGMENTS_DIR, ARTIFACTS_DIR = "metrics", "artifacts"
MEDIA_DIR, MEDIA_INDEX = "media", "index.jsonl"
HISTOGRAMS_DIR, HISTOGRAMS_FILE = "histograms", "histograms.parquet"
GIT_DIFF_FILE = "git.diff"              # artifacts/git.diff: init(save_git_diff=True)
CATALOG_DIR = ".catalog"                # <experiment>/.catalog/: see "run catalog" in section 9
CATALOG_MAX_PARTS = 16                  # a listing that finds more part files compacts them
CATALOG_ROW_VERSION = 2                 # bumped when RUN_ROW gains fields: older entries are re-read
SUMMARY_FILE = "metrics.summary.parquet"  # chart summary of metrics.parquet (section 5.2)
SUMMARY_MIN_LEVEL = 8                   # finest summary buckets: 2^8 rows (exact reads below)
SUMMARY_MIN_ROWS = 1 << 16              # smaller runs get no summary: their rows are cheap
SUMMARY_BUDGET = 1 << 18                # finest-level records held while building one
SUMMARY_DIR = "metrics.summary"         # while live: a chart summary per big segment (5.2)
SEGMENT_SUMMARY_MIN_ROWS = 1 << 14      # segments this big get one (charts read smaller ones)
VIEWS_DIR = ".views"                    # <experiment>/.views/<name>.json: the page's saved views
VIEW_MAX_BYTES = 16_384                 # one view: a URL hash and its name
VIEW_NAME_RULE = ("a view name is 1 to 80 letters, digits, spaces and _ . , - + = @ ( ), starts "
                  "with a letter or digit and does not end with a space or a dot")


def _segment_name(start, end):
    return f"seg-{start:012d}-{end:012d}.parquet"


def _choose_segments(names):
    """The (start, end, name) segments that tile the rows, widest first where they overlap."""
    segs = []
    for name in names:
        match = _SEGMENT_RE.match(name)
        if match:
            segs.append((int(match.group(1)), int(match.group(2)), name))
    segs.sort(key=lambda s: (s[0], -s[1]))
    chosen, covered = [], 0
    for start, end, name in segs:
        if end <= covered or end <= start:
            continue  # inside a merged segment that already covers it
        chosen.append((start, end, name))
        covered = end
    return chosen


class _FileInfo(tuple):
    """(name, is_dir, size, mtime) of one directory entry."""
    __slots__ = ()
    name = property(lambda self: self[0])
    is_dir = property(lambda self: self[1])
    size = property(lambda self: self[2])
    mtime = property(lambda self: self[3])


class _Store:
    """Every read and write of expman goes through one of these.

    This base class works on any ``pyarrow.fs`` filesystem (S3, GCS, HDFS, ...): it never
    appends or renames, it writes whole objects. ``_LocalStore`` below overrides the few
    operations a POSIX filesystem does better (atomic rename, exclusive mkdir, append), and
    needs no pyarrow import, which keeps ``init()`` fast.
    """

    is_local = False

    def __init__(self, fs, uri_prefix=""):
        self.fs = fs
        self.uri_prefix = uri_prefix  # "s3://" etc., to print paths users can paste back

    @staticmethod
    def join(*parts):
        return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p)

    def display(self, path):
        return self.uri_prefix + path

    def read_bytes(self, path):
        try:
            with self.fs.open_input_stream(path) as fh:
                return fh.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if _is_missing(exc):
                raise FileNotFoundError(path) from None
            raise

    def read_range(self, path, offset, length):
        with self.fs.open_input_file(path) as fh:
            fh.seek(offset)
            return fh.read(length)

    def write_atomic(self, path, data):
        with self.fs.open_output_stream(path) as fh:  # one PUT: objects appear whole
            fh.write(data)

    @contextlib.contextmanager
    def open_atomic(self, path):
        """A pyarrow output stream whose object appears whole when the block ends."""
        with self.fs.open_output_stream(path) as fh:
            yield fh

    def append(self, path, data):
        """Object stores cannot append: rewrite (logs are small and written at most 1/s)."""
        try:
            old = self.read_bytes(path)
        except FileNotFoundError:
            old = b""
        self.write_atomic(path, old + data)

    def stat(self, path):
        """(size, mtime) or None when missing."""
        info = self.fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            return None
        mtime = info.mtime.timestamp() if info.mtime else 0.0
        return (info.size or 0, mtime)

    def exists(self, path):
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def isdir(self, path):
        return self.fs.get_file_info(path).type == pafs.FileType.Directory

    def listdir(self, path):
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [_FileInfo((i.base_name, i.type == pafs.FileType.Directory, i.size or 0,
                           i.mtime.timestamp() if i.mtime else 0.0)) for i in infos]

    def listnames(self, path):
        """Entry names of a directory ([] when missing), without a stat per entry."""
        return [f.name for f in self.listdir(path)]

    def walk_files(self, path):
        """(relative path, size, mtime) of every file below path."""
        infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=True,
                                                        allow_not_found=True))
        base = path.rstrip("/") + "/"
        return [(i.path[len(base):], i.size or 0, i.mtime.timestamp() if i.mtime else 0.0)
                for i in infos if i.type == pafs.FileType.File]

    def mkdir(self, path):
        self.fs.create_dir(path, recursive=True)

    def mkdir_exclusive(self, path):
        """Create path; False if it already existed (or another process won it just now).

        Object stores have no mkdir, and pyarrow no conditional PUT, so a claim object decides:
        each claimant writes ``<path>/.claim-<random>`` and then lists ``<path>``; it wins only
        if its own claim is all it sees. S3, GCS and SeaweedFS list consistently after a PUT,
        so of two racing claimants the one listing last sees both and backs off: at most one
        wins. Both may back off (each saw the other); they move on to the next name after a
        random pause, so eight hosts starting in the same second still get eight names.
        """
        if self.listnames(path):
            return False
        token = f".claim-{os.urandom(8).hex()}"
        claim = self.join(path, token)
        self.write_atomic(claim, _yaml_dump({"hostname": _HOSTNAME, "pid": os.getpid(),
                                             "at": _iso()}))
        if self.listnames(path) == [token]:
            return True  # the claim object stays: the name is taken from now on
        self.delete(claim)
        time.sleep(int.from_bytes(os.urandom(2), "big") / 65535 * 0.05)
        return False

    def delete(self, path):
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass

    def delete_tree(self, path):
        self.fs.delete_dir(path)

    def rename(self, src, dst):
        """Move a whole file: objects cannot move, so a server-side copy, then the delete."""
        self.fs.copy_file(src, dst)
        self.delete(src)

    def parquet_file(self, path):
        if path.endswith(".arrow"):  # an expman-rs segment (see _ArrowStreamFile)
            return _ArrowStreamFile(self, path)
        # pre_buffer: the column chunks a read needs are fetched in a few coalesced, parallel
        # range requests instead of one request per chunk, one after the other
        return pq.ParquetFile(self.fs.open_input_file(path), pre_buffer=True)

    def copy_in(self, local_src, path):
        """Copy a local file or directory tree to path."""
        if os.path.isdir(local_src):
            for base, _dirs, files in os.walk(local_src):
                for fname in files:
                    src = os.path.join(base, fname)
                    rel = os.path.relpath(src, local_src).replace(os.sep, "/")
                    self.copy_in(src, self.join(path, rel))
            return
        with open(local_src, "rb") as src, self.fs.open_output_stream(path) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


class _LocalStore(_Store):
    """The local filesystem through ``os``: atomic renames, O_EXCL mkdir, real appends."""

    is_local = True

    def __init__(self):
        super().__init__(fs=None, uri_prefix="")

    @staticmethod
    def join(*parts):
        return os.path.join(*[p for p in parts if p])

    def read_bytes(self, path):
        with open(path, "rb") as fh:
            return fh.read()

    def read_range(self, path, offset, length):
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(length)

    def write_atomic(self, path, data):
        tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @contextlib.contextmanager
    def open_atomic(self, path):
        """A pyarrow file at a temp name, renamed onto path only if the block succeeds."""
        tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
        try:
            with pa.OSFile(tmp, "wb") as fh:
                yield fh
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def append(self, path, data):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0),
                     0o666)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except BaseException:
                # A full disk takes part of the data: cut it back, or the retry appended the
                # whole text after a torn copy of its first lines.
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)

    def stat(self, path):
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (st.st_size, st.st_mtime)

    def exists(self, path):
        return os.path.exists(path)

    def isdir(self, path):
        return os.path.isdir(path)

    def listdir(self, path):
        try:
            with os.scandir(path) as it:
                out = []
                for entry in it:
                    try:
                        is_dir = entry.is_dir()
                        st = entry.stat()
                    except OSError:  # deleted while we listed
                        continue
                    out.append(_FileInfo((entry.name, is_dir, st.st_size, st.st_mtime)))
                return out
        except (FileNotFoundError, NotADirectoryError):
            return []

    def listnames(self, path):
        # One getdents, no stat: listdir() drops an entry deleted between the two, so a reader
        # racing a segment merge saw neither the small segments (deleted) nor the merged one
        # (created after the listing) and returned fewer rows than it had already read.
        try:
            return os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def walk_files(self, path):
        out = []
        real_root = os.path.realpath(path)
        for base, dirs, files in os.walk(path):
            dirs.sort()
            for fname in sorted(files):
                full = os.path.join(base, fname)
                if os.path.islink(full) and not os.path.realpath(full).startswith(
                        real_root + os.sep):
                    continue  # a link out of the run is not part of the run
                try:
                    st = os.stat(full)
                except OSError:
                    continue
                out.append((os.path.relpath(full, path).replace(os.sep, "/"), st.st_size,
                            st.st_mtime))
        return out

    def mkdir(self, path):
        os.makedirs(path, exist_ok=True)

    def mkdir_exclusive(self, path):
        try:
            os.mkdir(path)
            return True
        except FileExistsError:
            return False

    def delete(self, path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def delete_tree(self, path):
        shutil.rmtree(path)

    def rename(self, src, dst):
        os.replace(src, dst)

    def parquet_file(self, path):
        if path.endswith(".arrow"):  # an expman-rs segment (see _ArrowStreamFile)
            return _ArrowStreamFile(self, path)
        return pq.ParquetFile(path, memory_map=True)

    def copy_in(self, local_src, path):
        if os.path.isdir(local_src):
            shutil.copytree(local_src, path, dirs_exist_ok=True,
                            ignore=_skip_link_loops(local_src))
        else:
            shutil.copy2(local_src, path)


_LOCAL_STORE = _LocalStore()
_URI_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _open_store(location):
    """(store, path) for a local path or a URI such as s3://bucket/prefix or file:///x."""
    location = os.fspath(location)
    if not _URI_RE.match(location):
        return _LOCAL_STORE, os.path.abspath(os.path.expanduser(location))
    if location.startswith("file://"):
        return _LOCAL_STORE, os.path.abspath(location[len("file://"):])
    scheme = location.split("://", 1)[0].lower()
    if scheme == "s3":
        fs, path = _s3_filesystem(location)
    else:
        try:
            fs, path = pafs.FileSystem.from_uri(location)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types here
            raise InvalidInputError(f"cannot open {location}: {exc}") from None
    return _Store(fs, uri_prefix=f"{scheme}://"), path.rstrip("/")


def _s3_filesystem(uri):
    """S3 with endpoint/region/credentials from EXPMAN_S3_* or the usual AWS_* variables."""
    env = os.environ.get
    rest = uri.split("://", 1)[1]
    kwargs = {}
    endpoint = env(ENV_S3_ENDPOINT) or env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.rpartition("://")
        kwargs["endpoint_override"] = host or endpoint
        kwargs["scheme"] = scheme or "https"
    region = env(ENV_S3_REGION) or env("AWS_REGION") or env("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    key = env(ENV_S3_ACCESS_KEY) or env("AWS_ACCESS_KEY_ID")
    secret = env(ENV_S3_SECRET_KEY) or env("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs["access_key"], kwargs["secret_key"] = key, secret
    token = env(ENV_S3_SESSION_TOKEN) or env("AWS_SESSION_TOKEN")
    if key and secret and token:
        kwargs["session_token"] = token
    kwargs["allow_bucket_creation"] = True
    # Objects up to the part size go out as one PutObject instead of the three requests of a
    # multipart upload (create, part, complete): every segment and YAML file of a run is small.
    kwargs["allow_delayed_open"] = True
    # One client per configuration: readers open the store on every call (load_metrics in a
    # loop, the server's handlers), and a fresh client means a fresh TLS connection (~50 ms
    # against a real S3 endpoint) instead of a kept-alive one.
    cache_key = tuple(sorted(kwargs.items()))
    with _S3_LOCK:
        fs = _S3_CLIENTS.get(cache_key)
        if fs is None:
            try:
                fs = _S3_CLIENTS[cache_key] = pafs.S3FileSystem(**kwargs)
            except Exception as exc:  # noqa: BLE001
                raise InvalidInputError(f"cannot open {uri}: {exc}") from None
    return fs, rest


_S3_CLIENTS = {}
_S3_LOCK = threading.Lock()


# -- 5.1 segment log: numbered Parquet segments, their tiered merges and the file they end in ------
#
# Metrics (metrics/ -> metrics.parquet) and histograms (histograms/ -> histograms.parquet) are
# both a _SegmentLog; so should be anything else written as immutable row ranges. Crash safety
# at every instant rests on four rules, each kept in one place below:
#   1. a file appears whole: temp name + rename locally, one PUT on object stores;
#   2. a merged or final file exists before any file it replaces is deleted, and deletions go
#      in name order, so leftovers of an interrupted clean-up always lack the first rows;
#   3. every file records the rows [start, end) it holds ("expman.rows" in its schema
#      metadata), and compaction never replaces the final file with one that holds less: it
#      decides from the ranges, not from which segments happen to be left;
#   4. a reader that finds a listed file gone lists again (_READ_ATTEMPTS times): on object
#      stores "gone" is an OSError (NO_SUCH_KEY), not FileNotFoundError (_is_missing).

_ROWS_KEY = b"expman.rows"
_READ_ATTEMPTS = 20            # listings a reader makes before giving up on a changing run
_CELL_BUDGET = 1 << 24         # values per slice when streaming a file (wide runs: fewer rows)
_MISSING_MARKERS = ("no_such_key", "nosuchkey", "not_found", "not found", "does not exist",
                    "status 404")


def _is_missing(exc):
    """Whether exc says a file is not there (any store)."""
    if isinstance(exc, FileNotFoundError):
        return True
    return isinstance(exc, OSError) and any(m in str(exc).lower() for m in _MISSING_MARKERS)


def _file_rows(pf):
    """The [start, end) a Parquet file written by a segment log holds, from its schema
    metadata; None for a file without it (written by expman before 0.x: whole by design)."""
    raw = (pf.schema_arrow.metadata or {}).get(_ROWS_KEY)
    try:
        start, end = map(int, raw.split())
    except (AttributeError, ValueError):
        return None
    return start, end


def _strip_rows_key(table):
    """Readers hand out tables without the bookkeeping metadata."""
    meta = table.schema.metadata
    if meta and _ROWS_KEY in meta:
        rest = {k: v for k, v in meta.items() if k != _ROWS_KEY}
        return table.replace_schema_metadata(rest or None)
    return table


class _SegmentLog:
    """One folder of immutable Parquet segments (rows [start, end) in each name) and the final
    file they compact into. The writer thread calls write/compact; readers call files/read;
    reap calls compact on a dead run's leftovers.

    ``segments`` is the writer's own list of [start, end, tier] it wrote and has not merged
    (tier -1: past MERGE_MAX_ROWS, never rewritten). ``warn(tag, message)`` reports problems
    (the writer passes its warn-once, which also lands in run.log). Anything derived once
    from every row of a closed run (chart summaries) hangs off compact(): it runs once at
    close, again by reap after a crash, and knows the final file's row range.
    """

    def __init__(self, store, run_path, folder, final, warn=None, made=False, foreign=None,
                 summary=None):
        self.store = store
        # the chart summary written beside the final file at compaction (metrics only)
        self.summary = store.join(run_path, summary) if summary else None
        # and, while live, the summaries of big segments (see _summarize_segments)
        self.summary_dir = store.join(run_path, SUMMARY_DIR) if summary else None
        self.summarized = set()    # (start, end) of the segments we wrote a summary of
        self.run_path = run_path
        self.foreign = foreign     # files(store, run_path) of another tool's layout, or None
        self.folder = folder
        self.dir = store.join(run_path, folder)
        self.final = store.join(run_path, final)
        self.warn = warn or (lambda _tag, message: _warn(message))
        self.made = made           # the folder is known to exist (created by us)
        self.segments = []
        self.summary_failed, self.summary_made = set(), False
        # joiner(group, path, (start, end)): the writer's byte-level merge of its own plain
        # segments (section 7.3); True when it wrote path, False to merge with pyarrow here
        self.joiner = None

    @classmethod
    def metrics(cls, store, run_path, **kwargs):
        # a run with none of our files may be one expman-rs wrote (see section 9)
        kwargs.setdefault("foreign", _expman_rs_metric_files)
        kwargs.setdefault("summary", SUMMARY_FILE)
        return cls(store, run_path, SEGMENTS_DIR, METRICS_FILE, **kwargs)

    @classmethod
    def histograms(cls, store, run_path, **kwargs):
        return cls(store, run_path, HISTOGRAMS_DIR, HISTOGRAMS_FILE, **kwargs)

    def path(self, start, end):
        return self.store.join(self.dir, _segment_name(start, end))

    # -- writing (the writer thread) -------------------------------------------------------
    def write(self, start, end, tables, merge=True):
        """Write tables (or a whole file's bytes) as the segment of rows [start, end), then
        merge what is due (unless merge is False: the writer defers it, see _Writer._flush)."""
        if not self.made:
            self.store.mkdir(self.dir)
            self.made = True
        path = self.path(start, end)
        try:
            self._write_file(path, tables, (start, end))
        except FileNotFoundError:
            if self.store.isdir(self.dir):
                raise
            self._recreate()  # the folder was deleted under a live run
            self._write_file(path, tables, (start, end))
        self.segments.append([start, end, 0])
        if merge:
            self.merge()

    def _recreate(self):
        lost = sum(e - s for s, e, _t in self.segments)
        self.store.mkdir(self.dir)
        self.segments = []
        self.summarized = set()
        self.warn(f"lost:{self.folder}",
                  f"expman: {self.store.display(self.dir)} was deleted while the run was live; "
                  f"the {lost} rows written there before are lost. Recreated it: rows from now "
                  f"on (and those still in memory) are kept")

    def _forget_missing(self, names):
        """Drop segments we wrote that are no longer listed (deleted by someone), saying so."""
        names = set(names)
        gone = [s for s in self.segments if _segment_name(s[0], s[1]) not in names]
        if gone:
            self.segments = [s for s in self.segments if s not in gone]
            self.warn(f"lost:{self.folder}",
                      f"expman: {sum(e - s for s, e, _t in gone)} rows in "
                      f"{len(gone)} segments of {self.store.display(self.dir)} were deleted "
                      f"while the run was live; they are lost, the rest is kept")

    def merge(self):
        """Merge the newest SEGMENT_FAN_IN segments of a tier into one of the next tier."""
        segs = self.segments
        while len(segs) >= SEGMENT_FAN_IN and len({s[2] for s in segs[-SEGMENT_FAN_IN:]}) == 1:
            group = segs[-SEGMENT_FAN_IN:]
            start, end, tier = group[0][0], group[-1][1], group[0][2]
            if tier < 0 or end - start > MERGE_MAX_ROWS:  # big enough alone: never rewritten
                for seg in group:
                    seg[2] = -1
                break
            paths = [self.path(s, e) for s, e, _t in group]
            files = None
            if self.joiner is None or not self.joiner(group, self.path(start, end),
                                                      (start, end)):
                files = self._open_checked(paths, "merge")
                if files is None:  # a segment is gone or unreadable: leave this group as is
                    names = self.store.listnames(self.dir)
                    self._forget_missing(names)
                    for seg in segs[-SEGMENT_FAN_IN:]:
                        seg[2] = -1
                    break
                self._write_file(self.path(start, end), files, (start, end))
            elif self.summary_dir is not None and end - start >= SEGMENT_SUMMARY_MIN_ROWS:
                files = self._open_checked(paths, "merge")  # joined: footers for the summary
            if files is not None:
                self._summarize_segment(start, end, group, files)  # from its parts' summaries
            else:
                self._summarize_segment(start, end)  # (returns at once when too small)
            for path in paths:  # the merged file exists first: readers never miss rows
                self.store.delete(path)
            self._drop_segment_summaries(group)
            del segs[-SEGMENT_FAN_IN:]
            segs.append([start, end, tier + 1])
        self._summarize_segments()

    def _open_checked(self, paths, why):
        """[(path, ParquetFile)] with every footer read (a whole file has one); None when one
        is missing or unreadable, with a warning for the unreadable one."""
        out = []
        for path in paths:
            try:
                out.append((path, self.store.parquet_file(path)))
            except Exception as exc:  # noqa: BLE001 - a file cut by a crash or deleted
                if not _is_missing(exc):
                    self.warn(f"{why}:{path}", f"expman: skipped unreadable segment "
                                               f"{self.store.display(path)}: {exc}")
                return None
        return out

    def _write_file(self, path, sources, rows):
        """sources (Arrow tables, or (path, ParquetFile) read a slice at a time) -> one Parquet
        file at path, appearing whole, recording rows=[start, end) in its schema metadata.

        Streaming keeps a merge or a compaction to the memory of one slice. Columns missing
        from a source are one shared all-null array, so a run with 20,000 keys, each in a few
        rows, costs O(rows x keys) once, not per segment and key (_conform).
        """
        if isinstance(sources, bytes):  # a whole file already (the writer's _plain_parquet)
            self.store.write_atomic(path, sources)
            return
        schemas = [s.schema if isinstance(s, pa.Table) else s[1].schema_arrow for s in sources]
        schema = _unify_schemas(schemas) if len(schemas) > 1 else schemas[0]
        meta = dict(schema.metadata or {})
        meta[_ROWS_KEY] = f"{rows[0]} {rows[1]}".encode()
        schema = schema.with_metadata(meta)
        with self.store.open_atomic(path) as sink:
            writer = pq.ParquetWriter(sink, schema, compression="snappy", use_dictionary=False)
            try:
                tables = [_conform(t, schema) for t in sources if isinstance(t, pa.Table)]
                if tables:  # one row group, not one per table: wide runs pay per column chunk
                    writer.write_table(tables[0] if len(tables) == 1 else pa.concat_tables(
                        tables), row_group_size=1 << 20)
                for item in sources:
                    if isinstance(item, pa.Table):
                        continue
                    pf = item[1]
                    step = max(1024, min(1 << 16, _CELL_BUDGET // max(
                        1, len(pf.schema_arrow.names))))
                    for batch in pf.iter_batches(step):
                        writer.write_table(_conform(pa.Table.from_batches([batch]), schema))
            finally:
                writer.close()

    # -- compaction (close, and reap --compact of a dead run) ------------------------------
    def final_rows(self):
        """(start, end) the final file holds; (0, None) for one without the record (older
        expman wrote it only whole); None when it is missing; False when it is unreadable."""
        try:
            pf = self.store.parquet_file(self.final)
        except Exception as exc:  # noqa: BLE001 - missing, or damaged by hand: keep it
            return None if _is_missing(exc) else False
        return _file_rows(pf) or (0, None)

    def compact(self, empty=None):
        """Segments -> the final file, then the segments go. Returns how many segments were
        written into it (0: nothing to do, or only leftovers of a finished compaction).

        Safe to kill at any instant and to run again (reap --compact): the final file is
        replaced only by one whose row range contains its own, so leftovers of an interrupted
        clean-up (always the last rows, see rule 2) are deleted, never "compacted" over the
        complete file. One segment and no final file: renamed, not rewritten (short runs).
        ``empty``: the table to write when there are no rows at all (None: write nothing).
        """
        names = self.store.listnames(self.dir)
        self._forget_missing(names)
        chosen = _choose_segments(names)
        have = self.final_rows()
        if have is False:
            self.warn(f"compact:{self.final}",
                      f"expman: {self.store.display(self.final)} is unreadable; left it and "
                      f"the segments beside it as they are")
            return 0
        if have is not None:
            start, end = have
            if end is None or all(e <= end for _s, e, _n in chosen):
                self._summarize(missing_only=True)  # a compaction killed before its summary
                self._delete_segments(names)  # the final file already holds every row
                return 0
            # rows past the final file (not written by expman today, but never lose them)
            candidates = [(start, end, None)] + [c for c in chosen if c[0] >= end]
        else:
            candidates = chosen
        sources, used, first, last = [], 0, None, None
        for s, e, name in candidates:
            if name is None:
                found = self._open_checked([self.final], "compact")
            else:
                found = self._open_checked([self.store.join(self.dir, name)], "compact")
                used += found is not None
            if found:
                sources.extend(found)
                first = s if first is None else first
                last = e
        if not sources:
            if empty is not None and have is None:
                self._write_file(self.final, empty if isinstance(empty, bytes) else [empty],
                                 (0, 0))
            self._delete_segments(names)
            return 0
        # already one whole file: no re-write, unless the writer wrote it uncompressed
        # (_plain_parquet; _Writer renames a short run's one segment itself)
        if len(sources) == 1 and have is None and not _plain_file(sources[0][1]):
            path, pf = sources[0]
            with contextlib.suppress(Exception):
                pf.close()  # let go of the memory map before the rename
            self.store.rename(path, self.final)
        else:
            self._write_file(self.final, sources, (first, last))
        # before the segments go (a crash here leaves a run reap finishes), from their own
        # summaries where they have them
        self._summarize(pieces=chosen if have is None else None)
        self._delete_segments(names)
        return used

    def _summarize(self, missing_only=False, pieces=None):
        """Write the chart summary of the final file (section 5.2); pieces, the (start, end,
        name) segments it was just made of, lend theirs. A summary is a cache: one that fails
        is reported and left out (charts then read the exact rows), never a reason for a
        close to fail."""
        if self.summary is None:
            return
        try:
            if missing_only and _open_summary(self.store, self.final, self.summary):
                return
            if not (pieces and self._summarize_from_segments(pieces)):
                _write_summary(self.store, self.final, self.summary)
        except Exception as exc:  # noqa: BLE001
            self.warn(f"summary:{self.summary}",
                      f"expman: could not write the chart summary "
                      f"{self.store.display(self.summary)} ({exc}); charts read the rows")

    # -- chart summaries of big segments while live (section 5.2) ---------------------------
    # Only these methods, merge() and _delete_segments() know of metrics.summary/: a segment
    # of SEGMENT_SUMMARY_MIN_ROWS or more gets sum-<start>-<end>.parquet once it is written
    # (merges: built from the parts' summaries), it goes when its segment is merged away, the
    # folder goes with the segments, and compaction builds the final summary from them.
    def _segment_summary_path(self, start, end):
        return self.store.join(self.summary_dir, _segment_summary_name(start, end))

    def _summarize_segment(self, start, end, parts=None, files=None):
        """Write the summary of segment [start, end) if it is big enough: from the summaries
        of its parts (the merged [s, e, tier] and their open (path, ParquetFile)) where we
        wrote them, the rows of the others; parts None: from the segment's own rows."""
        if self.summary_dir is None or end - start < SEGMENT_SUMMARY_MIN_ROWS or \
                (start, end) in self.summarized or (start, end) in self.summary_failed:
            return
        store = self.store
        try:
            if parts is None:
                pieces = [(start, end, None, store.parquet_file(self.path(start, end)))]
            else:
                pieces = [(s, e, _open_segment_summary(store, self._segment_summary_path(s, e),
                                                       s, e) if (s, e) in self.summarized
                           else None, pf) for (s, e, _t), (_path, pf) in zip(parts, files)]
            keys = sorted(set().union(*(_summary_keys(p[3].schema_arrow) for p in pieces)))
            table = _summary_table(pieces, start, end, keys, {"start": start, "end": end})
            if table is None:
                return
            if not self.summary_made:
                store.mkdir(self.summary_dir)
                self.summary_made = True
            _write_summary_table(store, self._segment_summary_path(start, end), table)
            self.summarized.add((start, end))
        except Exception as exc:  # noqa: BLE001 - a cache: charts read this segment's rows
            self.summary_failed.add((start, end))
            self.warn(f"summary:{self.summary_dir}",
                      f"expman: could not write the chart summary of segment "
                      f"{_segment_name(start, end)} ({exc}); charts read its rows")

    def _summarize_segments(self):
        """Summaries of the big segments that have none yet (a flush of many rows)."""
        if self.summary_dir is None:
            return
        for start, end, _tier in list(self.segments):
            if end - start >= SEGMENT_SUMMARY_MIN_ROWS and (start, end) not in self.summarized:
                self._summarize_segment(start, end)

    def _drop_segment_summaries(self, group):
        for start, end, _tier in group:
            if (start, end) in self.summarized:
                self.store.delete(self._segment_summary_path(start, end))
                self.summarized.discard((start, end))

    def _summarize_from_segments(self, chosen):
        """Write the final file's summary from the summaries of the segments it was made of
        (chosen: their (start, end, name), tiling from row 0) and the rows of those without
        one. False when there is no segment summary to use or a segment is gone (a lone
        segment renamed into place): the caller reads the final file instead."""
        if self.summary_dir is None or not chosen or chosen[0][0] != 0 or any(
                a[1] != b[0] for a, b in zip(chosen, chosen[1:])):
            return False
        store = self.store
        listed = {f.name: f for f in store.listdir(self.summary_dir)}
        pieces = []
        try:
            for s, e, name in chosen:
                info = listed.get(_segment_summary_name(s, e))
                summ = info and _open_segment_summary(
                    store, store.join(self.summary_dir, info.name), s, e, (info.size, info.mtime))
                pieces.append((s, e, summ or None, None if summ else
                               store.parquet_file(store.join(self.dir, name))))
        except Exception as exc:  # noqa: BLE001
            if _is_missing(exc):
                return False
            raise
        if all(p[2] is None for p in pieces):
            return False
        return _write_summary(store, self.final, self.summary, pieces)

    def rename_single(self, max_rows):
        """Close of a short run: the one segment this log wrote (at most max_rows rows, from
        row 0), alone in its folder, with no final file, is renamed into place without a
        footer read, so closing it imports no pyarrow. False in any other state, for
        compact() to decide."""
        if len(self.segments) != 1 or self.segments[0][0] != 0 or \
                self.segments[0][1] > max_rows:
            return False
        start, end, _tier = self.segments[0]
        if self.store.listnames(self.dir) != [_segment_name(start, end)] or \
                self.store.stat(self.final) is not None:
            return False
        self.store.rename(self.path(start, end), self.final)
        self._delete_segments([])
        return True

    def _delete_segments(self, names):
        for name in sorted(names):  # first rows first: see files()
            if _SEGMENT_RE.match(name):
                self.store.delete(self.store.join(self.dir, name))
        if names or self.made:
            try:
                self.store.delete_tree(self.dir)
            except OSError:
                pass
        if self.summary_dir is not None and (self.summarized or not self.made):
            with contextlib.suppress(OSError):  # after the segments: the summaries of rows
                self.store.delete_tree(self.summary_dir)
            self.summarized = set()
        self.segments = []

    # -- reading ---------------------------------------------------------------------------
    def files(self):
        """[(start, end, path)] of the files that hold the rows now, whatever state the run
        is in; end is None for the final file."""
        store = self.store
        segments = _choose_segments(store.listnames(self.dir))
        # Segments that tile [0, end) without a gap hold every row: a live run, or one being
        # compacted (the final file is written before any segment goes, and they go in name
        # order, so a leftover set always lacks the first rows). Only otherwise is the final
        # file looked up: on an object store the stat of a missing key costs two requests,
        # and the dashboard asks this of every live run every second.
        tiled = bool(segments) and segments[0][0] == 0 and all(
            a[1] == b[0] for a, b in zip(segments, segments[1:]))
        if not tiled and store.stat(self.final) is not None:
            return [(0, None, self.final)]
        if not segments and self.foreign is not None:
            return self.foreign(store, self.run_path)
        return [(s, e, store.join(self.dir, name)) for s, e, name in segments]

    def read(self, read_files):
        """read_files(files()) under the one retry policy of every reader: a listed file that
        is gone (merged or compacted away meanwhile; FileNotFoundError, or the store's own
        not-found error) means list again. read_files must let those errors through."""
        for attempt in range(_READ_ATTEMPTS):
            files = self.files()
            try:
                return read_files(files)
            except OSError as exc:
                if not _is_missing(exc):
                    raise
                if attempt >= 2:  # a busy writer: give its merge a moment to finish
                    time.sleep(0.001 * attempt)
        raise ExpmanError(f"the files of {self.store.display(self.dir)} kept changing while "
                          f"they were read; try again")


def _plain_file(pf):
    """Whether a ParquetFile is one the writer wrote itself, uncompressed (section 7.3)."""
    created = getattr(getattr(pf, "metadata", None), "created_by", None) or ""
    return created.startswith("expman version")


def _unify_schemas(schemas):
    """pa.unify_schemas, fast when the schemas repeat (segments of one run mostly do)."""
    unique = []
    for schema in schemas:
        if not any(schema.equals(u) for u in unique):
            unique.append(schema)
    return unique[0] if len(unique) == 1 else pa.unify_schemas(unique)


# -- 5.2 chart summaries: first/last/min/max per 2^k rows, written when a run compacts -------------
#
# A chart of N points needs, per bucket of rows, the first, last, min and max point (M4) and the
# first NaN (where the line breaks). Buckets are aligned blocks of table rows: bucket b of level
# k holds rows [b*2^k, (b+1)*2^k), so two buckets of level k make one of level k+1 and a bucket
# read from the summary is the bucket computed from the rows: _m4_combine is the one function
# both use (the server's exact path too), so a chart is the same with or without a summary.
# metrics.summary.parquet has one row per (key, level, bucket) holding at least one value:
#
#   key string, level int8, bucket int64, count int64         values of key in the bucket
#   first_row, last_row int64                                 their first and last table row
#   step_min, step_max int64                                  the steps they span (zoom ranges)
#   first_step, first_time, first_value, last_...             the first and last point
#   min_row, min_step, min_time, min_value, max_...           first point with the min / max
#                                                             (NaN skipped; null: only NaN)
#   nan_row, nan_step, nan_time                               first NaN (null: none)
#
# sorted by key, level and bucket, levels k0 (SUMMARY_MIN_LEVEL, higher for very big runs, so
# that building it holds at most SUMMARY_BUDGET records) up to the level where each key is one
# bucket. Its schema metadata "expman.summary" is {"version", "rows", "bytes", "min_level",
# "top_level"}: rows and bytes of the metrics.parquet it was made from; a reader finding
# another file there ignores the summary (stale), as it does a missing or unreadable one.

_SUMMARY_META = b"expman.summary"
_SUMMARY_GROUP = 4096             # summary records per row group (pruned by their statistics)
_SUMMARY_MAX_PARTIAL = 64         # zoom-range edge buckets read exactly before giving up
_M4_FIELDS = ("bucket", "count", "first_row", "last_row", "step_min", "step_max",
              "first_step", "first_time", "first_value", "last_step", "last_time", "last_value",
              "min_row", "min_step", "min_time", "min_value", "max_row", "max_step", "max_time",
              "max_value", "nan_row", "nan_step", "nan_time")


def _m4_rows(rows, steps, times, values):
    """Level-0 records, one per value: rows are the values' table rows (int64), steps int64,
    times timestamps, values float64 without nulls (NaN and inf welcome)."""
    rows, steps, times, values = (a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
                                  for a in (rows, steps, times, values))
    n = len(rows)
    i64_null = _lit(pa.int64(), None)
    ones = _buffer_array(pa.int64(), array.array("q", [1]) * n)
    nan = pc.is_nan(values)
    if not pc.any(nan).as_py():
        num, num_rows, num_steps, num_times = values, rows, steps, times
        nan_rows, nan_steps, nan_times = (pa.nulls(n, pa.int64()), pa.nulls(n, pa.int64()),
                                          pa.nulls(n, times.type))
    else:
        time_null = _lit(times.type, None)
        num = pc.if_else(nan, _lit(pa.float64(), None), values)
        num_rows = pc.if_else(nan, i64_null, rows)
        num_steps = pc.if_else(nan, i64_null, steps)
        num_times = pc.if_else(nan, time_null, times)
        nan_rows = pc.if_else(nan, rows, i64_null)
        nan_steps = pc.if_else(nan, steps, i64_null)
        nan_times = pc.if_else(nan, times, time_null)
    cols = [rows, ones, rows, rows, steps, steps, steps, times, values, steps, times, values,
            num_rows, num_steps, num_times, num, num_rows, num_steps, num_times, num,
            nan_rows, nan_steps, nan_times]
    return pa.Table.from_arrays(cols, names=_M4_FIELDS)


def _lit(arrow_type, value):
    """An Arrow scalar made from a buffer: pa.scalar() and pa.array() of Python values import
    pandas on first use (see _buffer_array), and summaries are built on the writer thread."""
    if value is None:
        return pa.nulls(1, arrow_type)[0]
    if pa.types.is_string(arrow_type):
        data = value.encode("utf-8", "surrogatepass")
        return pa.Array.from_buffers(arrow_type, 1, [None, pa.py_buffer(array.array(
            "i", [0, len(data)])), pa.py_buffer(data)])[0]
    code = "d" if pa.types.is_floating(arrow_type) else "b" if arrow_type == pa.int8() else "q"
    return _buffer_array(arrow_type, array.array(code, [value]))[0]


def _i64s(values):
    return _buffer_array(pa.int64(), array.array("q", values))


def _bools(n, value):
    """n times value, as a boolean array (no Python values converted)."""
    nulls = pa.nulls(n, pa.int8())
    return pc.is_null(nulls) if value else pc.is_valid(nulls)


def _arange(start, n):
    """int64 [start, start + n) without a Python loop."""
    ones = _buffer_array(pa.int64(), array.array("q", [1]) * n)
    return pc.add(pc.cumulative_sum(ones), _lit(pa.int64(), start - 1))


def _m4_combine(rec, shift):
    """Records (sorted by bucket) -> records of buckets `bucket >> shift`: per new bucket, the
    first record's first point, the last's last point, the first record holding the min (max,
    first NaN) for those. shift 0 merges the pieces of one bucket (from two batches or files).

    Per-bucket extremes come from stable sorts by (bucket, value), nulls last: each bucket
    keeps its block of positions, and its first position then holds the first record with
    the extreme. (group_by would do, but imports pyarrow.dataset and with it pandas, on the
    writer thread, possibly during interpreter exit.)"""
    rec = rec.combine_chunks()
    n = rec.num_rows
    if not n:
        return rec
    bucket = rec.column("bucket")
    if shift >= 62:  # rows are below 2^62; a shift past the width is undefined in Arrow
        bucket = pc.multiply(bucket, _lit(pa.int64(), 0))
    elif shift:
        bucket = pc.shift_right(bucket, _lit(pa.int64(), shift))
    bucket = bucket.combine_chunks() if isinstance(bucket, pa.ChunkedArray) else bucket
    if n > 1:
        change = pc.not_equal(bucket.slice(1), bucket.slice(0, n - 1))
        one = _lit(pa.int64(), 1)
        starts = pa.concat_arrays([_i64s([0]),
                                   pc.add(pc.indices_nonzero(change).cast(pa.int64()), one)])
        ends = pa.concat_arrays([pc.subtract(starts.slice(1), one), _i64s([n - 1])])
    else:
        starts = ends = _i64s([0])
    col = rec.column
    counts = pc.cumulative_sum(col("count"))
    count = pc.add(pc.subtract(pc.take(counts, ends), pc.take(counts, starts)),
                   pc.take(col("count"), starts))

    def first_with(name, order):
        if n == 1:
            return starts
        by = pa.Table.from_arrays([bucket, col(name)], names=["b", "v"])
        return pc.take(pc.sort_indices(by, sort_keys=[("b", "ascending"), ("v", order)]),
                       starts)

    def first_valid(name):  # first record with name set: no sort needed
        idx = pc.indices_nonzero(pc.is_valid(col(name))).cast(pa.int64())
        m = len(idx)
        if m == n:
            return starts
        if not m:
            return pa.nulls(len(starts), pa.int64())
        owner = pc.take(bucket, idx)
        firsts = pa.concat_arrays([_bools(1, True), pc.not_equal(owner.slice(1),
                                                                 owner.slice(0, m - 1))])
        sel, owners = pc.filter(idx, firsts), pc.filter(owner, firsts)
        return pc.take(sel, pc.index_in(pc.take(bucket, starts), owners))

    take = pc.take
    smin, smax = col("step_min"), col("step_max")
    if n > 1 and not smin.null_count and not smax.null_count and pc.all(pc.less_equal(
            smax.slice(0, n - 1), smin.slice(1))).as_py():
        steps = [take(smin, starts), take(smax, ends)]  # steps in order (the usual case)
    else:
        steps = [take(smin, first_with("step_min", "ascending")),
                 take(smax, first_with("step_max", "descending"))]
    cols = [take(bucket, starts), count, take(col("first_row"), starts),
            take(col("last_row"), ends)] + steps
    cols += [take(col(f), starts) for f in ("first_step", "first_time", "first_value")]
    cols += [take(col(f), ends) for f in ("last_step", "last_time", "last_value")]
    for pre, order in (("min_", "ascending"), ("max_", "descending")):
        at = first_with(pre + "value", order)
        cols += [take(col(pre + f), at) for f in ("row", "step", "time", "value")]
    at = first_valid("nan_row")
    cols += [take(col(f), at) for f in ("nan_row", "nan_step", "nan_time")]
    return pa.Table.from_arrays(cols, names=_M4_FIELDS)


def _m4_level(first, last, max_points):
    """The bucket level for a chart of at most max_points points of the values in table rows
    [first, last]: the finest whose buckets there number at most max_points/4 (4 points
    each). That is more than max_points/8 buckets: up to half the x resolution of buckets cut
    to measure, the price of buckets that a summary can hold ready."""
    most, level = max(1, max_points // 4), 0
    while (last >> level) - (first >> level) + 1 > most:
        level += 1
    return level


def _m4_points(rec):
    """The points records keep, (row, step, time, value) columns in row order, each once."""
    parts = []
    for pre in ("first_", "last_", "min_", "max_", "nan_"):
        value = rec.column(pre + "value") if pre != "nan_" else pc.if_else(
            pc.is_valid(rec.column("nan_row")), _lit(pa.float64(), math.nan),
            _lit(pa.float64(), None))
        parts.append(pa.Table.from_arrays(
            [rec.column(pre + "row"), rec.column(pre + "step"), rec.column(pre + "time"), value],
            names=["row", "step", "time", "value"]))
    table = pa.concat_tables(parts).combine_chunks()
    table = table.filter(pc.is_valid(table.column("row")))
    table = table.take(pc.sort_indices(table.column("row")))
    rows = table.column("row").combine_chunks()
    if len(rows) > 1:
        keep = pa.concat_arrays([_bools(1, True), pc.not_equal(rows.slice(1),
                                                                rows.slice(0, len(rows) - 1))])
        table = table.filter(keep)
    return table


def _m4_batch(batch, key, at, lo=None, hi=None, row_lo=None, row_hi=None):
    """Level-0 records of key's values in a batch whose first row is table row `at`, kept to
    steps [lo, hi] and rows [row_lo, row_hi) where given. None when the batch has none."""
    values = batch.column(key)
    if not pa.types.is_float64(values.type):
        values = values.cast(pa.float64())
    mask = pc.is_valid(values) if values.null_count else None
    steps = batch.column("step")
    for bound, test in ((lo, pc.greater_equal), (hi, pc.less_equal)):
        if bound is not None:
            m = pc.fill_null(test(steps, _lit(pa.int64(), bound)), _bools(1, False)[0])
            mask = m if mask is None else pc.and_(mask, m)
    n = batch.num_rows
    a, b = max(0, (row_lo or 0) - at), n if row_hi is None else min(n, row_hi - at)
    if b <= a:
        return None
    if (a, b) != (0, n):
        inside = pa.concat_arrays([_bools(a, False), _bools(b - a, True), _bools(n - b, False)])
        mask = inside if mask is None else pc.and_(mask, inside)
    times = batch.column("timestamp") if "timestamp" in batch.schema.names else pa.nulls(
        n, pa.timestamp("us", tz="UTC"))
    if times.type != pa.timestamp("us", tz="UTC"):
        times = times.cast(pa.timestamp("us", tz="UTC"))
    if mask is None:
        rows = _arange(at, n)
    else:
        rows = pc.add(pc.indices_nonzero(mask).cast(pa.int64()), _lit(pa.int64(), at))
        steps, times, values = (pc.filter(x, mask) for x in (steps, times, values))
    if not len(rows):
        return None
    return _m4_rows(rows, steps.cast(pa.int64()), times, values)


def _summary_keys(schema):
    """The columns of a metrics file a summary covers: every numeric non-reserved column."""
    return sorted(f.name for f in schema if f.name not in RESERVED_COLUMNS and (
        pa.types.is_floating(f.type) or pa.types.is_integer(f.type)))


def _write_summary(store, final, out, pieces=None):
    """Build the chart summary of a closed run's metrics.parquet and write it whole at `out`:
    from the rows (one streaming pass, memory bounded by SUMMARY_BUDGET records and one
    batch), or from pieces, (start, end, _Summary or None, ParquetFile or None) tiling its
    rows, the summaries of its segments (section 5.1). Returns whether one was written (runs
    under SUMMARY_MIN_ROWS rows get none; pieces that do not tile it: False)."""
    st = store.stat(final)
    pf = store.parquet_file(final)
    n = pf.metadata.num_rows
    keys = _summary_keys(pf.schema_arrow)
    if st is None or n < SUMMARY_MIN_ROWS or not keys:
        return False
    if pieces is None:
        pieces = [(0, n, None, pf)]
    elif pieces[-1][1] != n or _file_rows(pf) not in (None, (0, n)):
        return False
    table = _summary_table(pieces, 0, n, keys, {"rows": n, "bytes": st[0]})
    del pf, pieces
    if table is None:
        return False
    _write_summary_table(store, out, table)
    return True


def _segment_summary_name(start, end):
    return f"sum-{start:012d}-{end:012d}.parquet"


def _summary_table(pieces, start, end, keys, meta):
    """The summary records of rows [start, end) (every level) from pieces tiling them in row
    order: (start, end, _Summary of those rows or None, ParquetFile read when there is none).
    Buckets are aligned to table rows, so a bucket cut by a piece boundary comes in two
    records that _m4_combine(..., 0) makes one, exactly as from the rows. None: no values."""
    k0 = SUMMARY_MIN_LEVEL
    while ((end - start) * max(1, len(keys))) >> k0 > SUMMARY_BUDGET:
        k0 += 1
    k0 = max([k0] + [p[2].k0 for p in pieces if p[2] is not None])
    top = max(k0, (start ^ (end - 1)).bit_length())
    parts = {key: [] for key in keys}
    for s, _e, summ, pf in pieces:
        if summ is not None:
            level = min(k0, summ.top)
            for key, recs in summ.level_records(level).items():
                if key in parts:
                    parts[key].append(_m4_combine(recs, k0 - level) if k0 > level else recs)
            continue
        fkeys = [k for k in _summary_keys(pf.schema_arrow) if k in parts]
        for key, recs in _summary_table_parts([(s, pf)], fkeys, k0).items():
            parts[key].append(recs)
    tables = []
    for key in keys:
        if not parts[key]:
            continue
        level = _m4_combine(pa.concat_tables(parts.pop(key)), 0)
        for k in range(k0, top + 1):
            tables.append(level.add_column(0, "level", pa.repeat(_lit(pa.int8(), k),
                                                                  level.num_rows))
                          .add_column(0, "key", pa.repeat(_lit(pa.string(), key),
                                                          level.num_rows)))
            if k < top:
                level = _m4_combine(level, 1)
    if not tables:
        return None
    meta = {"version": 1, **meta, "min_level": k0, "top_level": top}
    return pa.concat_tables(tables).replace_schema_metadata(
        {_SUMMARY_META: json.dumps(meta).encode()})


def _summary_table_parts(files, keys, k0):
    """{key: records of buckets of 2^k0 rows} of keys (numeric columns) in files, (first
    row, ParquetFile) in row order: one pass, a batch at a time. Small batches (a live run's
    newest segments) are bucketed together, one _m4_combine per key for many of them."""
    parts, raws = {key: [] for key in keys}, {key: [] for key in keys}
    pending = 0

    def bucket_raws():
        for key in keys:
            if raws[key]:
                parts[key].append(_m4_combine(pa.concat_tables(raws[key]), k0))
                raws[key] = []

    for start, pf in files:
        names = pf.schema_arrow.names
        fkeys = [k for k in keys if k in names]
        if not fkeys:
            continue
        cols = ["step"] + (["timestamp"] if "timestamp" in names else []) + fkeys
        # never a batch larger than the file: the reader allocates the whole batch up
        # front, and each small segment would pay for a million rows
        at, step = start, max(1, min(pf.metadata.num_rows, max(1 << 12, min(
            1 << 20, _CELL_BUDGET // len(cols)))))
        for batch in pf.iter_batches(step, columns=cols, use_threads=False):
            big = batch.num_rows >= 1 << 14  # bucketed at once, one key at a time
            if big:
                bucket_raws()
                pending = 0
            for key in fkeys:
                raw = _m4_batch(batch, key, at)
                if raw is not None:
                    if big:
                        parts[key].append(_m4_combine(raw, k0))
                    else:
                        raws[key].append(raw)
            at += batch.num_rows
            pending += 0 if big else batch.num_rows
            if pending >= 1 << 14:
                bucket_raws()
                pending = 0
    bucket_raws()
    return {key: recs[0] if len(recs) == 1 else _m4_combine(pa.concat_tables(recs), 0)
            for key, recs in parts.items() if recs}


def _write_summary_table(store, out, table):
    with store.open_atomic(out) as sink:
        pq.write_table(table, sink, row_group_size=_SUMMARY_GROUP, compression="snappy")


class _Summary:
    """An open chart summary that matches its metrics.parquet: levels, and per row group the
    (key, level, bucket, step) ranges its statistics give, to read only the groups asked."""

    def __init__(self, store, path, meta, groups):
        self.store, self.path = store, path
        self.k0, self.top = meta["min_level"], meta["top_level"]
        self.groups = groups
        self.pinned, self._pf = False, None
        self.spans = {}  # key -> (count, first row, last row) or None, shared by pinned copies

    def span(self, key):
        """(count, first row, last row, least step, greatest step) of key's values here
        (None: none), remembered: a live chart asks it of every segment summary, and their
        files never change."""
        found = self.spans.get(key, False)
        if found is False:
            top = self.records(key, self.top, columns=("count", "first_row", "last_row",
                                                       "step_min", "step_max"))
            found = None if not top.num_rows else (
                pc.sum(top.column("count")).as_py(), top.column("first_row")[0].as_py(),
                top.column("last_row")[-1].as_py(), pc.min(top.column("step_min")).as_py(),
                pc.max(top.column("step_max")).as_py())
            if len(self.spans) < 4096:
                self.spans[key] = found
        return found

    def pin(self):
        """A copy for one request (one thread) that opens its file once, not per call."""
        twin = copy.copy(self)
        twin.pinned = True
        return twin

    def _file(self):
        pf = self._pf or self.store.parquet_file(self.path)
        if self.pinned:
            self._pf = pf
        return pf

    def records(self, key, level, b_lo=None, b_hi=None, s_lo=None, s_hi=None, columns=None):
        """Records of one key and level, buckets [b_lo, b_hi], sorted by bucket."""
        picks = [i for i, bounds in enumerate(self.groups)
                 if _group_may_hold(bounds, key, level, b_lo, b_hi, s_lo, s_hi)]
        names = list(_M4_FIELDS) if columns is None else list(columns)
        if not picks:
            return pa.Table.from_arrays([pa.nulls(0, _m4_type(f)) for f in names], names=names)
        table = self._file().read_row_groups(picks, columns=["key", "level"] + names,
                                             use_threads=False)
        mask = pc.and_(pc.equal(table.column("key"), _lit(pa.string(), key)),
                       pc.equal(table.column("level"), _lit(pa.int8(), level)))
        if b_lo is not None:
            mask = pc.and_(mask, pc.greater_equal(table.column("bucket"), _i64_scalar(b_lo)))
        if b_hi is not None:
            mask = pc.and_(mask, pc.less_equal(table.column("bucket"), _i64_scalar(b_hi)))
        return table.filter(mask).select(names)

    def level_records(self, level):
        """{key: its records of one level} for every key, in one read."""
        picks = [i for i, bounds in enumerate(self.groups) if _in_stats(bounds[1], level)]
        if not picks:
            return {}
        table = self._file().read_row_groups(
            picks, columns=["key", "level"] + list(_M4_FIELDS), use_threads=False)
        table = table.filter(pc.equal(table.column("level"), _lit(pa.int8(), level)))
        keys = table.column("key").combine_chunks()
        n, out = len(keys), {}
        if not n:
            return out
        cuts = pc.indices_nonzero(pc.not_equal(keys.slice(1), keys.slice(0, n - 1)))
        starts = [0] + [i + 1 for i in cuts.to_pylist()]
        table = table.select(list(_M4_FIELDS))
        for a, b in zip(starts, starts[1:] + [n]):
            out[keys[a].as_py()] = table.slice(a, b - a)
        return out


def _m4_type(field):
    if field.endswith("_value"):
        return pa.float64()
    return pa.timestamp("us", tz="UTC") if field.endswith("_time") else pa.int64()


def _in_stats(bounds, value):
    return not bounds or bounds[0] <= value <= bounds[1]


def _group_may_hold(bounds, key, level, b_lo, b_hi, s_lo, s_hi):
    """Whether a row group's statistics (a _group_bounds entry) leave room for records of key
    and level in buckets [b_lo, b_hi] and steps [s_lo, s_hi]; missing statistics always do."""
    keys, levels, buckets, smins, smaxs = bounds
    if not (_in_stats(keys, key) and _in_stats(levels, level)):
        return False
    return not (_all_below(buckets, b_lo) or _all_above(buckets, b_hi)
                or _all_below(smaxs, s_lo) or _all_above(smins, s_hi))


def _all_below(bounds, lo):
    """Whether statistics (min, max) show every value below lo (None: no bound)."""
    return lo is not None and bool(bounds) and bounds[1] < lo


def _all_above(bounds, hi):
    """Whether statistics (min, max) show every value above hi (None: no bound)."""
    return hi is not None and bool(bounds) and bounds[0] > hi


_SUMMARIES = collections.OrderedDict()  # (summary, final) stamps -> _Summary or None
_SUMMARIES_MAX = 1024                   # open summaries remembered (their footers only;
                                        # a live run has one per big segment)
_SUMMARIES_LOCK = threading.Lock()


def _open_summary(store, final, path, final_rows=None):
    """The _Summary at path if it was made from the metrics.parquet at final as it is now;
    None when it is missing, stale (another metrics.parquet) or unreadable."""
    st, fst = store.stat(path), store.stat(final)
    if st is None or fst is None:
        return None
    stamp = (store.display(path), st, fst)
    with _SUMMARIES_LOCK:
        if stamp in _SUMMARIES:
            _SUMMARIES.move_to_end(stamp)
            return _SUMMARIES[stamp]
    found = None
    try:
        pf = store.parquet_file(path)
        meta = json.loads(pf.schema_arrow.metadata[_SUMMARY_META])
        if final_rows is None:
            final_rows = store.parquet_file(final).metadata.num_rows
        if (meta.get("version") == 1 and meta.get("bytes") == fst[0]
                and meta.get("rows") == final_rows
                and all(f in pf.schema_arrow.names for f in _M4_FIELDS)):
            found = _Summary(store, path, meta, _group_bounds(pf))
    except Exception as exc:  # noqa: BLE001 - damaged by hand or cut by a crash: rows, then
        _log.debug("expman: ignoring chart summary %s: %s", store.display(path), exc)
    with _SUMMARIES_LOCK:
        _SUMMARIES[stamp] = found
        while len(_SUMMARIES) > _SUMMARIES_MAX:
            _SUMMARIES.popitem(last=False)
    return found


def _open_segment_summary(store, path, start, end, stamp=None):
    """The _Summary of segment [start, end) at path (stamp: its (size, mtime) from a listing,
    else a stat); None when missing, unreadable or of other rows. Segments and their
    summaries are immutable, so an open one is remembered by name and stamp."""
    if stamp is None:
        stamp = store.stat(path)
        if stamp is None:
            return None
    key = ("segment", store.display(path), tuple(stamp))
    with _SUMMARIES_LOCK:
        if key in _SUMMARIES:
            _SUMMARIES.move_to_end(key)
            return _SUMMARIES[key]
    found = None
    try:
        pf = store.parquet_file(path)
        meta = json.loads(pf.schema_arrow.metadata[_SUMMARY_META])
        if (meta.get("version") == 1 and meta.get("start") == start and meta.get("end") == end
                and all(f in pf.schema_arrow.names for f in _M4_FIELDS)):
            found = _Summary(store, path, meta, _group_bounds(pf))
    except Exception as exc:  # noqa: BLE001
        if _is_missing(exc):
            raise  # merged away since it was listed: the reader lists again
        _log.debug("expman: ignoring chart summary %s: %s", store.display(path), exc)
    with _SUMMARIES_LOCK:
        _SUMMARIES[key] = found
        while len(_SUMMARIES) > _SUMMARIES_MAX:
            _SUMMARIES.popitem(last=False)
    return found


def _group_bounds(pf):
    """Per row group, (min, max) of key, level, bucket, step_min, step_max from its statistics
    (an empty tuple where there are none: that group is always read)."""
    names = pf.schema_arrow.names
    wanted = [names.index(c) for c in ("key", "level", "bucket", "step_min", "step_max")]
    out = []
    meta = pf.metadata
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        bounds = []
        for j in wanted:
            stats = rg.column(j).statistics
            bounds.append((stats.min, stats.max) if stats is not None and stats.has_min_max
                          else ())
        out.append(tuple(bounds))
    return out


# 6 Data model ###############################################################################

# A queued row is three queue entries: the user's dict (copied), its step and its time.
_ROW_EXTRA_BYTES = 28 + 24 + 3 * 8   # the step, the time and the three entries, in bytes
# A key a row did not log. Not None: a logged None is a bad value that must be warned about
# (it used to be taken for "not logged" and vanished silently).
_MISSING = object()

def _index_step(value):
    """An int step from ints, NumPy integers and integral tensors/floats."""
    try:
        return operator.index(value)
    except TypeError:
        item = getattr(value, "item", None)
        scalar = item() if callable(item) else value
        if isinstance(scalar, float) and scalar.is_integer():
            return int(scalar)
        return operator.index(scalar)


def _normalize_status(status):
    """'FINISHED', 'Finished', 'finished' -> 'finished'; anything else is a ValueError."""
    if isinstance(status, str) and status.strip().lower() in STATUSES:
        return status.strip().lower()
    raise InvalidInputError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")


def _effective_status(meta, now=None):
    """The status a reader should believe: a 'running' run whose process is gone is crashed.

    On this host a dead pid shows it at once; from anywhere, a heartbeat older than
    STALE_HEARTBEATS intervals does (which also catches a recycled pid).
    """
    status = meta.get("status")
    status = status.lower() if isinstance(status, str) else None
    if status not in STATUSES:
        return "crashed"  # missing or garbled status: the run never closed properly
    if status != "running":
        return status
    if meta.get("hostname") == _HOSTNAME and not _pid_alive(meta.get("pid")):
        return "crashed"
    beat = _parse_iso(meta.get("heartbeat_at")) or _parse_iso(meta.get("started_at"))
    interval = meta.get("heartbeat_secs") or DEFAULT_HEARTBEAT_SECS
    if not isinstance(interval, (int, float)):
        interval = DEFAULT_HEARTBEAT_SECS
    if beat is not None and (now or time.time()) - beat > STALE_HEARTBEATS * interval + 5:
        return "crashed"
    return "running"


class _Rejected:
    """Why one metric value could not be stored (warned once per key and reason)."""
    __slots__ = ("reason",)

    def __init__(self, reason):
        self.reason = reason


def _coerce_value(value, _depth=0):
    """A float for any number-like value, or a _Rejected naming why not.

    bool and int -> float (ints beyond 2**53 are refused: float64 would change them);
    NumPy scalars, 0-d arrays and tensors go through ``.item()`` (here, on the writer thread,
    so the training thread never waits for a device).
    """
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, float):
        # float(), not value: np.float64 is a float subclass that YAML cannot represent, and
        # log_scalar("best", np.max(acc)) made every later run.yaml write fail (the run never
        # recorded its end and read as crashed)
        return float(value)
    if isinstance(value, int):
        if abs(value) > 2 ** 53:
            return _Rejected(f"integer {value} cannot be stored exactly as float64 "
                             f"(pass float(value) to store it rounded)")
        return float(value)
    if value is None:
        return _Rejected("None is not a number")
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (str, bytes)):
        try:
            scalar = item()
        except Exception as exc:  # noqa: BLE001 - e.g. a tensor with more than one element
            shape = getattr(value, "shape", None)
            detail = f"shape {tuple(shape)}" if shape is not None else str(exc)
            return _Rejected(f"{type(value).__name__} with {detail} is not a scalar")
        if scalar is value or _depth > 8:
            return _Rejected(f"{type(value).__name__} is not a number")
        if type(scalar) is type(value):
            # np.longdouble.item() returns another longdouble: recursing on it never ended
            # (RecursionError dropped the whole batch). Complex kinds would lose their
            # imaginary part in float(), so only real kinds convert.
            if getattr(getattr(value, "dtype", None), "kind", None) not in ("f", "i", "u", "b"):
                return _Rejected(f"{type(value).__name__} {_short_repr(value)} is not a number")
            value = scalar
        else:
            return _coerce_value(scalar, _depth + 1)
    if isinstance(value, (complex, str, bytes, list, tuple, dict, set)):
        return _Rejected(f"{type(value).__name__} {_short_repr(value)} is not a number")
    try:
        return float(value)  # decimal.Decimal, fractions.Fraction, custom __float__
    except Exception:  # noqa: BLE001 - a user's __float__ may raise anything; only the
        # value is refused (a RuntimeError here used to drop every row of the batch)
        return _Rejected(f"{type(value).__name__} {_short_repr(value)} is not a number")


def _short_repr(value, limit=40):
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not turn a warning into a crash
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_key(key):
    """None for a good metric key, else the reason it is refused."""
    if not isinstance(key, str):
        return f"key {_short_repr(key)} is a {type(key).__name__}, not a string"
    if not key:
        return "empty key"
    if key in RESERVED_COLUMNS:
        return f"key {key!r} is reserved (the table has its own {key} column)"
    if len(key) > 1000:
        return f"key of {len(key)} characters is longer than 1000"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a bad decode upstream) cannot be a Parquet column name nor
        # a YAML key: accepted, it failed the whole batch and every later run.yaml write.
        return "key is not valid unicode (it holds a lone surrogate)"
    return None


def _read_yaml(store, path):
    """A YAML mapping from the store; {} when missing; ExpmanError when garbled."""
    try:
        data = store.read_bytes(path)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    try:
        return _yaml_load(data)
    except ExpmanError as exc:
        raise ExpmanError(f"{store.display(path)}: {exc}") from None


# -- 6.1 metric goals: which way is "better", shared by `expman compare` and the dashboard ---------

# Words of a metric key (split at anything but letters and digits) that say which way is
# better. Only the obvious ones: a key with neither (train/lr, grad_norm, tokens_per_sec) or
# with both gets no "best" at all, rather than a guess.
_GOAL_MIN_WORDS = ("loss", "error", "err", "perplexity", "ppl", "mse", "mae", "rmse", "nll",
                   "wer", "cer")
_GOAL_MAX_WORDS = ("acc", "accuracy", "f1", "auc", "auroc", "bleu", "rouge", "precision",
                   "recall", "map", "iou", "miou", "dice", "reward", "return", "score")
_GOAL_SPLIT = re.compile(r"[^a-z0-9]+")


def _metric_goal(key, minimize=(), maximize=()):
    """"min", "max" or None: whether a lower or a higher value of metric ``key`` is better.

    ``minimize``/``maximize`` (keys the user named, e.g. ``compare --maximize reward``) win;
    otherwise a word of the key decides: loss/error/err/perplexity/ppl/mse/mae/rmse/nll/wer/cer
    -> "min"; acc/accuracy/f1/auc/auroc/bleu/rouge/precision/recall/map/iou/miou/dice/
    reward/return/score -> "max" (a word may carry a digit suffix: top1_acc5). None when
    neither or both appear: no "best" is shown for ``train/lr``. The dashboard page mirrors
    this rule word for word; keep the two lists in step.

    >>> _metric_goal("val/loss"), _metric_goal("val/acc"), _metric_goal("train/lr")
    ('min', 'max', None)
    """
    if key in maximize:
        return "max"
    if key in minimize:
        return "min"
    words = set(_GOAL_SPLIT.split(str(key).lower()))
    words = (words | {w.rstrip("0123456789") for w in words}) - {""}
    lower = any(w in _GOAL_MIN_WORDS for w in words) or any(
        w.endswith(("loss", "error")) for w in words)   # valloss, top1error
    higher = any(w in _GOAL_MAX_WORDS for w in words)
    if lower == higher:
        return None
    return "min" if lower else "max"


# -- 6.2 media items: checked on the training thread, converted and written by the writer ----------

class _MediaItem:
    """One log_image/log_audio/log_video/log_text/log_histogram call, queued in order with the
    rows (so step=None can mean the step of the last row logged before it).

    ``form`` says what ``payload`` holds: "bytes" (encoded already), "array" (a NumPy copy),
    "pil" (a PIL copy), "text", or for histograms "values" (a list), "array", "tensor" (a
    detached clone) and "edges" ((edges, counts) lists)."""
    __slots__ = ("kind", "tag", "step", "time", "form", "payload", "ext", "bins", "size")

    def __init__(self, kind, tag, step, time_, form, payload, ext=None, bins=None, size=0):
        self.kind, self.tag, self.step, self.time = kind, tag, step, time_
        self.form, self.payload, self.ext, self.bins, self.size = form, payload, ext, bins, size


def _check_media_tag(tag, where):
    if not isinstance(tag, str):
        raise InvalidInputError(f"{where}: tag must be a string, got {type(tag).__name__}")
    reason = _check_key(tag) if tag not in RESERVED_COLUMNS else None
    if reason or not tag.strip():
        raise InvalidInputError(f"{where}: bad tag {_short_repr(tag, 80)}: "
                                f"{reason or 'empty tag'}")
    return tag


def _check_media_step(step, where):
    """None (resolved later to the current step) or an int64 step; InvalidInputError else."""
    if step is None:
        return None
    try:
        value = _index_step(step)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{where}: step must be an integer, got "
                                f"{_short_repr(step)}") from None
    if not -2 ** 63 <= value < 2 ** 63:
        raise InvalidInputError(f"{where}: step {value} does not fit in int64")
    return value


def _loaded(module, attr):
    """module.attr if the script imported that module already, else None. Never imports, and
    a module half-way through its import (pyarrow imports NumPy on the writer thread) is
    taken as absent."""
    return getattr(_imported(module), attr, None)


def _imported(name):
    """sys.modules[name] once its import has finished, else None; never imports. A module
    that another thread is still importing is in sys.modules already with only some of its
    names (its __spec__._initializing is set, as CPython's own "partially initialized module"
    check reads it): the writer took such a NumPy for loaded, and every row of the batch it
    was converting was lost to an AttributeError."""
    module = sys.modules.get(name)
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return None
    return module


def _image_payload(image, where):
    """(form, payload, size) for log_image's input; cheap checks, copies of mutable inputs.

    Paths are read here, at the call: a script that saves plot.png, logs it and overwrites it
    next epoch must log two different images."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if _sniff_image(data[:12]) is None:
            raise InvalidInputError(f"{where}: image bytes are not PNG, JPEG, GIF or WebP "
                                    f"(they start with {data[:8]!r})")
        return "bytes", data, len(data)
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_MEDIA_BYTES + 1)
        except OSError as exc:
            raise InvalidInputError(f"{where}: image: cannot read {path}: "
                                    f"{exc.strerror or exc}") from None
        if _sniff_image(data[:12]) is None:
            raise InvalidInputError(f"{where}: image file {path} is not PNG, JPEG, GIF or WebP")
        return "bytes", data, len(data)
    np_ = _imported("numpy")
    ndarray = _loaded("numpy", "ndarray")
    if ndarray is not None and isinstance(image, ndarray):
        return "array", _check_image_array(image, where, np_), image.nbytes
    pil_image = _loaded("PIL.Image", "Image")
    if pil_image is not None and isinstance(image, pil_image):
        if image.width < 1 or image.height < 1:
            raise InvalidInputError(f"{where}: image is empty ({image.width}x{image.height})")
        return "pil", image.copy(), image.width * image.height * 4
    figure = _loaded("matplotlib.figure", "Figure")
    if figure is not None and isinstance(image, figure):
        data = _figure_png(image)
        return "bytes", data, len(data)
    if hasattr(image, "detach") and hasattr(image, "cpu") and ndarray is not None:
        arr = image.detach().cpu().numpy()  # a tensor: copied to host here (it may change)
        return "array", _check_image_array(arr, where, np_), arr.nbytes
    raise InvalidInputError(f"{where}: image must be PNG/JPEG/GIF/WebP bytes, a path to such a "
                            f"file, a PIL image, a matplotlib figure or a NumPy array; got "
                            f"{type(image).__name__}")


def _check_image_array(arr, where, np_):
    """A copy of an HW, HWC or CHW array (1, 3 or 4 channels; uint8, ints, bools, floats)."""
    shape = arr.shape
    if arr.ndim == 3 and shape[-1] not in (1, 3, 4) and shape[0] in (1, 3, 4):
        pass  # CHW: transposed on the writer thread
    elif not (arr.ndim == 2 or (arr.ndim == 3 and shape[-1] in (1, 3, 4))):
        raise InvalidInputError(f"{where}: image array of shape {tuple(shape)} is not HW, HWC "
                                f"or CHW with 1, 3 or 4 channels")
    if arr.dtype.kind not in "biuf":
        raise InvalidInputError(f"{where}: image array of dtype {arr.dtype} is not a number "
                                f"type (use uint8, or floats in 0..1)")
    if arr.size == 0:
        raise InvalidInputError(f"{where}: image array of shape {tuple(shape)} is empty")
    if arr.size > MAX_MEDIA_BYTES:
        raise InvalidInputError(f"{where}: image array of {arr.size} values is too large")
    return np_.array(arr, copy=True)  # the caller may change it in place after the call


def _figure_png(fig):
    """PNG bytes of a matplotlib figure, rendered here: matplotlib is not thread-safe."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _blob_payload(data, ext, kinds, where):
    """(bytes, ext) for log_audio/log_video: bytes with ext, or a path whose suffix is one."""
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        suffix = os.path.splitext(path)[1].lower().lstrip(".")
        ext = "jpg" if suffix == "jpeg" else suffix
        if ext not in kinds:
            raise InvalidInputError(f"{where}: file {path} must end in one of "
                                    f"{', '.join('.' + k for k in kinds)}")
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_MEDIA_BYTES + 1)
        except OSError as exc:
            raise InvalidInputError(f"{where}: cannot read {path}: "
                                    f"{exc.strerror or exc}") from None
    elif isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        if not isinstance(ext, str) or ext.lower().lstrip(".") not in kinds:
            raise InvalidInputError(f"{where}: ext must be one of {', '.join(kinds)}, "
                                    f"got {_short_repr(ext)}")
        ext = ext.lower().lstrip(".")
    else:
        raise InvalidInputError(f"{where}: data must be bytes or a path, got "
                                f"{type(data).__name__}")
    if not data:
        raise InvalidInputError(f"{where}: data is empty")
    if len(data) > MAX_MEDIA_BYTES:
        raise InvalidInputError(f"{where}: data is larger than {MAX_MEDIA_BYTES >> 20} MB")
    return data, ext


def _number_list(values, name, where):
    """A list of floats from a list/tuple/array/tensor (edges=, counts=), else the error."""
    try:
        items = values.tolist() if hasattr(values, "tolist") else list(values)
        if any(isinstance(v, (list, tuple)) for v in items):
            raise TypeError("nested")
        out = [float(v) for v in items if not isinstance(v, (str, bytes))]
        if len(out) != len(items):
            raise TypeError("text")
    except (TypeError, ValueError):
        raise InvalidInputError(f"{where}: {name} must be a flat sequence of numbers") from None
    if not all(math.isfinite(v) for v in out):
        raise InvalidInputError(f"{where}: {name} must hold finite numbers (no NaN or inf)")
    return out


def _histogram_payload(values, bins, edges, counts, where):
    """(form, payload) for log_histogram; checks here, binning on the writer thread."""
    if edges is not None or counts is not None:
        if values is not None:
            raise InvalidInputError(f"{where}: pass values, or edges= and counts=, not both")
        return "edges", _histogram_edges(edges, counts, where)
    if values is None:
        raise InvalidInputError(f"{where}: values is required (or edges= and counts=)")
    if type(bins) is not int or not 1 <= bins <= MAX_HISTOGRAM_BINS:
        raise InvalidInputError(f"{where}: bins must be an integer from 1 to "
                                f"{MAX_HISTOGRAM_BINS}, got {_short_repr(bins)}")
    return _histogram_values(values, where)


def _histogram_edges(edges, counts, where):
    """(edges, counts) of a histogram the script computed, checked."""
    if edges is None or counts is None:
        raise InvalidInputError(f"{where}: edges= and counts= go together "
                                f"(got only {'edges' if counts is None else 'counts'})")
    e, c = _number_list(edges, "edges", where), _number_list(counts, "counts", where)
    if not c or len(e) != len(c) + 1:
        raise InvalidInputError(f"{where}: edges must have len(counts) + 1 values, got "
                                f"{len(e)} edges for {len(c)} counts")
    if any(b <= a for a, b in zip(e, e[1:])):
        raise InvalidInputError(f"{where}: edges must increase strictly")
    if any(v < 0 for v in c):
        raise InvalidInputError(f"{where}: counts must not be negative")
    if len(c) > MAX_HISTOGRAM_BINS:
        raise InvalidInputError(f"{where}: at most {MAX_HISTOGRAM_BINS} bins")
    return e, c


def _histogram_values(values, where):
    """(form, copy) of the values to bin: a NumPy array, a tensor or a list."""
    ndarray = _loaded("numpy", "ndarray")
    if ndarray is not None and isinstance(values, ndarray):
        if values.dtype.kind not in "biuf":
            raise InvalidInputError(f"{where}: values of dtype {values.dtype} are not numbers")
        if values.size == 0:
            raise InvalidInputError(f"{where}: values is empty")
        return "array", sys.modules["numpy"].array(values, copy=True).reshape(-1)
    if hasattr(values, "detach") and hasattr(values, "clone"):  # a tensor, maybe on a GPU
        if values.numel() == 0:
            raise InvalidInputError(f"{where}: values is empty")
        if values.is_complex() or not (values.is_floating_point() or values.dtype.is_signed
                                       or str(values.dtype) in ("torch.uint8", "torch.bool")):
            raise InvalidInputError(f"{where}: values of dtype {values.dtype} are not numbers")
        # clone(): queued on the device's stream, no wait; the writer copies it to the host
        return "tensor", values.detach().clone()
    if isinstance(values, (list, tuple, range, array.array)):
        if not len(values):
            raise InvalidInputError(f"{where}: values is empty")
        return "values", list(values)
    raise InvalidInputError(f"{where}: values must be a list, tuple, NumPy array or tensor, "
                            f"got {type(values).__name__}")


# 7 Writer engine ############################################################################

_WARMED = []                # [True] once _warm_up ran in this process


def _warm_up(system_metrics=False):
    """Import, on the caller's thread and once a process, what every writer thread uses.

    Cheap modules only (yaml, subprocess for git, platform: ~25 ms together): pyarrow is not
    imported here any more. A writer writes its segments as plain Parquet itself (section
    7.3), so a short run never imports pyarrow (0.1-0.3 s, ~60 MB); a long run imports it on
    the writer thread at its first merge or at close, holding fork_lock (a fork waits for
    the import to end, see _pause_writers), and collects garbage right after, so the full
    collection that a big import makes due does not land in the training loop later.
    """
    if not _WARMED:
        import struct  # noqa: F401 - media encoding, event files
        import zlib  # noqa: F401
        if sys.implementation.name == "cpython":
            with contextlib.suppress(ImportError):
                import ctypes  # noqa: F401 - _gc_untrack of the row queue (~3 ms, once)
        # replace the lazy proxies the writer uses (git: subprocess)
        for proxy in (subprocess, platform, yaml):
            getattr(proxy, "__name__", None)
        # A full collection now (~2-4 ms, once a process), at init: importing expman and
        # its modules leaves a full collection due, which otherwise fell ~50,000 log calls
        # into the loop and made one call wait 6-10 ms.
        import gc
        gc.collect()
        _WARMED.append(True)
    if system_metrics:
        import ctypes  # noqa: F401 - NVML
        import resource  # noqa: F401


def _arrow_for_writer():
    """pyarrow.parquet for a merge or compaction on the writer thread: imported the first
    time (holding the GIL in slices of up to tens of ms, once a process), then a full
    garbage collection, since the import's ~100k new objects make one due at the next
    allocation burst, which would otherwise be the training loop's."""
    if "pyarrow.parquet" not in sys.modules:
        import pyarrow.parquet  # noqa: F401
        import gc
        gc.collect()


def _gc_untrack(container):
    """Hide a container from CPython's cyclic garbage collector (PyObject_GC_UnTrack); True
    when it is untracked. For the writer's row queue: every full collection walked each of
    its entries (three a row, a cache miss each, ~80 ns), so a backlog of 50,000 rows made
    one log call wait ~10 ms. Safe for a container that is never part of a reference cycle:
    the objects it holds stay alive through it (an untracked referrer counts as an outside
    reference); only a cycle through the container itself could not be collected. ctypes is
    imported by _warm_up, on the caller's thread; elsewhere (PyPy, free-threaded builds, no
    ctypes) this returns False and the queue stays tracked, as before."""
    import gc
    ctypes = sys.modules.get("ctypes")
    if ctypes is None or sys.implementation.name != "cpython" or \
            not getattr(sys, "_is_gil_enabled", lambda: True)():
        return False
    try:
        ctypes.pythonapi.PyObject_GC_UnTrack(ctypes.py_object(container))
    except Exception:  # noqa: BLE001 - an odd build: keep the queue tracked
        return False
    return not gc.is_tracked(container)


def _pyarrow_version():
    """pyarrow's version without importing it: its __version__ when loaded, else the name
    of its .dist-info folder on sys.path (None when not found)."""
    module = sys.modules.get("pyarrow")
    if module is not None:
        return getattr(module, "__version__", None)
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("pyarrow-") and name.endswith(".dist-info"):
                return name[len("pyarrow-"):-len(".dist-info")]
    return None


_LIVE_WRITERS = set()       # writer threads running in this process
_PAUSED = []                # the writers _pause_writers holds during a fork


def _pause_writers():
    """os.fork's "before" hook: wait until every writer thread is between steps (waiting for
    rows, holding nothing), and keep it there until the fork is done. A child forked while a
    writer was inside pyarrow (an allocator or codec lock held) hung on its first write."""
    for writer in sorted(_LIVE_WRITERS, key=id):
        writer.fork_lock.acquire()
        _PAUSED.append(writer)


def _resume_writers():
    """os.fork's "after" hook, in the parent and the child alike."""
    while _PAUSED:
        _PAUSED.pop().fork_lock.release()


class _WriterOptions:
    """What a run tells its writer, once, at start; the writer reads nothing else of the run.

    ``meta`` and ``config`` are handed over: from then on the writer owns them, and the run
    changes them only through messages (``_Writer.send``: "meta" updates, "config" merges).
    ``clock`` stamps rows the writer adds itself (system metrics); ``git_cwd`` is where to
    look for a repository (None: record no git); ``flush_interval_rows`` flushes once that
    many rows are staged, as well as every ``flush_interval`` seconds.
    """

    def __init__(self, store, path, meta, config, *, flush_interval, flush_interval_rows=None,
                 heartbeat_secs=DEFAULT_HEARTBEAT_SECS, system_metrics_secs=None, clock=None,
                 started=None, git_cwd=None, save_git_diff=False):
        self.store, self.path, self.meta, self.config = store, path, meta, config
        self.flush_interval = float(flush_interval)
        self.flush_interval_rows = flush_interval_rows
        self.heartbeat_secs = float(heartbeat_secs)
        self.system_metrics_secs = system_metrics_secs
        self.clock = clock or time.time
        self.started = time.time() if started is None else started
        self.git_cwd, self.save_git_diff = git_cwd, save_git_diff


class _Writer(threading.Thread):
    """The thread that turns queued rows into Parquet segments and keeps run.yaml fresh.

    Its interface to the run (``Experiment``), all callable from the training thread:
    ``enqueue((row, step, time))`` (the hot path: a bound ``deque.extend``, no lock; a row
    is three queue entries, see Experiment.log_metrics), ``pending()``
    (rows waiting), ``wait_for_room(budget)`` (backpressure: wait at most ``budget`` seconds),
    ``queue_media(item)``, ``send(msg)`` (log lines, scalars, config and meta updates),
    ``request_flush(timeout)``, ``stop(status, timeout)``, ``take_error()`` and
    ``first_time(tag)`` (a warning the training thread gives once). Everything else is this
    thread's own.

    This thread wakes every flush interval, drains both queues, converts rows to Arrow
    columns at once (a few bytes per value instead of a dict per row), writes one segment per
    flush, merges segments in tiers and refreshes the heartbeat. An I/O error is warned about
    once and retried with the rows kept in memory; nothing is dropped unless MAX_STAGED_ROWS
    is exceeded, and then it is counted and said loudly.
    """

    def __init__(self, opts):
        super().__init__(name="expman-writer", daemon=True)
        self.opts = opts
        self.store, self.path = opts.store, opts.path
        self.meta, self.config = opts.meta, opts.config
        self.clock = opts.clock
        # (row, step, time) triples, one extend each (atomic: threads may share a run)
        self.rows = collections.deque()
        self.enqueue = self.rows.extend    # the log call's whole cost, besides its dict copy
        _gc_untrack(self.rows)             # full collections must not walk the backlog
        self.held_since = 0.0              # perf_counter when this thread last took the GIL
        self.ctrl = collections.deque()
        self.send = self.ctrl.append
        self.wake = threading.Event()
        self.fork_lock = threading.Lock()  # held while this thread works (not while it waits)
        self.drained = threading.Condition()
        self.interval = opts.flush_interval
        self.flush_rows = opts.flush_interval_rows
        self.stop_status = None            # set by stop(): the final status
        self.done = threading.Event()
        self.error = None                  # last exception, surfaced to the caller as a warning
        self.warned = set()
        self.staged = []                   # Arrow tables not yet on disk
        self.staged_rows = 0
        self.drained_rows = 0              # rows the last drain took (a quiet loop: few)
        self.drain_left = None             # (rows, control messages) left of a cut pass
        # (start, end) -> [(rows, chunks)] of every plain file this writer wrote and has not
        # merged away (section 7.3): merges and close join them byte for byte. None: forgot
        # them (too many column chunks to keep); pyarrow merges and compacts from then on.
        self.plain_layouts = {}
        self.next_row = 0                  # absolute index of the next row to write
        self.last_step = -1
        self.metrics_log = _SegmentLog.metrics(self.store, self.path, warn=self._warn_once,
                                               made=True)  # Experiment made metrics/
        self.metrics_log.joiner = self._join_segments
        self.summary = {}                  # key -> last value
        self.summary_min, self.summary_max = {}, {}   # key -> min / max, NaN ignored
        self.scalars = {}
        self.keys = []                     # metric keys in order of first appearance
        self.known_keys = set()
        self.log_buffer = []
        self.meta_dirty = True
        self.config_dirty = False
        self.last_beat = 0.0
        # (size, mtime) of run.yaml as last written (by the run, just before this): a change
        # seen later is the dashboard's edit
        self.meta_stamp = opts.store.stat(opts.store.join(opts.path, RUN_YAML))
        self.failures = 0
        self.retry_at = 0.0                # monotonic time of the next attempt after a failure
        self.io_since = None               # monotonic start of the store calls in progress
        self.dropped_rows = 0
        self.flush_waiters = []
        secs = opts.system_metrics_secs
        self.sampler = _SystemSampler(secs) if secs else None
        # media (see _MediaItem): queued in `rows` with the metric rows, one ticket each in
        # media_tickets first, so a drain pass looks for them only when some are queued
        self.media_tickets = collections.deque()
        self.dropped_media = 0
        self.step_buf = None               # the steps of the last staged batch
        self.media_pending = []            # items with their steps, written at the next flush
        self.media_queued = 0              # bytes of media ever queued (by log calls) ...
        self.media_done = 0                # ... and ever written or given up (by this thread)
        self.media_seq = 0
        self.media_dirs = set()
        self.media_index = []              # every index line (object stores rewrite it whole)
        self.hist_pending = []             # histogram rows not yet in a segment
        self.hist_next_row = 0
        self.hist_log = _SegmentLog.histograms(self.store, self.path, warn=self._warn_once)

    # -- the run's side: called on the training thread -------------------------------------
    def pending(self):
        """Rows (and media items) queued and not yet taken by this thread."""
        return len(self.rows) // 3

    def nudge(self):
        """Wake this thread now (flush_interval_rows reached) unless it is awake already."""
        if not self.wake.is_set():
            self.wake.set()

    def first_time(self, tag):
        """True the first time ``tag`` is asked about: for warnings given once per run."""
        if tag in self.warned:
            return False
        self.warned.add(tag)
        return True

    def wait_for_room(self, budget):
        """Backpressure: wake this thread and wait until it took a chunk of rows, at most
        ``budget`` seconds; never while it is stuck in a slow store request (> 1 s)."""
        self.wake.set()
        busy = self.io_since
        if busy is not None and time.monotonic() - busy > 1.0:
            return
        if self.is_alive():
            with self.drained:
                self.drained.wait(budget)

    def queue_media(self, item):
        """Queue a media item behind the rows logged before it; False when the media backlog
        is over MAX_PENDING_MEDIA_BYTES (the item is dropped and counted)."""
        if self.media_queued - self.media_done + item.size > MAX_PENDING_MEDIA_BYTES:
            self.dropped_media += 1
            return False
        self.media_queued += item.size
        # the ticket first: a drain that pops the item then always looks for it
        self.media_tickets.append(None)
        self.rows.extend((item, None, None))
        return True

    def request_flush(self, timeout):
        """Wait until everything queued before this call is on disk; True when it is."""
        event = threading.Event()
        self.ctrl.append(("flush", event))
        self.wake.set()
        return event.wait(timeout)

    def stop(self, status, timeout):
        """Flush, compact and record ``status`` (first call), then wait up to ``timeout``
        seconds; True when the thread is done. Later calls only wait."""
        if self.stop_status is None:
            self.stop_status = status
            self.wake.set()
        return self.done.wait(timeout)

    def is_done(self):
        """True once the run is closed on disk (or closing gave up)."""
        return self.done.is_set()

    def take_error(self):
        """The writer's last exception (once), or None."""
        error, self.error = self.error, None
        return error

    # -- sharing the GIL ---------------------------------------------------------------------
    def _pause(self):
        """Between two slices of work: once this thread has run WRITER_GIL_SLICE_SECS since it
        last paused, sleep WRITER_GIL_PAUSE_SECS, so a training thread waiting for the GIL
        takes it now rather than at CPython's forced switch (sys.getswitchinterval(), 5 ms)
        plus the C step running then. This thread then gets the GIL back at the next forced
        switch (or at once when the training thread is in C code that releases it). Not
        while closing: close() waits for this thread, and nothing else should."""
        now = time.perf_counter()
        if now - self.held_since < WRITER_GIL_SLICE_SECS:
            return
        if self.stop_status is None:
            # A release only helps if the waiting thread takes the GIL before this thread
            # takes it back: otherwise CPython restarts that thread's 5 ms wait (a new
            # switch happened), and a loaded machine, slow to wake it, saw 10-14 ms waits.
            # So sleep again, up to 4 times, until another thread has run: a log call grew
            # the queue, or this thread had to wait for the GIL (the sleep took > 1 ms).
            rows = self.rows
            queued = len(rows)
            for _ in range(4):
                time.sleep(WRITER_GIL_PAUSE_SECS)
                later = time.perf_counter()
                if len(rows) != queued or later - now > 0.001:
                    break
                now = later
            now = time.perf_counter()
        self.held_since = now

    # -- loop ----------------------------------------------------------------------------
    def run(self):
        _LIVE_WRITERS.add(self)
        try:
            self._run()
        finally:
            _LIVE_WRITERS.discard(self)

    def _run(self):
        try:
            with self.fork_lock:
                self._prepare()
        except Exception as exc:  # noqa: BLE001 - keep logging even if git/pyarrow act up
            self._warn_once("prepare", f"expman: could not prepare the run: {exc}")
        timeout, self.last_flush = self.interval, time.monotonic()
        while True:
            self.wake.wait(timeout)
            self.wake.clear()
            self.held_since = time.perf_counter()
            # A fork waits for this step to end (see _pause_writers): the child must not
            # inherit a lock held by this thread inside pyarrow or its allocator.
            with self.fork_lock:
                closing = self.stop_status is not None
                drained = 0
                try:
                    drained = self._drain(cut=not closing)
                    if closing:
                        self._finish()
                        break
                    self._tick(time.monotonic())
                except Exception as exc:  # noqa: BLE001 - the training loop must never die of us
                    self._failed(exc)
                    if closing:
                        self._finish_after_error()
                        break
                timeout = self._next_timeout(drained)
        self.done.set()
        self._release_flush_waiters()

    def _tick(self, now):
        """One wake-up's work after the drain: system metrics, a flush when due, run.yaml."""
        if self.sampler is not None and self.sampler.due(now):
            self._sample_system(now)
        # After a failure the store is retried only at the backoff time, but rows keep moving
        # from the queue into column buffers (compact, bounded by MAX_STAGED_ROWS) every
        # interval meanwhile, so log calls never meet backpressure from a failing store.
        retry = now >= self.retry_at or self.flush_waiters
        self.io_since = now if retry else None
        if retry and (now - self.last_flush >= self.interval or self.flush_waiters
                      or self.staged_rows >= SEGMENT_MAX_ROWS
                      or (self.flush_rows and self.staged_rows >= self.flush_rows)):
            self._flush()
            self.last_flush = now
        # flush() promises everything is on disk: that includes run.yaml's rows and summary,
        # which otherwise lag until the next heartbeat.
        if retry and (self.meta_dirty or self.flush_waiters
                      or now - self.last_beat >= self.opts.heartbeat_secs):
            self._write_meta()
        self.io_since = None
        self._release_flush_waiters()
        if self.failures and retry:  # recovered: say so, warn again if it fails again
            self.failures = 0
            self.warned = {t for t in self.warned if not t.startswith("io:")}
            message = f"expman: writing {self.store.display(self.path)} works again"
            _log.warning("%s", message)
            self.log_buffer.append(f"{_iso()} INFO  {message}\n")

    def _failed(self, exc):
        """A store error: keep the rows, back off, warn once per kind of error."""
        self.io_since = None
        self.failures += 1
        self.retry_at = time.monotonic() + min(30.0, self.interval * 2 ** min(self.failures, 6))
        self.error = exc
        self._warn_once(f"io:{type(exc).__name__}",
                        f"expman: cannot write {self.store.display(self.path)}: {exc}; "
                        f"rows are kept in memory and writing will be retried")

    def _next_timeout(self, drained):
        """Seconds until the next wake-up, unless a log call or close() wakes us first."""
        # A big backlog means a tight logging loop: come back soon so memory stays small.
        if drained >= 5_000 or len(self.rows) >= 15_000:
            timeout = 0.01
        elif self.failures:
            timeout = max(0.0, min(self.interval, self.retry_at - time.monotonic()))
        else:
            timeout = max(0.0, self.interval - (time.monotonic() - self.last_flush))
        if self.sampler is not None:
            timeout = min(timeout, max(0.0, self.sampler.next_at - time.monotonic()))
        return timeout

    def _prepare(self):
        # git runs in subprocesses, which release the GIL; pyarrow's version is looked up
        # without importing it (a short run never imports pyarrow, see _warm_up).
        opts = self.opts
        git = _git_info(opts.git_cwd, diff=opts.save_git_diff) if opts.git_cwd else {}
        patch = git.pop("_diff", None)
        if patch:
            if len(patch) > MAX_GIT_DIFF_BYTES:
                git["diff_truncated"] = len(patch)
                patch = patch[:MAX_GIT_DIFF_BYTES]
            self.store.write_atomic(self.store.join(self.path, ARTIFACTS_DIR, GIT_DIFF_FILE),
                                    patch)
            git["diff_artifact"] = GIT_DIFF_FILE
        if git:
            self.meta["git"] = git
            self.meta_dirty = True
        packages = self.meta.get("packages")
        if packages is not None and "pyarrow" not in packages:
            version = _pyarrow_version()
            if version:
                packages["pyarrow"] = version
                self.meta_dirty = True

    # -- draining ------------------------------------------------------------------------
    def _drain(self, cut=False):
        """Convert queued rows in chunks of DRAIN_CHUNK_ROWS, telling a waiting log call after
        each pop: a throttled training loop then waits one chunk (a few ms), not one backlog.

        With ``cut`` (not closing, the store healthy), a pass stops once SEGMENT_MAX_ROWS rows
        are staged, so that segment is written before the rest is converted (a backlog of
        350,000 rows made one 20 MB segment, whose copies held the GIL for ~10 ms each); the
        next pass goes on with the same snapshot, so flush() requests still wait for exactly
        the rows queued before them, and are never starved by a firehose."""
        rows = self.rows
        # Count control messages before rows: a flush() request then never overtakes rows
        # logged before it (they were queued before it, so they are counted in `todo`). It
        # used to be released with rows still queued behind the snapshot: flush() returned
        # True with 50,000 rows not yet written.
        left, self.drain_left = self.drain_left, None
        if left is not None and cut:           # a pass cut at a segment: go on with it
            todo, n_ctrl = left
        else:  # (closing: everything queued now, every message, as a fresh pass would)
            n_ctrl = len(self.ctrl)
            todo = len(rows) // 3  # only what is queued now: a firehose must not starve flushes
        n = 0
        cut = cut and not self.failures        # a failing store: keep converting, as before
        popleft = collections.deque.popleft
        pause = self._pause
        while todo > 0:
            if cut and n and self.staged_rows >= SEGMENT_MAX_ROWS:
                self.drain_left = (todo, n_ctrl)
                self.wake.set()                # no wait before the next pass
                self.drained_rows = n
                return n
            pause()  # a chunk (pop and convert) is ~1.4 ms at 2,048 rows of 5 metrics
            flat = list(map(popleft, itertools.repeat(rows, 3 * min(todo, DRAIN_CHUNK_ROWS))))
            batch, steps, times = flat[0::3], flat[1::3], flat[2::3]
            del flat
            todo -= len(batch)
            n += len(batch)
            with self.drained:
                self.drained.notify_all()
            media, before_batch = None, self.last_step
            if self.media_tickets:
                batch, steps, times, media = self._split_media(batch, steps, times)
                if not batch:
                    self._place_media(media, before_batch)
                    continue
            try:
                self._stage(batch, steps, times)
            except Exception as exc:  # noqa: BLE001 - a bug in the fast path must lose nothing
                self._warn_once(f"stage:{type(exc).__name__}",
                                f"expman: converting {len(batch)} rows failed ({exc!r}); "
                                f"retrying value by value", always=True)
                try:
                    self._stage(batch, steps, times, checked=True)
                except Exception as exc2:  # noqa: BLE001
                    self.dropped_rows += len(batch)
                    self._warn_once("stage-drop", f"expman: {len(batch)} rows could not be "
                                                  f"stored: {exc2!r}", always=True)
            if media:
                self._place_media(media, before_batch)
        for _ in range(n_ctrl):  # newer messages wait for the next pass (their wake is set)
            self._handle(self.ctrl.popleft())
        self.drained_rows = n
        return n

    def _sample_system(self, now):
        """Stage one row of ``sys/...`` readings at the training's current step.

        The row takes the last step logged (so steps stay in order) and leaves the step
        counter alone: a script's auto-incremented steps come out the same with it on or off.
        """
        try:
            values = self.sampler.sample(now)
        except Exception as exc:  # noqa: BLE001 - a reading must never stop the writer
            self._warn_once("sysmetrics", f"expman: system metrics failed ({exc!r}); "
                                          f"sampling stopped")
            self.sampler = None
            return
        for note in self.sampler.notes:
            self.log_buffer.append(f"{_iso()} INFO  expman: {note}\n")
        self.sampler.notes.clear()
        if values:
            last = self.last_step
            self._stage([values], [max(last, 0)], [self.clock()])
            self.last_step = last

    def _handle(self, msg):
        kind = msg[0]
        if kind == "log":
            _, ts, level, text = msg
            self.log_buffer.append(f"{_iso(ts)} {level:<5} {text}\n")
        elif kind == "scalar":
            _, key, value = msg
            # text is a fine summary ("optimizer": "adam"), as in expman-rs; numbers as metrics
            coerced = str(value) if isinstance(value, str) else _coerce_value(value)
            if isinstance(coerced, _Rejected):
                self._reject(key, coerced.reason, "log_scalar")
            else:
                self.scalars[key] = coerced
                self.meta_dirty = True
        elif kind == "config":       # ("config", plain params): merged into config.yaml
            _deep_merge(self.config, msg[1])
            self.config_dirty = True
        elif kind == "meta":         # ("meta", {key: value}): run.yaml fields set by the run
            self.meta.update(msg[1])
            self.meta_dirty = True
        elif kind == "flush":
            self.flush_waiters.append(msg[1])

    def _stage(self, batch, steps, times, checked=False):
        """Turn queued rows (dicts of metrics, their steps and times) into column buffers and
        keep them for the next flush: (rows, steps array("q"), microseconds array("q"),
        {key: (values array("d"), validity)}), where values holds the valid values only and
        validity is None (all valid) or an LSB-first bitmap, the form a plain Parquet page
        takes (_plain_parquet)."""
        step_buf = self._steps(steps, checked)
        ordered, rejected = self._batch_keys(batch)
        columns = self._columns(batch, ordered, step_buf, checked, rejected)
        micros = _micros(array.array("d", times))
        summary, low, high = self.summary, self.summary_min, self.summary_max
        for key, (values, _valid) in columns.items():
            summary[key] = values[-1]
            least, most = _min_max_valid(values)
            if least is not None:
                low[key] = least if key not in low else min(low[key], least)
                high[key] = most if key not in high else max(high[key], most)
        self.staged.append((len(batch), step_buf, micros, columns))
        self.staged_rows += len(batch)
        if self.staged_rows > MAX_STAGED_ROWS:
            self._drop_oldest_staged()

    def _steps(self, steps, checked):
        try:
            if checked:
                raise TypeError("checked")
            step_buf = array.array("q", steps)   # fails on None (auto step) and odd types
        except (TypeError, OverflowError):
            step_buf = array.array("q", self._fill_steps(steps))
        self.last_step = step_buf[-1]
        self.step_buf = step_buf
        return step_buf

    def _batch_keys(self, dicts):
        """(the batch's keys in logging order, whether one was refused); new keys are
        checked and remembered in order of first appearance, so columns read in that order."""
        union = set().union(*dicts)
        new = union.difference(self.known_keys)
        rejected = False
        if new:
            for d in dicts:
                for key in d:
                    if key in new:
                        new.discard(key)
                        reason = _check_key(key)
                        if reason is None:
                            self.known_keys.add(key)
                            self.keys.append(key)
                        else:
                            self._reject(key, reason, "log_metrics")
                            union.discard(key)
                            rejected = True
                if not new:
                    break
        if len(union) < len(self.keys):
            return [k for k in self.keys if k in union], rejected
        return self.keys[:], rejected

    def _columns(self, dicts, ordered, steps, checked, rejected):
        """{key: (values, validity)} of the keys with at least one value kept."""
        total = sum(map(len, dicts))
        out = {}
        # A refused key still counts in total, so without `rejected` a batch such as
        # [{"a", "step"}, {"a", "b"}] looked complete, itemgetter("b") raised KeyError and
        # the whole batch, good rows included, was dropped.
        if total == len(ordered) * len(dicts) and not rejected:
            # every row logged every key (the usual case): C-level passes, no new objects
            for key in ordered:
                out[key] = self._column(key, list(map(operator.itemgetter(key), dicts)),
                                        steps, checked)
        elif len(ordered) * len(dicts) <= 4 * total:   # dense: most rows log most keys
            for key in ordered:
                out[key] = self._column(key, [d.get(key, _MISSING) for d in dicts], steps,
                                        checked)
        else:                                        # sparse: thousands of keys, few per row
            # Only the (row, value) pairs each key has: a list per key and row, checked value
            # by value, cost 1 us per cell and a 20,000-key run took minutes to close.
            sparse = {k: ([], []) for k in ordered}
            for i, d in enumerate(dicts):
                for k, v in d.items():
                    slot = sparse.get(k)
                    if slot is not None:
                        slot[0].append(i)
                        slot[1].append(v)
            for key in ordered:
                out[key] = self._sparse_column(key, len(dicts), *sparse[key], steps, checked)
        return {k: c for k, c in out.items() if len(c[0])}  # every value refused: no column

    def _drop_oldest_staged(self):
        drop = self.staged.pop(0)
        self.staged_rows -= drop[0]
        self.dropped_rows += drop[0]
        self.next_row += drop[0]  # keep row numbers honest: the gap shows in the names
        self._warn_once("dropped", f"expman: {self.dropped_rows} rows dropped: the disk has "
                                   f"refused writes for too long (kept {MAX_STAGED_ROWS} "
                                   f"rows in memory)", always=True)

    def _split_media(self, batch, steps, times):
        """(rows, their steps, their times, [(rows before it, _MediaItem), ...]) of a popped
        batch."""
        rows, kept_steps, kept_times, media = [], [], [], []
        for item, step, at in zip(batch, steps, times):
            if type(item) is _MediaItem:
                media.append((len(rows), item))
            else:
                rows.append(item)
                kept_steps.append(step)
                kept_times.append(at)
        tickets = self.media_tickets
        for _ in media:  # each item's ticket was queued before the item itself
            tickets.popleft()
        self.step_buf = None
        return rows, kept_steps, kept_times, media

    def _place_media(self, media, before_batch):
        """Give step=None items the step of the last row logged before them (0 if none)."""
        steps = self.step_buf
        for before, item in media:
            if item.step is None:
                if before and steps is not None and before <= len(steps):
                    item.step = steps[before - 1]
                else:  # logged before this batch's rows (or the rows were lost)
                    item.step = max(before_batch if not before else self.last_step, 0)
            self.media_pending.append(item)

    def _fill_steps(self, steps):
        out, last = [], self.last_step
        for s in steps:
            if s is None:
                s = last + 1
            elif type(s) is not int:
                try:
                    s = _index_step(s)
                except (TypeError, ValueError) as exc:
                    self._warn_once(f"step:{type(s).__name__}",
                                    f"expman: step {_short_repr(s)} is not an integer ({exc}); "
                                    f"using the next step instead")
                    s = last + 1
            if not -2 ** 63 <= s < 2 ** 63 and last + 1 != s:
                self._warn_once("step:range", f"expman: step {s} does not fit in int64; "
                                              f"using the next step instead")
                s = last + 1
            if s >= 2 ** 63:  # the next step after 2**63-1: kept there rather than lose the
                # row (an overflow here used to drop the whole batch, good rows included)
                self._warn_once("step:max", "expman: the step reached 2**63-1, the largest "
                                            "int64; later automatic steps repeat it")
                s = 2 ** 63 - 1
            out.append(s)
            last = s
        return out

    def _column(self, key, values, steps, checked=False):
        """(array("d") of the valid values, validity bitmap or None). Fast path: one C-level
        conversion when every value is a float, int, bool or NumPy real scalar and no int is
        beyond 2**53; anything else (None, tensors, complex, strings, objects, _MISSING)
        takes the checked path, value by value.

        The types are checked first because array("d") calls __float__ on anything: NumPy
        complex became its real part, and a column with an inf in it waved ints beyond 2**53
        through (as did 2**53 + 1, which converts to exactly 2**53), all stored silently.
        """
        if not checked:
            kinds = set(map(_fast_kind, set(map(type, values))))
            if None not in kinds:
                try:
                    arr = array.array("d", values)
                except (TypeError, ValueError, OverflowError):
                    arr = None
                if arr is not None:
                    if "int" not in kinds:
                        return arr, None
                    # NaN, inf and 2**53 all take the checked path
                    big = max(map(abs, (v for v in values if type(v) is not float)),
                              default=0.0)
                    if big < _MAX_EXACT_INT:
                        return arr, None
        floats, valid = array.array("d"), []
        for value, step in zip(values, steps):
            if value is _MISSING:
                valid.append(False)
                continue
            coerced = _coerce_value(value)
            if isinstance(coerced, _Rejected):
                self._reject(key, f"{coerced.reason} (step {step})", "log_metrics")
                valid.append(False)
            else:
                floats.append(coerced)
                valid.append(True)
        return floats, (None if len(floats) == len(valid) else _bitmap(valid))

    def _sparse_column(self, key, n, rows, values, steps, checked):
        """The n-row column of a key logged at a few rows: only its values go through
        _column's checks; the column is its valid values and a bitmap of n bits (no buffer
        of n floats per key: gigabytes at 20k keys)."""
        logged, valid = self._column(key, values, [steps[i] for i in rows], checked)
        if len(rows) == n:
            return logged, valid
        bitmap = bytearray((n + 7) >> 3)
        for j, i in enumerate(rows):
            if valid is None or valid[j >> 3] >> (j & 7) & 1:  # else refused (it warned)
                bitmap[i >> 3] |= 1 << (i & 7)
        return logged, bytes(bitmap)

    def _reject(self, key, reason, where):
        self._warn_once(f"reject:{key!r}:{reason.split(' (step')[0]}",
                        f"expman: {where} skipped metric {_short_repr(key, 80)}: {reason}")

    def _warn_once(self, tag, message, always=False):
        if tag in self.warned and not always:
            return
        self.warned.add(tag)
        warnings.warn(message, ExpmanWarning, stacklevel=2)
        self.log_buffer.append(f"{_iso()} WARN  {message}\n")

    # -- flushing ------------------------------------------------------------------------
    def _may_merge(self):
        """Whether this flush may merge segments. The writer's own plain segments merge byte
        for byte (_join_segments: no pyarrow, the GIL held only to slice a few pages, file
        I/O without it), but a merge also writes the live chart summaries of big segments
        (section 5.2), which need pyarrow: so only a run too small for one merges at once.
        Otherwise the first merge imports pyarrow on this thread (0.1-0.3 s, GIL held in slices of tens of ms): it
        waits for a quiet moment (the last drain took few rows and none are queued), so
        a training loop that logs back to back never meets it, unless 4 x SEGMENT_FAN_IN
        segments pile up. Close compacts every segment anyway (final=True: no merge)."""
        if "pyarrow.parquet" in sys.modules:
            return True
        if self.plain_layouts is not None and \
                self.next_row + self.staged_rows < SEGMENT_SUMMARY_MIN_ROWS:
            return True  # byte-level merges, and no segment big enough for a live summary
        segments = len(self.metrics_log.segments) + 1
        if segments < SEGMENT_FAN_IN:
            return False
        if segments < 4 * SEGMENT_FAN_IN and (self.drained_rows > 1000 or self.rows):
            return False
        _arrow_for_writer()
        return True

    def _flush(self, final=False):
        if self.staged:
            merge = not final and self._may_merge()
            start, end = self.next_row, self.next_row + sum(b[0] for b in self.staged)
            layout = []
            data = _plain_parquet(self.staged, self.keys, (start, end), layout,
                                  pause=self._pause)
            self._keep_layout(start, end, [layout])  # before write(): its merge joins it
            self._pause()
            self.metrics_log.write(start, end, data, merge=merge)
            self._pause()
            self.staged, self.staged_rows, self.next_row = [], 0, end
        if self.media_pending:
            self._flush_media()
        if self.log_buffer:
            data = "".join(self.log_buffer).encode("utf-8", "replace")
            self.store.append(self.store.join(self.path, RUN_LOG), data)
            self.log_buffer = []
        if self.config_dirty:
            self.config_dirty = False
            self.store.write_atomic(self.store.join(self.path, CONFIG_YAML),
                                    _yaml_dump(self.config))

    def _flush_media(self):
        """Encode and write the pending media, then their index lines in one append, then the
        histograms as one segment. A failure leaves the items pending; what was already
        written is not written again."""
        store = self.store
        for item in self.media_pending:
            if item.form in ("written", "skip"):
                continue
            try:
                if item.kind == "histogram":
                    if item.form != "row":
                        item.payload, item.form = _histogram_row(item), "row"
                    continue
                if item.form != "encoded":
                    item.payload, item.form = self._encode_media(item), "encoded"
            except Exception as exc:  # noqa: BLE001 - a bad item must not block the rest
                item.form = "skip"
                self._warn_once(f"media:{item.tag}:{type(exc).__name__}",
                                f"expman: {item.kind} {_short_repr(item.tag, 80)} at step "
                                f"{item.step} could not be stored: {exc}")
                continue
            line = item.payload
            if "path" in line:
                rel = line["path"]
                folder = rel.rsplit("/", 1)[0]
                if folder not in self.media_dirs:
                    store.mkdir(store.join(self.path, *folder.split("/")))
                    self.media_dirs.add(folder)
                store.write_atomic(store.join(self.path, *rel.split("/")), line["data"])
                del line["data"]
            item.form = "written"
        lines = [_json_line(i.payload) for i in self.media_pending
                 if i.form == "written" and i.kind != "histogram"]
        if lines:
            if MEDIA_DIR not in self.media_dirs:
                store.mkdir(store.join(self.path, MEDIA_DIR))
                self.media_dirs.add(MEDIA_DIR)
            index = store.join(self.path, MEDIA_DIR, MEDIA_INDEX)
            if store.is_local:
                store.append(index, b"".join(lines))
            else:  # no append: rewrite the whole index from memory, one PUT
                store.write_atomic(index, b"".join(self.media_index + lines))
                self.media_index.extend(lines)
        rows = [i.payload for i in self.media_pending if i.form == "row"]
        self.media_done += sum(i.size for i in self.media_pending)
        self.media_pending = []
        if rows:
            self.hist_pending.extend(rows)
        if self.hist_pending:
            _arrow_for_writer()
            table = _histogram_table(self.hist_pending)
            start, end = self.hist_next_row, self.hist_next_row + len(table)
            self.hist_log.write(start, end, [table])
            self.hist_pending, self.hist_next_row = [], end

    def _encode_media(self, item):
        """The index line of an image/audio/video/text item, with its bytes under "data"."""
        line = {"tag": item.tag, "kind": item.kind, "step": item.step,
                "time": round(item.time, 6)}
        if item.kind == "text":
            line["text"] = item.payload
            return line
        if item.kind == "image":
            data = item.payload if item.form == "bytes" else _encode_image(item.form,
                                                                           item.payload)
            ext, mime = _sniff_image(data[:12])
            line["width"], line["height"] = _image_size(data, ext)
        else:
            data, ext = item.payload, item.ext
            mime = (AUDIO_TYPES if item.kind == "audio" else VIDEO_TYPES)[ext]
        self.media_seq += 1
        line["path"] = (f"{MEDIA_DIR}/{_media_folder(item.tag)}/{item.step}-"
                        f"{self.media_seq}.{ext}")
        line["mime"], line["bytes"] = mime, len(data)
        line["data"] = data
        return line

    def _write_meta(self):
        meta = self.meta
        path = self.store.join(self.path, RUN_YAML)
        stamp = self.store.stat(path)
        if stamp is not None and self.meta_stamp is not None and stamp != self.meta_stamp:
            # run.yaml changed under us: the dashboard edited description/tags. Adopt them,
            # or this heartbeat would silently undo the user's edit.
            try:
                disk = _read_yaml(self.store, path)
            except ExpmanError:
                disk = {}
            for key in ("description", "tags"):
                if key in disk:
                    meta[key] = disk[key]
        meta["heartbeat_at"] = _iso()
        meta["rows"] = self.next_row
        meta["last_step"] = self.last_step if self.next_row else None
        meta["summary"] = {**self.summary, **self.scalars}
        # expman-rs 0.5.3's sections, so its readers and scripts find them: log_scalar values
        # and the last value of each metric
        meta["scalars"], meta["vectors"] = dict(self.scalars), dict(self.summary)
        # best-run finding reads these (issue 14); absent: an older writer, so unknown
        meta["summary_min"], meta["summary_max"] = dict(self.summary_min), dict(self.summary_max)
        if self.dropped_rows:
            meta["dropped_rows"] = self.dropped_rows
        if self.dropped_media:
            meta["dropped_media"] = self.dropped_media
        self.store.write_atomic(path, _yaml_dump(meta))
        self.meta_stamp = self.store.stat(path)
        self.meta_dirty = False
        self.last_beat = time.monotonic()

    def _release_flush_waiters(self):
        waiters, self.flush_waiters = self.flush_waiters, []
        for event in waiters:
            event.set()

    # -- closing -------------------------------------------------------------------------
    def _finish(self):
        """Flush everything, compact segments into metrics.parquet, write the final status."""
        self._flush(final=True)
        self._compact_logs()
        self._write_final_meta(self.stop_status)
        _catalog_closed_run(self.store, self.path, self.meta, self.config)

    def _finish_after_error(self):
        """Closing while the disk refuses writes: try once more, then record what we can."""
        try:
            self._flush(final=True)
            self._compact_logs()
        except Exception as exc:  # noqa: BLE001
            self._warn_once("close", f"expman: could not write the last rows of "
                                     f"{self.store.display(self.path)}: {exc}", always=True)
        try:
            self._write_final_meta(self.stop_status)
        except Exception:  # noqa: BLE001 - nothing left to try; readers will see "crashed"
            pass

    def _compact_logs(self):
        # the writer's plain segments become metrics.parquet without pyarrow and without
        # decoding a value: one is renamed, several are joined byte for byte
        # (_join_plain_segments); anything else (segments of a crashed process) is compacted
        max_rows = PLAIN_FINAL_MAX_CELLS // (len(self.keys) + 2)
        if not (self.metrics_log.rename_single(max_rows) or self._join_plain_segments()):
            _arrow_for_writer()
            self.metrics_log.compact(empty=_plain_parquet([], (), (0, 0)))
        if self.hist_log.made:
            self.hist_log.compact()
        if self.log_buffer:  # what compaction warned about (rows lost, unreadable segments)
            data = "".join(self.log_buffer).encode("utf-8", "replace")
            self.store.append(self.store.join(self.path, RUN_LOG), data)
            self.log_buffer = []

    def _keep_layout(self, start, end, layout):
        """Remember a plain file's row groups for _join_segments, until the run has so many
        column chunks that keeping them costs real memory (then forget them all, and stop)."""
        layouts = self.plain_layouts
        if layouts is None:
            return
        layouts[(start, end)] = layout[0]
        if sum(len(c) for groups in layouts.values() for _n, c in groups) > 1 << 20:
            self.plain_layouts = None

    def _join_segments(self, segs, path, rows):
        """Write the segments segs ([start, end, tier], tiling rows) as one file at path,
        byte for byte (_pq_join): _SegmentLog.merge's joiner, and close's. False (nothing
        written) when one is not a plain file this writer knows, or is gone."""
        layouts = self.plain_layouts
        known = layouts and [layouts.get((s[0], s[1])) for s in segs]
        if not known or None in known:
            return False
        present = set()
        for groups in known:
            for _n, chunks in groups:
                present.update(c[0] for c in chunks)
        keys = [k for k in self.keys if k in present]
        log, store = self.metrics_log, self.store
        parts = ((store.read_bytes(log.path(s[0], s[1])), groups)
                 for s, groups in zip(segs, known))
        layout = []
        try:
            _pq_write(store, path, _pq_join(parts, keys, rows, layout=layout))
        except OSError as exc:
            if not _is_missing(exc):
                raise
            return False  # a segment was deleted under us: merge/compact say what is lost
        for s in segs:
            layouts.pop((s[0], s[1]), None)
        if path != log.final:
            self._keep_layout(rows[0], rows[1], layout)
        return True

    def _join_plain_segments(self):
        """Close of a run whose segments are all this writer's plain ones, tiling the rows
        from 0, with at most PLAIN_FINAL_MAX_CELLS values: metrics.parquet is their row
        groups joined byte for byte (small ones coalesced), written whole before any segment
        goes (rule 2 of section 5.1), its chart summary written as compact() does. False in
        any other state (compact() then decides)."""
        log = self.metrics_log
        segs = log.segments
        if not segs or segs[0][0] != 0 or any(a[1] != b[0] for a, b in zip(segs, segs[1:])):
            return False
        if segs[-1][1] * (len(self.keys) + 2) > PLAIN_FINAL_MAX_CELLS:
            return False
        store = self.store
        names = store.listnames(log.dir)
        if sorted(names) != sorted(_segment_name(s, e) for s, e, _t in segs) or \
                store.stat(log.final) is not None:
            return False
        if not self._join_segments(segs, log.final, (0, segs[-1][1])):
            return False
        # a chart summary, before the segments go (as in compact()), once the rows are
        # not cheap to read; a smaller run gets none and imports no pyarrow
        end = segs[-1][1]
        if end >= SUMMARY_MIN_ROWS and end * (len(self.keys) + 2) > PLAIN_SUMMARY_MIN_CELLS:
            log._summarize(pieces=[(s, e, _segment_name(s, e)) for s, e, _t in segs])
        log._delete_segments(names)
        return True

    def _write_final_meta(self, status):
        meta = self.meta
        end = time.time()
        meta["status"] = status
        meta["finished_at"] = _iso(end)
        meta["duration_secs"] = round(end - self.opts.started, 3)
        self._write_meta()


# -- 7.1 system metrics (opt-in): sampled on the writer's schedule, never the training thread's ----

class _SystemSampler:
    """CPU, memory and GPU readings as ``sys/...`` metric values, for ``system_metrics=True``.

    Runs on the writer thread every ``interval`` seconds and costs nothing when off. Sources,
    all without extra packages: ``time.process_time`` (the process's CPU, every thread),
    /proc (Linux: RSS, host CPU and memory), NVML through ctypes when libnvidia-ml is present,
    else ``nvidia-smi`` when it is on PATH. A source that fails twice is dropped with one line
    in run.log, so a broken driver costs two attempts, not one every few seconds.
    """

    def __init__(self, interval):
        self.interval = float(interval)
        self.next_at = time.monotonic() + self.interval
        self.last_wall = time.monotonic()
        self.last_cpu = time.process_time()
        self.last_host = _host_cpu_times()
        self.gpu = None                    # _Nvml, _NvidiaSmi or False (none) once probed
        self.gpu_failures = 0
        self.notes = []                    # run.log lines for the writer to append

    def due(self, now):
        return now >= self.next_at

    def sample(self, now):
        self.next_at = now + self.interval
        values = {}
        cpu, elapsed = time.process_time(), now - self.last_wall
        if elapsed > 0:
            values["sys/cpu_percent"] = round(100.0 * (cpu - self.last_cpu) / elapsed, 2)
        self.last_cpu, self.last_wall = cpu, now
        host = _host_cpu_times()
        if host and self.last_host and host[1] > self.last_host[1]:
            busy, total = host[0] - self.last_host[0], host[1] - self.last_host[1]
            values["sys/host_cpu_percent"] = round(100.0 * busy / total, 2)
        self.last_host = host
        rss = _rss_bytes()
        if rss is not None:
            values["sys/rss_mb"] = round(rss / 2 ** 20, 2)
        memory = _host_memory_percent()
        if memory is not None:
            values["sys/host_memory_percent"] = round(memory, 2)
        values.update(self._gpu_values())
        return values

    def _gpu_values(self):
        if self.gpu is None:
            self.gpu = _Nvml.open() or _NvidiaSmi.open() or False
            if self.gpu:
                self.notes.append(f"system metrics: GPUs read through {self.gpu.name}")
        if not self.gpu:
            return {}
        try:
            readings = self.gpu.read()
            self.gpu_failures = 0
        except Exception as exc:  # noqa: BLE001 - a driver hiccup must not stop the writer
            self.gpu_failures += 1
            if self.gpu_failures >= 2:
                self.notes.append(f"system metrics: stopped reading GPUs ({self.gpu.name}: "
                                  f"{exc})")
                self.gpu = False
            return {}
        values = {}
        for index, util, used, total in readings:
            prefix = f"sys/gpu{index}"
            if util is not None:
                values[f"{prefix}/util_percent"] = float(util)
            if used is not None:
                values[f"{prefix}/memory_mb"] = round(used / 2 ** 20, 2)
                if total:
                    values[f"{prefix}/memory_percent"] = round(100.0 * used / total, 2)
        return values


def _host_cpu_times():
    """(busy, total) jiffies of the whole host from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


def _rss_bytes():
    """The process's resident memory now (Linux /proc), else its peak (getrusage), else None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes
    except (ImportError, OSError):
        return None


def _host_memory_percent():
    try:
        with open("/proc/meminfo", "rb") as f:
            info = dict(line.split(b":", 1) for line in f if b":" in line)
        total = int(info[b"MemTotal"].split()[0])
        available = int(info[b"MemAvailable"].split()[0])
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return 100.0 * (total - available) / total if total else None


class _Nvml:
    """GPU readings straight from the driver's NVML library through ctypes (no subprocess)."""

    name = "NVML"

    @classmethod
    def open(cls):
        import ctypes
        names = ["nvml.dll"] if os.name == "nt" else ["libnvidia-ml.so.1", "libnvidia-ml.so"]
        for lib_name in names:
            try:
                lib = ctypes.CDLL(lib_name)
                if lib.nvmlInit_v2() != 0:
                    return None
                count = ctypes.c_uint(0)
                if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0 or not count.value:
                    return None
                handles = []
                for i in range(count.value):
                    handle = ctypes.c_void_p()
                    if lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) == 0:
                        handles.append((i, handle))
                return cls(lib, handles) if handles else None
            except (OSError, AttributeError):
                continue
        return None

    def __init__(self, lib, handles):
        import ctypes

        class Utilization(ctypes.Structure):
            _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]

        class Memory(ctypes.Structure):
            _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                        ("used", ctypes.c_ulonglong)]

        self.lib, self.handles = lib, handles
        self.util, self.memory, self.byref = Utilization(), Memory(), ctypes.byref

    def read(self):
        out = []
        for index, handle in self.handles:
            util = used = total = None
            if self.lib.nvmlDeviceGetUtilizationRates(handle, self.byref(self.util)) == 0:
                util = self.util.gpu
            if self.lib.nvmlDeviceGetMemoryInfo(handle, self.byref(self.memory)) == 0:
                used, total = self.memory.used, self.memory.total
            out.append((index, util, used, total))
        if all(r[1] is None and r[2] is None for r in out):
            raise OSError("NVML answered no reading")
        return out


class _NvidiaSmi:
    """GPU readings from ``nvidia-smi`` (one short subprocess per sample) when NVML is absent."""

    name = "nvidia-smi"
    QUERY = ["--query-gpu=index,utilization.gpu,memory.used,memory.total",
             "--format=csv,noheader,nounits"]

    @classmethod
    def open(cls):
        exe = shutil.which("nvidia-smi")
        if not exe:
            return None
        sampler = cls(exe)
        try:
            sampler.read()
        except Exception:  # noqa: BLE001 - no driver, no GPU, a wrapper that fails
            return None
        return sampler

    def __init__(self, exe):
        self.exe = exe

    def read(self):
        out = subprocess.run([self.exe, *self.QUERY], capture_output=True, text=True,
                             timeout=5, check=True).stdout
        readings = []
        for line in out.splitlines():
            fields = [f.strip() for f in line.split(",")]
            if len(fields) != 4:
                continue
            index, util, used, total = (_smi_number(f) for f in fields)
            if index is None:
                continue
            mib = 2 ** 20
            readings.append((int(index), util, None if used is None else used * mib,
                             None if total is None else total * mib))
        if not readings:
            raise OSError(f"nvidia-smi printed no GPU readings: {out[:200]!r}")
        return readings


def _smi_number(text):
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


_FAST_KINDS = {float: "float", int: "int", bool: "int"}


def _fast_kind(value_type):
    """"float" or "int" for the types array("d") converts exactly (ints up to 2**53), else
    None. Cached per type; NumPy is only looked at when the user's script imported it."""
    kind = _FAST_KINDS.get(value_type, False)
    if kind is not False:
        return kind
    np_ = _imported("numpy")
    kind = None
    if issubclass(value_type, int):
        kind = "int"
    elif issubclass(value_type, float):
        kind = "float"
    elif np_ is not None and issubclass(value_type, (np_.integer, np_.bool_)):
        kind = "int"
    elif np_ is not None and issubclass(value_type, np_.floating):
        kind = "float"
    if kind is not None or np_ is not None or "numpy" not in sys.modules:
        _FAST_KINDS[value_type] = kind   # (not while NumPy is half imported: ask again)
    return kind


def _buffer_array(arrow_type, buf, validity=None, null_count=0):
    """An Arrow array over a Python ``array.array`` buffer (zero copy).

    ``pa.array(list)`` would do, but its first call imports pandas when installed (0.3-1 s of
    GIL-heavy work on the writer thread, and a crash if it happens during interpreter exit),
    so the writer builds every array from buffers.
    """
    return pa.Array.from_buffers(arrow_type, len(buf), [validity, pa.py_buffer(buf)],
                                 null_count=null_count)


def _f64_array(buf, valid=None):
    if valid is None or all(valid):
        return _buffer_array(pa.float64(), buf)
    return _buffer_array(pa.float64(), buf, pa.py_buffer(_bitmap(valid)),
                         null_count=len(valid) - sum(valid))


# The writer never calls pyarrow.compute (casts included): its first call builds the function
# registry, +40 MB of RSS and 30-160 ms of GIL time, which a short run paid for three
# multiplications. These helpers do the little arithmetic the writer needs without it.

def _bitmap(valid):
    """An Arrow validity bitmap (LSB first) of a list of bools, by C-level passes: the
    integer of every 8th byte of bytes(valid), shifted by its bit, summed."""
    flags = bytes(valid) + bytes(-len(valid) % 8)
    total = 0
    for bit in range(8):
        total |= int.from_bytes(flags[bit::8], "little") << bit
    return total.to_bytes(len(flags) // 8, "little")


def _micros(seconds):
    """array("q") of int(t * 1e6) for an array("d") of POSIX times (non-finite ones -> 0)."""
    np_ = _imported("numpy")  # loaded by pyarrow when installed: no import here
    if np_ is not None:
        with np_.errstate(all="ignore"):
            values = np_.frombuffer(seconds, dtype=np_.float64) * 1e6
            values[~np_.isfinite(values)] = 0.0
            return array.array("q", values.astype(np_.int64).tobytes())
    try:  # float.__trunc__ is int() without its type dispatch: ~1/3 of this loop's cost
        return array.array("q", map(float.__trunc__, map((1e6).__mul__, seconds)))
    except (ValueError, OverflowError):  # NaN or inf from an injected clock
        return array.array("q", [int(t * 1e6) if math.isfinite(t * 1e6) else 0
                                 for t in seconds])


def _min_max_valid(values):
    """(min, max) of an array("d") of a key's valid values, NaN ignored; (None, None) when
    nothing but NaN is left. NumPy's fmin/fmax when pyarrow or the script loaded it (no import
    here, as in _micros); else min()/max(), which skip a NaN unless it comes first."""
    if not values:
        return None, None
    np_ = _imported("numpy")
    if np_ is not None and len(values) > 32:
        data = np_.frombuffer(values, dtype=np_.float64)
        low, high = float(np_.fmin.reduce(data)), float(np_.fmax.reduce(data))
    else:  # one list: each value boxed once, not once per pass
        values = values.tolist()
        low, high = min(values), max(values)
    if low != low or high != high:   # a NaN first (or only NaN): drop them and look again
        values = [v for v in values if v == v]
        if not values:
            return None, None
        low, high = min(values), max(values)
    return low, high


def _last_valid(column):
    """The last non-null value of a ChunkedArray (None if all are null), read off its
    validity bitmaps."""
    for chunk in reversed(column.chunks):
        n = len(chunk)
        if chunk.null_count == n:
            continue
        if chunk.null_count == 0:
            return chunk[n - 1].as_py()
        bits, offset = chunk.buffers()[0].to_pybytes(), chunk.offset
        for i in range(n - 1, -1, -1):
            j = i + offset
            if bits[j >> 3] >> (j & 7) & 1:
                return chunk[i].as_py()
    return None


def _conform(table, schema):
    """table with schema's columns in schema's order, missing ones as nulls."""
    names = table.schema.names
    if names == schema.names:
        return table
    # A set, and one null array per type shared by every missing column: `name in
    # table.schema.names` rebuilt and scanned the name list per field, O(keys**2) per call,
    # and a run with 20,000 keys took 111 s to close.
    n, have, nulls, arrays = len(table), set(names), {}, []
    for field in schema:
        if field.name in have:
            arrays.append(table.column(field.name))
            continue
        null = nulls.get(field.type)
        if null is None:
            null = nulls[field.type] = pa.nulls(n, field.type)
        arrays.append(null)
    return pa.Table.from_arrays(arrays, schema=schema)


def _empty_metrics_table():
    return pa.Table.from_arrays([pa.nulls(0, pa.int64()),
                                 pa.nulls(0, pa.timestamp("us", tz="UTC"))],
                                names=["step", "timestamp"])


_MAX_EXACT_INT = float(2 ** 53)


# -- 7.2 media conversion, on the writer thread ----------------------------------------------------

def _json_line(record):
    return (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()


def _media_folder(tag):
    """The folder of a tag's files under media/ ('val/samples' -> 'val_samples')."""
    try:
        return _safe_name(tag, "tag")[:100]
    except InvalidInputError:
        return "tag"


def _encode_image(form, payload):
    """PNG bytes of a queued NumPy array or PIL image."""
    if form == "pil":
        image = payload
        if image.mode not in ("1", "L", "LA", "RGB", "RGBA", "P", "I", "I;16"):
            image = image.convert("RGBA" if "A" in image.mode else "RGB")
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    np_ = sys.modules["numpy"]  # the user passed an array, so NumPy is imported
    arr = payload
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)  # CHW -> HWC
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype.kind == "f":
        arr = np_.nan_to_num(arr.astype(np_.float64), nan=0.0, posinf=1.0, neginf=0.0)
        arr = (np_.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np_.uint8)
    elif arr.dtype.kind == "b":
        arr = arr.astype(np_.uint8) * 255
    elif arr.dtype != np_.uint8:
        arr = np_.clip(arr, 0, 255).astype(np_.uint8)
    height, width, channels = arr.shape
    rows = np_.zeros((height, width * channels + 1), np_.uint8)
    rows[:, 1:] = arr.reshape(height, width * channels)
    return _png_encode(width, height, channels, rows.tobytes())


def _histogram_row(item):
    """(tag, step, time, edges, counts, min, max, sum, count) of a histogram item.

    NumPy bins NumPy arrays and tensors; lists are binned in pure Python unless the script
    imported NumPy already. Non-finite values are left out (and counted by no bin)."""
    form, data, bins = item.form, item.payload, item.bins
    head = (item.tag, item.step, item.time)
    if form == "edges":
        edges, counts = data
        return (*head, edges, counts, edges[0], edges[-1], None, sum(counts))
    np_ = _imported("numpy") if _loaded("numpy", "histogram") else None
    if form == "tensor":
        data, form = _tensor_values(data, np_)
    if form == "values" and np_ is not None:
        try:
            data, form = np_.asarray(data, dtype=np_.float64), "array"
        except (TypeError, ValueError) as exc:
            raise ValueError(f"values are not numbers ({exc})") from None
    if form == "array":
        return (*head, *_numpy_bins(np_, data, bins))
    return (*head, *_python_bins(data, bins))


def _tensor_values(tensor, np_):
    """(data, form) of a tensor copied to the host: an array with NumPy, else a list."""
    data = tensor.detach().float().cpu()
    if np_ is not None:
        try:
            return data.numpy(), "array"
        except Exception:  # noqa: BLE001 - torch without NumPy support
            return data.tolist(), "values"
    return data.reshape(-1).tolist(), "values"


def _numpy_bins(np_, data, bins):
    """(edges, counts, min, max, sum, count) of the finite values of a NumPy array."""
    arr = data.astype(np_.float64, copy=False).reshape(-1)
    arr = arr[np_.isfinite(arr)]
    if not arr.size:
        raise ValueError("no finite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np_.histogram(arr, bins=bins, range=(lo, hi))
    return (edges.tolist(), [float(c) for c in counts.tolist()], float(arr.min()),
            float(arr.max()), float(arr.sum()), int(arr.size))


def _python_bins(data, bins):
    """(edges, counts, min, max, sum, count) of the finite values of a list, without NumPy."""
    try:
        values = [float(v) for v in data]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"values are not numbers ({exc})") from None
    values = [v for v in values if math.isfinite(v)]
    if not values:
        raise ValueError("no finite values")
    vmin, vmax = min(values), max(values)
    lo, hi = (vmin - 0.5, vmax + 0.5) if vmin == vmax else (vmin, vmax)
    counts = [0] * bins
    scale, last = bins / (hi - lo), bins - 1
    for v in values:
        i = int((v - lo) * scale)
        counts[i if i < last else last] += 1
    edges = [lo + (hi - lo) * k / bins for k in range(bins + 1)]
    return edges, [float(c) for c in counts], vmin, vmax, math.fsum(values), len(values)


_HISTOGRAM_NAMES = ("tag", "step", "timestamp", "edges", "counts", "min", "max", "sum", "count")


def _histogram_table(rows):
    """An Arrow table of histogram rows, built from buffers (no pa.array(list): see above)."""
    def f64_list(lists):
        offsets, flat = array.array("i", [0]), array.array("d")
        for values in lists:
            flat.extend(values)
            offsets.append(len(flat))
        return pa.ListArray.from_arrays(_buffer_array(pa.int32(), offsets), _f64_array(flat))

    def f64(values):
        return _f64_array(array.array("d", [0.0 if v is None else v for v in values]),
                          [v is not None for v in values])

    micros = array.array("q", [round(r[2] * 1e6) for r in rows])
    cols = list(zip(*rows))
    return pa.Table.from_arrays([
        _str_array(cols[0]), _buffer_array(pa.int64(), array.array("q", cols[1])),
        _buffer_array(pa.int64(), micros).cast(pa.timestamp("us", tz="UTC")),
        f64_list(cols[3]), f64_list(cols[4]), f64(cols[5]), f64(cols[6]), f64(cols[7]),
        _buffer_array(pa.int64(), array.array("q", [int(c) for c in cols[8]]))],
        names=list(_HISTOGRAM_NAMES))


def _str_array(texts):
    data = [t.encode("utf-8", "replace") for t in texts]
    offsets, total = array.array("i", [0]), 0
    for chunk in data:
        total += len(chunk)
        offsets.append(total)
    return pa.Array.from_buffers(pa.string(), len(data),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


# -- 7.3 plain Parquet: the writer's segments, written without pyarrow ----------------------------
#
# A segment is one row group: step (int64), timestamp (int64, TIMESTAMP(MICROS, UTC)) and a
# float64 column per key, every column OPTIONAL (as pyarrow writes nullable columns), one
# PLAIN uncompressed data page per column, definition levels as the RLE/bit-packed hybrid
# (an Arrow validity bitmap is already its bit-packed form). Any Parquet reader reads it.
# Building it is a few bytes joins: the writer thread holds the GIL for less than pyarrow's
# table + ParquetWriter took, and a short run never imports pyarrow (~60 MB and 0.1-0.3 s).
# Merges and close join these files byte for byte (_pq_join: pages copied, small row groups
# coalesced, the footer rewritten), so a closed run's metrics.parquet is uncompressed, as
# written; only files the writer does not know (a crashed run's, compacted by reap) go
# through pyarrow, and come out snappy-compressed.

_PQ_INT64, _PQ_DOUBLE = 2, 5
_PQ_LITTLE = sys.byteorder == "little"


def _varint(n):
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return out


class _Thrift:
    """Thrift's compact protocol, as much of it as a Parquet footer and page header need
    (field ids grow by 1..15 in every struct written here)."""

    def __init__(self):
        self.out, self.last = bytearray(), [0]

    def field(self, fid, ftype):
        self.out.append((fid - self.last[-1]) << 4 | ftype)
        self.last[-1] = fid

    def int(self, fid, value, ftype=5):      # 5: i32, 6: i64 (both zigzag varints)
        self.field(fid, ftype)
        self.out += _varint(value << 1 if value >= 0 else (-value << 1) - 1)

    def text(self, fid, value):
        value = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        self.field(fid, 8)
        self.out += _varint(len(value)) + value

    def struct(self, fid=None):              # fid None: the next element of a list
        if fid is not None:
            self.field(fid, 12)
        self.last.append(0)

    def end(self):
        self.out.append(0)
        self.last.pop()

    def list(self, fid, etype, n):
        self.field(fid, 9)
        self.out += bytes([n << 4 | etype]) if n < 15 else bytes([0xF0 | etype]) + _varint(n)


def _pq_levels(n, valid):
    """Definition levels of n rows: one RLE run when all are valid (valid None) or none
    (valid False); else the bitmap's whole bytes bit-packed, and the last n % 8 rows as
    one-value RLE runs, so batches of any length join into one page."""
    if valid is None or valid is False:
        return _varint(n << 1) + (b"\x00" if valid is False else b"\x01")
    full = n >> 3
    out = _varint(full << 1 | 1) + valid[:full] if full else bytearray()
    for i in range(full << 3, n):
        out += b"\x02\x01" if valid[i >> 3] >> (i & 7) & 1 else b"\x02\x00"
    return out


def _pq_page(out, name, ptype, n, levels, values, chunks):
    """Append one column chunk (one data page) to out; its footer entry goes to chunks:
    (name, type, rows, offset in out, bytes, bytes of the page header)."""
    body = len(levels).to_bytes(4, "little") + levels + values
    head = _Thrift()
    head.int(1, 0)                       # DATA_PAGE
    head.int(2, len(body))
    head.int(3, len(body))
    head.struct(5)
    head.int(1, n)
    head.int(2, 0)                       # PLAIN
    head.int(3, 3)                       # RLE
    head.int(4, 3)
    head.end()
    head.out.append(0)
    chunks.append((name, ptype, n, len(out), len(head.out) + len(body), len(head.out)))
    out += head.out
    out += body


def _le(buf):
    if _PQ_LITTLE:
        return buf.tobytes()
    buf = array.array(buf.typecode, buf)
    buf.byteswap()
    return buf.tobytes()


def _plain_parquet(staged, order, rows, layout=None, pause=None):
    """The bytes of one Parquet file holding the staged batches (see _Writer._stage) as one
    row group, recording rows=[start, end) as the segment log's files do (_ROWS_KEY).
    ``layout`` (a list) receives (rows, column chunks) for _join_plain; ``pause`` (the
    writer's _pause) is called between columns, so the GIL is shared while a big segment is
    built (~0.7 ms a column of 100,000 rows)."""
    present = set().union(*(b[3] for b in staged)) if staged else set()
    keys = [k for k in order if k in present] if len(present) < len(order) else list(order)
    n = sum(b[0] for b in staged)
    out, chunks = bytearray(b"PAR1"), []
    if n:
        _pq_columns(out, staged, keys, n, chunks, pause)
    if layout is not None:
        layout.append((n, chunks))
    return _pq_finish(out, keys, [(n, chunks)] if n else [], rows)


def _join_plain(parts, keys, rows, group_rows=None, layout=None):
    """The bytes of one Parquet file made of the writer's plain files (see _pq_join)."""
    return b"".join(_pq_join(parts, keys, rows, group_rows, layout))


def _pq_join(parts, keys, rows, group_rows=None, layout=None):
    """Yield, piece by piece, one Parquet file made of plain files (the writer's segments and
    earlier joins of them) without decoding a value: ``parts`` is an iterable of (file
    bytes, [(rows, chunks)] of its row groups), in row order, taken one at a time (a merge
    or a close holds one file and a few small row groups in memory, not the run).

    A row group of at least ``group_rows`` rows is copied byte for byte (its footer entry
    moved); consecutive smaller ones are coalesced into one, page by page: PLAIN values and
    the definition levels of each part concatenate (_pq_levels ends every part on a whole
    run), so a run that flushed 5 rows at a time ends in row groups of ~64k rows, as a
    pyarrow compaction made them. A key a part lacks is an all-null page. ``layout`` (a
    list) receives the result's [(rows, chunks)], for the next join.
    """
    names = ["step", "timestamp", *keys]
    if group_rows is None:
        group_rows = max(1024, min(1 << 16, _CELL_BUDGET // len(names)))
    pos, groups, pending, pending_rows = 4, [], [], 0
    yield b"PAR1"
    for data, src_groups in parts:
        view = memoryview(data)
        for n, chunks in src_groups:
            if pending and pending_rows + n > group_rows:
                piece, group = _pq_group(pending, names, pos)
                pos += len(piece)
                groups.append(group)
                yield piece
                pending, pending_rows = [], 0
            pending.append((view, n, chunks))
            pending_rows += n
    if pending:
        piece, group = _pq_group(pending, names, pos)
        groups.append(group)
        yield piece
    if layout is not None:
        layout.append(groups)
    yield _pq_footer(keys, groups, rows)


def _pq_group(pending, names, pos):
    """(bytes, (rows, chunks)) of one row group at file offset pos, made of the source row
    groups in pending [(file view, rows, chunks)]: the one source copied whole, or several
    coalesced into one page per column."""
    if len(pending) == 1:
        view, n, chunks = pending[0]
        lo = min(c[3] for c in chunks)
        hi = max(c[3] + c[4] for c in chunks)
        out = bytearray(view[lo:hi])
        have = {c[0]: (c[0], c[1], c[2], c[3] - lo + pos, c[4], c[5]) for c in chunks}
        group = []
        for i, name in enumerate(names):
            chunk = have.get(name)
            if chunk is None:
                _pq_page(out, name, _PQ_INT64 if i < 2 else _PQ_DOUBLE, n,
                         _pq_levels(n, False), b"", group)
                c = group.pop()
                chunk = (c[0], c[1], c[2], c[3] + pos, c[4], c[5])
            group.append(chunk)
        return out, (n, group)
    total = sum(p[1] for p in pending)
    sources = [(view, n, {c[0]: c for c in chunks}) for view, n, chunks in pending]
    out, group = bytearray(), []
    for i, name in enumerate(names):
        levels, values = [], []
        for view, n, have in sources:
            chunk = have.get(name)
            if chunk is None:
                levels.append(_pq_levels(n, False))
                continue
            body = view[chunk[3] + chunk[5]:chunk[3] + chunk[4]]
            size = int.from_bytes(body[:4], "little")
            levels.append(body[4:4 + size])
            values.append(body[4 + size:])
        _pq_page(out, name, _PQ_INT64 if i < 2 else _PQ_DOUBLE, total, b"".join(levels),
                 b"".join(values), group)
    return out, (total, [(c[0], c[1], c[2], c[3] + pos, c[4], c[5]) for c in group])


def _pq_write(store, path, pieces):
    """Write the pieces of a file (a generator: each made when its turn comes) so that it
    appears whole: a temp file and a rename locally, one PUT on object stores. No pyarrow:
    a merge or a close of the writer's plain files never imports it."""
    if not store.is_local:
        store.write_atomic(path, b"".join(pieces))
        return
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(tmp, "wb") as fh:
            for piece in pieces:
                fh.write(piece)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _pq_finish(out, keys, groups, rows):
    """out (PAR1 and the pages) + the footer describing groups [(rows, chunks)]."""
    out += _pq_footer(keys, groups, rows)
    return bytes(out)


def _pq_footer(keys, groups, rows):
    """The footer (FileMetaData, its length, PAR1) of a file with row groups [(rows,
    chunks)] and the schema step, timestamp, *keys."""
    foot = _Thrift()
    foot.int(1, 1)
    _pq_schema(foot, ["step", "timestamp", *keys])
    foot.int(3, sum(n for n, _c in groups), 6)
    foot.list(4, 12, len(groups))
    for n, chunks in groups:
        _pq_row_group(foot, n, chunks)
    foot.list(5, 12, 1)
    foot.struct()
    foot.text(1, _ROWS_KEY)
    foot.text(2, f"{rows[0]} {rows[1]}")
    foot.end()
    foot.text(6, f"expman version {__version__}")
    foot.out.append(0)
    return bytes(foot.out + len(foot.out).to_bytes(4, "little") + b"PAR1")


def _pq_columns(out, staged, keys, n, chunks, pause=None):
    full = _varint(n << 1) + b"\x01"
    _pq_page(out, "step", _PQ_INT64, n, full, b"".join(_le(b[1]) for b in staged), chunks)
    _pq_page(out, "timestamp", _PQ_INT64, n, full, b"".join(_le(b[2]) for b in staged),
             chunks)
    missing = (None, False)
    for key in keys:
        if pause is not None:
            pause()
        parts = [(b[0], b[3].get(key, missing)) for b in staged]
        levels = b"".join(_pq_levels(m, col[1]) for m, col in parts)
        values = b"".join(_le(col[0]) for _m, col in parts if col[0] is not None)
        _pq_page(out, key, _PQ_DOUBLE, n, levels, values, chunks)


def _pq_schema(foot, names):
    foot.list(2, 12, len(names) + 1)
    foot.struct()
    foot.text(4, "schema")
    foot.int(5, len(names))
    foot.end()
    for i, name in enumerate(names):
        foot.struct()
        foot.int(1, _PQ_INT64 if i < 2 else _PQ_DOUBLE)
        foot.int(3, 1)                   # OPTIONAL
        foot.text(4, name)
        if i == 1:                       # TIMESTAMP_MICROS; logicalType TIMESTAMP(UTC, MICROS)
            foot.int(6, 10)
            foot.out += b"\x4c\x8c\x11\x1c\x2c\x00\x00\x00\x00"
            foot.last[-1] = 10
        foot.end()


def _pq_row_group(foot, n, chunks):
    foot.struct()
    foot.list(1, 12, len(chunks))
    for name, ptype, count, offset, length, _head in chunks:
        foot.struct()
        foot.int(2, offset, 6)
        foot.struct(3)
        foot.int(1, ptype)
        foot.list(2, 5, 2)
        foot.out += b"\x00\x06"          # PLAIN, RLE
        foot.list(3, 8, 1)
        raw = name.encode("utf-8", "surrogatepass")
        foot.out += _varint(len(raw)) + raw
        foot.int(4, 0)                   # UNCOMPRESSED
        foot.int(5, count, 6)
        foot.int(6, length, 6)
        foot.int(7, length, 6)
        foot.int(9, offset, 6)
        foot.end()
        foot.end()
    foot.int(2, sum(c[4] for c in chunks), 6)
    foot.int(3, n, 6)
    foot.end()


# 8 Public logging API #######################################################################

_OPEN_RUNS = set()          # experiments not closed yet: closed (and flushed) at exit
_CURRENT = None             # the run of expman.init()
_HOOKS = {"installed": False, "exit_exc": None, "signal": None}
_HOOK_LOCK = threading.Lock()


# -- 8.1 distributed jobs: which rank this process is, and which job (group) it belongs to ---------

def _env_int(environ, names):
    """The first of the variables that holds an integer, as (value, name), or (None, None)."""
    for name in names:
        text = environ.get(name)
        if text is not None and text.strip().lstrip("-").isdigit():
            return int(text), name
    return None, None


def _distributed(environ=None, rank=None, group=None):
    """{"rank", "local_rank", "world_size", "group"} in a distributed job, else None.

    A process is taken to be one rank of a job when EXPMAN_RANK/EXPMAN_GROUP (or ``rank=`` /
    ``group=``) say so, or when a launcher's rank variable is set and its world size is not 1
    (a one-task SLURM job sets SLURM_PROCID=0 and is an ordinary run). The group is the job
    id every rank sees alike (SLURM_JOB_ID, LSB_JOBID, PBS_JOBID, TORCHELASTIC_RUN_ID unless
    torchrun's "none", ...), else one made up from the launch; see _launch_group.
    ``rank=False`` turns detection off.
    """
    environ = os.environ if environ is None else environ
    if rank is False:  # Experiment(rank=False): an ordinary run whatever the launcher says
        return None
    explicit = rank is not None or group is not None
    if rank is None:
        rank, _ = _env_int(environ, (ENV_RANK,))
        explicit = explicit or rank is not None
    if rank is None:
        rank, _ = _env_int(environ, _RANK_VARS)
    world, _ = _env_int(environ, _WORLD_VARS)
    group = group if group is not None else (environ.get(ENV_GROUP) or None)
    explicit = explicit or group is not None
    if not explicit and (rank is None or world == 1):
        return None
    if rank is None:
        rank = 0
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
        raise InvalidInputError(f"rank must be a non-negative int, got {rank!r}")
    if group is None:
        group = _job_group(environ) or _launch_group(environ)
    group = _safe_name(str(group), "group")
    local, _ = _env_int(environ, _LOCAL_RANK_VARS)
    return {"rank": rank, "local_rank": local, "world_size": world, "group": group}


def _job_group(environ):
    """The scheduler's job id every rank sees alike (SLURM_JOB_ID.step for a second `srun`
    in one allocation), or None."""
    for name in _JOB_VARS:
        value = (environ.get(name) or "").strip()
        if value and value.lower() != "none":  # torchrun's default --rdzv-id
            step = environ.get("SLURM_STEP_ID", "")
            if name == "SLURM_JOB_ID" and step.isdigit() and 0 < int(step) < 1 << 31:
                return f"{value}.{step}"  # a second `srun` in one allocation: another job
            return value
    return None


def _launch_group(environ):
    """A group name all ranks of one launch agree on when the launcher gave no job id.

    One machine (torchrun without --rdzv-id, mp.spawn): every rank is a child of the same
    launcher process, so its pid and start time name the launch exactly. Several machines
    with no job id: only MASTER_ADDR/MASTER_PORT are shared, plus the time; the start is
    bucketed to 10 minutes, so ranks that start on both sides of a bucket edge would split
    into two groups. Set EXPMAN_GROUP (or torchrun --rdzv-id, or run under a scheduler) to be
    exact there.
    """
    master = environ.get("MASTER_ADDR") or ""
    world, local_world = (_env_int(environ, ("WORLD_SIZE",))[0],
                          _env_int(environ, ("LOCAL_WORLD_SIZE",))[0])
    one_host = (not master or master in ("localhost", "127.0.0.1", "::1", _HOSTNAME)
                or (world is not None and world == local_world))
    if one_host:
        ppid = os.getppid()
        started = _process_start(ppid)
        if started is not None:
            stamp = _dt.datetime.fromtimestamp(started).strftime("%Y%m%d_%H%M%S")
            return f"launch-{stamp}-{ppid}"
    bucket = int(time.time() // 600 * 600)
    stamp = _dt.datetime.fromtimestamp(bucket).strftime("%Y%m%d_%H%M")
    port = environ.get("MASTER_PORT") or ""
    return "-".join(p for p in ("launch", master, port, stamp) if p)


def _process_start(pid):
    """POSIX start time of a process from /proc (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            ticks = int(fh.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith(b"btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def is_primary():
    """True in the process that should do once-per-job work: rank 0, or any process that is
    not one rank of a distributed job.

    >>> if expman.is_primary():
    ...     expman.save_artifact("model.pt")

    With a run started by ``init()``, the run's rank decides (``get_run().is_primary``);
    otherwise the environment does (RANK, SLURM_PROCID, ... and EXPMAN_RANK).
    """
    run = _CURRENT
    if run is not None:
        return run.is_primary
    try:
        info = _distributed()
    except InvalidInputError:
        return True
    return info is None or info["rank"] == 0



# -- 8.2 Experiment: one run; its log calls queue for the writer (section 7) and return ------------

class _RunPath(str):
    """``Experiment.run_dir``: a str, so expman-rs scripts work unchanged (``run_dir + "/x"``,
    ``os.path.join``, JSON, ``== "..."``), that also does what the ``pathlib.Path`` returned
    before did (``run_dir / "x"``, ``.name``, ``.parent``, ``.exists()``, ``.glob()``...).
    Where a str method and a Path method share a name (``replace``, ``split``...), the str
    one wins: it is a str first."""
    __slots__ = ()

    def __fspath__(self):
        return str.__str__(self)

    def __truediv__(self, other):
        return pathlib.Path(self) / other

    def __getattr__(self, name):
        return getattr(pathlib.Path(self), name)

    def __eq__(self, other):
        if isinstance(other, pathlib.PurePath):
            return pathlib.Path(self) == other
        return str.__eq__(self, other)

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = str.__hash__


class Experiment:
    """One run of an experiment: logs params, metrics, text and files without blocking.

    >>> with Experiment("resnet", base_dir="experiments", config={"lr": 1e-3}) as exp:
    ...     for step in range(100):
    ...         exp.log_metrics({"train/loss": 1 / (step + 1)}, step=step)

    Leaving the ``with`` block closes the run as ``finished``, ``failed`` (an exception) or
    ``interrupted`` (Ctrl-C, SIGTERM). Without ``with``, call ``close()``; a run still open
    when the script exits is closed then, with the status the exit implies.

    Opt-in extras: ``system_metrics=True`` (or a number of seconds, default 5) samples the
    process's CPU % and RSS, the host's CPU and memory use and, with NVML or nvidia-smi
    present, each GPU's utilisation and memory into ``sys/...`` keys, on the writer thread;
    a sample takes the training's current step and never moves its step counter.
    ``capture_output=True`` tees everything the script prints (stdout, stderr, tracebacks)
    into run.log as ``OUT``/``ERR`` lines until ``close()``; the console still gets it all.
    Keyword-only extras: ``project`` (default $EXPMAN_PROJECT), ``rank`` / ``group`` (a
    distributed job's rank and job name, detected from RANK, SLURM_PROCID, SLURM_JOB_ID, ...
    when not given; ``rank=False`` turns detection off; each rank's run is named
    ``<group>-rank<N>``), ``provenance=False`` (record no command line, git, package versions
    or scheduler ids), ``save_git_diff=True`` (a dirty tree's diff as artifacts/git.diff).
    """

    def __init__(self, name, run_name=None, base_dir=None, flush_interval_rows=None,
                 flush_interval_ms=DEFAULT_FLUSH_INTERVAL_MS, redirect_console=False,
                 project=None, tags=None, description=None, *, config=None,
                 system_metrics=False, capture_output=False, rank=None, group=None,
                 provenance=True, save_git_diff=False, heartbeat_secs=DEFAULT_HEARTBEAT_SECS,
                 capture_git=True, clock=None, heartbeat_interval_secs=None,
                 system_metrics_interval_secs=None, capture_provenance=None,
                 capture_diff=None):
        # expman-rs's names, accepted as they are: its users' scripts run unchanged
        if heartbeat_interval_secs is not None:
            heartbeat_secs = heartbeat_interval_secs
        if system_metrics_interval_secs is not None and system_metrics is False:
            system_metrics = system_metrics_interval_secs or False
        if capture_provenance is not None:
            provenance = capture_provenance
        if capture_diff is not None:
            save_git_diff = capture_diff
        self.experiment = _safe_name(name, "experiment name")
        self.project = _project_name(project)
        self._dist = _distributed(rank=rank, group=group)
        flush_rows = _check_flush_args(flush_interval_ms, flush_interval_rows)
        tags = _run_tags(tags)
        _check_run_args(description, config)
        flush_interval = flush_interval_ms / 1000.0
        system_metrics_secs = _system_metrics_interval(system_metrics)
        provenance = bool(provenance)
        capture_git = capture_git and provenance
        save_git_diff = bool(save_git_diff) and capture_git
        cwd = os.getcwd()
        self._clock = clock or time.time
        # What the writer thread needs is imported here, on the caller's thread: imports on
        # the writer held the GIL inside the loop's first seconds. pyarrow is not among
        # them any more: see _warm_up.
        _warm_up(bool(system_metrics_secs))
        self._store, root = _open_store(base_dir or _default_root())
        self._root = root
        if not self._store.is_local:  # bounded requests: ~1 segment PUT a second at most
            flush_interval = max(flush_interval, _remote_flush_secs())
        config = _to_plain(config) if config else {}
        self._closed = False
        self._close_lock = threading.Lock()
        self._warned_closed = False
        self.status = "running"

        store = self._store
        self._make_run_dir(name, run_name)
        started = time.time()
        meta = self._initial_meta(started, heartbeat_secs, description, tags, cwd, provenance)
        store.write_atomic(store.join(self._path, RUN_YAML), _yaml_dump(meta))
        store.write_atomic(store.join(self._path, CONFIG_YAML), _yaml_dump(config))
        store.append(store.join(self._path, RUN_LOG), b"")
        writer = self._writer = _Writer(_WriterOptions(
            store, self._path, meta, config, flush_interval=flush_interval,
            flush_interval_rows=flush_rows, heartbeat_secs=heartbeat_secs,
            system_metrics_secs=system_metrics_secs, clock=self._clock, started=started,
            git_cwd=cwd if capture_git else None, save_git_diff=save_git_diff))
        # the hot path's state (see log_metrics): the queue, and the queue length at which a
        # log call next looks at the backlog (every flush_interval_rows rows, when given)
        self._rows, self._enqueue = writer.rows, writer.enqueue
        self._flush_rows = flush_rows
        self._check_at = 3 * (flush_rows or PENDING_CHECK_ROWS)  # queue entries, 3 a row
        self._row_bytes, self._sampled_keys = 0, None
        self._max_pending = MAX_PENDING_BYTES   # an import lowers it (nothing waits on it)
        _install_hooks(remote=not store.is_local)
        _OPEN_RUNS.add(self)
        writer.start()
        self._capture = (_OutputCapture(self) if capture_output or redirect_console
                         else None)

    # -- setup helpers -------------------------------------------------------------------
    def _make_run_dir(self, name, run_name):
        """Create the experiment (and its experiment.yaml) and claim this run's directory."""
        store = self._store
        exp_path = store.join(self._root, self.experiment)
        try:
            store.mkdir(exp_path)
            self._write_experiment_yaml(exp_path, name)
            self.run_name, self._path = self._claim_run_dir(exp_path, run_name)
            store.mkdir(store.join(self._path, ARTIFACTS_DIR))
            store.mkdir(store.join(self._path, SEGMENTS_DIR))
        except OSError as exc:
            raise ExpmanError(f"cannot create a run under {store.display(exp_path)}: "
                              f"{exc.strerror or exc}") from None

    def _initial_meta(self, started, heartbeat_secs, description, tags, cwd, provenance):
        """run.yaml as init() writes it."""
        meta = {
            "name": self.run_name, "experiment": self.experiment, "status": "running",
            "started_at": _iso(started), "finished_at": None, "duration_secs": None,
            "heartbeat_at": _iso(started), "heartbeat_secs": float(heartbeat_secs),
            "description": description or "", "tags": tags,
            "hostname": _HOSTNAME, "pid": os.getpid(), "user": _user(),
            "command": [sys.executable, *sys.argv], "cwd": cwd,
            "python": _PY_VERSION, "platform": platform.platform(),
            "expman_version": __version__, "rows": 0, "last_step": None, "summary": {},
        }
        if self.project is not None:
            meta["project"] = self.project
        if self._dist is not None:
            meta.update(self._dist)
        if provenance:
            meta["packages"] = _loaded_packages()
            if "pyarrow" in sys.modules:  # else the writer looks it up (_pyarrow_version)
                meta["packages"]["pyarrow"] = sys.modules["pyarrow"].__version__
            scheduler = _scheduler_ids()
            if scheduler:
                meta["scheduler"] = scheduler
        else:  # the command line may hold secrets: provenance=False keeps what status needs
            for key in ("user", "command", "cwd", "platform"):
                del meta[key]
        return meta

    def _write_experiment_yaml(self, exp_path, display_name):
        path = self._store.join(exp_path, EXPERIMENT_YAML)
        if self._store.exists(path):
            if self.project is not None:  # an experiment made before projects joins this one
                try:
                    meta = _read_yaml(self._store, path)
                except ExpmanError:
                    return
                if not meta.get("project"):
                    meta["project"] = self.project
                    self._store.write_atomic(path, _yaml_dump(meta))
            return
        meta = {"name": self.experiment, "display_name": str(display_name), "description": "",
                "tags": [], "created_at": _iso()}
        if self.project is not None:
            meta["project"] = self.project
        self._store.write_atomic(path, _yaml_dump(meta))

    def _claim_run_dir(self, exp_path, run_name):
        if run_name is None:
            run_name = os.environ.get(ENV_RUN_NAME)
        if self._dist is not None:  # one run per rank: <group>-rank3 (or <run_name>-rank3)
            run_name = f"{run_name or self._dist['group']}-rank{self._dist['rank']}"
        if run_name is None:
            run_name = _utcnow().astimezone().strftime("%Y%m%d_%H%M%S")
        base = _safe_name(run_name, "run name")
        for attempt in range(1, 10_000):
            name = base if attempt == 1 else f"{base}_{attempt}"
            path = self._store.join(exp_path, name)
            if self._store.mkdir_exclusive(path):
                return name, path
        raise ExpmanError(f"no free run name like {base!r} in {exp_path}")

    # -- properties ----------------------------------------------------------------------
    @property
    def run_dir(self):
        """The run's directory, as a str that also works as a ``pathlib.Path`` locally.

        >>> exp.run_dir + "/artifacts"          # a str, as expman-rs returns
        >>> exp.run_dir / "config.yaml"         # a Path, as earlier expman returned

        On object stores it is the run's URI string.
        """
        if self._store.is_local:
            return _RunPath(self._path)
        return self._store.display(self._path)

    @property
    def closed(self):
        return self._closed

    @property
    def rank(self):
        """This process's rank in a distributed job, or None outside one."""
        return self._dist["rank"] if self._dist else None

    @property
    def world_size(self):
        """The number of ranks of the job (None when unknown or not distributed)."""
        return self._dist["world_size"] if self._dist else None

    @property
    def group(self):
        """The job's group name shared by its ranks' runs, or None outside a job."""
        return self._dist["group"] if self._dist else None

    @property
    def is_primary(self):
        """True on rank 0 and in runs that are not part of a distributed job.

        >>> if exp.is_primary:
        ...     exp.save_artifact("model.pt")
        """
        return self._dist is None or self._dist["rank"] == 0

    def __repr__(self):
        return f"<Experiment {self.experiment}/{self.run_name} {self.status}>"

    # -- logging (the hot path is log_metrics: no I/O, no lock) --------------------------
    def log_metrics(self, metrics, step=None):
        """Log one row of metrics; returns at once (~0.3 us), the writer thread does the rest.

        >>> exp.log_metrics({"train/loss": 0.25, "train/acc": 0.91}, step=10)

        ``step`` auto-increments when omitted. Values: Python/NumPy numbers, bools, 0-d
        arrays and tensors; NaN and inf are kept. A bad value is skipped with a warning that
        names its key; the rest of the row is kept.
        """
        if self._closed:
            return self._after_close("log_metrics")
        try:
            row = dict(metrics)
        except (TypeError, ValueError):
            _warn(f"expman: log_metrics needs a dict of metrics, got "
                  f"{type(metrics).__name__}; nothing logged")
            return None
        # The row, its step and its time are three queue entries, added by one extend
        # (atomic: threads logging to one run never interleave them). Not a (step, time,
        # row) tuple kept in the queue (one more GC-tracked object per row: a backlog of
        # those made full collections cost ~1 us per row), and not two private keys in the
        # copied dict either: a 6th key resizes the dict (~40% of the call with 5 metrics).
        rows = self._rows
        rows.extend((row, step, self._clock()))
        if len(rows) > self._check_at:  # the only other cost: a length and a compare
            self._backlog()
        return None

    log_vector = log_metrics  # the name expman-rs users know

    def _backlog(self):
        """The queue passed ``_check_at`` rows: wake the writer every flush_interval_rows
        rows, and keep the queued rows under MAX_PENDING_BYTES by waiting for the writer in
        slices of BACKPRESSURE_SLICE_SECS, so no single call waits longer than that.

        The rows' size is estimated from the newest row (the largest seen is kept, see
        _row_size), so the bound holds for 5 keys a row and for 5,000, with keys shared by
        every row or made anew for each; the check runs again after at most
        PENDING_CHECK_ROWS more rows, so its cost is amortised to nothing.
        """
        rows, writer = self._rows, self._writer
        n = len(rows) // 3  # rows: three queue entries each (see log_metrics)
        try:
            newest = rows[-3]
        except IndexError:  # the writer took them all meanwhile
            return
        if type(newest) is dict:
            size = self._row_size(newest)
            if size > self._row_bytes:
                self._row_bytes = size
        limit = max(PENDING_CHECK_ROWS, self._max_pending // max(self._row_bytes, 64))
        if n > limit:
            if writer.first_time("backpressure"):
                _warn(f"expman: logging faster than the writer can store ({n} rows, about "
                      f"{self._max_pending >> 20} MB, pending); log calls now wait up to "
                      f"{BACKPRESSURE_SLICE_SECS * 1e3:.0f} ms each for it so memory stays "
                      f"bounded")
            writer.wait_for_room(BACKPRESSURE_SLICE_SECS)
            self._check_at = min(self._check_at, 3 * limit)
            return
        if self._flush_rows:
            if n >= self._flush_rows:
                writer.nudge()
            self._check_at = 3 * min(self._flush_rows, limit)
        else:
            self._check_at = 3 * min(limit, n + PENDING_CHECK_ROWS)

    def _row_size(self, row):
        """Bytes a queued row holds (within ~5%): the dict, a float per value, its step (an
        int) and time (a float), the queue's three pointers, and the keys' strings when they
        are not the objects the previous sample had: a loop's literal keys are shared by
        every row, but keys decoded per row (an import reading event files) cost ~60 B each,
        and without them a queue estimated at 64 MB held ~100 MB."""
        keys, prev = tuple(row), self._sampled_keys
        self._sampled_keys = keys
        size = sys.getsizeof(row) + 24 * len(row) + _ROW_EXTRA_BYTES
        if prev is not None and (len(prev) != len(keys) or
                                 any(a is not b for a, b in zip(keys, prev))):
            size += sum(map(sys.getsizeof, keys))
        return size

    def log_params(self, params):
        """Merge params into config.yaml (nested dicts stay nested).

        >>> exp.log_params({"optimizer": {"name": "adam", "lr": 3e-4}, "batch_size": 64})
        """
        if self._closed:
            return self._after_close("log_params")
        if not isinstance(params, dict):
            _warn(f"expman: log_params needs a dict, got {type(params).__name__}; ignored")
            return None
        walk = {"path": set(), "count": 0, "cut": []}
        plain = _to_plain(params, _walk=walk)
        if walk["cut"]:
            why = {"cycle": "a container that holds itself (stored as '<recursive ...>')",
                   "size": f"more than {PLAIN_MAX_ITEMS} values once shared parts are expanded "
                           f"(the rest stored as '<cut: ...>')",
                   "str": "a value whose __str__ raised (stored as its repr or type name)"}
            _warn("expman: log_params got " + "; ".join(
                why[c] for c in dict.fromkeys(walk["cut"])))
        self._writer.send(("config", plain))
        return None

    def log_scalar(self, key, value):
        """Set a summary value shown in the runs table (best accuracy, final loss, ...): a
        number, a bool (stored as 1.0/0.0) or a string.

        >>> exp.log_scalar("best/val_acc", 0.934)
        >>> exp.log_scalar("optimizer", "adam")
        """
        if self._closed:
            return self._after_close("log_scalar")
        reason = _check_key(key)
        if reason:
            _warn(f"expman: log_scalar skipped {_short_repr(key, 80)}: {reason}")
            return None
        self._writer.send(("scalar", key, value))
        return None

    def info(self, message):
        """Append an INFO line to run.log. >>> exp.info("epoch 3 done")"""
        return self._log_line("INFO", message)

    def warn(self, message):
        """Append a WARN line to run.log. >>> exp.warn("loss is NaN, lowering lr")"""
        return self._log_line("WARN", message)

    def _log_line(self, level, message):
        if self._closed:
            return self._after_close(level.lower())
        self._writer.send(("log", self._clock(), level, str(message)))
        return None

    def save_artifact(self, path, name=None):
        """Copy a file or directory into the run's artifacts/ now; returns where it went.

        >>> exp.save_artifact("confusion.png")                 # artifacts/confusion.png
        >>> exp.save_artifact("plots/roc.png")                 # artifacts/plots/roc.png
        >>> exp.save_artifact("/data/out/model.pt")            # artifacts/model.pt
        >>> exp.save_artifact("ckpt/model.pt", "best/model.pt")
        """
        if self._closed:
            return self._after_close("save_artifact")
        src = _path_text(path)
        if not os.path.exists(src):
            raise InvalidInputError(f"save_artifact: no such file or directory: {src}")
        rel = _artifact_name(src) if name is None else _safe_relpath(_path_text(name))
        dest = self._store.join(self._path, ARTIFACTS_DIR, *rel.split("/"))
        parent = dest.rsplit("/", 1)[0] if not self._store.is_local else os.path.dirname(dest)
        existed = self._store.exists(dest)
        try:
            self._store.mkdir(parent)
            self._store.copy_in(src, dest)
        except OSError as exc:
            if not existed:  # no half-copied tree left behind in artifacts/
                with contextlib.suppress(OSError):
                    (self._store.delete_tree if os.path.isdir(src) else
                     self._store.delete)(dest)
            raise ExpmanError(f"save_artifact: cannot copy {src} to "
                              f"{self._store.display(dest)}: {exc.strerror or exc}") from None
        self.info(f"saved artifact {rel}")
        return pathlib.Path(dest) if self._store.is_local else self._store.display(dest)

    # -- media: checked here, converted and written by the writer thread -----------------
    # step=None means the step of the last row logged with log_metrics before the call (0
    # before any row), resolved by the writer in logging order: auto-incremented steps too.
    def log_image(self, tag, image, step=None):
        """Log an image; returns at once, the writer thread encodes and stores it.

        >>> exp.log_image("samples", "grid.png", step=100)          # a PNG/JPEG/GIF/WebP file
        >>> exp.log_image("samples", batch[0].numpy(), step=100)    # HWC, CHW or HW array

        ``image``: PNG/JPEG/GIF/WebP bytes, a path (read now, so it may be overwritten right
        after), a PIL image, a matplotlib figure (rendered to PNG now, on this thread:
        matplotlib is not thread-safe) or a NumPy array (HW, HWC or CHW with 1/3/4 channels;
        uint8, or floats in 0..1, clipped, NaN as 0), copied now and PNG-encoded later.
        Bad input raises InvalidInputError.
        """
        if self._closed:
            return self._after_close("log_image")
        where = "log_image"
        tag, step = _check_media_tag(tag, where), _check_media_step(step, where)
        form, payload, size = _image_payload(image, where)
        if form == "bytes" and size > MAX_MEDIA_BYTES:
            raise InvalidInputError(f"{where}: image is larger than {MAX_MEDIA_BYTES >> 20} MB")
        return self._queue_media(_MediaItem("image", tag, step, self._clock(), form, payload,
                                            size=size))

    def log_figure(self, tag, fig, step=None):
        """Log a matplotlib figure as a PNG, rendered now (matplotlib is not thread-safe).

        >>> fig, ax = plt.subplots(); ax.plot(losses); exp.log_figure("loss_curve", fig)
        """
        if self._closed:
            return self._after_close("log_figure")
        where = "log_figure"
        tag, step = _check_media_tag(tag, where), _check_media_step(step, where)
        if not callable(getattr(fig, "savefig", None)):
            raise InvalidInputError(f"{where}: fig must be a matplotlib figure, got "
                                    f"{type(fig).__name__}")
        data = _figure_png(fig)
        return self._queue_media(_MediaItem("image", tag, step, self._clock(), "bytes", data,
                                            size=len(data)))

    def log_histogram(self, tag, values=None, step=None, bins=64, edges=None, counts=None):
        """Log the distribution of values (binned on the writer thread), or a histogram you
        computed (``edges`` has one more value than ``counts``).

        >>> exp.log_histogram("weights/fc1", model.fc1.weight, step=epoch)
        >>> exp.log_histogram("lengths", edges=[0, 10, 20, 50], counts=[4, 9, 2])

        ``values``: a list, tuple, NumPy array (copied now) or tensor (cloned now, on its
        device, without waiting for it). NaN and inf are left out of the bins.
        """
        if self._closed:
            return self._after_close("log_histogram")
        where = "log_histogram"
        tag, step = _check_media_tag(tag, where), _check_media_step(step, where)
        form, payload = _histogram_payload(values, bins, edges, counts, where)
        if form == "array":
            size = payload.nbytes
        elif form == "tensor":
            size = payload.numel() * payload.element_size()
        else:
            size = 8 * len(payload if form == "values" else payload[0])
        return self._queue_media(_MediaItem("histogram", tag, step, self._clock(), form,
                                            payload, bins=bins, size=size))

    def log_audio(self, tag, data, step=None, ext="wav"):
        """Log an audio clip: bytes in format ``ext`` (wav, mp3, ogg, flac) or a path.

        >>> exp.log_audio("tts/sample", wav_bytes, step=step)
        """
        return self._log_blob("audio", tag, data, step, ext, AUDIO_TYPES)

    def log_video(self, tag, data, step=None, ext="mp4"):
        """Log a video: bytes in format ``ext`` (mp4, webm, gif) or a path.

        >>> exp.log_video("rollout", "episode_12.mp4", step=12)
        """
        return self._log_blob("video", tag, data, step, ext, VIDEO_TYPES)

    def _log_blob(self, kind, tag, data, step, ext, kinds):
        where = f"log_{kind}"
        if self._closed:
            return self._after_close(where)
        tag, step = _check_media_tag(tag, where), _check_media_step(step, where)
        data, ext = _blob_payload(data, ext, kinds, where)
        return self._queue_media(_MediaItem(kind, tag, step, self._clock(), "bytes", data,
                                            ext=ext, size=len(data)))

    def log_text(self, tag, text, step=None):
        """Log a text sample (a generation, a prediction), shown per step as plain text.

        >>> exp.log_text("val/generation", model.generate(prompt), step=step)
        """
        if self._closed:
            return self._after_close("log_text")
        where = "log_text"
        tag, step = _check_media_tag(tag, where), _check_media_step(step, where)
        if not isinstance(text, str):
            raise InvalidInputError(f"{where}: text must be a string, got "
                                    f"{type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInputError(f"{where}: text of {len(text)} characters is longer than "
                                    f"{MAX_TEXT_CHARS}")
        return self._queue_media(_MediaItem("text", tag, step, self._clock(), "text", text,
                                            size=len(text)))

    def _queue_media(self, item):
        writer = self._writer
        if not writer.queue_media(item):
            # the writer is far behind (or the disk refuses writes): drop rather than wait
            if writer.first_time("media-backlog"):
                _warn(f"expman: more than {MAX_PENDING_MEDIA_BYTES >> 20} MB of media wait for "
                      f"the writer; {item.kind} {_short_repr(item.tag, 80)} at step "
                      f"{item.step} and further media are dropped until it catches up")
        return None

    def set_description(self, description):
        """Replace the run's description (also editable from the dashboard)."""
        self._writer.send(("meta", {"description": str(description)}))

    def set_tags(self, tags):
        """Replace the run's tags."""
        self._writer.send(("meta", {"tags": _normalize_tags(tags)}))

    def flush(self, timeout=30.0):
        """Wait until everything logged so far is on disk; True when it is."""
        if self._closed:
            return True
        done = self._writer.request_flush(timeout)
        self._surface_writer_error()
        return done

    def _surface_writer_error(self):
        error = self._writer.take_error()
        if error is not None:
            _warn(f"expman: the writer of {self.experiment}/{self.run_name} hit an error: "
                  f"{error}")

    def close(self, status="finished"):
        """Flush every row, compact the metrics into metrics.parquet, record the status.

        ``status`` is one of running/finished/failed/interrupted/crashed, in any case
        (``"FINISHED"`` works); anything else raises ValueError. Closing twice is harmless.
        """
        status = _normalize_status(status)
        with self._close_lock:
            first, self._closed = not self._closed, True
        writer = self._writer
        if first:
            if self._capture is not None:  # the last partial line goes in before the end
                self._capture.stop()
            self.status = status
        elif writer.is_done():
            return
        # A second close (atexit after a SIGTERM interrupted the first one) waits as well, so
        # the process never exits in the middle of the final compaction.
        if not writer.stop(status, CLOSE_TIMEOUT_SECS):
            _warn(f"expman: closing {self.experiment}/{self.run_name} took longer than "
                  f"{CLOSE_TIMEOUT_SECS:.0f}s; the last rows may be missing")
        _OPEN_RUNS.discard(self)
        global _CURRENT
        if _CURRENT is self:
            _CURRENT = None

    def _after_close(self, what):
        if not self._warned_closed:
            self._warned_closed = True
            if self.status == "forked":
                _warn(f"expman: {what} in a forked child process on run {self.experiment}/"
                      f"{self.run_name}, which belongs to the parent; ignored (start a run in "
                      f"the child, or log from the parent)")
            else:
                _warn(f"expman: {what} on run {self.experiment}/{self.run_name}, which is "
                      f"already closed ({self.status}); ignored")
        return None

    def _record_error(self, exc_type, exc):
        if exc is not None:
            self._writer.send(("meta", {"error": f"{exc_type.__name__}: {exc}"[:2000]}))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        status = _status_for_exit(exc_type, exc)
        if status == "failed":
            self._record_error(exc_type, exc)
            import traceback
            self._log_line("ERROR", "".join(traceback.format_exception(exc_type, exc, tb)))
        self.close(status)
        return False

    def __del__(self):  # pragma: no cover - best effort; atexit is the real guarantee
        pass


def _check_flush_args(flush_interval_ms, flush_interval_rows):
    """flush_interval_rows as the writer takes it (None: the timer alone), both checked."""
    if not isinstance(flush_interval_ms, (int, float)) or flush_interval_ms <= 0:
        raise InvalidInputError(f"flush_interval_ms must be a positive number, "
                                f"got {flush_interval_ms!r}")
    if flush_interval_rows is not None and (
            not isinstance(flush_interval_rows, int) or isinstance(flush_interval_rows, bool)
            or flush_interval_rows < 0):
        raise InvalidInputError(f"flush_interval_rows must be a positive int or None, got "
                                f"{flush_interval_rows!r}")
    return flush_interval_rows or None  # 0: the timer alone, as None


def _project_name(project):
    """The run's project: the argument, else $EXPMAN_PROJECT, else None."""
    if project is None:
        project = os.environ.get(ENV_PROJECT) or None
    return None if project is None else _safe_name(project, "project")


def _check_run_args(description, config):
    if description is not None and not isinstance(description, str):
        raise InvalidInputError("description must be a string")
    if config is not None and not isinstance(config, dict):
        raise InvalidInputError(f"config must be a dict, got {type(config).__name__}")


def _run_tags(tags):
    """The run's tags, then EXPMAN_TAGS's (added, never duplicated)."""
    tags = _normalize_tags(tags)
    return tags + [t for t in _normalize_tags(os.environ.get(ENV_TAGS)) if t not in tags]


def _system_metrics_interval(value):
    """system_metrics=True/False/seconds -> the sampling interval in seconds, or None (off)."""
    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_SYSTEM_METRICS_SECS
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 \
            and math.isfinite(value):
        return max(0.1, float(value))
    raise InvalidInputError(f"system_metrics must be True, False or a sampling interval in "
                            f"seconds, got {value!r}")


def _normalize_tags(tags):
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [t for t in re.split(r"[,\s]+", tags) if t]
    try:
        return [str(t) for t in tags]
    except TypeError:
        raise InvalidInputError(f"tags must be a list of strings, got {type(tags).__name__}") \
            from None


def _path_text(path):
    """str of a str, bytes or os.PathLike path; anything else as it is (checked later)."""
    if isinstance(path, (str, bytes, os.PathLike)):
        return os.fsdecode(os.fspath(path))
    return path


def _artifact_name(src):
    """Where save_artifact(src) puts src under artifacts/: a relative path stays as given
    ("sub/rel.txt" -> "sub/rel.txt", as expman-rs keeps it); an absolute path, or one that
    climbs out of the working directory ("../x.txt"), keeps only its name (expman-rs would
    write "../x.txt" outside the run)."""
    norm = os.path.normpath(src).replace("\\", "/")
    if os.path.isabs(src) or norm in (".", "..") or norm.startswith("../"):
        return _safe_relpath(os.path.basename(os.path.abspath(src)))
    return _safe_relpath(norm)


def _skip_link_loops(root):
    """A ``shutil.copytree`` ignore= that skips, with a warning, a symbolic link leading back
    to a directory being copied (a loop nested ~40 levels deep before the OS refused, and
    left that tree behind) and a dangling link (which failed the whole copy)."""
    def ignore(folder, names):
        chain, cur = {os.path.realpath(root)}, root
        rel = os.path.relpath(folder, root)
        for part in ([] if rel == "." else rel.split(os.sep)):
            cur = os.path.join(cur, part)
            chain.add(os.path.realpath(cur))
        skipped = []
        for name in names:
            full = os.path.join(folder, name)
            if not os.path.islink(full):
                continue
            real = os.path.realpath(full)
            if not os.path.exists(full):
                skipped.append(name)
                _warn(f"expman: save_artifact skipped {full}: a broken symbolic link")
            elif os.path.isdir(full) and any(c == real or c.startswith(real.rstrip(os.sep) +
                                                                       os.sep) for c in chain):
                skipped.append(name)
                _warn(f"expman: save_artifact skipped {full}: a symbolic link to {real}, "
                      f"which holds it (a loop)")
        return skipped
    return ignore


def _safe_relpath(name):
    """A relative artifact path that cannot leave artifacts/ ('a/b.png' yes, '../x' no)."""
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or str(name).startswith("/") or "\0" in name:
        raise InvalidInputError(f"artifact name {name!r} must be a relative path inside "
                                f"artifacts/")
    return "/".join(parts)


def _user():
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return None


def _status_for_exit(exc_type, exc):
    if exc_type is None:
        return "interrupted" if _HOOKS["signal"] else "finished"
    if issubclass(exc_type, KeyboardInterrupt):
        return "interrupted"
    if issubclass(exc_type, SystemExit):
        if _HOOKS["signal"]:
            return "interrupted"
        return "finished" if exc is None or exc.code in (0, None) else "failed"
    return "failed"


# -- 8.3 process hooks: exceptions, SIGTERM and exit close every open run with the right status ----

def _install_hooks(remote=False):
    with _HOOK_LOCK:
        if remote and not _HOOKS.get("remote"):
            # pyarrow finalizes its S3 client at exit, from an atexit hook it registers when
            # pyarrow.fs is first imported; hooks run last-in first-out, so the close of an S3
            # run must be registered after that import, or its last rows meet "S3 subsystem is
            # finalized". Closing twice is harmless.
            _HOOKS["remote"] = True
            atexit.register(_close_all_at_exit)
        if _HOOKS["installed"]:
            return
        _HOOKS["installed"] = True
        previous_excepthook = sys.excepthook

        def excepthook(exc_type, exc, tb):
            _HOOKS["exit_exc"] = (exc_type, exc)
            previous_excepthook(exc_type, exc, tb)

        sys.excepthook = excepthook
        _watch_sys_exit()
        atexit.register(_close_all_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_pause_writers, after_in_parent=_resume_writers,
                                after_in_child=_forget_runs_in_child)
            os.register_at_fork(after_in_child=_resume_writers)
        if threading.current_thread() is threading.main_thread():
            _install_signal_handler(signal.SIGTERM)


def _watch_sys_exit():
    """Remember the code of ``sys.exit(n)``, so the exit hook can record n != 0 as failed.

    An uncaught SystemExit never reaches sys.excepthook, and atexit hooks cannot see the exit
    code, so (as W&B does) sys.exit is wrapped: the wrapper notes the code and raises as
    before. A SystemExit that is caught and survived is forgotten at the next sys.exit call
    only; ``raise SystemExit(n)`` written out by hand is not seen (recorded as finished).
    """
    original = sys.exit
    if getattr(original, "_expman_wrapped", False):
        return

    def exit(status=None):
        _HOOKS["exit_exc"] = (SystemExit, SystemExit(status))
        original(status)

    exit._expman_wrapped = True
    exit.__doc__, exit.__wrapped__ = original.__doc__, original
    sys.exit = exit


def _install_signal_handler(signum):
    """SIGTERM (SLURM's scancel, docker stop, kill) unwinds the script like Ctrl-C does, so
    open runs flush and record 'interrupted' before the process ends with 128+signum."""
    previous = signal.getsignal(signum)
    if previous is signal.SIG_IGN or previous is None:
        return

    def handler(sig, frame):
        _HOOKS["signal"] = sig
        if callable(previous) and previous is not signal.SIG_DFL:
            previous(sig, frame)
            return
        raise SystemExit(128 + sig)

    try:
        signal.signal(signum, handler)
    except (ValueError, OSError):  # not the main thread, or an embedded interpreter
        pass


def _forget_runs_in_child():
    """A forked child (a DataLoader worker, a multiprocessing pool) inherits the parent's open
    runs but not their writer threads: it must neither log into them (nobody would write the
    rows) nor wait for their writers at exit (it would hang)."""
    global _CURRENT
    for run in list(_OPEN_RUNS):
        run._closed = True
        run.status = "forked"
        if run._capture is not None:  # the child's prints stay on its console only
            run._capture.active = False
        run._warned_closed = False
    _OPEN_RUNS.clear()
    _CURRENT = None


# -- 8.4 console capture (opt-in): stdout/stderr teed into run.log ---------------------------------

class _Tee:
    """Stands in for sys.stdout or sys.stderr: writes go to the real stream as before, and
    every complete line is also queued for run.log (the writer thread writes it).

    Python-level writes only (print, logging, tracebacks, tqdm): output written straight to
    file descriptor 1/2 by C code or child processes is not seen. A progress bar redrawn with
    carriage returns is kept as its last state, one line, not thousands.
    """

    def __init__(self, stream, level, capture):
        self._stream, self._level, self._capture = stream, level, capture
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text):
        n = self._stream.write(text)
        if self._capture.active and isinstance(text, str) and text:
            with self._lock:
                self._feed(text)
        return n

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def _feed(self, text):
        text = self._partial + text
        lines = text.split("\n")
        self._partial = lines.pop()
        if len(self._partial) > CAPTURE_MAX_LINE:
            lines.append(self._partial)
            self._partial = ""
        for line in lines:
            self._capture.emit(self._level, line)

    def flush_partial(self):
        with self._lock:
            if self._partial:
                self._capture.emit(self._level, self._partial)
                self._partial = ""

    def flush(self):
        return self._stream.flush()

    def __getattr__(self, name):  # fileno, isatty, encoding, buffer, ...: the real stream's
        return getattr(self._stream, name)


class _OutputCapture:
    """capture_output=True: tees sys.stdout/sys.stderr into the run's run.log until close."""

    def __init__(self, run):
        self.run, self.active, self.bytes = run, True, 0
        self.out, self.err = _Tee(sys.stdout, "OUT", self), _Tee(sys.stderr, "ERR", self)
        sys.stdout, sys.stderr = self.out, self.err

    def emit(self, level, line):
        line = line[line.rfind("\r") + 1:] if "\r" in line else line  # a redrawn bar: last state
        if not line.strip():
            return
        self.bytes += len(line) + 32
        if self.bytes > CAPTURE_MAX_BYTES:
            self.active = False
            line = (f"expman: output capture stopped after {CAPTURE_MAX_BYTES >> 20} MiB; "
                    f"the rest is on the console only")
            level = "WARN"
        self.run._writer.send(("log", self.run._clock(), level, line))

    def stop(self):
        """Put the streams back (when nobody replaced them after us) and keep the last line."""
        self.out.flush_partial()
        self.err.flush_partial()
        self.active = False
        if sys.stdout is self.out:
            sys.stdout = self.out._stream
        if sys.stderr is self.err:
            sys.stderr = self.err._stream


def _close_all_at_exit():
    exc_type, exc = _HOOKS["exit_exc"] or (None, None)
    status = _status_for_exit(exc_type, exc)
    for run in list(_OPEN_RUNS):
        try:
            if status == "failed":
                run._record_error(exc_type, exc)
            run.close(status)
        except Exception as err:  # noqa: BLE001 - close the others anyway
            _log.warning("expman: could not close %r at exit: %s", run, err)


# -- 8.5 module-level shortcuts: two-line relays to the current run --------------------------------

def init(name, run_name=None, base_dir=None, flush_interval_rows=None,
         flush_interval_ms=DEFAULT_FLUSH_INTERVAL_MS, redirect_console=False, project=None,
         tags=None, description=None, *, config=None, **kwargs):
    """Start the global run used by ``expman.log_metrics`` and friends; returns it.

    >>> import expman
    >>> expman.init("resnet_cifar10", config={"lr": 1e-3}, tags=["baseline"])
    >>> expman.log_metrics({"loss": 0.5}, step=0)

    Arguments as ``Experiment``'s (positional ones in expman-rs's order: name, run_name,
    base_dir, flush_interval_rows, flush_interval_ms, redirect_console, ...). A run already
    started with ``init`` is closed (finished) first. The run is closed when the script
    exits: ``finished``, ``failed`` after an uncaught exception, ``interrupted`` after
    Ctrl-C or SIGTERM.
    """
    global _CURRENT
    if _CURRENT is not None and not _CURRENT.closed:
        _CURRENT.close("finished")
    _CURRENT = Experiment(name, run_name=run_name, base_dir=base_dir,
                          flush_interval_rows=flush_interval_rows,
                          flush_interval_ms=flush_interval_ms, redirect_console=redirect_console,
                          project=project, tags=tags, description=description, config=config,
                          **kwargs)
    return _CURRENT


def get_run():
    """The run started by ``init()``, or None."""
    return _CURRENT


def _current():
    run = _CURRENT
    if run is None:
        raise ExpmanError("no active run: call expman.init(name) first")
    return run


def log_metrics(metrics, step=None):
    """Log one row to the current run. >>> expman.log_metrics({"loss": 0.5}, step=0)"""
    run = _CURRENT
    if run is None:
        raise ExpmanError("no active run: call expman.init(name) first")
    return run.log_metrics(metrics, step)


log_vector = log_metrics


def log_params(params):
    """Merge params into the current run's config.yaml. >>> expman.log_params({"lr": 1e-3})"""
    return _current().log_params(params)


def log_scalar(key, value):
    """Set a summary value of the current run. >>> expman.log_scalar("best_acc", 0.93)"""
    return _current().log_scalar(key, value)


def info(message):
    """Write an INFO line to the current run's run.log. >>> expman.info("epoch done")"""
    return _current().info(message)


def warn(message):
    """Write a WARN line to the current run's run.log. >>> expman.warn("lr too high")"""
    return _current().warn(message)


def save_artifact(path, name=None):
    """Copy a file into the current run's artifacts/. >>> expman.save_artifact("plot.png")"""
    return _current().save_artifact(path, name)


def log_image(tag, image, step=None):
    """Log an image to the current run. >>> expman.log_image("samples", "grid.png", step=5)"""
    return _current().log_image(tag, image, step)


def log_figure(tag, fig, step=None):
    """Log a matplotlib figure to the current run. >>> expman.log_figure("curve", fig)"""
    return _current().log_figure(tag, fig, step)


def log_histogram(tag, values=None, step=None, bins=64, edges=None, counts=None):
    """Log a histogram to the current run. >>> expman.log_histogram("w", weights, step=3)"""
    return _current().log_histogram(tag, values, step, bins, edges, counts)


def log_audio(tag, data, step=None, ext="wav"):
    """Log audio to the current run. >>> expman.log_audio("speech", wav_bytes, step=3)"""
    return _current().log_audio(tag, data, step, ext)


def log_video(tag, data, step=None, ext="mp4"):
    """Log a video to the current run. >>> expman.log_video("rollout", "ep.mp4", step=3)"""
    return _current().log_video(tag, data, step, ext)


def log_text(tag, text, step=None):
    """Log a text sample to the current run. >>> expman.log_text("gen", "Once...", step=3)"""
    return _current().log_text(tag, text, step)


def flush(timeout=30.0):
    """Wait until the current run's data is on disk. >>> expman.flush()"""
    return _current().flush(timeout)


def close(status="finished"):
    """Close the current run. >>> expman.close()  # or close("failed")"""
    run = _CURRENT
    if run is None:
        raise ExpmanError("no active run to close")
    run.close(status)


# 9 Readers & queries ########################################################################

def _resolve_run(run_dir):
    """(store, path) of an existing run directory, or InvalidInputError saying why not."""
    store, path = _open_store(run_dir)
    if store.stat(store.join(path, RUN_YAML)) is None:
        if not store.isdir(path):
            raise InvalidInputError(f"{_not_a_dir(store, path)}: {store.display(path)}")
        raise InvalidInputError(f"not a run directory (no {RUN_YAML}): {store.display(path)}")
    return store, path


def _resolve_root(root):
    store, path = _open_store(root if root is not None else _default_root())
    if not store.isdir(path):
        raise InvalidInputError(f"{_not_a_dir(store, path)}: {store.display(path)}")
    return store, path


def _not_a_dir(store, path):
    # "no such directory" for a path that is a file sent users looking for a typo
    return "not a directory" if store.stat(path) is not None else "no such directory"


def _run_row(store, path, meta, config=None, now=None):
    """One run as the CLI and the dashboard show it (the RUN_ROW of the HTTP API).

    Every field has its documented type whatever run.yaml holds: a hand-edited or foreign
    file (duration_secs: "long", a bare YAML timestamp, description: 42) used to reach the
    CLI's formatting and the JSON encoder as is, and one such run broke `expman list` and
    the dashboard's runs table for every run of the experiment. ``summary_min`` and
    ``summary_max`` are None where run.yaml does not hold them (runs of older writers).
    """
    status = _effective_status(meta, now)
    git = meta.get("git") if isinstance(meta.get("git"), dict) else {}
    summary = meta.get("summary") if isinstance(meta.get("summary"), dict) else \
        _expman_rs_summary(meta)
    command = meta.get("command")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    rows = meta.get("rows")
    return {
        "name": str(meta.get("name") or path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]),
        "experiment": str(meta.get("experiment") or ""),
        "path": store.display(path),
        "status": status,
        "started_at": _time_text(meta.get("started_at")),
        "finished_at": _time_text(meta.get("finished_at")),
        "duration_secs": _run_duration(meta, status, now),
        "heartbeat_at": _time_text(meta.get("heartbeat_at")),
        "description": _text(meta.get("description")) or "",
        "tags": [str(t) for t in meta.get("tags")] if isinstance(meta.get("tags"), list) else [],
        "hostname": _text(meta.get("hostname")),
        "pid": _int_or_none(meta.get("pid")),
        "command": _text(command),
        "git_commit": _text(git.get("commit")),
        "rows": rows if type(rows) is int and rows >= 0 else 0,
        "last_step": _int_or_none(meta.get("last_step")),
        "params": _flatten(config) if isinstance(config, dict) else {},
        "summary": _summary_values(summary),
        "summary_min": _summary_numbers(meta.get("summary_min")),
        "summary_max": _summary_numbers(meta.get("summary_max")),
        "project": _text(meta.get("project")),
        "group": _text(meta.get("group")),
        "rank": _int_or_none(meta.get("rank")),
        "world_size": _int_or_none(meta.get("world_size")),
    }


def _run_duration(meta, status, now=None):
    """Seconds the run has taken: so far for a live run, to its last heartbeat for a crashed
    one that never wrote its end."""
    started = _parse_iso(meta.get("started_at"))
    duration = _number_or_none(meta.get("duration_secs"))
    if status == "running" and started is not None:
        return round((now or time.time()) - started, 3)
    if status == "crashed" and duration is None and started is not None:
        beat = _parse_iso(meta.get("heartbeat_at"))
        return round(beat - started, 3) if beat else None
    return duration


def _int_or_none(value):
    return value if type(value) is int else None


def _summary_values(summary):
    """{key: number, text or None} of a summary mapping from YAML."""
    return {str(k): v if v is None or type(v) in (int, float) else _text(v)
            for k, v in summary.items()}


def _summary_numbers(values):
    """{key: number} of run.yaml's summary_min/summary_max, or None when it has none."""
    if not isinstance(values, dict):
        return None
    return {str(k): v for k, v in values.items() if type(v) in (int, float)}


def _number_or_none(value):
    return value if type(value) in (int, float) else None


def _text(value):
    """str of a scalar from a YAML file; None stays None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (_dt.datetime, _dt.date)):
        return _time_text(value)
    return str(value)


def _time_text(value):
    """ISO text of a time field, or None: a hand-written `started_at: 2024-01-01 10:00:00`
    arrives from YAML as a datetime, which JSON cannot carry."""
    if isinstance(value, str):
        return value
    if isinstance(value, _dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)).isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    return None


def load_run(run_dir):
    """Everything about one run: run.yaml, its effective status and its config.

    >>> run = expman.load_run("experiments/resnet/20240101_120000")
    >>> run["status"], run["config"]["lr"], run["summary"]["train/loss"]

    The returned dict holds every run.yaml field, with ``status`` corrected for crashed runs
    (``recorded_status`` keeps what the file says), plus ``config`` (nested) and ``params``
    (flattened with dots).
    """
    store, path = _resolve_run(run_dir)
    meta = _read_yaml(store, store.join(path, RUN_YAML))
    config = _read_yaml(store, store.join(path, CONFIG_YAML))
    row = _run_row(store, path, meta, config)
    if "rows" not in meta:  # expman-rs does not count its rows in run.yaml
        row["rows"] = _row_count(store, path)
    return {**meta, **row, "recorded_status": meta.get("status"), "config": config}


def load_config(run_dir):
    """The run's params (config.yaml) as a nested dict. >>> expman.load_config(run)["lr"]"""
    store, path = _resolve_run(run_dir)
    return _read_yaml(store, store.join(path, CONFIG_YAML))


def list_experiments(root=None, project=None):
    """Experiments under root with run counts, status counts and last activity.

    >>> [e["name"] for e in expman.list_experiments("experiments")]
    >>> expman.list_experiments("experiments", project="vision")   # one project's only

    Each row names its ``project`` (experiment.yaml's, else its runs') and ``projects`` (every
    project its runs were logged under); ``project=`` keeps the experiments where it is one.
    """
    store, root_path = _resolve_root(root)
    out = []
    now = time.time()
    for entry in sorted(store.listdir(root_path), key=lambda e: e.name):
        if not entry.is_dir or entry.name.startswith("."):
            continue
        exp_path = store.join(root_path, entry.name)
        try:
            meta = _read_yaml(store, store.join(exp_path, EXPERIMENT_YAML))
        except ExpmanError as exc:
            _log.warning("%s", exc)
            meta = {}
        runs = _experiment_runs(store, exp_path, now)
        if not runs and not meta:
            continue  # some other directory, not an experiment
        out.append(_experiment_row(entry.name, meta, runs))
    return _in_project(out, project)


_ACTIVITY_FIELDS = ("status", "project", "heartbeat_at", "finished_at", "started_at")


def _experiment_runs(store, exp_path, now):
    """What _experiment_row needs of each run of an experiment: the live, new and changed
    ones read from their files (as _scan_runs does), the closed runs' status, project and
    times straight from the catalog's columns, with no RUN_ROW made and no stat per run
    (an edit in place of a closed run's run.yaml shows when its experiment is listed)."""
    rows, beyond, cached = _scan_window(store, exp_path, now, limit=0)
    if not beyond:
        return rows
    columns = [cached.column(field) for field in _ACTIVITY_FIELDS]
    return rows + [dict(zip(_ACTIVITY_FIELDS, [c[name] for c in columns])) for name in beyond]


def _in_project(experiments, project):
    if project is None:
        return experiments
    if not isinstance(project, str):
        raise InvalidInputError(f"project must be a string, got {type(project).__name__}")
    return [e for e in experiments if project in e["projects"]]


def _project_rows(experiments):
    """[{"name", "experiments", "runs", "last_activity"}] of the projects of experiment rows
    (the ``/api/projects`` listing); experiments without one are not counted."""
    found = {}
    for exp in experiments:
        for name in exp["projects"]:
            p = found.setdefault(name, {"name": name, "experiments": 0, "runs": 0,
                                        "last_activity": None})
            p["experiments"] += 1
            p["runs"] += exp["runs"]
            act = exp["last_activity"]
            if act and (p["last_activity"] is None or
                        (_parse_iso(act) or 0) > (_parse_iso(p["last_activity"]) or 0)):
                p["last_activity"] = act
    return sorted(found.values(), key=lambda p: p["name"])


def _experiment_row(name, meta, runs):
    """One experiment as list_experiments and /api/experiments show it, from its
    experiment.yaml and its RUN_ROWs (the server builds it from its cache on object stores)."""
    counts = collections.Counter(r["status"] for r in runs)
    own = _text(meta.get("project")) or None
    projects = sorted({p for p in [own] + [r.get("project") for r in runs] if p})
    activity = [t for t in (r.get("heartbeat_at") or r.get("finished_at") or
                            r.get("started_at") for r in runs) if isinstance(t, str)]
    return {
        "name": name,
        "display_name": str(meta.get("display_name") or name),
        "description": meta.get("description") or "",
        "tags": meta.get("tags") if isinstance(meta.get("tags"), list) else [],
        "created_at": meta.get("created_at"),
        "runs": len(runs),
        "last_activity": max(activity, key=lambda t: _parse_iso(t) or 0) if activity
        else None,
        "status_counts": dict(counts),
        "project": own or (projects[0] if projects else None),
        "projects": projects,
    }


def _scan_runs(store, exp_path, now, with_config=False):
    """RUN_ROWs of every run under an experiment, newest first; corrupt runs are reported as
    such instead of hiding the others.

    Closed runs come from the run catalog (one or a few files), so the cost is one listing
    plus the runs that are live or changed, not two YAML files per run (see _Catalog).
    """
    return _scan_window(store, exp_path, now, with_config)[0]


def _scan_window(store, exp_path, now, with_config=False, limit=None):
    """(RUN_ROWs newest first, the names of the runs beyond them, the catalog's entries):
    every run, or with ``limit`` at least the newest ``limit`` of them (and whatever had to
    be read from its files) and the other closed runs by name only. What is listed is
    exact: the folder listing (new and deleted runs), every run the catalog does not hold
    (live, crashed, new: read from their files) and, locally, each catalog row returned
    checked against its files' stamps (two stats).
    With a limit only the rows returned are checked, so a terminal's 50 rows of 10,000 runs
    cost 100 stats, not 20,000; the runs beyond the window are counted as the catalog has
    them (a hand-edited start time of one of them is seen when it is shown)."""
    names = _run_names(store, exp_path)
    catalog = _Catalog(store, exp_path)
    cached = catalog.load()
    known = set(cached)
    listed = [n for n in names if n in known]
    unread = [n for n in names if n not in known]
    # what a run's path looks like, once: store.join and display per row cost more than the
    # rest of a catalog row together
    prefix = store.display(store.join(exp_path, "\0"))[:-1]
    rows, stale = [], []

    def take(table):
        stamps = _run_stamps(store, exp_path, table, table)
        for name, entry in table.items():
            stamp = stamps.get(name)
            if stamp is not None and entry.get("stamp") == stamp[0]:
                rows.append(_catalog_row(store, exp_path, entry, stamp[1], prefix))
            else:
                stale.append(name)

    if limit is None:
        table = cached.all_entries() if listed else {}
        take({name: table[name] for name in listed})
        beyond = []
    else:
        beyond = _take_newest(listed, cached, limit, rows, take)
    found = _read_runs(store, exp_path, unread + stale, now)
    rows += [row for row, _entry in found if row is not None]
    catalog.update([entry for _row, entry in found if entry is not None], keep=names,
                   cached=cached)
    if not with_config:
        for row in rows:
            row["params"] = {}
    rows.sort(key=_newest_first_key, reverse=True)
    return rows, beyond, cached


def _take_newest(listed, cached, limit, rows, take):
    """_scan_window's window: the catalog's runs newest first by its start times, handed to
    take() a batch at a time until ``limit`` rows are in (a stale row does not count); the
    names beyond the window."""
    if limit > 0:
        started = cached.column("started_at")
        listed.sort(key=lambda n: _start_key(started[n], n), reverse=True)
    pos = 0
    while pos < len(listed) and len(rows) < limit:
        batch = listed[pos:pos + limit - len(rows)]
        pos += len(batch)
        take({name: cached[name] for name in batch})
    return listed[pos:]


def _read_runs(store, exp_path, names, now):
    """[(RUN_ROW or None, catalog entry or None)] of runs read from their files (the runs the
    catalog does not hold or holds stale), with a progress line for a big (re)build."""
    experiment = exp_path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]

    def read(name):
        run_path = store.join(exp_path, name)
        # stamped before the read: a change during it leaves a stamp that no longer matches
        stamp, metrics, config = _file_stamps(store, run_path)
        found = _read_run_files(store, run_path, name, True)
        if found is None:
            return None, None
        row = _listed_run_row(store, run_path, name, *found, now)
        return row, _catalog_entry(found[0], row, stamp, metrics, config)

    with _Progress(f"reading runs of {experiment}", total=len(names),
                   unit="runs", enabled=_SCAN_PROGRESS[0] and len(names) >= 256) as bar:
        def counted(name):
            got = read(name)
            bar.update()
            return got

        if store.is_local or len(names) < 8:
            return list(map(counted, names))
        # one request per file at ~10-50 ms each: 1,000 runs would take a minute
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return list(pool.map(counted, names))


# A catalog (re)build reads every run's files (10,000 runs: seconds): `expman list` turns
# this on so the reading shows as a progress line on a terminal's stderr; the library as
# such never prints.
_SCAN_PROGRESS = [False]

_START_TIMES = {}  # started_at text -> seconds: a server sorts the same 10,000 rows again


def _newest_first_key(row):
    """Sort key of run rows, newest first when reversed: (start time, name)."""
    return _start_key(row["started_at"], row["name"])


def _start_key(text, name):
    ts = _START_TIMES.get(text)
    if ts is None:
        if len(_START_TIMES) > 100_000:
            _START_TIMES.clear()
        ts = _START_TIMES[text] = _parse_iso(text) or 0
    return ts, name


def _run_names(store, exp_path):
    """The run folders of an experiment (dot folders, such as the catalog, left out).
    Locally one getdents and the entry types it returns: no stat per run (store.listdir
    stats every entry, 10,000 syscalls for a 10,000-run sweep)."""
    if store.is_local:
        try:
            with os.scandir(exp_path) as it:
                return [e.name for e in it if not e.name.startswith(".") and _is_dir_entry(e)]
        except (FileNotFoundError, NotADirectoryError):
            return []
    return [e.name for e in store.listdir(exp_path)
            if e.is_dir and not e.name.startswith(".")]


def _is_dir_entry(entry):
    try:
        return entry.is_dir()
    except OSError:  # deleted while we listed
        return False


# -- 9.1 run catalog: listing 10,000 closed runs reads a few files, not 20,000 ---------------------

class _Catalog:
    """The summary rows of an experiment's closed runs, in ``<experiment>/.catalog/``.

    An entry is ``{"name", "v", "stamp", "config", "metrics", "row"}``: ``row`` is the run's
    RUN_ROW (params included), ``v`` the CATALOG_ROW_VERSION it was made by (an entry of
    another version is read as missing, so a RUN_ROW that gained fields is re-read once),
    ``stamp`` the (size, mtime) of the run.yaml it was made from, ``config`` that of its
    config.yaml (a field of its own: the server's watcher reads ``stamp`` as run.yaml's; an
    entry without it is read again once) and ``metrics`` that of its metrics.parquet when
    the row's ``metrics_error`` was decided (all None on object stores, where a stat per run
    would cost a request per run).

    Two kinds of file, each written whole under a unique name (``part-`` or ``base-``, then
    the time in ns, then an id) and never changed, so concurrent writers need no lock:

    - ``part-*.ndjson``: JSON lines of entries (a closing run adds one; a listing adds the
      runs it had to read);
    - ``base-*.cols``: every entry a compaction read, by column (_ColumnBase): a header line
      (run names, stamps, the column list, a CRC of the rest) and one JSON line per column
      (``status``, ``started_at``, ``params.lr`` ...). A listing decodes the columns it
      uses, when it uses them: the experiments table reads five, a runs table of 50 rows
      builds 50 rows. JSON lines of 10,000 whole rows took 0.2 s to decode.

    A later file's entry for a run wins; a compaction writes one base holding every entry
    it read and then deletes just the files it read (a part written meanwhile survives it),
    and two compactions racing leave two bases that the next one merges. The base is named
    just after the newest file it read, not with the time it is written: a part a closer
    (or a dashboard edit) writes between the compaction's read and its write is newer than
    what the base holds and must keep winning over it (on an object store no stat would
    catch the base's older row). A missing,
    unreadable or foreign file only costs a re-read of the runs it would have covered. The
    ``*.jsonl`` files of expman before the columnar base are neither read nor deleted here
    (an older expman sharing the folder keeps its own).
    """

    def __init__(self, store, exp_path):
        self.store, self.folder = store, store.join(exp_path, CATALOG_DIR)
        self.files = []            # the files load() read, oldest first
        self.loaded_at = None      # time.time_ns() as load() began: before any run was read

    def load(self):
        """{run name: entry} (a _CatalogEntries mapping) from every catalog file, later files
        winning. Rows of a base are built when asked for."""
        store, layers = self.store, []
        if self.loaded_at is None:
            self.loaded_at = time.time_ns()
        names = sorted((n for n in store.listnames(self.folder)
                        if n.endswith((_CATALOG_PART, _CATALOG_BASE))),
                       key=lambda n: n.split("-", 2)[1:2])
        for name in names:
            try:
                data = store.read_bytes(store.join(self.folder, name))
            except OSError:
                continue  # compacted away by another reader since the listing
            self.files.append(name)
            if name.endswith(_CATALOG_BASE):
                base = _ColumnBase.parse(data)
                if base is not None:  # a damaged base: its runs are read from their files
                    layers.append(base)
                continue
            found = _parse_catalog_part(data)
            if layers and isinstance(layers[-1], dict):
                layers[-1].update(found)
            else:
                layers.append(found)
        return _CatalogEntries(layers)

    def update(self, entries, keep, cached=None):
        """Add the entries, and compact when parts pile up or the entries are many (a
        rebuild: 10,000 rows as JSON lines would be decoded whole by every listing).
        ``keep`` is the run names that still exist: a compaction drops the rows of deleted
        runs. ``cached`` is what this catalog's load() returned, if it was called."""
        store = self.store
        try:
            parts = sum(1 for n in self.files if n.startswith("part-")) + bool(entries)
            if parts <= CATALOG_MAX_PARTS and len(entries) < _CATALOG_BASE_MIN:
                if entries:  # read after load(): named then, so a part written since by a
                    # closer or a dashboard edit (newer than what was read) still wins
                    self._write("part", entries, self.loaded_at)
                return
            current = (cached if cached is not None else self.load_fresh()).all_entries()
            for entry in entries:
                current[entry["name"]] = entry
            keep = set(keep)
            self._write("base", [e for n, e in sorted(current.items()) if n in keep],
                        self._after_read())
            for name in self.files:
                try:
                    store.delete(store.join(self.folder, name))
                except OSError:
                    pass
        except OSError as exc:  # a read-only or full disk: listing still works, just slower
            _log.debug("expman: run catalog not updated in %s: %s", store.display(self.folder),
                       exc)

    def load_fresh(self):
        self.files, self.loaded_at = [], None
        return self.load()

    def add(self, entries):
        """One new part file holding the entries (a closing run adds its own)."""
        self._write("part", entries)

    def _after_read(self):
        """The time a compacted base is named with: 1 ns after the newest file load() read
        (1 when it read none: then every part written since wins over it), never later than
        now (a file named from the future, or a foreign name, does not push it there)."""
        newest = 0
        for name in self.files:
            stamp = name.split("-", 2)[1:2]
            if stamp and len(stamp[0]) == 20 and stamp[0].isdigit():
                newest = max(newest, int(stamp[0]))
        return min(newest + 1, time.time_ns())

    def _write(self, kind, entries, at=None):
        store = self.store
        store.mkdir(self.folder)
        at = time.time_ns() if at is None else at
        name = (f"{kind}-{at:020d}-{os.getpid()}-{os.urandom(4).hex()}" +
                (_CATALOG_BASE if kind == "base" else _CATALOG_PART))
        if kind == "base":
            data = _ColumnBase.encode(entries)
        else:  # NaN/inf as Python's json writes them (bare tokens): a NaN stays a float
            data = "".join(json.dumps(e, separators=(",", ":"), default=str) + "\n"
                           for e in entries).encode()
        store.write_atomic(store.join(self.folder, name), data)


_CATALOG_PART, _CATALOG_BASE = ".ndjson", ".cols"   # the catalog's two kinds of file
_CATALOG_BASE_MIN = 64      # a listing that reads this many runs writes a base, not a part
_CATALOG_FORMAT = "expman-catalog-columns"


def _parse_catalog_part(data):
    """{name: entry} of a part file's lines; damaged or foreign lines are skipped."""
    lines = data.splitlines()
    try:  # one parse per file; line by line only to skip a damaged line
        found = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        found = []
        for line in lines:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue  # a foreign or damaged line: that run is read from its files
    entries = {}
    for entry in found:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and \
                isinstance(entry.get("row"), dict) and \
                entry.get("v") == CATALOG_ROW_VERSION:  # older rows lack newer fields
            entries[entry["name"]] = entry
    return entries


class _ColumnBase:
    """A compacted catalog file, read lazily. Line 1 is a header: the run names, their
    stamps, the list of index columns and a CRC of the rest. Then one JSON line per index
    column (a few top-level RUN_ROW fields: status, times, project; ``[null, values]`` when
    every row has the field, else ``[row indices, values]``), then one JSON line per row
    (its RUN_ROW), in the order of the names. A listing sorts and counts on the columns and
    decodes only the rows it shows; all 10,000 rows decode in one json.loads."""

    __slots__ = ("names", "index", "stamps", "configs", "metrics", "where", "lines", "rows",
                 "decoded")

    @staticmethod
    def encode(entries):
        names = [e["name"] for e in entries]
        lines = []
        for field in _CATALOG_INDEXED:
            at, values = [], []
            for i, entry in enumerate(entries):
                value = entry["row"].get(field, _MISSING)
                if value is not _MISSING:
                    at.append(i)
                    values.append(value)
            lines.append(json.dumps([None if len(at) == len(entries) else at, values],
                                    separators=(",", ":"), default=str))
        lines += [json.dumps(e["row"], separators=(",", ":"), default=str) for e in entries]
        body = "\n".join(lines).encode()
        header = {"format": _CATALOG_FORMAT, "v": CATALOG_ROW_VERSION, "names": names,
                  "stamp": [e.get("stamp") for e in entries],
                  "config": [e.get("config") for e in entries],
                  "metrics": [e.get("metrics") for e in entries],
                  "columns": list(_CATALOG_INDEXED), "crc32": zlib.crc32(body)}
        return json.dumps(header, separators=(",", ":"), default=str).encode() + b"\n" + body

    @classmethod
    def parse(cls, data):
        """The base in data, or None when it is damaged, foreign or of another version."""
        head, _, body = data.partition(b"\n")
        try:
            header = json.loads(head)
            if not isinstance(header, dict) or header.get("format") != _CATALOG_FORMAT or \
                    header.get("v") != CATALOG_ROW_VERSION or \
                    header.get("crc32") != zlib.crc32(body):
                return None
            names, columns = header["names"], header["columns"]
            stamps, metrics = header["stamp"], header["metrics"]
            configs = header.get("config") or [None] * len(names)   # None: checked again
            lines = body.split(b"\n") if body else []
            if len(lines) != len(columns) + len(names) or \
                    not len(names) == len(stamps) == len(metrics) == len(configs) or \
                    not all(isinstance(n, str) for n in names + columns):
                return None
        except (ValueError, KeyError, TypeError):
            return None
        self = cls()
        self.names, self.stamps, self.configs, self.metrics = names, stamps, configs, metrics
        self.index = {n: i for i, n in enumerate(names)}
        self.where = {field: j for j, field in enumerate(columns)}
        self.lines, self.rows, self.decoded = lines[:len(columns)], lines[len(columns):], {}
        return self

    def value(self, i, field, default=None):
        """One top-level field of row i: from its column when indexed, else from the row."""
        j = self.where.get(field)
        if j is None:
            return self._row(i).get(field, default)
        found = self.decoded.get(j)
        if found is None:
            at, values = json.loads(self.lines[j])
            found = self.decoded[j] = (None, values) if at is None else \
                (dict(zip(at, values)), None)
        at, values = found
        return values[i] if at is None else at.get(i, default)

    def _row(self, i):
        row = json.loads(self.rows[i])
        if not isinstance(row, dict):
            raise ValueError("a catalog row that is not a mapping")
        return row

    def entry(self, i):
        return self._entry(i, self._row(i))

    def _entry(self, i, row):
        return {"name": self.names[i], "v": CATALOG_ROW_VERSION, "stamp": self.stamps[i],
                "config": self.configs[i], "metrics": self.metrics[i], "row": row}

    def entries(self):
        """{name: entry} of every row (one json.loads for all of them)."""
        rows = json.loads(b"[" + b",".join(self.rows) + b"]")
        return {n: self._entry(i, row) for i, (n, row) in enumerate(zip(self.names, rows))}


_CATALOG_INDEXED = ("status", "started_at", "finished_at", "heartbeat_at", "project")


class _CatalogEntries(collections.abc.Mapping):
    """{run name: entry} over a catalog's files (later ones winning), built on demand: the
    names, stamps and start times of 10,000 runs are at hand without making their rows."""

    def __init__(self, layers):
        self.layers = layers[::-1]   # newest first

    def _where(self, name):
        for layer in self.layers:
            if isinstance(layer, dict):
                if name in layer:
                    return layer, name
            else:
                i = layer.index.get(name)
                if i is not None:
                    return layer, i
        return None, None

    def __getitem__(self, name):
        layer, at = self._where(name)
        if layer is None:
            raise KeyError(name)
        return layer[at] if isinstance(layer, dict) else layer.entry(at)

    def get(self, name, default=None):
        layer, at = self._where(name)
        if layer is None:
            return default
        return layer[at] if isinstance(layer, dict) else layer.entry(at)

    def __contains__(self, name):
        return self._where(name)[0] is not None

    def __iter__(self):
        return iter(dict.fromkeys(n for layer in reversed(self.layers) for n in
                                  (layer if isinstance(layer, dict) else layer.names)))

    def __len__(self):
        return sum(1 for _ in self)

    def items(self):   # every entry: one json.loads per base, not one per row
        return self.all_entries().items()

    def values(self):
        return self.all_entries().values()

    def stamps(self, name):
        """(run.yaml stamp, metrics stamp) the entry was made with, or None if no entry."""
        layer, at = self._where(name)
        if layer is None:
            return None
        if isinstance(layer, dict):
            entry = layer[at]
            return entry.get("stamp"), entry.get("metrics")
        return layer.stamps[at], layer.metrics[at]

    def started_at(self, name):
        layer, at = self._where(name)
        if layer is None:
            return None
        if isinstance(layer, dict):
            return layer[at]["row"].get("started_at")
        return layer.value(at, "started_at")

    def column(self, field):
        """{run name: its row's top-level field} over every entry (None where absent), from
        the bases' index columns when the field is one, without making rows."""
        out = {}
        for layer in reversed(self.layers):
            if isinstance(layer, dict):
                out.update((n, e["row"].get(field)) for n, e in layer.items())
            elif field in layer.where:
                layer.value(0, field)   # decodes the column
                at, values = layer.decoded[layer.where[field]]
                if at is None:
                    out.update(zip(layer.names, values))
                else:
                    names = layer.names
                    out.update((n, None) for n in names)
                    out.update((names[i], v) for i, v in at.items())
            else:
                out.update((n, layer.value(i, field)) for i, n in enumerate(layer.names))
        return out

    def fields(self, name, fields):
        """{field: value} of a few top-level fields of an entry's row (None where absent)."""
        layer, at = self._where(name)
        if isinstance(layer, dict):
            row = layer[at]["row"]
            return {f: row.get(f) for f in fields}
        return {f: layer.value(at, f) for f in fields}

    def all_entries(self):
        """{name: entry} of every run, as a plain dict (bases built column by column)."""
        out = {}
        for layer in reversed(self.layers):
            out.update(layer if isinstance(layer, dict) else layer.entries())
        return out


_FINAL_STATUSES = ("finished", "failed", "interrupted")


def _closed_meta(meta):
    """True when run.yaml itself records the run as closed (nothing changes it by itself)."""
    status = meta.get("status")
    return not meta.get("corrupt") and isinstance(status, str) and \
        status.lower() in _FINAL_STATUSES


def _catalog_entry(meta, row, stamp, metrics=None, config=None):
    """The catalog entry of a listed run, or None while it can still change by itself (live,
    crashed-looking, corrupt): only what run.yaml itself records as closed is cached.
    ``stamp``, ``metrics`` and ``config`` are the (size, mtime) of run.yaml, metrics.parquet
    and config.yaml taken before the row was made from them (None: not stat'ed, or no such
    file)."""
    if not _closed_meta(meta):
        return None
    # empty fields and the path (the folder may move) are left out: a third of the bytes
    kept = {k: v for k, v in row.items() if v is not None and k != "path"}
    return {"name": row["name"], "v": CATALOG_ROW_VERSION,
            "stamp": list(stamp) if stamp else None,
            "config": list(config) if config else None,
            "metrics": list(metrics) if metrics else None, "row": kept}


def _catalog_closed_run(store, run_path, meta, config):
    """A closing run adds its own row to its experiment's catalog (one small file), so the
    listing after a 10,000-run sweep reads 10,000 lines, not 20,000 YAML files. Best effort:
    a listing rebuilds whatever is missing."""
    try:
        name = run_path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        stamp, metrics, config_stamp = _file_stamps(store, run_path)
        entry = _catalog_entry(meta, _listed_run_row(store, run_path, name, meta, config),
                               stamp, metrics, config_stamp)
        if entry is not None:
            exp_path = run_path.replace("\\", "/").rstrip("/").rsplit("/", 1)[0]
            _Catalog(store, exp_path).add([entry])
    except Exception as exc:  # noqa: BLE001 - the run is closed and safe; this is a cache
        _log.debug("expman: no catalog row for %s: %s", store.display(run_path), exc)


def _file_stamps(store, run_path):
    """(run.yaml, metrics.parquet, config.yaml) (size, mtime) of a run folder, each None when
    the file is missing; all None on an object store (no stat per run there)."""
    if not store.is_local:
        return None, None, None
    return tuple(store.stat(store.join(run_path, f)) for f in (RUN_YAML, METRICS_FILE,
                                                               CONFIG_YAML))


_EMPTY_RUN_ROW = []


def _catalog_row(store, exp_path, entry, metrics=None, prefix=None):
    """The RUN_ROW of a catalog entry: every field, in _run_row's order. ``metrics`` is the
    (size, mtime) of the run's metrics.parquet now (local stores): when it is the one the
    entry was made with, the entry's verdict on its footer stands; else (a file damaged after
    the run closed, an entry of an older version) the footer is checked again."""
    if not _EMPTY_RUN_ROW:
        _EMPTY_RUN_ROW.append(dict.fromkeys(_run_row(store, "", {"status": "finished"})))
    row = {**_EMPTY_RUN_ROW[0], **entry["row"]}
    row["path"] = prefix + entry["name"] if prefix is not None else \
        store.display(store.join(exp_path, entry["name"]))
    if store.is_local and ("metrics" not in entry or entry["metrics"] != metrics):
        row.pop("metrics_error", None)
        problem = _unreadable_metrics(store, store.join(exp_path, entry["name"]))
        if problem:
            row["metrics_error"] = problem
    return row


def _run_stamps(store, exp_path, names, cached):
    """{run: ([size, mtime] of run.yaml, [size, mtime] of metrics.parquet or None)} of the
    cached runs, to check their catalog rows against; a run left out is read again. Locally
    three stats of a closed run (an edit in place moves run.yaml's or config.yaml's, a file
    cut short after the run closed moves the metrics file's; the folder's mtime sees none of
    them), and no read; on an object store nothing is checked (a request per run is what
    the catalog saves): edits made through expman there write a fresh catalog row
    themselves."""
    if not store.is_local:
        return {name: (None, None) for name in names if name in cached}
    names = [n for n in names if n in cached]
    # Warm, a stat costs a few µs and threads only add GIL hand-offs (10,000 runs: 0.09 s in
    # a row, 0.2 s in a pool of 8). From a cold page cache each stat waits on the disk
    # (1.8 s in a row), and eight at once keep its queue full (0.9 s): the first ones are
    # timed, and the rest go to a pool only when they were that slow.
    head, rest = names[:256], names[256:]
    t0 = time.perf_counter()
    out = _local_stamps(exp_path, head, cached)
    if not rest:
        return out
    if time.perf_counter() - t0 < 50e-6 * len(head):
        out.update(_local_stamps(exp_path, rest, cached))
        return out
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        parts = list(pool.map(lambda part: _local_stamps(exp_path, part, cached),
                              [rest[i::8] for i in range(8)]))
    for part in parts:
        out.update(part)
    return out


def _local_stamps(exp_path, names, cached):
    out = {}
    stat, sep = os.stat, os.sep
    for name in names:
        known = cached[name].get("stamp")
        base = f"{exp_path}{sep}{name}{sep}"
        try:
            st = stat(base + RUN_YAML)
        except OSError:
            continue
        stamp = [st.st_size, st.st_mtime]
        if stamp != known:
            out[name] = (stamp, None)
            continue  # read again anyway
        try:
            st = stat(base + CONFIG_YAML)
            config = [st.st_size, st.st_mtime]
        except OSError:
            config = None
        if config != cached[name].get("config"):
            continue  # config.yaml edited (or an entry made before it was stamped): read again
        try:
            st = stat(base + METRICS_FILE)
            metrics = [st.st_size, st.st_mtime]
        except OSError:
            metrics = None
        out[name] = (stamp, metrics)
    return out


class _NotSimple(Exception):
    """The text is YAML that _simple_yaml leaves to PyYAML."""


_YAML_BOOLS = {w: True for w in ("yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON")}
_YAML_BOOLS.update({w: False for w in ("no", "No", "NO", "false", "False", "FALSE", "off", "Off",
                                       "OFF")})
_YAML_NULLS = frozenset(("null", "Null", "NULL"))
_YAML_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_YAML_FLOAT = re.compile(r"[-+]?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?")
_YAML_SPECIAL_FLOATS = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf,
                        ".Inf": math.inf, "+.Inf": math.inf, "-.Inf": -math.inf,
                        ".INF": math.inf, "+.INF": math.inf, "-.INF": -math.inf,
                        ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan}
# anything PyYAML would refuse or read differently: comments, double quotes (escapes), tabs,
# other line breaks, a BOM, characters YAML does not print
_YAML_NOT_SIMPLE = re.compile("[#\"\t\r\x85\u2028\u2029\ufeff]|"
                              "[^\n\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _simple_yaml(data):
    """What ``yaml.load(data, CSafeLoader)`` returns, for the YAML expman's dumper writes
    (block mappings, block lists of scalars, plain and single-quoted scalars), ten times
    faster: rebuilding the catalog of 10,000 runs parses 20,000 such files. Anything else
    (a comment, a double-quoted or folded scalar, a timestamp, a flow list, 1e5 ...) raises
    _NotSimple and is left to PyYAML, so the result never differs from PyYAML's."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise _NotSimple() from None
    if _YAML_NOT_SIMPLE.search(text):
        raise _NotSimple()
    lines = [line for line in text.split("\n") if line.strip(" ")]
    if not lines:
        return None
    indents = [len(line) - len(line.lstrip(" ")) for line in lines]
    value, i = _simple_map(lines, indents, 0, 0)
    if i != len(lines):
        raise _NotSimple()
    return value


_YAML_PLAIN_SLOW = frozenset("!&*|>%@`{[]},?:<=~-+.0123456789'yYnNtTfFoO")


def _simple_map(lines, indents, i, indent):
    out = {}
    n = len(lines)
    while i < n:
        here = indents[i]
        if here < indent:
            break
        if here > indent:
            raise _NotSimple()
        body = lines[i][here:]
        at = body.find(": ")
        if at > 0 and body[0] not in _YAML_PLAIN_SLOW:   # most lines: plain key, a value
            key, rest = body[:at].rstrip(" "), body[at + 2:].strip(" ")
        else:
            key, rest = _simple_key(body)
        i += 1
        if rest:
            if rest[0] in _YAML_PLAIN_SLOW or ": " in rest or rest[-1] == ":":
                out[key] = _simple_scalar(rest)
            else:
                out[key] = rest
            continue
        value = None   # "key:" alone: a block below it, or null
        if i < n:
            nxt = indents[i]
            body = lines[i][nxt:]
            if (body.startswith("- ") or body == "-") and nxt >= indent:
                value, i = _simple_list(lines, indents, i, nxt)
            elif nxt > indent:
                value, i = _simple_map(lines, indents, i, nxt)
        out[key] = value
    return out, i


def _simple_list(lines, indents, i, indent):
    out = []
    while i < len(lines):
        line = lines[i]
        if indents[i] != indent or not line[indent:].startswith("- "):
            break
        item = line[indent + 2:]
        if item.lstrip(" ").startswith(("- ", "-\n")) or item.strip(" ") in ("", "-"):
            raise _NotSimple()   # a nested list, an empty item
        out.append(_simple_scalar(item))
        i += 1
    return out, i


def _simple_key(body):
    """(key, text after ': ' or '' for a key alone on its line)."""
    if body.startswith("'"):
        end = _quote_end(body)
        key, after = body[1:end].replace("''", "'"), body[end + 1:]
        if after.rstrip(" ") == ":":
            return key, ""
        if not after.startswith(": "):
            raise _NotSimple()
        return key, after[2:].strip(" ")
    at = body.find(": ")
    if at < 0:
        if not body.rstrip(" ").endswith(":"):
            raise _NotSimple()
        return _simple_scalar(body.rstrip(" ")[:-1], key=True), ""
    return _simple_scalar(body[:at], key=True), body[at + 2:].strip(" ")


def _quote_end(text):
    """Index of the quote closing the single-quoted scalar text starts with."""
    j = 1
    while True:
        j = text.find("'", j)
        if j < 0:
            raise _NotSimple()   # goes on to the next line
        if text.startswith("''", j):
            j += 2
            continue
        return j


def _simple_scalar(text, key=False):
    text = text.strip(" ")
    if not text:
        if key:
            raise _NotSimple()
        return None
    first = text[0]
    if first == "'":
        if _quote_end(text) != len(text) - 1:
            raise _NotSimple()
        return text[1:-1].replace("''", "'")
    if ": " in text or text.endswith(":"):
        raise _NotSimple()   # PyYAML refuses it (a mapping where a value was)
    if text == "[]" and not key:
        return []
    if text == "{}" and not key:
        return {}
    if first in "!&*|>%@`{[]},?:#\"" or text == "-" or text.startswith("- "):
        raise _NotSimple()   # an indicator: not a plain scalar
    hit = _PLAIN_SCALARS.get(text, _MISSING)
    if hit is not _MISSING:
        return hit
    value = _plain_scalar(text, first)
    if len(_PLAIN_SCALARS) > 50_000:
        _PLAIN_SCALARS.clear()
    _PLAIN_SCALARS[text] = value   # immutable: int, float, bool, None or str
    return value


_PLAIN_SCALARS = {}   # plain scalar text -> value: 10,000 run.yaml files repeat most of theirs


def _plain_scalar(text, first):
    # PyYAML's own implicit resolvers say what a plain scalar is (the ones CSafeLoader uses):
    # the first that matches wins; none, a string. Only the plainest ints and floats, bools
    # and nulls are built here; a match of anything else (a timestamp, 0x1F, 1_000, 1:30,
    # the merge key) is left to PyYAML.
    for tag, regexp in _yaml_resolvers(first):
        if regexp.match(text):
            kind = tag.rsplit(":", 1)[-1]
            if kind == "int" and _YAML_INT.fullmatch(text):
                return int(text)
            if kind == "float" and _YAML_FLOAT.fullmatch(text):
                return float(text)
            if kind == "float" and text in _YAML_SPECIAL_FLOATS:
                return _YAML_SPECIAL_FLOATS[text]
            if kind == "bool" and text in _YAML_BOOLS:
                return _YAML_BOOLS[text]
            if kind == "null" and (text in _YAML_NULLS or text == "~"):
                return None
            raise _NotSimple()
    return text


_YAML_RESOLVERS = {}


def _yaml_resolvers(first):
    """[(tag, regexp)] PyYAML tries on a plain scalar starting with `first`."""
    found = _YAML_RESOLVERS.get(first)
    if found is None:
        table = yaml.resolver.Resolver.yaml_implicit_resolvers
        found = _YAML_RESOLVERS[first] = list(table.get(first, [])) + list(table.get(None, []))
    return found


def _read_listed_yaml(store, path):
    """_read_yaml for a listing: the YAML expman writes is read by _simple_yaml, the rest by
    PyYAML (same result, same errors)."""
    try:
        data = store.read_bytes(path)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    try:
        value = _simple_yaml(data)
    except _NotSimple:
        try:
            return _yaml_load(data)
        except ExpmanError as exc:
            raise ExpmanError(f"{store.display(path)}: {exc}") from None
    return {} if value is None else value


def _read_run_files(store, run_path, name, with_config=True):
    """(meta, config) of one run for a listing, or None when the directory is not a run (no
    run.yaml). A garbled run.yaml gives a meta marked corrupt, so the run still shows."""
    meta_path = store.join(run_path, RUN_YAML)
    try:
        meta = _read_listed_yaml(store, meta_path)
    except ExpmanError as exc:
        _log.warning("%s", exc)
        meta = {"name": name, "status": "crashed", "error": str(exc), "corrupt": True}
    if not meta:
        if store.stat(meta_path) is None:
            return None  # not a run: no run.yaml at all
        meta = {"name": name, "status": "crashed", "error": "empty run.yaml", "corrupt": True}
    meta.setdefault("name", name)
    config = None
    if with_config:
        try:
            config = _read_listed_yaml(store, store.join(run_path, CONFIG_YAML))
        except ExpmanError as exc:
            _log.warning("%s", exc)
            config = {}
    return meta, config


def _listed_run_row(store, run_path, name, meta, config, now=None):
    """The RUN_ROW of a listed run (status recomputed for ``now``)."""
    row = _run_row(store, run_path, meta, config, now)
    row["name"] = name  # the directory is the truth if run.yaml was copied around
    if meta.get("corrupt"):
        row["corrupt"] = True
    if meta.get("error"):
        row["error"] = str(meta["error"])
    if row["status"] == "crashed":
        _catch_up_crashed(store, run_path, row)
    elif row["status"] != "running" and store.is_local:
        # locally a stat per run; on an object store a request per run per listing, which the
        # dashboard's twice-a-second reloads of a big bucket cannot afford
        problem = _unreadable_metrics(store, run_path)
        if problem:
            row["metrics_error"] = problem
        elif row["summary_min"] is None:  # an older writer's or expman-rs's run.yaml
            row["summary_min"], row["summary_max"] = _metrics_min_max(store, run_path)
    return row


def _metrics_min_max(store, run_path):
    """({key: min}, {key: max}) of a closed run read off its metrics file's Parquet
    statistics (the footer only, no rows; NaN is not counted in them), or (None, None) when
    the file has none. The listing of a closed run is cached in the catalog: read once."""
    try:
        files = _metric_files(store, run_path)
        if len(files) != 1 or not files[0][2].endswith(".parquet"):
            return None, None
        if store.is_local:
            try:
                return _footer_min_max(_parquet_footer(files[0][2]))
            except (ValueError, IndexError, UnicodeDecodeError, struct.error):
                pass   # something the hand reader does not follow: pyarrow's word
        meta = store.parquet_file(files[0][2]).metadata
        low, high = {}, {}
        for group in map(meta.row_group, range(meta.num_row_groups)):
            for col in map(group.column, range(group.num_columns)):
                key, stats = col.path_in_schema, col.statistics
                if key in RESERVED_COLUMNS or col.physical_type != "DOUBLE":
                    continue
                if stats is None:
                    return None, None  # written without statistics: unknown, not empty
                if stats.has_min_max:  # (none when every value is null or NaN)
                    low[key] = min(low.get(key, stats.min), stats.min)
                    high[key] = max(high.get(key, stats.max), stats.max)
        return low, high
    except (OSError, ExpmanError, ValueError, pa.ArrowException):
        return None, None


def _parquet_footer(path):
    """The thrift FileMetaData bytes of a local Parquet file (ValueError if it has none)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size < 12:
            raise ValueError("too short for Parquet")
        fh.seek(size - 8)
        tail = fh.read(8)
        length = int.from_bytes(tail[:4], "little")
        if tail[4:] != b"PAR1" or length > size - 12:
            raise ValueError("no Parquet footer")
        fh.seek(size - 8 - length)
        return fh.read(length)


def _footer_min_max(footer):
    """({key: min}, {key: max}) of the DOUBLE columns in a Parquet footer (the thrift
    FileMetaData, compact protocol), as pyarrow's column statistics give them; (None, None)
    when a DOUBLE column has no statistics. Read by hand: opening each of 10,000 files with
    pyarrow to read five numbers cost most of a catalog rebuild (0.15 ms a file, against
    ~20 µs here). Raises ValueError on anything it does not follow (the caller then asks
    pyarrow)."""
    buf, pos = footer, 0
    end = len(buf)

    def varint():
        nonlocal pos
        shift = out = 0
        while True:
            if pos >= end:
                raise ValueError("truncated footer")
            b = buf[pos]
            pos += 1
            out |= (b & 0x7F) << shift
            if b < 0x80:
                return out
            shift += 7

    def zigzag():
        n = varint()
        return (n >> 1) ^ -(n & 1)

    def binary():
        nonlocal pos
        n = varint()
        if pos + n > end:
            raise ValueError("truncated footer")
        pos += n
        return buf[pos - n:pos]

    def skip(kind):
        nonlocal pos
        if kind in (1, 2):
            return
        if kind == 3:
            pos += 1
        elif kind in (4, 5, 6):
            varint()
        elif kind == 7:
            pos += 8
        elif kind == 8:
            binary()
        elif kind in (9, 10):
            size, elem = list_header()
            for _ in range(size):
                if elem in (1, 2):
                    pos += 1
                else:
                    skip(elem)
        elif kind == 11:
            size = varint()
            if size:
                types = buf[pos]
                pos += 1
                for _ in range(size):
                    skip(types >> 4)
                    skip(types & 0x0F)
        elif kind == 12:
            for _fid, ftype in fields():
                skip(ftype)
        else:
            raise ValueError(f"thrift type {kind}")

    def list_header():
        nonlocal pos
        b = buf[pos]
        pos += 1
        size = b >> 4
        return (varint() if size == 15 else size), b & 0x0F

    def fields():
        nonlocal pos
        fid = 0
        while True:
            if pos >= end:
                raise ValueError("truncated footer")
            b = buf[pos]
            pos += 1
            if b == 0:
                return
            delta, kind = b >> 4, b & 0x0F
            fid = fid + delta if delta else zigzag()
            yield fid, kind

    low, high = {}, {}
    for fid, kind in fields():                      # FileMetaData
        if fid != 4 or kind != 9:
            skip(kind)
            continue
        groups, _ = list_header()
        for _ in range(groups):
            for gid, gkind in fields():             # RowGroup
                if gid != 1 or gkind != 9:
                    skip(gkind)
                    continue
                columns, _ = list_header()
                for _ in range(columns):
                    for cid, ckind in fields():     # ColumnChunk
                        if cid != 3 or ckind != 12:
                            skip(ckind)
                            continue
                        ptype, path, stats = None, None, None
                        for mid, mkind in fields():  # ColumnMetaData
                            if mid == 1 and mkind == 5:
                                ptype = zigzag()
                            elif mid == 3 and mkind == 9:
                                n, _ = list_header()
                                path = [binary().decode() for _ in range(n)]
                            elif mid == 12 and mkind == 12:
                                stats = {}
                                for sid, skind in fields():  # Statistics
                                    if sid in (1, 2, 5, 6) and skind == 8:
                                        stats[sid] = binary()
                                    else:
                                        skip(skind)
                            else:
                                skip(mkind)
                        if ptype != 5 or path is None or len(path) != 1 or \
                                path[0] in RESERVED_COLUMNS:
                            continue
                        if stats is None:
                            return None, None   # written without statistics: unknown
                        least, most = stats.get(6), stats.get(5)
                        if least is None or most is None:
                            least, most = stats.get(2), stats.get(1)
                        if least is None or most is None or len(least) != 8 or len(most) != 8:
                            continue   # every value null or NaN
                        key = path[0]
                        least, most = _DOUBLE.unpack(least)[0], _DOUBLE.unpack(most)[0]
                        low[key] = min(low.get(key, least), least)
                        high[key] = max(high.get(key, most), most)
        return low, high   # what follows the row groups (key-value metadata ...) is not needed
    return low, high


_DOUBLE = struct.Struct("<d")


_FOOTER_CHECKS = {}  # (display path, size, mtime) -> problem or None: a closed file never changes


def _unreadable_metrics(store, run_path):
    """Why the closed run's metrics.parquet cannot be read (no Parquet footer: truncated by a
    crash or a bad copy), or None. The dashboard used to draw nothing and say nothing while
    only the server's stderr knew. Costs one stat and a 4-byte read, once per file version."""
    fpath = store.join(run_path, METRICS_FILE)
    try:
        st = store.stat(fpath)
    except OSError:
        return None
    if st is None:
        return None
    key = (store.display(fpath), st[0], st[1])
    if key in _FOOTER_CHECKS:
        return _FOOTER_CHECKS[key]
    problem = None
    if st[0] < 12:
        problem = f"{METRICS_FILE} is truncated ({st[0]} bytes)"
    else:
        try:
            if store.read_range(fpath, st[0] - 4, 4) != b"PAR1":
                problem = f"{METRICS_FILE} is truncated or not Parquet (no footer; {st[0]:,} bytes)"
        except OSError as exc:
            problem = f"{METRICS_FILE} cannot be read: {exc}"
    if len(_FOOTER_CHECKS) > 10000:
        _FOOTER_CHECKS.clear()
    _FOOTER_CHECKS[key] = problem
    return problem


def _catch_up_crashed(store, run_path, row):
    """A crashed run's run.yaml stops at its last heartbeat, but rows flushed after it are on
    disk: take the row count, last step, last values and duration from the data (only the
    rows after the heartbeat's count are read)."""
    since = row["rows"] or 0
    tail = _rows_after(store, run_path, since)
    if tail is None or not tail.num_rows:
        return
    row["rows"] = since + tail.num_rows
    steps = [s for s in tail.column("step").to_pylist() if s is not None]
    if steps and (row["last_step"] is None or max(steps) > row["last_step"]):
        row["last_step"] = max(steps)
    row["summary"] = {**row["summary"], **_last_values(tail)}
    _fold_min_max(row, tail)
    _catch_up_duration(row, tail)


def _rows_after(store, run_path, since):
    """The run's metric rows after the first `since` (None when its files cannot be listed)."""
    tables = []
    try:
        for start, end, fpath in _metric_files(store, run_path):
            if end is not None and end <= since:
                continue
            try:
                tables.append(_read_metric_file(store, fpath, None, max(0, since - start)))
            except Exception:  # noqa: BLE001 - a half-written last segment: the rest counts
                continue
    except (OSError, ExpmanError):
        return None
    return _unify(tables)


def _last_values(table):
    """{metric: its last non-null value} over the table's metric columns."""
    last = {}
    for key in table.column_names:
        if key in ("step", "timestamp"):
            continue
        values = [v for v in table.column(key).to_pylist() if v is not None]
        if values:
            last[key] = values[-1]
    return last


def _catch_up_duration(row, tail):
    """Stretch row's duration to the tail's last timestamp when that is later."""
    started = _parse_iso(row["started_at"])
    last = _last_valid(tail.column("timestamp")) if started is not None else None
    last = last.timestamp() if hasattr(last, "timestamp") else None
    if last is not None and (row["duration_secs"] is None or last - started > row["duration_secs"]):
        row["duration_secs"] = round(last - started, 3)


def _fold_min_max(row, tail):
    """Fold the rows of ``tail`` into the row's min and max of each metric, NaN ignored (only
    where the row knows them: None is unknown, not empty)."""
    low, high = row["summary_min"], row["summary_max"]
    if low is None or high is None:
        return
    for key in tail.column_names:
        if key in RESERVED_COLUMNS:
            continue
        found = pc.min_max(tail.column(key))
        least, most = found["min"].as_py(), found["max"].as_py()
        if least is not None and least == least:  # NaN: only NaN logged (kernels skip NaN)
            low[key] = least if key not in low else min(low[key], least)
            high[key] = most if key not in high else max(high[key], most)


def list_runs(root=None, experiment=None):
    """The runs of one experiment, newest first, each a dict (status, times, params, summary).

    >>> for run in expman.list_runs("experiments", "resnet"):
    ...     print(run["name"], run["status"], run["summary"].get("val/acc"))
    """
    if experiment is None:
        raise InvalidInputError("list_runs needs an experiment name")
    store, root_path = _resolve_root(root)
    exp_path = store.join(root_path, _safe_name(experiment, "experiment name"))
    if not store.isdir(exp_path):
        raise InvalidInputError(f"no experiment {experiment!r} in {store.display(root_path)}")
    return _scan_runs(store, exp_path, time.time(), with_config=True)


# -- 9.2 one run's data: load_metrics, metric_keys, metric_stats, load_log, artifacts --------------

def _metric_files(store, path):
    """[(start, end, file path)] of the run's metric rows, whatever state the run is in."""
    return _SegmentLog.metrics(store, path).files()


def _read_metric_file(store, path, keys, skip_rows=0):
    """Read one Parquet file (only the wanted columns, only row groups past skip_rows)."""
    pf = store.parquet_file(path)
    names = pf.schema_arrow.names
    columns = None if keys is None else [c for c in names if c in RESERVED_COLUMNS or c in keys]
    if skip_rows <= 0:
        return pf.read(columns=columns)
    meta = pf.metadata
    groups, first_row, seen = [], None, 0
    for i in range(meta.num_row_groups):
        n = meta.row_group(i).num_rows
        if seen + n > skip_rows:
            groups.append(i)
            if first_row is None:
                first_row = seen
        seen += n
    if not groups:
        return pf.schema_arrow.empty_table().select(columns or names)
    table = pf.read_row_groups(groups, columns=columns)
    return table.slice(skip_rows - first_row)


def load_metrics(run_dir, keys=None, since_row=0):
    """The run's metrics as one ``pyarrow.Table``: ``step``, ``timestamp``, one float64 column
    per key (null where a row did not log it). Works the same on a live or a closed run.

    >>> t = expman.load_metrics("experiments/resnet/20240101_120000", keys=["train/loss"])
    >>> t.to_pandas()
    >>> newer = expman.load_metrics(run_dir, since_row=t.num_rows)   # only what is new

    A truncated or unreadable segment (a crash mid-write) is skipped with a warning; the
    other rows still load.
    """
    store, path = _resolve_run(run_dir)
    keys = None if keys is None else ([keys] if isinstance(keys, str) else list(keys))

    def read(files):
        tables = []
        for start, end, fpath in files:
            if end is not None and end <= since_row:
                continue
            skip = max(0, since_row - start)
            try:
                tables.append(_strip_rows_key(_read_metric_file(store, fpath, keys, skip)))
            except Exception as exc:  # noqa: BLE001 - a half-written file from a crash
                if _is_missing(exc):
                    raise  # merged or compacted away since the listing: list again
                # An ExpmanWarning, not only a log line: rows are missing from what the
                # caller gets, and a notebook user with no logging set up must see that.
                _warn(f"expman: skipped unreadable metrics file {store.display(fpath)}: "
                      f"{exc}")
        return tables

    # a half-read listing is never returned: it would hold fewer rows than a previous read
    return _unify(_SegmentLog.metrics(store, path).read(read), keys)


def _unify(tables, keys=None):
    """Concatenate tables whose key columns differ; columns: step, timestamp, keys in order."""
    if not tables:
        return _empty_metrics_table()
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables,
                                                                promote_options="default")
    if keys is not None:
        wanted = [c for c in table.column_names if c in RESERVED_COLUMNS]
        wanted += [k for k in keys if k in table.column_names and k not in RESERVED_COLUMNS]
        table = table.select(wanted)
    return table


def metric_keys(run_dir):
    """The metric keys of a run in order of first appearance (schemas only, no data read)."""
    store, path = _resolve_run(run_dir)
    return _metric_keys(store, path)


def _metric_keys(store, path):
    seen = {}
    for _start, _end, fpath in _metric_files(store, path):
        try:
            names = store.parquet_file(fpath).schema_arrow.names
        except Exception:  # noqa: BLE001 - unreadable segment: skip (load_metrics warns)
            continue
        for name in names:
            if name not in RESERVED_COLUMNS:
                seen.setdefault(name, None)
    return list(seen)


def _row_count(store, path):
    files = _metric_files(store, path)
    if not files:
        return 0
    start, end, fpath = files[-1]
    if end is not None:
        return end
    try:
        return store.parquet_file(fpath).metadata.num_rows
    except Exception:  # noqa: BLE001
        return 0


def metric_stats(run_dir):
    """{key: {"last", "min", "max", "count", "last_step"}} over every row of the run.

    >>> expman.metric_stats(run_dir)["train/loss"]["min"]
    """
    table = load_metrics(run_dir)
    stats = {}
    steps = table.column("step")
    for name in table.column_names:
        if name in RESERVED_COLUMNS:
            continue
        col = table.column(name)
        mask = pc.is_valid(col)
        values = pc.filter(col, mask)
        count = len(values)
        if not count:
            stats[name] = {"last": None, "min": None, "max": None, "count": 0,
                           "last_step": None}
            continue
        finite = pc.filter(values, pc.is_finite(values))
        minmax = pc.min_max(finite).as_py() if len(finite) else {"min": None, "max": None}
        stats[name] = {"last": values[count - 1].as_py(), "min": minmax["min"],
                       "max": minmax["max"], "count": count,
                       "last_step": pc.filter(steps, mask)[count - 1].as_py()}
    return stats


def load_log(run_dir, since=0, max_bytes=256 * 1024):
    """Read run.log: returns a tuple ``(text, next_offset)``, not just the text.

    ``text`` is at most ``max_bytes`` of the log from byte offset ``since`` (negative: that
    many bytes before the end), cut at a line end; ``next_offset`` is the byte offset where
    it stopped, to pass back as ``since`` to read what was written after it.

    >>> text, offset = expman.load_log(run_dir)
    >>> more, offset = expman.load_log(run_dir, since=offset)   # follow a live run
    >>> last_kb, _ = expman.load_log(run_dir, since=-1024)
    """
    store, path = _resolve_run(run_dir)
    log_path = store.join(path, RUN_LOG)
    st = store.stat(log_path)
    size = st[0] if st else 0
    if since < 0:
        since = max(0, size + since)
    since = min(since, size)
    if since >= size:
        return "", since
    data = store.read_range(log_path, since, min(max_bytes, size - since))
    if since + len(data) < size and b"\n" in data:  # stop at a line end when we cut
        data = data[:data.rindex(b"\n") + 1]
    return data.decode("utf-8", "replace"), since + len(data)


_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
_TABLE_EXT = {".parquet", ".csv", ".tsv", ".arrow", ".feather"}
_TEXT_EXT = {".txt", ".log", ".json", ".yaml", ".yml", ".md", ".py", ".toml", ".cfg", ".ini",
             ".sh", ".jsonl", ".xml", ".html", ".svg", ".rst", ".tex", ".diff", ".patch"}


def _artifact_kind(path):
    ext = os.path.splitext(path)[1].lower()
    if ext in _IMAGE_EXT:
        return "image"
    if ext in _TABLE_EXT:
        return "table"
    if ext in _TEXT_EXT:
        return "text"
    return "binary"


def list_artifacts(run_dir):
    """[{"path", "size", "mtime", "kind"}] of every file under the run's artifacts/."""
    store, path = _resolve_run(run_dir)
    files = store.walk_files(store.join(path, ARTIFACTS_DIR))
    return [{"path": rel, "size": size, "mtime": _iso(mtime), "kind": _artifact_kind(rel)}
            for rel, size, mtime in sorted(files)]


# -- 9.3 expman-rs runs, read as they are ----------------------------------------------------------
# expman-rs, the Rust tool expman succeeds, keeps the same tree (experiment/run/run.yaml,
# config.yaml, run.log, artifacts/) and the same metrics table (step int64, null when logged
# without a step; timestamp us UTC; one float64 per key), under other file names:
#
#   <run>/vectors.parquet               0.5.x, and 1.x once the run is closed
#   <run>/metrics.parquet               some 0.5.x releases: our own name, read as ours
#   <run>/vectors-0000.arrow ...        1.x while live (or killed): Arrow IPC *streams*, the
#                                       last one appended to; one schema per segment
#   <run>/system-0000.arrow ...         1.x system metrics (not read)
#
# Its run.yaml says RUNNING/FINISHED/FAILED/CRASHED (statuses are read in any case) and keeps
# `scalars:` and `vectors:` where ours keeps `summary:` (read by _run_row). _metric_files calls
# _expman_rs_metric_files only for a run with neither segments nor metrics.parquet; the
# ".arrow" segments are read through _ArrowStreamFile, which stands in for a ParquetFile.

_RS_METRICS_FILE = "vectors.parquet"
_RS_SEGMENT_RE = re.compile(r"vectors-(\d+)\.arrow$")
_RS_SEGMENT_ROWS = {}       # (path, size, mtime) -> rows: a segment is read once per change


def _expman_rs_summary(meta):
    """The summary of an expman-rs run.yaml: last metric values (``vectors:``), then the
    ``log_scalar`` values (``scalars:``), which win, as in ours."""
    out = {}
    for section in ("vectors", "scalars"):
        if isinstance(meta.get(section), dict):
            out.update(meta[section])
    return out


def _expman_rs_metric_files(store, path):
    """[(start, end, file)] of an expman-rs run's metrics ([] when there are none): its one
    vectors.parquet, or its live segments with their row ranges (counted once per change)."""
    entries = store.listdir(path)
    if any(e.name == _RS_METRICS_FILE for e in entries):
        return [(0, None, store.join(path, _RS_METRICS_FILE))]
    segs = sorted((int(m.group(1)), e) for e in entries
                  if not e.is_dir and (m := _RS_SEGMENT_RE.match(e.name)))
    out, start = [], 0
    for _num, entry in segs:
        fpath = store.join(path, entry.name)
        if _links_out(store, fpath):  # as the server refuses for every other run file
            _warn(f"expman: skipped {store.display(fpath)}: a link out of the run")
            continue
        key = (fpath, entry.size, entry.mtime)
        rows = _RS_SEGMENT_ROWS.get(key)
        if rows is None:
            try:
                rows = _ArrowStreamFile(store, fpath).metadata.num_rows
            except FileNotFoundError:
                raise
            except Exception:  # noqa: BLE001 - torn header: no rows yet (load_metrics warns)
                rows = 0
            if len(_RS_SEGMENT_ROWS) > 4096:
                _RS_SEGMENT_ROWS.clear()
            _RS_SEGMENT_ROWS[key] = rows
        out.append((start, start + rows, fpath))
        start += rows
    return out


class _ArrowStreamFile:
    """One expman-rs segment (an Arrow IPC stream) behind the ParquetFile members the readers
    use: ``schema_arrow``, ``metadata`` (num_rows, num_row_groups, row_group(i).num_rows),
    ``read``, ``read_row_groups``, ``iter_batches``; one record batch is one "row group".
    A segment still being written, or cut by a kill, ends in a torn message: the complete
    batches before it are the segment."""

    def __init__(self, store, path):
        import pyarrow.ipc
        reader = pyarrow.ipc.open_stream(store.read_bytes(path))
        batches = []
        with contextlib.suppress(pa.ArrowInvalid, OSError, EOFError):
            for batch in reader:
                batches.append(batch)
        self.schema_arrow = reader.schema
        self._batches = batches
        groups = [_RowGroup(b.num_rows) for b in batches]
        self.metadata = _RowGroups(sum(g.num_rows for g in groups), len(groups),
                                   groups.__getitem__)

    def read_row_groups(self, groups, columns=None):
        table = pa.Table.from_batches([self._batches[i] for i in groups], self.schema_arrow)
        return table if columns is None else table.select(columns)

    def read(self, columns=None):
        return self.read_row_groups(range(len(self._batches)), columns)

    def iter_batches(self, batch_size=None, columns=None):
        for batch in self._batches:
            yield batch if columns is None else batch.select(columns)


_RowGroup = collections.namedtuple("_RowGroup", "num_rows")
_RowGroups = collections.namedtuple("_RowGroups", "num_rows num_row_groups row_group")


# -- 9.4 media and histograms ----------------------------------------------------------------------

MEDIA_KINDS = ("image", "audio", "video", "text")
_MEDIA_TYPES = {**IMAGE_TYPES, **AUDIO_TYPES, **VIDEO_TYPES}


def _read_media_index(store, path, since=0):
    """(items, next offset, bad lines, torn tail) of media/index.jsonl from byte offset since.

    Only whole lines count: a torn last line (a writer killed mid-append, or one appending
    now) is left for the next read and next stays before it."""
    index = store.join(path, MEDIA_DIR, MEDIA_INDEX)
    st = store.stat(index)
    if st is None or st[0] <= since:
        return [], since, 0, False
    data = store.read_range(index, since, st[0] - since)
    end = data.rfind(b"\n") + 1
    items, bad = [], 0
    for line in data[:end].split(b"\n"):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if (not isinstance(item, dict) or not isinstance(item.get("tag"), str)
                or item.get("kind") not in MEDIA_KINDS or type(item.get("step")) is not int):
            bad += 1
            continue
        items.append(item)
    return items, since + end, bad, end < len(data)


def read_media(run_dir, tag=None, kind=None):
    """The run's logged images, audio, video and text, in logging order.

    >>> items = expman.read_media("experiments/gan/run1", tag="samples", kind="image")
    >>> items[-1]   # {"tag", "kind", "step", "time", "path", "mime", "bytes", "width", ...}
    >>> png = expman.read_media_bytes("experiments/gan/run1", items[-1])

    Each item is a dict: ``tag``, ``kind`` (image/audio/video/text), ``step``, ``time`` (POSIX
    seconds); files have ``path`` (relative to the run), ``mime`` and ``bytes``, images also
    ``width`` and ``height``; text items carry their ``text``. Unreadable index lines are
    skipped with a warning; the rest is returned.
    """
    if kind is not None and kind not in MEDIA_KINDS:
        raise InvalidInputError(f"kind must be one of {', '.join(MEDIA_KINDS)}, got {kind!r}")
    store, path = _resolve_run(run_dir)
    items, _next, bad, torn = _read_media_index(store, path)
    where = store.display(store.join(path, MEDIA_DIR, MEDIA_INDEX))
    if bad:
        _warn(f"expman: skipped {bad} unreadable line(s) of {where}")
    if torn:
        _warn(f"expman: the last line of {where} is incomplete (the writer stopped mid-write); "
              f"skipped")
    return [i for i in items if (tag is None or i["tag"] == tag)
            and (kind is None or i["kind"] == kind)]


def read_media_bytes(run_dir, item):
    """The bytes of one item from read_media (or its ``path``); text items give UTF-8 text.

    >>> data = expman.read_media_bytes(run_dir, expman.read_media(run_dir, kind="audio")[0])
    """
    if isinstance(item, dict) and item.get("kind") == "text" and "text" in item:
        return str(item["text"]).encode("utf-8")
    rel = item.get("path") if isinstance(item, dict) else item
    if not isinstance(rel, str):
        raise InvalidInputError("item must be a dict from read_media or its 'path'")
    store, path = _resolve_run(run_dir)
    full = _media_path(store, path, rel)
    try:
        return store.read_bytes(full)
    except FileNotFoundError:
        raise InvalidInputError(f"no such media file in the run: {rel}") from None


def _media_path(store, run_path, rel):
    """The full path of a media file; InvalidInputError for anything outside the run's media/
    or of a type the server may not send (the extension must be in the allowlist)."""
    if (not isinstance(rel, str) or "\0" in rel or "\\" in rel
            or not rel.startswith(MEDIA_DIR + "/")):
        raise InvalidInputError(f"bad media path: {rel!r}")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidInputError(f"media path must stay inside the run: {rel!r}")
    if os.path.splitext(rel)[1].lower().lstrip(".") not in _MEDIA_TYPES:
        raise InvalidInputError(f"not a media file: {rel!r}")
    full = store.join(run_path, *parts)
    if store.is_local:
        real_base = os.path.realpath(store.join(run_path, MEDIA_DIR))
        if not os.path.realpath(full).startswith(real_base + os.sep):
            raise InvalidInputError(f"media path leaves the run: {rel!r}")
    return full


def _histogram_schema():
    f64 = pa.float64()
    return pa.schema([("tag", pa.string()), ("step", pa.int64()),
                      ("timestamp", pa.timestamp("us", tz="UTC")), ("edges", pa.list_(f64)),
                      ("counts", pa.list_(f64)), ("min", f64), ("max", f64), ("sum", f64),
                      ("count", pa.int64())])


def _histogram_files(store, path):
    return [f for _s, _e, f in _SegmentLog.histograms(store, path).files()]


def _load_histograms(store, path, tag=None, columns=None):
    def read(files):
        tables = []
        for _s, _e, file in files:
            try:
                tables.append(_strip_rows_key(store.parquet_file(file).read(columns=columns)))
            except Exception as exc:  # noqa: BLE001 - a torn file: keep the others
                if _is_missing(exc):
                    raise  # compacted or merged away since the listing: list again
                _warn(f"expman: skipped unreadable histogram file {store.display(file)}: {exc}")
        return tables

    tables = _SegmentLog.histograms(store, path).read(read)
    schema = _histogram_schema()
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    tables = [t for t in tables if t.schema.names == schema.names]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if tag is not None:
        table = table.filter(pc.equal(table.column("tag"), tag))
    return table


def read_histograms(run_dir, tag=None):
    """Every histogram the run logged, as a pyarrow.Table (live runs included).

    >>> t = expman.read_histograms("experiments/resnet/run1", tag="weights/fc1")
    >>> t.column_names  # tag, step, timestamp, edges, counts, min, max, sum, count

    ``edges`` holds len(counts) + 1 bin edges per row; ``sum`` is null for histograms logged
    as edges/counts.
    """
    store, path = _resolve_run(run_dir)
    return _load_histograms(store, path, tag)


def _media_summary(store, path):
    """{"media": {tag: {"kind", "count", "last_step"}}, "histograms": {tag: {...}}}."""
    media = {}
    for item in _read_media_index(store, path)[0]:
        entry = media.setdefault(item["tag"], {"kind": item["kind"], "count": 0,
                                               "last_step": item["step"]})
        entry["count"] += 1
        entry["last_step"] = item["step"]
    hists = {}
    table = _load_histograms(store, path, columns=["tag", "step"])
    for tag, step in zip(table.column("tag").to_pylist(), table.column("step").to_pylist()):
        entry = hists.setdefault(tag, {"count": 0, "last_step": step})
        entry["count"] += 1
        entry["last_step"] = step
    return {"media": media, "histograms": hists}


# -- 9.5 many runs in one table: load_experiment(s), one pyarrow.dataset scan ----------------------

def load_experiment(root=None, experiment=None, keys=None):
    """Every metric row of every run of an experiment as one ``pyarrow.Table``, with
    ``experiment`` and ``run`` columns first, then ``step``, ``timestamp`` and the metrics.

    >>> expman.load_experiment("experiments", "resnet").to_pandas()

    Built with ``pyarrow.dataset`` (see load_experiments): closed and live runs alike, runs in
    name order, each run's rows in logged order.
    """
    if experiment is None:
        raise InvalidInputError("load_experiment needs an experiment name")
    return load_experiments(root, [experiment], keys=keys)


def load_experiments(root=None, experiments=None, keys=None, project=None):
    """The metric rows of many experiments' runs as one ``pyarrow.Table``.

    >>> t = expman.load_experiments("experiments")                  # every experiment
    >>> t = expman.load_experiments("experiments", ["a", "b"], keys=["val/acc"])
    >>> t = expman.load_experiments("experiments", project="vision")

    Columns: ``experiment``, ``run``, ``step``, ``timestamp``, then one column per metric key
    (null where a run or a row did not log it). A metric key named ``experiment`` or ``run``
    comes out as ``metrics.experiment`` / ``metrics.run``. The files are scanned in parallel
    by ``pyarrow.dataset``: one ``metrics.parquet`` per closed run, the complete segments
    ``metrics/seg-*.parquet`` of a live one (a segment being written has a temporary name and
    is never read). An unreadable file (a crash mid-write) is skipped with a warning.
    """
    store, root_path = _resolve_root(root)
    if experiments is None:
        names = [e["name"] for e in _in_project(list_experiments(root), project)] \
            if project is not None else sorted(
                e.name for e in store.listdir(root_path)
                if e.is_dir and not e.name.startswith("."))
    else:
        names = [experiments] if isinstance(experiments, str) else list(experiments)
        names = [_safe_name(n, "experiment name") for n in names]
        for name in names:
            if not store.isdir(store.join(root_path, name)):
                raise InvalidInputError(f"no experiment {name!r} in "
                                        f"{store.display(root_path)}")
        if project is not None:
            keep = {e["name"] for e in _in_project(list_experiments(root), project)}
            names = [n for n in names if n in keep]
    keys = None if keys is None else ([keys] if isinstance(keys, str) else list(keys))
    for _attempt in range(_READ_ATTEMPTS):  # the segment logs' retry policy, over many runs
        files = _dataset_files(store, root_path, names)
        try:
            return _scan_metric_files(store, files, keys)
        except OSError as exc:
            if not _is_missing(exc):
                raise  # else a segment merged or compacted away while we listed: list again
    raise ExpmanError(f"the metrics under {store.display(root_path)} kept changing while "
                      f"they were read; try again")


def _dataset_files(store, root_path, experiments):
    """[(experiment, run, file)] of every metric file of the runs, runs in name order."""
    out = []
    for exp in experiments:
        exp_path = store.join(root_path, exp)
        runs = sorted(e.name for e in store.listdir(exp_path)
                      if e.is_dir and not e.name.startswith("."))

        def files_of(run, exp_path=exp_path, exp=exp):
            path = store.join(exp_path, run)
            if store.stat(store.join(path, RUN_YAML)) is None:
                return []
            return [(exp, run, f) for _s, _e, f in _metric_files(store, path)]

        if store.is_local or len(runs) < 8:
            found = map(files_of, runs)
        else:  # a listing and a stat per run, ~10-50 ms each on an object store
            import concurrent.futures
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                found = list(pool.map(files_of, runs))
        for items in found:
            out.extend(items)
    return out


_ADDED_COLUMNS = ("experiment", "run")


def _scan_metric_files(store, files, keys):
    """One table from [(experiment, run, path)], scanned by pyarrow.dataset."""
    if any(f.endswith(".arrow") for _e, _r, f in files):  # expman-rs segments: not Parquet
        return _read_metric_files_one_by_one(store, files, keys)
    if not files:
        return _empty_scan(keys)
    fs = store.fs if store.fs is not None else pafs.LocalFileSystem()
    good, schema = _readable_metric_files(store, fs, files)
    if not good:
        return _empty_scan(keys)
    metric_names = [n for n in schema.names if n not in RESERVED_COLUMNS]
    if keys is not None:
        metric_names = [k for k in keys if k in schema.names and k not in RESERVED_COLUMNS]
    columns = [c for c in RESERVED_COLUMNS if c in schema.names] + metric_names
    table, index = _scan_in_file_order(store, fs, good, schema, columns)
    exp_col = pa.array([e for e, _r, _f in good], pa.string()).take(index)
    run_col = pa.array([r for _e, r, _f in good], pa.string()).take(index)
    names = [f"metrics.{c}" if c in _ADDED_COLUMNS else c for c in columns]
    table = _strip_rows_key(table.select(columns).rename_columns(names))
    return table.add_column(0, "run", run_col).add_column(0, "experiment", exp_col)


def _readable_metric_files(store, fs, files):
    """(the files whose footers read, their unified schema): every footer is inspected, since
    schemas differ per run; a file cut by a crash is skipped with a warning."""
    paths = [f for _e, _r, f in files]
    factory = pads.FileSystemDatasetFactory(fs, paths, pads.ParquetFileFormat())
    try:
        return files, factory.inspect(fragments=None)
    except (pa.ArrowInvalid, OSError, TypeError) as exc:
        # TypeError: a pyarrow whose inspect() takes no arguments (it reads one footer);
        # ArrowInvalid/OSError: a file cut by a crash. Both: read the footers one by one.
        if _is_missing(exc):
            raise
    good, schemas = [], []
    for item in files:  # find the bad files one by one; keep the rest
        try:
            schemas.append(store.parquet_file(item[2]).schema_arrow)
            good.append(item)
        except Exception as err:  # noqa: BLE001 - a half-written file from a crash
            if _is_missing(err):
                raise
            _warn(f"expman: skipped unreadable metrics file "
                  f"{store.display(item[2])}: {err}")
    return good, pa.unify_schemas(schemas) if schemas else None


def _empty_scan(keys):
    """What _scan_metric_files returns when no file could be read."""
    empty = _empty_metrics_table()
    if keys is not None:
        empty = empty.select(list(RESERVED_COLUMNS))
    return empty.add_column(0, "run", pa.array([], pa.string())).add_column(
        0, "experiment", pa.array([], pa.string()))


def _scan_in_file_order(store, fs, good, schema, columns):
    """(the columns of every file in one table, rows in file order; each row's file index)."""
    fmt = pads.ParquetFileFormat(default_fragment_scan_options=pads.ParquetFragmentScanOptions(
        pre_buffer=not store.is_local))  # coalesced reads pay off on object stores only
    dataset = pads.FileSystemDataset.from_paths([f for _e, _r, f in good], schema=schema,
                                                format=fmt, filesystem=fs)
    # The fragment index (an int32 per row) names each row's file: far cheaper than
    # __filename (a string per row), and it maps to (experiment, run) with one take().
    table = dataset.to_table(columns=columns + ["__fragment_index", "__batch_index"],
                             use_threads=True, fragment_readahead=16)
    index = table.column("__fragment_index").combine_chunks()
    if len(index) > 1 and not pc.all(pc.greater_equal(index[1:], index[:-1])).as_py():
        # files came back out of order: restore file order (a stable sort keeps rows in order)
        table = table.sort_by([("__fragment_index", "ascending"), ("__batch_index", "ascending")])
        index = table.column("__fragment_index").combine_chunks()
    return table, index


def _read_metric_files_one_by_one(store, files, keys):
    """_scan_metric_files without pyarrow.dataset, for files it cannot scan (the Arrow IPC
    stream segments of a live expman-rs run)."""
    tables = []
    for exp, run, fpath in files:
        try:
            table = _unify([store.parquet_file(fpath).read()], keys)
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 - a half-written file from a crash
            _warn(f"expman: skipped unreadable metrics file {store.display(fpath)}: {err}")
            continue
        table = table.rename_columns([f"metrics.{c}" if c in _ADDED_COLUMNS else c
                                      for c in table.column_names])
        n = table.num_rows
        tables.append(table.add_column(0, "run", pa.array([run] * n, pa.string())).add_column(
            0, "experiment", pa.array([exp] * n, pa.string())))
    if not tables:
        return _scan_metric_files(store, [], keys)
    return pa.concat_tables(tables, promote_options="default")


# -- 9.6 load_runs and run filters: "lr>0.01 AND (tag:base OR NOT status=failed)" ------------------
#
# One recursive-descent parser (no eval) reads two dialects:
#   tags   (--tags, tags=)   a bare word is a tag, matched exactly; "a b" is an error.
#   where  (--where, where=, ?where=)   a bare word matches anywhere (name, status, tags, host,
#          description, project, group, param=value), case-insensitively; `key OP value` terms;
#          terms side by side must all hold (as in the page's filter box).
# Operators: NOT ! (tightest), AND && (or nothing, in `where`), OR || ; parentheses; any case.
# Terms:  key=v key==v exact (numbers as numbers: lr=0.01 matches 0.010; =null: missing)
#         key!=v (NOT key=v) · key~text substring, any case · key~/re/ key~/re/i regex search
#         key!~v · key>n key>=n key<n key<=n (numbers only; a run without the key never holds)
# Keys:   name status tag project group host description rank step rows duration (the run's
#         own fields, first); p:KEY (param), m:KEY (last value of a metric or scalar),
#         min:KEY max:KEY (of a metric over the run); a bare KEY is the param when the run has
#         one by that name, else the metric. tag:NAME alone is NAME among the tags.

_FILTER_OPS = ("==", ">=", "<=", "!=", "!~", ">", "<", "=", "~")
_FILTER_WORD = re.compile(r'(?:[^\s()"<>=!~&|]|&(?!&)|\|(?!\|))+')
_FILTER_VALUE = re.compile(r'(?:[^\s()"&|]|&(?!&)|\|(?!\|))+')
_FILTER_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FILTER_REGEX = re.compile(r'/((?:[^/\\]|\\.)*)/(i?)')
_TAG_WORD = re.compile(r'[^\s()"]+')
_FILTER_KEYWORDS = {"AND": "AND", "OR": "OR", "NOT": "NOT", "&&": "AND", "||": "OR", "!": "NOT"}
# run fields a key names before any param or metric (p:KEY reaches a param named like one)
_FILTER_FIELDS = {
    "name": lambda r: [r.get("name")], "status": lambda r: [r.get("status")],
    "tag": lambda r: r.get("tags") or [], "tags": lambda r: r.get("tags") or [],
    "project": lambda r: [r.get("project")], "group": lambda r: [r.get("group")],
    "host": lambda r: [r.get("hostname")], "hostname": lambda r: [r.get("hostname")],
    "description": lambda r: [r.get("description")], "rank": lambda r: [r.get("rank")],
    "step": lambda r: [r.get("last_step")], "rows": lambda r: [r.get("rows")],
    "duration": lambda r: [r.get("duration_secs")],
}
# KEY prefixes: which RUN_ROW mapping a prefixed key reads
_FILTER_PREFIXES = {"p": "params", "param": "params", "m": "summary", "metric": "summary",
                    "last": "summary", "min": "summary_min", "max": "summary_max"}


class _ExpressionError(InvalidInputError):
    """A malformed filter or tag expression; ``position`` (from 0) is where reading stopped."""

    def __init__(self, message, expression, position):
        super().__init__(message)
        self.expression, self.position = expression, position

    def caret(self):
        """The expression and a caret under the position, two lines for a terminal."""
        line = self.expression.replace("\t", " ").replace("\n", " ")
        return f"  {line}\n  {' ' * self.position}^"


def _lex_filter(text, what, where):
    """[(kind, value, position)]: kinds (, ), AND, OR, NOT, word, quoted, term, end."""
    tokens, pos, end = [], 0, len(text)

    def fail(message, at):
        raise _ExpressionError(f"{what} {text!r}: {message} at position {at}", text, at)

    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            break
        at, char = pos, text[pos]
        if char in "()":
            tokens.append((char, None, at))
            pos += 1
            continue
        if text.startswith(("&&", "||"), pos):
            tokens.append((_FILTER_KEYWORDS[text[pos:pos + 2]], None, at))
            pos += 2
            continue
        after = text[pos + 1:pos + 2]
        if char == "!" and (where or after.isspace() or not after) and after not in ("=", "~"):
            tokens.append(("NOT", None, at))  # in tags, !x is a tag as it always was
            pos += 1
            continue
        kind, word, pos = _lex_word(text, pos, where, fail)
        if kind == "word" and word.upper() in _FILTER_KEYWORDS:
            tokens.append((word.upper(), None, at))
            continue
        op = next((o for o in _FILTER_OPS if text.startswith(o, pos)), None) if where else None
        if op is None:
            tokens.append((kind, word, at))
            continue
        pos += len(op)
        tokens.append(("term", (word, op) + _lex_value(text, pos, op, fail), at))
        pos = tokens[-1][1][-1]
    tokens.append(("end", None, len(text)))
    return tokens


def _lex_word(text, pos, where, fail):
    """(word or quoted, text, end) of the word at pos."""
    if text[pos] == '"':
        match = _FILTER_QUOTED.match(text, pos)
        if not match:
            fail("unterminated quote", pos)
        return "quoted", re.sub(r"\\(.)", r"\1", match.group(1)), match.end()
    match = (_FILTER_WORD if where else _TAG_WORD).match(text, pos)
    if not match:
        fail(f"unexpected {text[pos]!r}", pos)
    return "word", match.group(0), match.end()


def _lex_value(text, pos, op, fail):
    """(value, regex or None, value position, end) of the value after a term's operator."""
    char = text[pos:pos + 1]
    if char == '"':
        match = _FILTER_QUOTED.match(text, pos)
        if not match:
            fail("unterminated quote", pos)
        return re.sub(r"\\(.)", r"\1", match.group(1)), None, pos, match.end()
    if char == "/" and op in ("~", "!~"):
        match = _FILTER_REGEX.match(text, pos)
        if not match:
            fail("unterminated /regex/", pos)
        try:
            regex = re.compile(match.group(1), re.IGNORECASE if match.group(2) else 0)
        except re.error as exc:
            fail(f"bad regex ({exc.msg})", pos + 1 + (exc.pos or 0))
        return match.group(1), regex, pos, match.end()
    match = _FILTER_VALUE.match(text, pos)
    if not match or match.group(0)[0] in "<>=!~":
        fail(f"expected a value after {op!r}", pos)
    return match.group(0), None, pos, match.end()


def _parse_filter(text, where=True):
    """A predicate from a filter (``where``: on a RUN_ROW) or tag expression (on a tag set).

    Raises _ExpressionError (an InvalidInputError) naming the position of the first thing it
    cannot read; nesting deeper than 100 levels is refused rather than a RecursionError.
    """
    what = "filter" if where else "tag expression"
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be a string, got {type(text).__name__}")
    tokens, index = _lex_filter(text, what, where), [0]
    starts = {"(", "NOT", "word", "quoted", "term"}

    def fail(expected):
        kind, _value, at = tokens[index[0]]
        found = "the end" if kind == "end" else repr(text[at:at + 20].split()[0])
        raise _ExpressionError(f"{what} {text!r}: expected {expected} at position {at}, "
                               f"found {found}", text, at)

    def peek():
        return tokens[index[0]][0]

    def parse_or(depth):
        node = parse_and(depth)
        while peek() == "OR":
            index[0] += 1
            node = _filter_or(node, parse_and(depth))
        return node

    def parse_and(depth):
        node = parse_not(depth)
        while peek() == "AND" or (where and peek() in starts):
            index[0] += peek() == "AND"
            node = _filter_and(node, parse_not(depth))
        return node

    def parse_not(depth):
        if depth > 100:
            fail("a shallower expression (more than 100 levels of nesting)")
        kind, value, at = tokens[index[0]]
        if kind == "NOT":
            index[0] += 1
            inner = parse_not(depth + 1)
            return lambda x: not inner(x)
        if kind == "(":
            index[0] += 1
            node = parse_or(depth + 1)
            if peek() != ")":
                fail("')'")
            index[0] += 1
            return node
        if kind in ("word", "quoted", "term"):
            index[0] += 1
            if not where:
                return lambda tags: value in tags
            return _filter_term(value, text, at) if kind == "term" else _filter_word(value, kind)
        fail("a term, NOT or '('" if where else "a tag, NOT or '('")

    if peek() == "end":
        if where:
            return None
        raise _ExpressionError(f"{what} {text!r} is empty", text, 0)
    tree = parse_or(0)
    if peek() != "end":
        fail("AND, OR or the end" if not where else "a term, AND, OR or the end")
    return tree


def _filter_and(a, b):
    return lambda x: a(x) and b(x)


def _filter_or(a, b):
    return lambda x: a(x) or b(x)


def _parse_tag_expr(text):
    """A predicate on a set of tags from an expression such as ``a AND (b OR NOT c)``.

    Operators AND, OR, NOT (any case; NOT binds tightest, then AND, then OR; also && || !)
    and parentheses; anything else is a tag, matched exactly. A tag with spaces or named like
    an operator is written in double quotes: ``"and" OR "my tag"``. The tags dialect of
    _parse_filter: no eval, and an error names the position of what it cannot read.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"tags must be a string expression or a list of tags, "
                                f"got {type(text).__name__}")
    return _parse_filter(text, where=False)


def _filter_text(value):
    """A value as the filter's text comparisons see it (true/false/null as YAML writes them)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True, default=str)


def _filter_number(value):
    """A param or metric value as a float for comparisons, or None (bools and text are not
    numbers: "lr>0.01" on a string lr never holds, rather than comparing text)."""
    return float(value) if type(value) in (int, float) else None


def _filter_word(word, kind):
    """A bare word: found anywhere in the run's text, any case; tag:NAME is a tag exactly."""
    if kind == "word" and word.lower().startswith("tag:") and len(word) > 4:
        tag = word[4:]
        return lambda r: tag in (r.get("tags") or ())
    needle = word.lower()
    return lambda r: needle in _filter_haystack(r)


def _filter_haystack(r):
    parts = [r.get("name"), r.get("status"), r.get("description"), r.get("hostname"),
             r.get("project"), r.get("group"), *(r.get("tags") or ())]
    parts += [f"{k}={_filter_text(v)}" for k, v in (r.get("params") or {}).items()]
    return "\n".join(str(p) for p in parts if p).lower()


def _filter_getter(key):
    """RUN_ROW -> [values] for a term's key (see the table at the top of 9.6)."""
    if key.lower() in _FILTER_FIELDS:
        return _FILTER_FIELDS[key.lower()]
    prefix, sep, rest = key.partition(":")
    if sep and rest and prefix.lower() in _FILTER_PREFIXES:
        field = _FILTER_PREFIXES[prefix.lower()]
        return lambda r: [r[field][rest]] if rest in (r.get(field) or ()) else []

    def bare(r):  # the param first, then the metric of that name (issue 14 defect 11)
        for field in ("params", "summary"):
            values = r.get(field) or ()
            if key in values:
                return [values[key]]
        return []
    return bare


def _filter_term(term, text, at):
    """The predicate of ``key OP value`` (see the table at the top of 9.6)."""
    key, op, value, regex, value_at, _end = term
    get = _filter_getter(key)
    number = None
    try:
        number = float(value)
    except ValueError:
        pass
    if op in ("<", "<=", ">", ">="):
        if number is None or not math.isfinite(number):
            raise _ExpressionError(f"filter {text!r}: {op} needs a number, not {value!r} at "
                                   f"position {value_at}", text, value_at)
        compare = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[op]

        def ordered(r):
            for v in get(r):
                n = _filter_number(v)
                if n is not None and compare(n, number):
                    return True
            return False
        return ordered
    if op in ("~", "!~"):
        needle = value.lower()

        def hit(v):
            if v is None:
                return False
            return needle in _filter_text(v).lower() if regex is None else \
                regex.search(_filter_text(v)) is not None
        if op == "~":
            return lambda r: any(hit(v) for v in get(r))
        return lambda r: not any(hit(v) for v in get(r))
    null = value.lower() in ("null", "none")

    def equal(r):
        values = get(r)
        if null and (not values or None in values):
            return True
        for v in values:
            n = _filter_number(v)
            if n is not None and number is not None:
                if n == number or (n != n and number != number):
                    return True
            elif isinstance(v, bool) and _filter_text(v) == value.lower():
                return True   # YAML's True, true and TRUE are one value
            elif v is not None and _filter_text(v) == value:
                return True
        return False
    return equal if op in ("=", "==") else lambda r: not equal(r)


def _run_filter(where):
    """A predicate on RUN_ROWs from a ``where`` expression, or None for no filter."""
    if where is None:
        return None
    return _parse_filter(where, where=True)


def _tag_filter(tags):
    """A predicate on a run's tag set from an expression string or a list (all required)."""
    if tags is None:
        return None
    if isinstance(tags, str):
        return _parse_tag_expr(tags)
    wanted = set(_normalize_tags(tags))
    return lambda have: wanted <= have


_RUN_TABLE_COLUMNS = ("experiment", "run", "project", "group", "rank", "status", "started_at",
                      "duration_secs", "rows", "tags")
# their types, so a table with no rows (or a column of nulls) is still typed right
_RUN_TABLE_TYPES = {"rank": "int64", "duration_secs": "float64", "rows": "int64"}


def load_runs(root=None, experiment=None, status=None, tags=None, project=None,
              to_pandas=False, where=None):
    """One row per run as a ``pyarrow.Table`` (or a pandas DataFrame with ``to_pandas=True``):
    experiment, run, project, group, rank, status, started_at, duration_secs, rows, tags,
    then ``params.<key>`` (flattened config) and the last value of every metric and scalar.

    >>> expman.load_runs("experiments", status="finished", to_pandas=True)
    >>> expman.load_runs("experiments", "resnet", tags="baseline AND (cifar OR NOT tiny)")
    >>> expman.load_runs(project="vision", tags=["ablation"])         # a list: all of them
    >>> expman.load_runs("experiments", "resnet", where="lr>0.01 AND min:val/loss<0.3")

    ``experiment`` is a name or a list of names (default: all); ``status`` a status or a
    list; ``where`` a filter expression (section 9.6: params, metric last/min/max, status,
    tags, name ...). A metric named like one of the fixed columns is stored as
    ``metrics.<key>``.
    """
    records = [_run_record(exp, row) for exp, row in
               _matching_runs(root, experiment, status, tags, project, where)]
    table = _runs_table(records)
    return table.to_pandas() if to_pandas else table


def _matching_runs(root, experiment, status, tags, project, where):
    """(experiment, RUN_ROW) of every run load_runs keeps, experiment by experiment."""
    _resolve_root(root)
    checks = [_tag_filter(tags), _run_filter(where)]
    if project is not None and not isinstance(project, str):
        raise InvalidInputError(f"project must be a string, got {type(project).__name__}")
    if experiment is None:
        names = [e["name"] for e in list_experiments(root, project=project)]
    else:
        names = [experiment] if isinstance(experiment, str) else list(experiment)
    wanted = None if status is None else {_normalize_status(s) for s in (
        [status] if isinstance(status, str) else status)}
    for exp in names:
        for row in list_runs(root, exp):
            if (wanted and row["status"] not in wanted) or \
                    (project is not None and row["project"] != project):
                continue
            if checks[0] is not None and not checks[0](set(row["tags"])):
                continue
            if checks[1] is None or checks[1](row):
                yield exp, row


def _run_record(exp, row):
    """A RUN_ROW as one row of load_runs' table."""
    record = {"experiment": exp, "run": row["name"], "project": row["project"],
              "group": row["group"], "rank": row["rank"], "status": row["status"],
              "started_at": row["started_at"], "duration_secs": row["duration_secs"],
              "rows": row["rows"], "tags": ",".join(row["tags"])}
    record.update({f"params.{k}": v for k, v in row["params"].items()})
    record.update({(f"metrics.{k}" if k in _RUN_TABLE_COLUMNS or
                    k.startswith(("params.", "metrics.")) else k): v
                   for k, v in row["summary"].items()})
    return record


def _runs_table(records):
    """load_runs' records as a table: fixed columns typed, others as Arrow infers (text when
    the runs disagree)."""
    columns = list(dict.fromkeys([*_RUN_TABLE_COLUMNS, *(k for r in records for k in r)]))
    data = {}
    for col in columns:
        values = [r.get(col) for r in records]
        try:
            kind = _RUN_TABLE_TYPES.get(col, "string") if col in _RUN_TABLE_COLUMNS else None
            data[col] = pa.array(values, type=kind and pa.type_for_alias(kind))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            data[col] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(data)


# -- 9.7 reaping: record 'crashed' in the run.yaml of runs whose process is gone -------------------

def _reap_run(store, path, stale=None, now=None, dry_run=False, compact=False):
    """Mark one run crashed if its heartbeat is stale and its process gone; returns a dict
    ``{"path", "action", "reason", ...}`` (action: reaped, would-reap, alive, skipped).

    A run on this host is reaped only once its pid is dead; on another host the pid means
    nothing here, so the heartbeat alone decides (older than ``stale`` seconds, by default
    STALE_HEARTBEATS heartbeat intervals + 5 s, what readers already take for a crash).
    run.yaml is re-checked right before the atomic write: if it changed since it was read,
    the run is alive and is left alone.
    """
    now = time.time() if now is None else now
    meta_path = store.join(path, RUN_YAML)
    entry = {"path": store.display(path), "name": _split_parent(store, path)[1]}
    stamp = store.stat(meta_path)
    try:
        meta = _read_yaml(store, meta_path)
    except ExpmanError as exc:
        return {**entry, "action": "skipped", "reason": f"unreadable run.yaml ({exc})"}
    status = meta.get("status")
    if not isinstance(status, str) or status.lower() != "running":
        return {**entry, "action": "skipped", "reason": f"status is {status!r}"}
    beat = _parse_iso(meta.get("heartbeat_at")) or _parse_iso(meta.get("started_at"))
    age = None if beat is None else round(now - beat, 1)
    entry.update(hostname=_text(meta.get("hostname")), pid=meta.get("pid"), heartbeat_age=age)
    alive, why = _reap_verdict(meta, age, stale)
    if alive:
        return {**entry, "action": "alive", "reason": why}
    if dry_run:
        return {**entry, "action": "would-reap", "reason": why}
    if store.stat(meta_path) != stamp:
        return {**entry, "action": "alive", "reason": "run.yaml changed while reaping"}
    store.write_atomic(meta_path, _yaml_dump(_crashed_meta(meta, beat, now)))
    entry = {**entry, "action": "reaped", "reason": why}
    if compact:
        entry["compacted_segments"] = _compact_leftovers(store, path)
    return entry


def _reap_verdict(meta, age, stale):
    """(alive, reason) for a run whose run.yaml says running and whose heartbeat is `age`
    seconds old (None: unknown): alive while the heartbeat is fresher than `stale` seconds
    (default: STALE_HEARTBEATS of its intervals + 5 s) or its pid runs on this host."""
    interval = meta.get("heartbeat_secs")
    if type(interval) not in (int, float) or interval <= 0:
        interval = DEFAULT_HEARTBEAT_SECS
    limit = STALE_HEARTBEATS * interval + 5 if stale is None else stale
    if age is not None and age < limit:
        return True, f"heartbeat {age:.0f}s old"
    if meta.get("hostname") != _HOSTNAME:   # a pid on another host means nothing here
        return False, (f"heartbeat {age if age is not None else '?'}s old, from host "
                       f"{meta.get('hostname')}")
    if _pid_alive(meta.get("pid")):
        return True, f"pid {meta.get('pid')} is running"
    return False, f"pid {meta.get('pid')} is gone"


def _crashed_meta(meta, beat, now):
    """meta (a running run's run.yaml), marked crashed at its last heartbeat by this process."""
    started = _parse_iso(meta.get("started_at"))
    # in the file's case: expman-rs cannot parse its run.yaml with a lower-case status
    meta["status"] = "CRASHED" if meta["status"].isupper() else "crashed"
    meta["finished_at"] = meta.get("heartbeat_at") or _iso(now)
    if started is not None and beat is not None:
        meta["duration_secs"] = round(beat - started, 3)
    meta["reaped_at"] = _iso(now)
    meta["reaped_by"] = f"{_HOSTNAME} pid {os.getpid()}"
    return meta


def _compact_leftovers(store, path):
    """Compact a dead run's leftover segments (metrics and histograms) as close() would have,
    so it reads like a closed run; safe whatever instant the run died at (see _SegmentLog).
    Returns how many segments went into a final file (0: nothing to do)."""
    done = _SegmentLog.metrics(store, path).compact()
    return done + _SegmentLog.histograms(store, path).compact()


# -- 9.8 streaming reads: export walks a run's rows a batch at a time ------------------------------

class _MetricStream:
    """The rows load_metrics(run_dir) gives, as RecordBatches of at most ``batch_rows`` rows,
    without holding them all: what export streams, in memory bounded by a batch (plus one
    Parquet row group) whatever the run's size.

    Every batch has every column of ``schema``: step, timestamp, then each key in order of
    first appearance (null where a file lacks it), so writers with one schema (CSV, Parquet)
    can take them. ``total`` is the row count from the files' footers. A segment merged or
    compacted away mid-read makes it list again and resume at the next row (the retry of
    load_metrics); an unreadable file is skipped with the same warning.
    """

    def __init__(self, run_dir, batch_rows=65536):
        self.store, self.path = _resolve_run(run_dir)
        self.batch_rows = batch_rows
        for _attempt in range(_READ_ATTEMPTS):
            self.files = _metric_files(self.store, self.path)
            try:
                keys, self.total, self.unreadable = self._count(self.files)
                break
            except FileNotFoundError:   # merged or compacted away since the listing: again
                continue
        else:
            raise ExpmanError(f"the metrics of {self.store.display(self.path)} kept changing "
                              f"while they were counted; try again")
        self.keys = list(keys)
        self.schema = pa.schema([("step", pa.int64()), ("timestamp", pa.timestamp("us", tz="UTC"))]
                                + [(k, pa.float64()) for k in self.keys])

    def __iter__(self):
        next_row, files = 0, self.files   # next_row: the run's row index still to yield
        for _attempt in range(20):
            try:
                for start, end, fpath in files:
                    if end is not None and end <= next_row:
                        continue
                    for batch in self._read(fpath, max(0, next_row - start)):
                        next_row = max(next_row, start) + batch.num_rows
                        yield batch
                    if end is not None:
                        next_row = max(next_row, end)
                return
            except FileNotFoundError:
                files = _metric_files(self.store, self.path)   # merged or compacted: list again
        raise ExpmanError(f"the metrics of {self.store.display(self.path)} kept changing while "
                          f"they were read; try again")

    def _count(self, files):
        """({key: None} in order of first appearance, row count, [(file, error)]) from the
        files' footers. FileNotFoundError when one went away since it was listed: counting
        it as 0 rows would make a live run that compacts now look empty."""
        keys, total, unreadable = {}, 0, []
        for start, end, fpath in files:
            try:
                pf = self.store.parquet_file(fpath)
            except FileNotFoundError:
                raise
            except Exception as exc:  # noqa: BLE001 - iteration warns when it gets there
                unreadable.append((fpath, exc))
                continue
            for name in pf.schema_arrow.names:
                if name not in RESERVED_COLUMNS:
                    keys.setdefault(name, None)
            total += pf.metadata.num_rows if end is None else end - start
        return keys, total, unreadable

    def warn_unreadable(self):
        """The warning iterating would give, for each file whose footer is unreadable."""
        for fpath, exc in self.unreadable:
            _warn(f"expman: skipped unreadable metrics file {self.store.display(fpath)}: {exc}")

    def _read(self, fpath, skip):
        # FileNotFoundError: the caller lists again. Local files are read, not memory-mapped
        # as _LocalStore does: mapped pages count in RSS, which then grows with the file
        try:
            pf = (pq.ParquetFile(fpath, pre_buffer=False) if self.store.is_local
                  else self.store.parquet_file(fpath))
            meta, groups, seen = pf.metadata, [], 0
            for i in range(meta.num_row_groups):
                n = meta.row_group(i).num_rows
                if seen + n > skip:
                    if not groups:
                        skip -= seen   # rows to drop from the first group read
                    groups.append(i)
                seen += n
            if not groups:
                return
            for group in groups:   # one group at a time: pre_buffer would fetch them all
                for batch in pf.iter_batches(batch_size=self.batch_rows, row_groups=[group]):
                    if skip:
                        dropped = min(skip, batch.num_rows)
                        batch, skip = batch.slice(dropped), skip - dropped
                    if batch.num_rows:
                        yield self._conform(batch)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - a half-written file from a crash
            _warn(f"expman: skipped unreadable metrics file {self.store.display(fpath)}: {exc}")

    def _conform(self, batch):
        columns = []
        for field in self.schema:
            i = batch.schema.get_field_index(field.name)
            if i < 0:
                columns.append(pa.nulls(batch.num_rows, field.type))
            else:
                column = batch.column(i)
                columns.append(column if column.type == field.type else column.cast(field.type))
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


# 10 Integrations ############################################################################
#
# Adapters for what users already run, each importing its framework lazily, only when used:
# TensorBoard event files in and out, a SummaryWriter-compatible shim, and callbacks for
# PyTorch Lightning, Hugging Face transformers and Keras.
#
#   expman import TB_LOGDIR     one run per directory holding events.out.tfevents.* files:
#     logdir/                     -> experiment <basename of logdir> (or -e)
#       events.out.tfevents.*     -> run <basename of logdir>
#       lr_0.1/events...          -> run lr_0.1        (nested dirs: a/b -> run a_b)
#   scalars (TB1 simple_value, TB2 "scalars" tensors) -> metrics.parquet, tags at one step in
#   one row, event wall times as timestamps; hparams -> config.yaml; text -> run.log.
#
# The callbacks and the shim log into the run you pass (run=...), else into the run of
# expman.init() when one is open, else into a run of their own, which they close.

_TB_INSTALL = ("pip install tensorboard (or tensorboardX)" if not getattr(sys, "frozen", False)
               else "this binary leaves it out: run expman.py with python3 where "
                    "`pip install tensorboard` is done")
_TB_TEXT_CONFIG = "expman/config"   # the exported config, JSON: read back exactly on import
_TB_MAX_RECORD = 1 << 30


def _tb_protos():
    """(event_pb2, summary_pb2, hparams plugin_data_pb2) from tensorboard or tensorboardX."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import plugin_data_pb2
        return event_pb2, summary_pb2, plugin_data_pb2
    except ImportError:
        pass
    try:
        from tensorboardX.proto import event_pb2, plugin_hparams_pb2, summary_pb2
        return event_pb2, summary_pb2, plugin_hparams_pb2
    except ImportError:
        raise ExpmanError(f"reading and writing TensorBoard event files needs the tensorboard "
                          f"package: {_TB_INSTALL}") from None


def _tb_event_dirs(logdir):
    """{directory: [event files, sorted]} under logdir (the directory itself included)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(logdir):
        dirnames.sort()
        files = sorted(f for f in filenames if "tfevents" in f)
        if files:
            found[dirpath] = [os.path.join(dirpath, f) for f in files]
    return found


def _tb_records(path):
    """The records of one TFRecord file; a truncated last record (a live writer) ends it."""
    import struct
    with open(path, "rb") as fh:
        while True:
            header = fh.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            if length > _TB_MAX_RECORD:
                _warn(f"expman: {path}: corrupt record length {length}; rest of file skipped")
                return
            data = fh.read(length)
            if len(data) < length or len(fh.read(4)) < 4:
                return
            yield data


_TB_DTYPES = {1: "f", 2: "d", 3: "i", 4: "B", 5: "h", 6: "b", 9: "q", 10: "?", 19: "e"}


def _tb_tensor_scalar(tensor):
    """The float in a scalar TensorProto (TB2 scalars), or None when it is not one."""
    import struct
    dtype = tensor.dtype
    if dtype == 2 or dtype == 1:   # float64 / float32 in double_val / float_val: the usual
        values = tensor.double_val if dtype == 2 else tensor.float_val
        if len(values) == 1 and not tensor.tensor_shape.dim:
            return float(values[0])
    if any(dim.size != 1 for dim in tensor.tensor_shape.dim):
        return None
    code = _TB_DTYPES.get(dtype)
    if code is None:
        return None
    if tensor.tensor_content:
        return float(struct.unpack_from("<" + code, tensor.tensor_content)[0])
    if tensor.half_val:
        return float(struct.unpack("<e", struct.pack("<H", tensor.half_val[0]))[0])
    for field in ("float_val", "double_val", "int_val", "int64_val", "bool_val"):
        values = getattr(tensor, field)
        if values:
            return float(values[0])
    return None


def _tb_hparam_value(value):
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2 ** 53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


class _TBRows:
    """Scalar points -> metric rows, streamed to ``emit(step, wall, values)``.

    The tags of one step go in one row, rows in the order they were started; a tag seen again
    at a step its row already has (a restarted job) starts a new row. Rows stay open while
    fewer than ``window`` newer rows were started, then go out, so memory is bounded: only a
    file that comes back to a step after ``window`` other rows gets a second row for it.
    ``exact`` (event files expman exported): one event is one row, so two rows logged at one
    step come back as two rows.
    """

    def __init__(self, emit, exact=False, window=4096):
        self.emit, self.exact, self.window = emit, exact, window
        self.open = collections.OrderedDict()   # row id -> (step, wall, {tag: value})
        self.latest = {}                        # step -> id of its newest open row
        self.next_id = 0

    def event(self, wall, step, points):
        """The (tag, value) points of one event."""
        if self.exact:
            self.emit(step, wall, dict(points))
            return
        for tag, value in points:
            rid = self.latest.get(step)
            if rid is None or tag in self.open[rid][2]:
                rid = self.latest[step] = self.next_id
                self.next_id += 1
                self.open[rid] = (step, wall, {})
                if len(self.open) > self.window:
                    self._emit_oldest()
            self.open[rid][2][tag] = value

    def _emit_oldest(self):
        rid, (step, wall, values) = self.open.popitem(last=False)
        if self.latest.get(step) == rid:
            del self.latest[step]
        self.emit(step, wall, values)

    def finish(self):
        while self.open:
            self._emit_oldest()


class _TBRun:
    """What one directory of event files holds, read a record at a time: scalar points go to
    ``on_points(wall, step, [(tag, value)])`` as each event is read, never into a list;
    hparams, the exported config, texts and counts are kept (they are small)."""

    def __init__(self, directory, on_points=None, on_text=None):
        self.directory = directory
        self.on_points = on_points or (lambda wall, step, points: None)
        self.on_text = on_text or (lambda wall, step, tag, text: None)
        self.hparams = {}
        self.config = None    # the exact config of a run expman exported
        self.first = self.last = None
        self.events = self.points = 0
        self.tags = {}        # scalar tags in order of first appearance
        self.texts = 0
        self.ignored = collections.Counter()   # images, histograms, audio...: not imported
        self.plugins = {}

    def read(self, files, event_pb2, hparams_pb2, progress=None):
        from_string = event_pb2.Event.FromString
        for path in files:
            try:
                for record in _tb_records(path):
                    if progress is not None:
                        progress.update(len(record) + 16)   # 16: TFRecord framing
                    try:
                        event = from_string(record)
                    except Exception:  # noqa: BLE001 - protobuf's DecodeError: a bad record
                        _warn(f"expman: {path}: an unreadable event record was skipped")
                        continue
                    self.events += 1
                    if event.HasField("summary"):
                        self._summary(event, hparams_pb2)
            except OSError as exc:
                raise ExpmanError(f"cannot read {path}: {exc.strerror or exc}") from None

    def _summary(self, event, hparams_pb2):
        wall, step = event.wall_time, event.step
        if self.first is None or wall < self.first:
            self.first = wall
        if self.last is None or wall > self.last:
            self.last = wall
        points, plugins = [], self.plugins
        for value in event.summary.value:
            tag = value.tag
            plugin = plugins.get(tag, _MISSING)
            if plugin == "scalars" and value.WhichOneof("value") == "tensor":   # fast path
                number = _tb_tensor_scalar(value.tensor)
            else:
                named = value.HasField("metadata") and value.metadata.plugin_data.plugin_name
                if named or plugin is _MISSING:
                    plugin = plugins[tag] = named or None
                number = self._value(value, tag, plugin, wall, step, hparams_pb2)
            if number is not None:
                points.append((tag, number))
                self.tags.setdefault(tag, None)
        if points:
            self.points += len(points)
            self.on_points(wall, step, points)

    def _value(self, value, tag, plugin, wall, step, hparams_pb2):
        """The scalar a summary value holds, or None once its hparams/text are taken."""
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            return float(value.simple_value)
        if plugin == "hparams":
            self._hparams(value, hparams_pb2)
        elif kind == "tensor" and plugin == "scalars":
            return _tb_tensor_scalar(value.tensor)
        elif kind == "tensor" and plugin == "text":
            text = "\n".join(s.decode("utf-8", "replace") for s in value.tensor.string_val)
            if tag == _TB_TEXT_CONFIG:
                with contextlib.suppress(ValueError):
                    self.config = json.loads(text)
            elif not (tag == "config" and self.config is not None):  # expman/config's twin
                self.texts += 1
                self.on_text(wall, step, tag, text)
        else:
            self.ignored[plugin or kind or "unknown"] += 1
        return None

    def _hparams(self, value, hparams_pb2):
        try:
            data = hparams_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
        except Exception:  # noqa: BLE001 - DecodeError: not hparams we can read
            return
        if data.WhichOneof("data") == "session_start_info":
            for name, hp in data.session_start_info.hparams.items():
                self.hparams[name] = _tb_hparam_value(hp)


class _SetClock:
    """Experiment(clock=...) for imports: each row is stamped with the time we set."""
    now = 0.0

    def __call__(self):
        return self.now


def _exact_micros(wall):
    """A time whose microseconds survive the writer's seconds*1e6 truncation: (N + 0.5)/1e6
    for the microsecond N nearest wall."""
    return (round(wall * 1e6) + 0.5) / 1e6


def _backdate_run(exp, started, finished, **extra):
    """Make a closed run's run.yaml tell the times its rows tell (imports, demo data)."""
    store = exp._store
    path = store.join(exp._path, RUN_YAML)
    meta = _read_yaml(store, path)
    meta.update(started_at=_iso(started), finished_at=_iso(finished),
                heartbeat_at=_iso(finished), duration_secs=round(finished - started, 3),
                **extra)
    store.write_atomic(path, _yaml_dump(meta))


def _tb_import_plan(logdir):
    """(logdir, {directory: [event files]}, [directories to import, in order],
    {directory: [its hparam sub-directories]}): what an import will read, before any of it.
    logdir may be one event file: then it is the only file read, from its directory."""
    logdir = os.path.abspath(os.path.expanduser(os.fspath(logdir)))
    if os.path.isfile(logdir) and "tfevents" in os.path.basename(logdir):
        return os.path.dirname(logdir), {os.path.dirname(logdir): [logdir]}, \
            [os.path.dirname(logdir)], {}
    if not os.path.isdir(logdir):
        raise InvalidInputError(f"{logdir} is not a directory or a TensorBoard event file "
                                f"(events.out.tfevents.*)")
    dirs = _tb_event_dirs(logdir)
    if not dirs:
        raise ExpmanError(f"no TensorBoard event files (events.out.tfevents.*) under {logdir}")
    # torch's add_hparams writes hparams and its metric_dict into a sub-run named by the time
    # (run/1712345678.123/): that belongs to the run above it, as config and summary scalars
    children = {}
    for directory in dirs:
        parent, base = os.path.split(directory)
        if parent in dirs and directory != logdir and re.fullmatch(r"\d+\.\d+", base):
            children.setdefault(parent, []).append(directory)
    merged = {d for found in children.values() for d in found}
    return logdir, dirs, [d for d in dirs if d not in merged], children


class _TBImport:
    """The write half of importing one directory: rows, texts and config go into one run as
    the reader (_TBRun) hands them over, so no more than _TBRows' window is held. The run is
    made at the first thing worth keeping; a directory without any is skipped."""

    def __init__(self, experiment, root, name, directory):
        self.experiment, self.root, self.name, self.directory = experiment, root, name, directory
        self.tb = _TBRun(directory, self.points, self.text)
        self.clock = _SetClock()
        self.exp = self.grouper = None
        self.config = None   # the config the run was made with
        self.rows = 0

    def _config(self):
        return self.tb.config if isinstance(self.tb.config, dict) else self.tb.hparams

    def _open(self, wall):
        if self.exp is None:
            self.clock.now = wall
            self.config = copy.deepcopy(self._config())
            self.exp = Experiment(self.experiment, base_dir=self.root, run_name=self.name,
                                  config=self.config or None,
                                  description=f"imported from TensorBoard: {self.directory}",
                                  tags=["tensorboard"], capture_git=False, clock=self.clock)
            # a reading loop has no training step to keep moving: waiting for the writer
            # early costs nothing and keeps the import's memory flat whatever the file's size
            self.exp._max_pending = IMPORT_PENDING_BYTES
        return self.exp

    def points(self, wall, step, points):
        if self.grouper is None:   # expman's own exports: one event per row, exactly
            self._open(wall)
            self.grouper = _TBRows(self.row, exact=self.tb.config is not None)
        self.grouper.event(wall, step, points)

    def row(self, step, wall, values):
        self.clock.now = _exact_micros(wall)
        # a reading loop outruns the writer: the log call's backpressure (an honest byte
        # estimate, waits of at most 2 ms) keeps the queue under IMPORT_PENDING_BYTES
        self.exp.log_metrics(values, step=step)
        self.rows += 1

    def text(self, wall, step, tag, text):
        self._open(wall)
        self.clock.now = wall
        self.exp.info(f"{tag.removesuffix('/text_summary')} (step {step}): {text}")

    def finish(self, summary):
        """Close the run (made now if only hparams or summary values were found)."""
        if self.grouper is not None:
            self.grouper.finish()
        tb = self.tb
        self._open(tb.first)
        for key, value in summary.items():
            self.exp.log_scalar(key, value)
        config = self._config()
        if config and config != self.config:   # hparams read after the first row
            self.exp.log_params(config)
        self.exp.close("finished")
        _backdate_run(self.exp, tb.first, tb.last, imported_from=self.directory)
        return {"experiment": self.exp.experiment, "run": self.exp.run_name,
                "path": str(self.exp.run_dir), "rows": self.rows, "points": tb.points,
                "metrics": sorted(tb.tags), "hparams": len(config or {}), "texts": tb.texts,
                "summary": summary, "ignored": dict(tb.ignored)}


def _tb_read_children(tb, children, dirs, protos, progress):
    """Read torch's add_hparams sub-runs into tb (hparams, times); their scalars as a dict."""
    summary = {}

    def keep(_wall, _step, points):
        summary.update(points)

    for child in children:
        sub = _TBRun(child, keep)
        sub.read(dirs[child], *protos, progress)
        tb.events += sub.events
        if sub.first is not None:   # a parent holding no summary at all takes its times
            tb.first = sub.first if tb.first is None else min(tb.first, sub.first)
            tb.last = sub.last if tb.last is None else max(tb.last, sub.last)
        tb.hparams.update(sub.hparams)
    return summary


def _import_tensorboard(logdir, root=None, experiment=None, progress=None):
    """Turn the event files under logdir (or one event file) into runs of one experiment; a
    list of dicts, one per run written (``skipped`` set for directories without scalars,
    hparams or text). Streams: memory does not grow with the files' size. ``progress``: a
    _Progress, given the bytes of event files as its total."""
    logdir, dirs, todo, children = _tb_import_plan(logdir)
    event_pb2, _, hparams_pb2 = _tb_protos()
    experiment = experiment or os.path.basename(logdir) or "tensorboard"
    if progress is not None:
        progress.total = sum(os.path.getsize(f) for files in dirs.values() for f in files)
    results = []
    with warnings.catch_warnings():   # an import outruns any writer: waiting is fine
        warnings.filterwarnings("ignore", "expman: logging faster", ExpmanWarning)
        for directory in todo:
            rel = os.path.relpath(directory, logdir)
            name = os.path.basename(logdir) if rel == "." else rel.replace(os.sep, "/")
            job = _TBImport(experiment, root, name, directory)
            summary = _tb_read_children(job.tb, children.get(directory, ()), dirs,
                                        (event_pb2, hparams_pb2), progress)
            try:
                job.tb.read(dirs[directory], event_pb2, hparams_pb2, progress)
                entry = {"source": directory, "events": job.tb.events,
                         "files": len(dirs[directory])}
                if job.exp is None and not (job.tb.hparams or job.tb.config or summary):
                    entry.update(skipped="no scalars, hparams or text")
                else:
                    entry.update(job.finish(summary))
            except BaseException:
                if job.exp is not None and not job.exp.closed:
                    job.exp.close("failed")
                raise
            results.append(entry)
    return results


def _tb_text_value(summary_pb2, tag, text):
    value = summary_pb2.Summary.Value(tag=tag)
    value.metadata.plugin_data.plugin_name = "text"
    value.tensor.dtype = 7   # DT_STRING
    value.tensor.string_val.append(text.encode("utf-8"))
    value.tensor.tensor_shape.dim.add(size=1)
    return value


# -- 10.1 writing event files fast: records encoded by hand, CRC32C over a batch at a time ---------
#
# Export used to build a protobuf object per value and let tensorboard's EventFileWriter frame
# each record with a pure-Python CRC32C: 198 s for 1M rows x 10 metrics. The scalar events
# are now encoded by hand (the bytes protobuf writes; test_export_import compares them) and
# the CRCs of a batch of records computed together, by the fastest way present.

_CRC32C_TABLE = []
_CRC32C_IMPL = []   # the chosen [function], found on first use
_PACK_DOUBLE = __import__("struct").Struct("<d").pack
_PACK_U64 = __import__("struct").Struct("<Q").pack
_PACK_U32 = __import__("struct").Struct("<I").pack


def _pb_varint(n):
    """Protobuf's varint of an int64 (negative ones as ten bytes, two's complement)."""
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _crc32c_table():
    if not _CRC32C_TABLE:
        for i in range(256):
            crc = i
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
            _CRC32C_TABLE.append(crc)
    return _CRC32C_TABLE


def _crc32c_py(records):
    """CRC32C (Castagnoli) of each bytes object, in pure Python: the slow last resort."""
    table, out = _crc32c_table(), []
    for data in records:
        crc = 0xFFFFFFFF
        for byte in data:
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        out.append(crc ^ 0xFFFFFFFF)
    return out


_CRC32C_SHIFTED = []   # [NumPy table of each byte's CRC with k zero bytes after it, k = 0..]


def _crc32c_numpy(records, chunk=8192):
    """CRC32C of each bytes object with NumPy, many records at once. CRC is linear: the CRC
    of an L-byte record is a constant for L XOR, over its bytes, a table entry per (byte
    value, bytes after it). So records of one length are a 2-D array, and their CRCs one
    gather and one XOR-reduce, with no byte-by-byte loop (~100x the pure-Python speed)."""
    np = importlib.import_module("numpy")
    out = np.zeros(len(records), dtype=np.uint32)
    lengths = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
    for length in np.unique(lengths).tolist():
        if not length:
            continue   # the CRC32C of nothing is 0
        shifted, init = _crc32c_shifted(np, length)
        tables = shifted[length - 1::-1]                 # row j: byte j, length-1-j after it
        positions = np.arange(length)[None, :]
        chosen = np.flatnonzero(lengths == length)
        for begin in range(0, len(chosen), chunk):
            part = chosen[begin:begin + chunk]
            grid = np.frombuffer(b"".join([records[i] for i in part.tolist()]),
                                 dtype=np.uint8).reshape(len(part), length)
            out[part] = np.bitwise_xor.reduce(tables[positions, grid], axis=1) ^ init
    return out.tolist()


def _crc32c_grid(np, grid, chunk=8192):
    """CRC32C of each row of a 2-D uint8 array (records of one length), as uint32s."""
    n, length = grid.shape
    shifted, init = _crc32c_shifted(np, length)
    tables, positions = shifted[length - 1::-1], np.arange(length)[None, :]
    out = np.empty(n, dtype=np.uint32)
    for begin in range(0, n, chunk):
        part = grid[begin:begin + chunk]
        out[begin:begin + chunk] = np.bitwise_xor.reduce(tables[positions, part], axis=1)
    return out ^ init


def _crc32c_shifted(np, length):
    """(tables for bytes followed by 0..length-1 zero bytes, the CRC's constant part)."""
    if not _CRC32C_SHIFTED:
        table = np.asarray(_crc32c_table(), dtype=np.uint32)
        _CRC32C_SHIFTED[:] = [table[None, :], [0xFFFFFFFF], table]
    tables, inits, table = _CRC32C_SHIFTED
    if len(tables) < length:
        grown = [tables]
        last = tables[-1]
        for _ in range(len(tables), length):
            last = table[last & 0xFF] ^ (last >> 8)
            grown.append(last[None, :])
        tables = _CRC32C_SHIFTED[0] = np.concatenate(grown)
    while len(inits) <= length:   # the all-ones start register run through zero bytes
        crc = inits[-1]
        inits.append(int(table[crc & 0xFF]) ^ (crc >> 8))
    return tables, np.uint32(inits[length] ^ 0xFFFFFFFF)


def _crc32c_many(records):
    """CRC32C of each bytes object, by the fastest way this machine has: the optional C
    packages crc32c or google_crc32c, else NumPy (pyarrow's usual companion), else Python."""
    if not _CRC32C_IMPL:
        impl = None
        with warnings.catch_warnings():   # crc32c warns when it has no hardware support
            warnings.simplefilter("ignore")
            for module, attr in (("crc32c", "crc32c"), ("google_crc32c", "value")):
                try:
                    one = getattr(importlib.import_module(module), attr)
                except (ImportError, AttributeError):
                    continue
                impl = (lambda f: lambda records: [f(r) for r in records])(one)
                break
        if impl is None:
            try:
                importlib.import_module("numpy")
                impl = _crc32c_numpy
            except ImportError:
                impl = _crc32c_py
        _CRC32C_IMPL.append(impl)
    return _CRC32C_IMPL[0](records)


def _tb_masked(crc):
    """TFRecord's masked CRC."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


class _TBEventFile:
    """One TFRecord file of events, named as TensorBoard's writers name theirs, written a
    batch of serialized events at a time."""

    def __init__(self, out_dir, event_pb2):
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.0")
        self.path = os.path.join(out_dir, name)
        self.fh = open(self.path, "wb")   # noqa: SIM115 - closed by close()
        self.header_crcs = {}   # masked CRC of the 8-byte length, by length: lengths repeat
        self.write([event_pb2.Event(wall_time=time.time(),
                                    file_version="brain.Event:2").SerializeToString()])

    def write(self, records):
        crcs = _crc32c_many(records)
        frames = []
        for data, crc in zip(records, crcs):
            frames += (_PACK_U64(len(data)), self.header_crc(len(data)), data,
                       _PACK_U32(_tb_masked(crc)))
        self.fh.write(b"".join(frames))

    def write_frames(self, data):
        """Write records already framed (_TBScalarEncoder's vectorised blocks)."""
        self.fh.write(data)

    def header_crc(self, length):
        crc = self.header_crcs.get(length)
        if crc is None:
            crc = self.header_crcs[length] = _PACK_U32(
                _tb_masked(_crc32c_py([_PACK_U64(length)])[0]))
        return crc

    def close(self):
        self.fh.close()


def _varint_sizes(np, steps):
    """The length of protobuf's varint of each int64 (ten bytes for negative ones)."""
    values = steps.astype(np.uint64)
    sizes = np.ones(len(values), dtype=np.int64)
    for i in range(1, 10):
        sizes += values >= np.uint64(1 << (7 * i))
    return sizes


def _pb_bytes_field(field, payload):
    return bytes([(field << 3) | 2]) + _pb_varint(len(payload)) + payload


_TB_SCALARS_META = _pb_bytes_field(9, _pb_bytes_field(1, _pb_bytes_field(1, b"scalars")))


class _TBScalarEncoder:
    """Events of metric rows, encoded by hand: the bytes protobuf writes for Event(wall_time,
    step, summary=Summary(value=[Value(tag, tensor=TensorProto(dtype=DT_DOUBLE,
    double_val=[v]))...])), the "scalars" plugin named in a tag's first value, as tf does.
    TB2 float64 tensors are what torch writes with double_precision; TB1's simple_value is
    float32 and would not give the same table back."""

    def __init__(self, keys):
        self.plain, self.first = [], []
        for key in keys:
            inner = (_pb_bytes_field(1, key.encode("utf-8"))
                     + b"\x42\x0c\x08\x02\x32\x08")   # tensor: dtype DT_DOUBLE, 1 double
            self.plain.append(b"\x0a" + _pb_varint(len(inner) + 8) + inner)
            self.first.append(b"\x0a" + _pb_varint(len(inner) + 8 + len(_TB_SCALARS_META))
                              + inner)
        self.described = [False] * len(keys)

    def write(self, batch, events):
        """Write the events of batch's rows (those holding a value) to events, a
        _TBEventFile; the number of values written. Runs of rows holding every key are
        encoded and framed by NumPy, a block at a time; other rows one by one."""
        try:
            np = importlib.import_module("numpy")
        except ImportError:
            np = None
        if np is None or not self.plain:
            return self._write_rows(batch, events)
        steps = batch.column(0).to_numpy(zero_copy_only=False)
        full = np.ones(batch.num_rows, dtype=bool)
        for column in batch.columns[2:]:
            if column.null_count:
                full &= column.is_valid().to_numpy(zero_copy_only=False)
        if batch.column(0).null_count or batch.column(1).null_count:
            full[:] = False
        if not all(self.described) and full.any():   # the first full row names the plugin
            full[:int(np.argmax(full)) + 1] = False
        # a run of rows can be one block when all are full and their steps' varints as long
        kind = np.where(full, _varint_sizes(np, steps), 0)
        cuts = [0, *(np.flatnonzero(np.diff(kind)) + 1).tolist(), batch.num_rows]
        points = 0
        for begin, end in zip(cuts, cuts[1:]):
            for start in range(begin, end, 16384):   # blocks of ~6 MB, whatever the batch
                part = batch.slice(start, min(end, start + 16384) - start)
                if kind[begin]:
                    events.write_frames(self._block(np, part, events))
                    points += part.num_rows * len(self.plain)
                else:
                    points += self._write_rows(part, events)
        return points

    def _block(self, np, batch, events):
        """The framed records of rows that all hold every key and whose steps' varints are
        equally long, as one bytes object: every record has the same layout, so the
        records are a 2-D uint8 array built by columns, their CRCs one _crc32c_grid."""
        n = batch.num_rows

        def const(data):
            return np.broadcast_to(np.frombuffer(data, dtype=np.uint8), (n, len(data)))

        def raw(array, dtype, width):
            return np.ascontiguousarray(array, dtype=dtype).view(np.uint8).reshape(n, width)

        summary = []
        for k, column in enumerate(batch.columns[2:]):
            summary += (const(self.plain[k]),
                        raw(column.to_numpy(zero_copy_only=False), "<f8", 8))
        size = sum(part.shape[1] for part in summary)
        steps = batch.column(0).to_numpy(zero_copy_only=False).astype(np.uint64)
        width = int(_varint_sizes(np, steps[:1].astype(np.int64))[0])
        varint = np.empty((n, width), dtype=np.uint8)
        for i in range(width):
            varint[:, i] = ((steps >> np.uint64(7 * i)) & np.uint64(0x7F)) | (
                np.uint64(0x80) if i < width - 1 else np.uint64(0))
        walls = batch.column(1).cast(pa.int64()).to_numpy(zero_copy_only=False) / 1e6
        record = np.hstack([const(b"\x09"), raw(walls, "<f8", 8), const(b"\x10"), varint,
                            const(b"\x2a" + _pb_varint(size)), *summary])
        crc = _crc32c_grid(np, record)
        masked = ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)
        length = record.shape[1]
        return np.hstack([const(_PACK_U64(length) + events.header_crc(length)), record,
                          raw(masked, "<u4", 4)]).tobytes()

    def _write_rows(self, batch, events):
        """The per-row way: any rows, any nulls; without NumPy, every row."""
        steps = batch.column(0).to_pylist()
        micros = batch.column(1).cast(pa.int64()).to_pylist()
        columns = [column.to_pylist() for column in batch.columns[2:]]
        records, points = [], 0
        for i, step in enumerate(steps):
            parts = []
            for k, column in enumerate(columns):
                number = column[i]
                if number is None:
                    continue
                points += 1
                if self.described[k]:
                    parts += (self.plain[k], _PACK_DOUBLE(number))
                else:
                    self.described[k] = True
                    parts += (self.first[k], _PACK_DOUBLE(number), _TB_SCALARS_META)
            if parts:
                records.append(self._event(micros[i], step, b"".join(parts)))
        events.write(records)
        return points

    @staticmethod
    def _event(micros, step, summary):
        wall = (micros or 0) / 1e6
        return b"".join((b"\x09" + _PACK_DOUBLE(wall) if wall else b"",
                         b"\x10" + _pb_varint(step) if step else b"",
                         b"\x2a", _pb_varint(len(summary)), summary))


def _tb_head_event(protos, config, started):
    """The first event: the config as exact JSON text (read back on import) and as YAML, and
    the hparams TensorBoard's HPARAMS tab shows."""
    event_pb2, summary_pb2, hparams_pb2 = protos
    head = summary_pb2.Summary()
    head.value.append(_tb_text_value(summary_pb2, _TB_TEXT_CONFIG,
                                     json.dumps(_json_safe(config), sort_keys=False)))
    head.value.append(_tb_text_value(
        summary_pb2, "config", "```\n" + _yaml_dump(config).decode("utf-8") + "```"))
    hparams = _flatten(config) if isinstance(config, dict) else {}
    if hparams:
        data = hparams_pb2.HParamsPluginData(version=0)
        for name, value in hparams.items():
            hp = data.session_start_info.hparams[name]
            if isinstance(value, bool):
                hp.bool_value = value
            elif isinstance(value, (int, float)):
                hp.number_value = float(value)
            else:
                hp.string_value = "" if value is None else str(value)
        data.session_start_info.start_time_secs = started
        value = head.value.add(tag="_hparams_/session_start_info")
        value.metadata.plugin_data.plugin_name = "hparams"
        value.metadata.plugin_data.content = data.SerializeToString()
    return event_pb2.Event(wall_time=started, step=0, summary=head).SerializeToString(), hparams


def _tb_end_event(protos, status, finished, step):
    """hparams' session end (the status TensorBoard shows), or None for a live run."""
    event_pb2, summary_pb2, hparams_pb2 = protos
    if status not in ("finished", "failed", "interrupted", "crashed"):
        return None
    data = hparams_pb2.HParamsPluginData(version=0)
    data.session_end_info.status = 1 if status == "finished" else 2
    data.session_end_info.end_time_secs = finished
    end = summary_pb2.Summary()
    value = end.value.add(tag="_hparams_/session_end_info")
    value.metadata.plugin_data.plugin_name = "hparams"
    value.metadata.plugin_data.content = data.SerializeToString()
    return event_pb2.Event(wall_time=finished, step=step, summary=end).SerializeToString()


def _chain_first(first, rest):
    if first is not None:
        yield first
    yield from rest


def _export_tensorboard(run_dir, out_dir, progress=None):
    """Write a run's metrics (steps, wall times and float64 values kept), its config (text
    and hparams) and status as an event file in out_dir, a batch of rows at a time."""
    protos = _tb_protos()
    meta = load_run(run_dir)
    config = load_config(run_dir) or {}
    stream = _MetricStream(run_dir)
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    if os.path.isdir(out_dir) and any("tfevents" in f for f in os.listdir(out_dir)):
        raise InvalidInputError(f"{out_dir} already holds TensorBoard event files; TensorBoard "
                                f"would mix them with these: choose another -o")
    if progress is not None:
        progress.total = stream.total
    batches = iter(stream)
    first = next(batches, None)
    started = _parse_iso(meta.get("started_at"))
    if started is None:
        started = (first.column(1).cast(pa.int64())[0].as_py() / 1e6 if first is not None
                   else time.time())
    os.makedirs(out_dir, exist_ok=True)
    encoder = _TBScalarEncoder(stream.keys)
    events = _TBEventFile(out_dir, protos[0])
    rows = points = 0
    last_step = 0
    try:
        head, hparams = _tb_head_event(protos, config, started)
        events.write([head])
        for batch in _chain_first(first, batches):
            n = encoder.write(batch, events)
            rows, points, last_step = rows + batch.num_rows, points + n, batch.column(0)[-1]
            if progress is not None:
                progress.update(batch.num_rows)
        end = hparams and _tb_end_event(protos, meta.get("status"),
                                        _parse_iso(meta.get("finished_at")) or started,
                                        last_step.as_py() if rows else 0)
        if end:
            events.write([end])
    finally:
        events.close()
    return {"run": meta.get("name"), "output": out_dir, "rows": rows,
            "metrics": len(stream.keys), "points": points}


# -- 10.2 where integrations log -------------------------------------------------------------------

def _integration_run(run, name, kwargs):
    """(experiment, owned): the run given, else the open run of init(), else a new run that
    the integration owns (and closes)."""
    if run is not None:
        if not isinstance(run, Experiment):
            raise InvalidInputError(f"run must be an expman.Experiment, got "
                                    f"{type(run).__name__}")
        return run, False
    if _CURRENT is not None and not _CURRENT.closed and not kwargs:
        return _CURRENT, False
    return Experiment(name, **kwargs), True


def _log_row_at(exp, row, step, wall):
    """log_metrics with an explicit wall time (SummaryWriter's walltime=)."""
    if exp._closed:
        return exp._after_close("log_metrics")
    rows = exp._rows
    rows.extend((dict(row), step, float(wall)))  # a row is three entries (log_metrics)
    if len(rows) > exp._check_at:
        exp._backlog()
    return None


# -- 10.3 SummaryWriter shim -----------------------------------------------------------------------

_OPEN_WRITERS = []          # shims and callbacks whose last row may still be buffered
_NO_STEP = object()


def _flush_writers_at_exit():
    for writer in _OPEN_WRITERS:
        try:
            writer._emit()
        except Exception as err:  # noqa: BLE001 - the runs close anyway
            _log.warning("expman: could not write the buffered row of %r at exit: %s",
                         writer, err)


def _watch_at_exit(writer):
    """Write writer's buffered row at exit, before its run closes."""
    if not _HOOKS.get("writers"):
        # registered after the run's own exit hook, so it runs first (atexit is LIFO)
        _HOOKS["writers"] = True
        atexit.register(_flush_writers_at_exit)
    _OPEN_WRITERS.append(writer)


def _unwatch(writer):
    with contextlib.suppress(ValueError):
        _OPEN_WRITERS.remove(writer)


class SummaryWriter:
    """A drop-in for ``torch.utils.tensorboard.SummaryWriter`` / ``tensorboardX``'s that logs
    into expman: change one import and keep the script.

    >>> from expman import SummaryWriter      # was: from torch.utils.tensorboard import ...
    >>> from expman.tensorboard import SummaryWriter          # expman-rs's import works too
    >>> with SummaryWriter("runs/mnist_lr0.1") as writer:   # runs/mnist_lr0.1/<time>/
    ...     for step in range(100):
    ...         writer.add_scalar("train/loss", 1 / (step + 1), step)
    ...         writer.add_scalar("train/acc", step / 100, step)        # same row as the loss

    ``log_dir`` is a directory, absolute or relative (to ``base_dir`` when given, else to the
    working directory), as for torch and expman-rs: the run is written under it, as
    experiment ``basename(log_dir)`` in the root ``dirname(log_dir)``, so ``expman serve
    runs`` shows ``runs/mnist_lr0.1``. The run is named by time. A bare ``name`` is an
    experiment under the expman root ($EXPMAN_DIR or ./experiments), as in expman-rs;
    ``None`` is experiment ``runs`` there with TensorBoard's run name (time, host,
    ``comment``). ``experiment=`` and ``run_name=`` override; ``run=`` logs into an existing
    Experiment (not closed by ``close()``). Scalars of one ``global_step`` become one row,
    written when the step changes, on ``flush()``/``close()`` and at exit.
    ``add_scalars("loss", {"train": a, "val": b})`` logs ``loss/train`` and ``loss/val``;
    ``add_text`` goes to run.log; ``add_hparams`` to config.yaml and summary scalars;
    ``add_image``/``add_histogram`` go to the run's ``log_image``/``log_histogram``, and input
    they cannot use is skipped with one warning (never an exception in a training loop).
    Other ``add_*`` methods are accepted and ignored (a warning names them once).
    """

    def __init__(self, log_dir=None, comment="", purge_step=None, max_queue=10, flush_secs=120,
                 filename_suffix="", *, base_dir=None, experiment=None, run_name=None,
                 run=None, config=None):
        if run is None:
            root, exp_name, default_run = self._location(log_dir, comment, base_dir)
            self._exp = Experiment(experiment or exp_name, base_dir=root,
                                   run_name=run_name or default_run, config=config,
                                   tags=["tensorboard"])
            self._owned = True
        else:
            self._exp, self._owned = _integration_run(run, None, {})
            if config:
                self._exp.log_params(config)
        self.log_dir = str(self._exp.run_dir)
        self._row, self._step, self._wall = {}, _NO_STEP, None
        self._closed = False
        self._ignored = set()
        _watch_at_exit(self)

    @staticmethod
    def _location(log_dir, comment, base_dir):
        """(root, experiment, run name or None) of a log_dir."""
        if log_dir is None:
            stamp = _dt.datetime.now().strftime("%b%d_%H-%M-%S")
            return base_dir, "runs", f"{stamp}_{socket.gethostname()}{comment or ''}"
        text = os.fsdecode(os.fspath(log_dir))
        if base_dir is not None and not os.path.isabs(text) and not _URI_RE.match(text):
            base = os.fsdecode(os.fspath(base_dir))
            text = f"{base.rstrip('/')}/{text}" if _URI_RE.match(base) else \
                os.path.join(base, text)
        if _URI_RE.match(text):  # s3://bucket/runs/x: no normpath (it would eat a slash)
            parent, _, name = text.rstrip("/").rpartition("/")
            return parent, name, None
        parent, name = os.path.split(os.path.normpath(text))
        if name in (".", ".."):  # "." or "a/..": a directory named by where it is
            parent, name = os.path.split(os.path.abspath(text))
        if not name:  # "/"
            return parent, "runs", None
        return parent or None, name, None   # a bare name: an experiment of the expman root

    @property
    def experiment(self):
        """The expman run this writer logs into."""
        return self._exp

    def get_logdir(self):
        return self.log_dir

    # the hot path: a dict store; one row per step reaches the run
    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, new_style=False,
                   double_precision=False):
        """Log one scalar; scalars of one global_step share a row."""
        if global_step is not None and type(global_step) is not int:
            global_step = int(global_step)
        row = self._row
        if global_step != self._step or tag in row:
            if row:
                self._emit()
                row = self._row
            self._step, self._wall = global_step, walltime
        row[tag] = scalar_value

    def add_scalars(self, main_tag, tag_scalar_dict, global_step=None, walltime=None):
        """Log ``{tag: value}`` as ``main_tag/tag`` (TensorBoard makes one sub-run per tag)."""
        for tag, value in tag_scalar_dict.items():
            self.add_scalar(f"{main_tag}/{tag}", value, global_step, walltime)

    def _emit(self):
        row = self._row
        if not row:
            return
        self._row = {}
        step = None if self._step is _NO_STEP else self._step
        if self._wall is None:
            self._exp.log_metrics(row, step=step)
        else:
            _log_row_at(self._exp, row, step, self._wall)

    def add_text(self, tag, text_string, global_step=None, walltime=None):
        """Append ``tag (step N): text`` to run.log."""
        where = "" if global_step is None else f" (step {int(global_step)})"
        self._exp.info(f"{tag}{where}: {text_string}")

    def add_hparams(self, hparam_dict, metric_dict, hparam_domain_discrete=None, run_name=None,
                    global_step=None):
        """hparams into config.yaml; metric_dict (None: none) as summary scalars of this run
        (next to the params in the runs table, not in a sub-run as TensorBoard does)."""
        if metric_dict is None:
            metric_dict = {}
        if not isinstance(hparam_dict, dict) or not isinstance(metric_dict, dict):
            raise InvalidInputError("add_hparams: hparam_dict and metric_dict must be dicts")
        self._exp.log_params(hparam_dict)
        for key, value in metric_dict.items():
            self._exp.log_scalar(key, value)

    def _forward(self, method, tag, value, global_step):
        log = getattr(self._exp, method, None)   # log_image/log_histogram, where they exist
        if log is None:
            return self._ignore(f"add_{method[4:]}")
        try:
            return log(tag, value, step=None if global_step is None else int(global_step))
        except Exception as exc:  # noqa: BLE001 - never stop a training loop for a picture
            what = f"add_{method[4:]}"
            if what not in self._ignored:
                self._ignored.add(what)
                warnings.warn(f"expman: SummaryWriter.{what} skipped input it cannot use "
                              f"({exc}); this is shown once", ExpmanWarning,
                              stacklevel=4)  # the line of the training script
            return None

    def add_image(self, tag, img_tensor, global_step=None, walltime=None, dataformats="CHW"):
        return self._forward("log_image", tag, img_tensor, global_step)

    def add_histogram(self, tag, values, global_step=None, bins="tensorflow", walltime=None,
                      max_bins=None):
        return self._forward("log_histogram", tag, values, global_step)

    def _ignore(self, what):
        if what not in self._ignored:
            self._ignored.add(what)
            _warn(f"expman: SummaryWriter.{what} is not supported by expman; ignored")

    def __getattr__(self, name):
        if name.startswith("add_"):
            return lambda *args, **kwargs: self._ignore(name)
        raise AttributeError(name)

    def flush(self):
        """Write the buffered row and wait until the run has it on disk."""
        self._emit()
        self._exp.flush()

    def close(self, status="finished"):
        """Write the buffered row; close the run if this writer started it."""
        if self._closed:
            return
        self._closed = True
        self._emit()
        _unwatch(self)
        if self._owned:
            self._exp.close(status)
        else:
            self._exp.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        status = _status_for_exit(exc_type, exc)
        if status == "failed" and self._owned:
            self._exp._record_error(exc_type, exc)
        self.close(status)
        return False


def _register_tensorboard_module():
    """``from expman.tensorboard import SummaryWriter`` (expman-rs's import path) with one
    file: a small module object in sys.modules under this module's name (``expman``, or
    ``mypkg.expman`` when vendored), which ``import`` finds before looking for a file."""
    if __name__ == "__main__":
        return
    name = f"{__name__}.tensorboard"
    module = type(sys)(name, "expman's TensorBoard SummaryWriter (see expman.SummaryWriter)")
    import importlib.machinery  # loaded at startup already: no cost
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.SummaryWriter, module.__all__ = SummaryWriter, ["SummaryWriter"]
    sys.modules.setdefault(name, module)
    globals().setdefault("tensorboard", sys.modules[name])


_register_tensorboard_module()


# -- 10.4 framework callbacks (classes built on first use) -----------------------------------------

class _LazyIntegration(type):
    """A public class whose real body subclasses a framework's base class, built on first use
    (instantiation, isinstance, attribute access), so ``import expman`` (and ``from expman
    import *``) never imports the framework."""

    def _real(cls):
        real = cls.__dict__.get("_built")
        if real is None:
            real = cls._build()
            real.__doc__ = cls.__doc__
            real.__name__ = cls.__name__
            real.__qualname__ = f"{cls.__name__}._built"
            real.__module__ = cls.__module__
            cls._built = real
        return real

    def __call__(cls, *args, **kwargs):
        return cls._real()(*args, **kwargs)

    def __instancecheck__(cls, obj):
        return isinstance(obj, cls._real())

    def __getattr__(cls, name):
        if name == "_built":   # the real class's qualified name: pickle finds it here
            return cls._real()
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(cls._real(), name)


def _to_row(metrics, prefix_map=None):
    """Numbers of a framework's metrics dict (tensors kept for the writer thread)."""
    row = {}
    for key, value in metrics.items():
        if isinstance(value, (str, bytes, dict, list, tuple)) or value is None:
            continue
        key = str(key)
        if prefix_map is not None:
            key = prefix_map(key)
        row[key] = value
    return row


class _RunHolder:
    """The run a callback logs into, opened on first use (on rank zero only, for Lightning)."""

    def _setup(self, name, base_dir, run_name, run, config, kwargs):
        self._name, self._run = name, run
        self._kwargs = dict(kwargs, base_dir=base_dir, run_name=run_name)
        self._kwargs = {k: v for k, v in self._kwargs.items() if v is not None}
        self._config = config
        self._exp, self._owned = None, False

    def _get_run(self):
        if self._exp is None:
            self._exp, self._owned = _integration_run(self._run, self._name, self._kwargs)
            if self._config:
                self._exp.log_params(self._config)
            self._row, self._step = None, None
            _watch_at_exit(self)
        return self._exp

    def _log(self, row, step):
        """Frameworks log train and validation metrics of one step in separate calls: they
        share a row unless a key comes back with another value."""
        pending = self._row
        if pending is not None and (step != self._step or any(
                key in pending and pending[key] != value for key, value in row.items())):
            self._emit()
            pending = None
        if pending is None:
            self._row, self._step = dict(row), step
        else:
            pending.update(row)

    def _emit(self):
        row, self._row = self._row, None
        if row and self._exp is not None:
            self._exp.log_metrics(row, step=self._step)

    def _end(self, status):
        """Training ended: close the run we own with this status; flush one we were given."""
        exp = self._exp
        if exp is None or exp.closed:
            return
        self._emit()
        exc_type, exc, tb = sys.exc_info()   # frameworks report failures from an except block
        if status == "failed" and exc is not None:
            status = _status_for_exit(exc_type, exc)   # Ctrl-C, SIGTERM: interrupted
            if status == "failed" and self._owned:
                import traceback
                exp._record_error(exc_type, exc)
                exp._log_line("ERROR", "".join(traceback.format_exception(exc_type, exc, tb)))
        if self._owned and (status != "finished" or self._close_at_end):
            _unwatch(self)
            exp.close(status)
        else:
            exp.flush()

    def close(self, status="finished"):
        """Close the run now (it closes at exit otherwise)."""
        if self._exp is not None and not self._exp.closed:
            self._emit()
            _unwatch(self)
            if self._owned:
                self._exp.close(status)
            else:
                self._exp.flush()


def _build_lightning_logger():
    # The unified `lightning` package, or the standalone `pytorch_lightning` when the script
    # imported that one (the two have separate Logger base classes).
    packages = ["lightning.pytorch", "pytorch_lightning"]
    if "pytorch_lightning" in sys.modules and "lightning" not in sys.modules:
        packages.reverse()
    for package in packages:
        try:
            Logger = importlib.import_module(package + ".loggers").Logger
            rank_zero_only = importlib.import_module(package + ".utilities").rank_zero_only
            break
        except ImportError:
            continue
    else:
        raise ExpmanError("expman.LightningLogger needs PyTorch Lightning: pip install "
                          "lightning") from None

    class LightningLogger(_RunHolder, Logger):
        def __init__(self, name="lightning", base_dir=None, run_name=None, *, run=None,
                     config=None, close_at_end=False, **kwargs):
            super().__init__()
            self._setup(name, base_dir, run_name, run, config, kwargs)
            self._close_at_end = close_at_end

        @property
        def name(self):
            return self._exp.experiment if self._exp is not None else self._name

        @property
        def version(self):
            # checkpoints go to <default_root_dir>/<name>/<version>/checkpoints
            if self._exp is None and getattr(rank_zero_only, "rank", 0) == 0:
                self._get_run()
            return self._exp.run_name if self._exp is not None else self._kwargs.get(
                "run_name")

        @property
        def save_dir(self):
            return None   # never inside a run directory: checkpoints are not metrics

        @property
        @rank_zero_only
        def experiment(self):
            """The expman.Experiment (log_scalar, info, save_artifact, ...)."""
            return self._get_run()

        @rank_zero_only
        def log_hyperparams(self, params, *args, **kwargs):
            if not isinstance(params, dict):
                params = vars(params) if hasattr(params, "__dict__") else {"hparams": params}
            self._get_run().log_params(_to_plain(dict(params)))

        @rank_zero_only
        def log_metrics(self, metrics, step=None):
            row = _to_row(metrics)
            if row:
                self._get_run()
                self._log(row, step)

        @rank_zero_only
        def finalize(self, status):
            # "success" ends each fit/validate/test: the run stays open for the next one
            # (trainer.test after trainer.fit) and closes as finished at exit.
            self._end({"success": "finished", "finished": "finished"}.get(status, "failed"))

    return LightningLogger


class LightningLogger(metaclass=_LazyIntegration):
    """A PyTorch Lightning logger (``lightning`` or ``pytorch_lightning``) that logs into
    expman: hyperparameters into config.yaml, ``self.log(...)`` metrics with the global step.

    >>> trainer = lightning.Trainer(logger=expman.LightningLogger("mnist", run_name="lr0.1"))

    The run opens on first use (rank zero only) and closes ``failed`` when training raises.
    After a successful ``fit`` it stays open, so a following ``trainer.test`` logs into it
    too, and closes ``finished`` at exit, or now with ``logger.close()`` (or pass
    ``close_at_end=True``). ``run=`` logs into an existing Experiment; with neither ``run=``
    nor run options, the run of ``expman.init()`` is used when one is open.
    """
    _build = staticmethod(_build_lightning_logger)


def _build_transformers_callback():
    try:
        from transformers import TrainerCallback
    except ImportError:
        raise ExpmanError("expman.TransformersCallback needs transformers: pip install "
                          "transformers") from None

    def rename(key):
        for prefix in ("eval", "test"):
            if key.startswith(prefix + "_"):
                return f"{prefix}/{key[len(prefix) + 1:]}"
        return f"train/{key}"

    class TransformersCallback(_RunHolder, TrainerCallback):
        def __init__(self, name="transformers", base_dir=None, run_name=None, *, run=None,
                     config=None, close_at_end=False, **kwargs):
            self._setup(name, base_dir, run_name, run, config, kwargs)
            self._close_at_end = close_at_end

        @property
        def experiment(self):
            return self._get_run()

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if not state.is_world_process_zero:
                return
            exp = self._get_run()
            params = {"args": args.to_dict()}
            model_config = getattr(model, "config", None)
            if model_config is not None and hasattr(model_config, "to_dict"):
                params["model"] = model_config.to_dict()
            exp.log_params(params)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            exp = self._get_run()
            # the end-of-training totals (train_runtime, train_loss, total_flos) are summary
            # values of the run, not a row
            totals = {k: v for k, v in logs.items()
                      if k.startswith("train_") or k == "total_flos"}
            for key, value in _to_row(totals).items():
                key = "avg_loss" if key == "train_loss" else key.removeprefix("train_")
                exp.log_scalar("train/" + key, value)
            row = _to_row({k: v for k, v in logs.items() if k not in totals}, rename)
            if not row:
                return
            if exp.closed and self._owned:
                _warn("expman: TransformersCallback got metrics after its run closed at the "
                      "end of training; pass close_at_end=False to keep it open")
            self._log(row, state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self._end("finished")

    return TransformersCallback


class TransformersCallback(metaclass=_LazyIntegration):
    """A Hugging Face ``transformers.TrainerCallback`` that logs into expman: the
    TrainingArguments (``args``) and model config (``model``) into config.yaml at train begin,
    every ``on_log`` dict at ``state.global_step`` (``loss`` -> ``train/loss``, ``eval_loss``
    -> ``eval/loss``).

    >>> trainer = transformers.Trainer(model, args, train_dataset=ds,
    ...                                callbacks=[expman.TransformersCallback("bert-ft")])

    Trainer has no failure hook: a run we opened closes at exit, ``failed`` when the script
    dies of the exception. After training it stays open for ``trainer.evaluate()``; pass
    ``close_at_end=True`` (or call ``.close()``) to close it as ``finished`` at train end.
    Add ``report_to="none"`` to the TrainingArguments to keep other trackers out.
    """
    _build = staticmethod(_build_transformers_callback)


def _build_keras_callback():
    try:
        import keras
    except ImportError:
        raise ExpmanError("expman.KerasCallback needs Keras 3: pip install keras") from None

    def rename(key):
        return f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"

    class KerasCallback(_RunHolder, keras.callbacks.Callback):
        def __init__(self, name="keras", base_dir=None, run_name=None, *, run=None,
                     config=None, log_every_n_batches=None, close_at_end=False, **kwargs):
            super().__init__()
            self._setup(name, base_dir, run_name, run, config, kwargs)
            self._every = log_every_n_batches
            self._close_at_end = close_at_end
            self._seen = 0   # batches trained: the step of every row

        @property
        def experiment(self):
            return self._get_run()

        def on_train_begin(self, logs=None):
            exp = self._get_run()
            fit = {k: v for k, v in (self.params or {}).items() if k != "verbose"}
            params = {"fit": _to_plain(fit)}
            optimizer = getattr(self.model, "optimizer", None)
            if optimizer is not None:
                with contextlib.suppress(Exception):
                    # what was set, not a dozen None/False defaults; float32 values such as
                    # 0.009999999776482582 read back as 0.01
                    params["optimizer"] = {
                        k: float(f"{v:.7g}") if isinstance(v, float) else v
                        for k, v in _to_plain(optimizer.get_config()).items()
                        if v is not None and v is not False and not k.startswith("ema_")}
            exp.log_params(params)

        def on_train_batch_end(self, batch, logs=None):
            self._seen += 1
            if self._every and self._seen % self._every == 0 and logs:
                self._get_run()
                self._log(_to_row(logs, rename), self._seen)

        def on_epoch_end(self, epoch, logs=None):
            row = _to_row(logs or {}, rename)
            row["epoch"] = epoch + 1
            self._get_run()
            self._log(row, self._seen)

        def on_train_end(self, logs=None):
            self._end("finished")

    return KerasCallback


class KerasCallback(metaclass=_LazyIntegration):
    """A Keras 3 callback that logs into expman: ``fit`` params and the optimizer config into
    config.yaml, each epoch's logs (``loss`` -> ``train/loss``, ``val_loss`` -> ``val/loss``,
    plus ``epoch``) at the number of batches trained so far; ``log_every_n_batches=N`` adds
    the running batch logs every N batches.

    >>> model.fit(x, y, epochs=5, callbacks=[expman.KerasCallback("mnist", run_name="cnn")])

    Keras has no failure hook: a run we opened closes at exit, ``failed`` when the script dies
    of the exception; after ``fit`` it stays open for ``evaluate`` (``close_at_end=True`` or
    ``.close()`` closes it at once).
    """
    _build = staticmethod(_build_keras_callback)


# 11 Server & JSON API #######################################################################
#
# A Bottle app (built per call, never Bottle's global default app) served by Waitress. Every
# handler reads the run files through section 9: the server keeps no database, so a server
# started tomorrow, or on another machine over a shared filesystem, shows the same thing.
# Live updates go out over one Server-Sent Events stream per page (/api/stream): a shared
# watcher thread notices new runs and run.yaml changes anywhere under the root, and each
# stream tails the metrics and log of the runs its page shows, reading only what is new.
#
#   11.1 cache and hub    _RunCache (row counts, shared stream events), _Hub (the watcher)
#   11.2 series           metrics and histograms as JSON, M4 from the chart summary or rows
#   11.3 routes           _ROUTES -> _Api._api_<resource>, one query-parameter parser
#   11.4 SSE              _StreamCursor, _stream, _tail_run: bounded work per tick
#   11.5 security         tokens (rate-limited), names, links out of a run, hosts, CSP
#   11.6 serving          Waitress with connection limits (slowloris), make_server, serve

SSE_POLL_SECS = 0.1           # how often a stream looks for new rows of its runs
SSE_PING_SECS = 15.0          # comment lines that keep proxies and dead-client checks honest
SSE_EVENT_ROWS = 1_000        # a `metrics` event ends at a multiple of this row (a backlog comes
                              # in parts, the same parts for every stream: read and encoded once)
SSE_TICK_ROWS = 5_000         # rows one stream sends per tick, all its runs together
SSE_RETRY_SECS = 10           # Retry-After of a stream refused because all stream slots are taken
WATCH_SECS = 1.0              # how often the watcher rescans the root while a stream is open
LOCAL_SWEEP_RUNS = 256        # closed local runs whose run.yaml a scan re-stats, in turn (edits
                              # made by another process; the catalog tells the rest)
SERVER_THREADS = 48           # Waitress worker threads; each open stream holds one
SERVER_RESERVED_THREADS = 8   # never given to streams: the page and the API always get a thread
SERVER_OUTBUF_BYTES = 1 << 20   # per-connection send buffer rotation (see make_server)
SERVER_MAX_CONNECTIONS = 1000   # open sockets in all (Waitress stops accepting beyond)
SERVER_CLIENT_CONNECTIONS = 64  # open sockets per remote address (loopback: the limit above)
SERVER_REQUEST_SECS = 15.0    # a request must arrive whole within this (slowloris)
LOCAL_CLOSED_POLL_SECS = 2.0  # a closed local run is re-checked this often, not every tick
TOKEN_GUESSES = 20            # wrong tokens a client may send at once ...
TOKEN_GUESS_RATE = 2.0        # ... and then this many a second (429 beyond)
# On an object store every stat or listing is a billed, rate-limited request of ~10-50 ms, so
# the watcher and the streams spend a budget there instead of polling like a local disk does:
REMOTE_WATCH_SECS = 2.0       # how often the watcher lists the root
REMOTE_SCAN_STATS = 64        # run.yaml stats per scan beyond new runs (live ones first)
REMOTE_SWEEP_RUNS = 16        # of which idle runs re-checked in turn (edits made elsewhere)
REMOTE_POLL_SECS = 1.0        # how often a live run is checked for new rows (writers flush ~1/s)
REMOTE_TAIL_BUDGET = 30.0     # requests a second all streams of a server spend on live runs
REMOTE_CLOSED_POLL_SECS = 30.0  # a closed run (metrics.parquet written) changes no more
REMOTE_MEDIA_POLL_SECS = 5.0  # how often a live run's media index is checked on object stores
_JSON_HEADERS = {"Content-Type": "application/json"}
_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src 'self' data: blob:; media-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


# -- 11.1 cache and hub: what the runs look like now, shared by every request and stream -----------

class _RunCache:
    """Row counts and log sizes of runs, shared by all streams, so twenty open pages cost one
    directory listing per run, not twenty; and the last `metrics` event of each run, so
    twenty streams at the same rows encode it once.

    Locally a live entry is refreshed at most every SSE_POLL_SECS, a closed one every
    LOCAL_CLOSED_POLL_SECS. On an object store a refresh is three requests (list metrics/,
    stat metrics.parquet, stat run.log): a live run is refreshed at most every
    REMOTE_POLL_SECS, less often when so many are watched that the total would pass
    REMOTE_TAIL_BUDGET requests a second, and a closed run every REMOTE_CLOSED_POLL_SECS.
    """

    def __init__(self, store):
        self.store = store
        self.lock = threading.Lock()
        self.entries = {}  # path -> (checked_at, rows, log_size, closed)
        self.media_entries = {}  # path -> (checked_at, media index size, histograms stamp)
        self.events = {}  # path -> {(since, upto): (payload, next_since)}, newest last
        self.loading = {}  # path -> lock held while one stream reads that run's new rows
        self.live_ttl = SSE_POLL_SECS * 0.8 if store.is_local else REMOTE_POLL_SECS
        self.counted_at = 0.0

    def _ttl(self, entry, now):
        if self.store.is_local:
            return LOCAL_CLOSED_POLL_SECS if entry[3] else self.live_ttl
        if entry[3]:
            return REMOTE_CLOSED_POLL_SECS
        if now - self.counted_at > 1.0:  # recount the live runs being watched once a second
            self.counted_at = now
            live = sum(1 for e in self.entries.values() if not e[3] and now - e[0] < 60)
            self.live_ttl = max(REMOTE_POLL_SECS, 3.0 * live / REMOTE_TAIL_BUDGET)
        return self.live_ttl

    def state(self, path):
        now = time.monotonic()
        with self.lock:
            entry = self.entries.get(path)
            if entry and now - entry[0] < self._ttl(entry, now):
                return entry[1], entry[2]
        files = _metric_files(self.store, path)
        closed = bool(files) and files[-1][1] is None
        rows = 0
        if closed:
            try:
                if _link_out_of(self.store, path, files[-1][2]):
                    raise InvalidInputError("a link out of the run")
                rows = self.store.parquet_file(files[-1][2]).metadata.num_rows
            except Exception:  # noqa: BLE001 - unreadable: load_metrics warns about it
                closed = False
        elif files:
            rows = files[-1][1]
        log = self.store.stat(self.store.join(path, RUN_LOG))
        with self.lock:
            self.entries[path] = (now, rows, log[0] if log else 0, closed)
        return rows, (log[0] if log else 0)

    def media_state(self, path):
        """(size of media/index.jsonl, names in histograms/ + whether histograms.parquet
        exists). Two requests per refresh on an object store, so there a live run's media
        is checked every REMOTE_MEDIA_POLL_SECS (media is logged far less often than rows)."""
        now = time.monotonic()
        with self.lock:
            entry = self.media_entries.get(path)
            run = self.entries.get(path)
            closed = bool(run and run[3])
            ttl = self._ttl((0, 0, 0, closed), now)
            if not self.store.is_local:
                ttl = max(ttl, REMOTE_MEDIA_POLL_SECS)
            if entry and now - entry[0] < ttl:
                return entry[1], entry[2]
        index = self.store.stat(self.store.join(path, MEDIA_DIR, MEDIA_INDEX))
        names = self.store.listnames(self.store.join(path, HISTOGRAMS_DIR))
        stamp = (tuple(sorted(names)), not names and self.store.stat(
            self.store.join(path, HISTOGRAMS_FILE)) is not None)
        with self.lock:
            self.media_entries[path] = (now, index[0] if index else 0, stamp)
        return (index[0] if index else 0), stamp

    def metrics_event(self, name, path, since, upto):
        """(the `metrics` SSE event of rows [since, upto) of a run, the row after it).

        Streams ask for the same parts of a run: up to the row count in this cache, in parts
        that end at multiples of SSE_EVENT_ROWS. So the newest events of each run are kept
        (8 per run) and handed to every stream asking for the same rows: twenty pages, one
        read and one encoding, also when a loaded server lets their cursors drift apart. A
        stream asking for rows another is reading waits for that read instead of doubling it.
        """
        key = (since, upto)
        with self.lock:
            hit = self.events.get(path, {}).get(key)
            if hit is not None:
                return hit
            loading = self.loading.setdefault(path, threading.Lock())
        with loading:
            with self.lock:
                hit = self.events.get(path, {}).get(key)
                if hit is not None:
                    return hit
            table = _read_rows(self.store, path, since, upto)
            payload, nxt = None, since + table.num_rows
            if table.num_rows:
                keys = [c for c in table.column_names if c not in RESERVED_COLUMNS]
                series, _ = _series_json(table, keys)
                payload = _sse("metrics", {"run": name, "since": since, "next_since": nxt,
                                           "series": series})
            with self.lock:
                events = self.events.setdefault(path, {})
                events[key] = (payload, nxt)
                while len(events) > 8:
                    del events[next(iter(events))]
                if len(self.events) > 256:  # runs nobody watches: keep the last 128
                    for stale in list(self.events)[:-128]:
                        del self.events[stale]
                        self.loading.pop(stale, None)
            return payload, nxt


def _read_rows(store, path, since, upto):
    """Rows [since, upto) of a run's metrics as one table, reading no file and no row group
    past upto (load_metrics(since_row=) reads to the end: a stream asking for row 0 of a
    5M-row run would read all of it on every tick). Files that link out of the run are
    refused (InvalidInputError); a file merged away while we read: list again."""
    for _attempt in range(20):
        try:
            return _read_rows_once(store, path, since, upto)
        except FileNotFoundError:
            continue
    raise ExpmanError(f"the metrics of {store.display(path)} kept changing while they were "
                      f"read; try again")


def _read_rows_once(store, path, since, upto):
    tables, at = [], since
    for start, end, fpath in _metric_files(store, path):
        if (end is not None and end <= at) or at >= upto:
            continue
        if _link_out_of(store, path, fpath):
            raise InvalidInputError(f"{store.display(fpath)} is a link out of the run")
        pf = store.parquet_file(fpath)
        groups, row = [], start
        for i in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if row + n > at and row < upto:
                groups.append(i)
            elif not groups:
                start += n
            row += n
        row = start
        for batch in pf.iter_batches(batch_size=SSE_EVENT_ROWS, row_groups=groups):
            lo, hi = max(0, at - row), min(batch.num_rows, upto - row)
            if hi > lo:
                tables.append(pa.Table.from_batches([batch.slice(lo, hi - lo)]))
                at = row + hi
            row += batch.num_rows
            if at >= upto:
                break
    return _unify(tables)


class _RunEntry:
    """What the watcher knows of one run: run.yaml's (size, mtime), the status it implied at
    the last scan, and the parsed run.yaml and config.yaml (the object-store cache)."""
    __slots__ = ("stamp", "status", "meta", "config")

    def __init__(self, stamp, status, meta, config):
        self.stamp, self.status, self.meta, self.config = stamp, status, meta, config


class _Hub:
    """Fans watcher events (new runs, removed runs, status changes) out to every open stream.

    The watcher works only while a stream is open: with no page watching, its thread waits
    on an event and the server does nothing between requests. Locally a scan costs what
    changed: the root's and each experiment's folder mtime (a new or deleted run moves it),
    run.yaml of the runs not yet closed, and LOCAL_SWEEP_RUNS closed ones in turn; closed
    runs' statuses come from the run catalog, not from their files (see _scan_local).

    On an object store the watcher's cache also answers the run and experiment lists while
    a stream is open, so a page reloading them costs no request per run (see scan)."""

    def __init__(self, store, root, live=True):
        self.store, self.root, self.live = store, root, live
        self.lock = threading.Lock()
        self.subscribers = set()
        self.closed = threading.Event()
        self.wanted = threading.Event()  # set when a stream subscribes (or the hub closes)
        self.cache = _RunCache(store)
        self.known = None            # (exp, run) -> _RunEntry, from the last scan
        self.experiments = []        # experiment directory names, from the last scan
        self.exp_meta = {}           # exp -> (read_at, experiment.yaml)
        self.recheck = set()         # runs to re-read on the next scan (edited here)
        self.turns = {}              # round-robin positions among live and idle runs
        self.watch_secs = WATCH_SECS if store.is_local else REMOTE_WATCH_SECS
        self.thread = None
        self.scans = 0               # scans done (GET /api/health shows it: idle means none)
        self.fresh = False           # the cache was scanned since a stream opened (object stores)
        # local: what the folders held at their last listing
        self.root_stamp = None       # mtime of the root folder (None: list it next time)
        self.exp_stamps = {}         # exp -> mtime of its folder (None: list it next time)
        self.names = {}              # exp -> {run folder names}
        self.baseline = {}           # exp -> run names that existed before anyone watched
        self.pending = set()         # (exp, run) folders listed without a run.yaml yet
        self.filled = set()          # experiments whose runs have entries in known
        self.closed_runs = None      # exp -> {run: (status, stamp)} of closed runs, or None

    def start(self):
        """Start the watcher thread. It takes a baseline of the run names (listings, no file
        read: runs created from here on are "new") and then waits for a stream: serving
        starts at once, whatever the root holds."""
        if self.live and self.thread is None:
            self.thread = threading.Thread(target=self._watch, name="expman-watch", daemon=True)
            self.thread.start()

    def close(self):
        self.closed.set()
        self.wanted.set()
        with self.lock:
            for sub in self.subscribers:
                sub.wake.set()

    def subscribe(self):
        sub = _Subscriber()
        with self.lock:
            self.subscribers.add(sub)
        self.wanted.set()
        return sub

    def unsubscribe(self, sub):
        with self.lock:
            self.subscribers.discard(sub)

    def publish(self, event, data):
        payload = _sse(event, data)
        with self.lock:
            subs = list(self.subscribers)
        for sub in subs:
            sub.push(payload)

    def stats(self):
        """What the watcher did: the /api/health figures that show an idle server is idle."""
        return {"scans": self.scans, "streams": len(self.subscribers),
                "watching": bool(self.subscribers) and self.thread is not None}

    def _watch(self):
        try:
            self._baseline()
        except Exception as exc:  # noqa: BLE001 - a bad file must not stop live updates
            _log.warning("expman: watcher: %s", exc)
        while not self.closed.is_set():
            self.wanted.clear()   # cleared before looking: a subscribe after this wakes us
            if not self.subscribers:
                self.fresh = False
                self.wanted.wait()   # no timeout: an idle server does no periodic work
                continue
            try:
                self.scan()
            except Exception as exc:  # noqa: BLE001 - a bad file must not stop live updates
                _log.warning("expman: watcher: %s", exc)
            self.closed.wait(self.watch_secs)

    def _baseline(self):
        """What exists before anyone watches. Locally the run names only (a listing per
        experiment); on an object store the first scan (it reads the runs once)."""
        if not self.store.is_local:
            self.scan()
            return
        self._list_local()
        self.baseline = {exp: set(names) for exp, names in self.names.items()}
        self.known = {}

    def scan(self):
        """Publish new runs, removed runs and changed ones; keep each run's files cached.

        Locally see _scan_local. On an object store a stat is a request, so a scan lists the
        root and each experiment (a request per 1,000 names), reads new runs, and stats at
        most REMOTE_SCAN_STATS others: runs last seen running in turn (their heartbeat
        moves), and REMOTE_SWEEP_RUNS idle ones in turn (a description edited elsewhere). A
        run.yaml whose (size, mtime) did not change is not read again, and a running run's
        status is recomputed from the cached copy on every scan: that is how a run killed
        on another host turns crashed, no file changing.

        Gathering (list, pick, look) is apart from acting (publish what changed).
        """
        self.scans += 1
        if self.store.is_local:
            self._scan_local()
            self.fresh = True
            return
        previous, first = self.known or {}, self.known is None
        listed, experiments = self._list()
        seen = self._gather(listed, self._to_check(listed, previous), previous)
        self._publish_changes(seen, previous, first)
        self.known, self.experiments = seen, experiments
        self.fresh = True

    # -- local: folder mtimes, live runs, the catalog ------------------------------------
    def _folder_changed(self, path, old):
        """(mtime to remember, whether the folder may hold other names than at `old`). A
        folder changed in the last two seconds is listed again next time: a file system
        stamps times coarsely (ext4: a few ms, others 1-2 s), so a name added right after
        our listing can leave the mtime we saw."""
        st = self.store.stat(path)
        if st is None:
            return None, True
        mtime = st[1]
        remember = mtime if abs(time.time() - mtime) > 2.0 else None
        return remember, old is None or old != mtime

    def _list_local(self):
        """Re-list the root and the experiments whose folder changed; the set of those
        experiments (and of new ones)."""
        store, changed = self.store, set()
        stamp, moved = self._folder_changed(self.root, self.root_stamp)
        if moved:
            self.experiments = sorted(e.name for e in store.listdir(self.root)
                                      if e.is_dir and not e.name.startswith("."))
        self.root_stamp = stamp
        for exp in self.experiments:
            path = store.join(self.root, exp)
            stamp, moved = self._folder_changed(path, self.exp_stamps.get(exp))
            if moved or exp not in self.names:
                self.names[exp] = set(_run_names(store, path))
                changed.add(exp)
            self.exp_stamps[exp] = stamp
        for gone in set(self.names) - set(self.experiments):
            del self.names[gone]
            self.exp_stamps.pop(gone, None)
            changed.add(gone)
        return changed

    def _scan_local(self):
        """One local scan: O(what changed), not O(runs).

        - the root's and each experiment's folder mtime: re-listed only when it moved, and
          the names diffed (new runs are read and announced, removed ones announced);
        - run.yaml of every run not recorded closed (a stat; read again when it changed;
          the status recomputed from the clock: a dead writer turns crashed);
        - LOCAL_SWEEP_RUNS closed runs in turn, and runs edited through this server;
        - an experiment seen for the first time takes its closed runs from the catalog
          (built once if the folder was never listed) and reads only the others.
        """
        now = time.time()
        known = dict(self.known or {})
        self._diff_names(self._list_local(), known)
        self._drop_gone(known)
        for exp in sorted(set(self.names) - self.filled):
            self._fill(exp, known)   # not in the baseline: new since, every run is new
            self.filled.add(exp)
        self._settle_pending(known, now)
        self._stat_picked(self._local_to_check(known), known, now)
        self.known = known

    def _diff_names(self, changed, known):
        """Act on the re-listed experiments (filled ones): new names wait in pending for
        their run.yaml, removed ones are dropped and announced."""
        for exp in changed:
            names = self.names.get(exp, set())
            if exp not in self.filled or exp not in self.names:
                continue  # not filled yet (_fill), or gone (_drop_gone)
            have = {r for (e, r) in known if e == exp} | \
                {r for (e, r) in self.pending if e == exp}
            for name in sorted(names - have):
                self.pending.add((exp, name))
            for name in sorted(have - names):
                self.pending.discard((exp, name))
                if known.pop((exp, name), None) is not None:
                    self.publish("removed", {"experiment": exp, "run": name})

    def _drop_gone(self, known):
        """Forget the experiments whose folder went away, announcing each of their runs."""
        for gone in self.filled - set(self.names):
            self.filled.discard(gone)
            for key in [k for k in known if k[0] == gone]:
                del known[key]
                self.publish("removed", {"experiment": key[0], "run": key[1]})

    def _settle_pending(self, known, now):
        """Folders whose run.yaml had not arrived: read the ones that have it now (announced
        as new runs), forget the ones removed meanwhile."""
        for key in sorted(self.pending):
            if key[1] not in self.names.get(key[0], ()):
                self.pending.discard(key)
                continue
            _key, entry = self._look(key, {})
            if entry is not None:
                self.pending.discard(key)
                known[key] = _restatus(entry, None, now)
                self._announce(key, entry, now, "runs")

    def _local_to_check(self, known):
        """The runs whose run.yaml this scan stats, in order: every live one, the ones edited
        through this server, then LOCAL_SWEEP_RUNS closed ones in turn."""
        recheck, self.recheck = self.recheck, set()
        live = [k for k, e in known.items() if e.meta is not None and not _closed_meta(e.meta)]
        closed = [k for k, e in known.items() if e.meta is None or _closed_meta(e.meta)]
        return dict.fromkeys(live + [k for k in recheck if k in known] +
                             self._turn(closed, "idle", LOCAL_SWEEP_RUNS))

    def _stat_picked(self, check, known, now):
        """Stat the picked runs: a gone run.yaml waits in pending again, a changed stamp or
        status is announced."""
        for key in check:
            old = known[key]
            _key, entry = self._look(key, {key: old})
            if entry is None:   # run.yaml gone, folder still there: wait for it again
                del known[key]
                self.pending.add(key)
                continue
            entry = known[key] = _restatus(entry, old, now)
            if (old.stamp is not None and old.stamp != entry.stamp) or \
                    old.status != entry.status:   # (None: a stamp first taken now)
                self._announce(key, entry, now, "status")

    def _fill(self, exp, known):
        """Entries for every run of an experiment seen for the first time: closed runs from
        its catalog (their status and run.yaml stamp, nothing read), the rest from their
        files. Runs not in the baseline are announced as new."""
        store = self.store
        exp_path = store.join(self.root, exp)
        names = self.names.get(exp, set())
        old = self.baseline.pop(exp, set())

        def closed(entries):
            return {n: e for n, e in entries.items() if n in names and
                    isinstance(e["row"].get("status"), str) and
                    e["row"]["status"] in _FINAL_STATUSES}

        # the run list the page's queries read (made moments ago when the page opened): no
        # second parse of the catalog, which holds the GIL for as long as it takes
        statuses = self.closed_runs(exp) if self.closed_runs is not None else None
        if statuses is None:
            done = closed(_Catalog(store, exp_path).load())
            if len(names) - len(done) > 64:   # never listed through the catalog: build it once
                _scan_runs(store, exp_path, time.time())
                done = closed(_Catalog(store, exp_path).load())
            statuses = {}
            for name, entry in done.items():
                stamp = entry.get("stamp")
                statuses[name] = (entry["row"]["status"], tuple(stamp) if stamp else None)
        for name in names:
            found = statuses.get(name)
            if found is not None and name in old:
                known[(exp, name)] = _RunEntry(found[1], found[0], None, None)
            else:
                self.pending.add((exp, name))
        for key in [k for k in self.pending if k[0] == exp and k[1] in old]:
            _key, entry = self._look(key, {})
            if entry is not None:   # there before anyone watched: not announced
                self.pending.discard(key)
                known[key] = _restatus(entry, None, time.time())

    def _announce(self, key, entry, now, event):
        row = _listed_run_row(self.store, self.store.join(self.root, *key), key[1],
                              entry.meta, entry.config, now)
        if event == "runs":
            self.publish("runs", {"experiment": key[0], "run": row})
        else:
            self.publish("status", row)

    # -- object stores ---------------------------------------------------------------------
    def _list(self):
        """([(experiment, run)], [experiment]) as the root holds them now."""
        store, listed, experiments = self.store, [], []
        for exp in store.listdir(self.root):
            if not exp.is_dir or exp.name.startswith("."):
                continue
            experiments.append(exp.name)
            for run in store.listdir(store.join(self.root, exp.name)):
                if run.is_dir and not run.name.startswith("."):
                    listed.append((exp.name, run.name))
        return listed, experiments

    def _to_check(self, listed, previous):
        """The runs whose run.yaml this scan stats: a budget (object stores)."""
        recheck, self.recheck = self.recheck, set()
        check = [k for k in listed if k not in previous or k in recheck]
        rest = [k for k in listed if k in previous and k not in recheck]
        live = [k for k in rest if previous[k].status == "running"]
        idle = [k for k in rest if previous[k].status != "running"]
        check += self._turn(live, "live", REMOTE_SCAN_STATS - REMOTE_SWEEP_RUNS)
        check += self._turn(idle, "idle", REMOTE_SWEEP_RUNS)
        return check

    def _look(self, key, previous):
        """(key, _RunEntry or None when the run is gone): run.yaml re-read only if it changed."""
        store = self.store
        path = store.join(self.root, *key)
        stamp = store.stat(store.join(path, RUN_YAML))
        old = previous.get(key)
        if stamp is None:
            return key, None
        if old is not None and old.stamp == stamp:
            return key, _RunEntry(stamp, old.status, old.meta, old.config)
        found = _read_run_files(store, path, key[1])
        if found is None:
            return key, None
        return key, _RunEntry(stamp, None, *found)

    def _gather(self, listed, check, previous):
        """{key: _RunEntry} of the listed runs, the checked ones looked at afresh."""
        if len(check) < 8:
            looked = [self._look(key, previous) for key in check]
        else:  # the first scan of a big bucket reads every run once: in parallel
            import concurrent.futures
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                looked = list(pool.map(lambda key: self._look(key, previous), check))
        seen = {key: previous[key] for key in listed if key in previous}
        for key, entry in looked:
            if entry is None:
                seen.pop(key, None)
            else:
                seen[key] = entry
        return seen

    def _publish_changes(self, seen, previous, first):
        """Recompute running runs' status (the clock moves on); publish new and changed runs."""
        now = time.time()
        for key, entry in seen.items():
            old = previous.get(key)
            entry = seen[key] = _restatus(entry, old, now)
            if first or (old is not None and old.stamp == entry.stamp
                         and old.status == entry.status):
                continue
            row = _listed_run_row(self.store, self.store.join(self.root, *key), key[1],
                                  entry.meta, entry.config, now)
            if old is None:
                self.publish("runs", {"experiment": key[0], "run": row})
            else:
                self.publish("status", row)

    def _turn(self, keys, which, count):
        """The next `count` of keys in round-robin order (a cursor per kind)."""
        if not keys or count <= 0:
            return []
        start = self.turns.get(which, 0) % len(keys)
        self.turns[which] = start + count
        return (keys[start:] + keys[:start])[:count]

    # -- the object-store cache behind /api/experiments and /api/experiments/<exp>/runs --
    def cached(self):
        """True when the lists should come from this cache: an object store, watched (a
        stream open and a scan done since it opened; else the lists read the catalog)."""
        return (not self.store.is_local and self.known is not None and self.fresh
                and bool(self.subscribers) and self.thread is not None
                and not self.closed.is_set())

    def run_rows(self, exp):
        now, known = time.time(), self.known or {}
        rows = [_listed_run_row(self.store, self.store.join(self.root, e, r), r, entry.meta,
                                entry.config, now)
                for (e, r), entry in list(known.items()) if e == exp]
        rows.sort(key=lambda r: (_parse_iso(r["started_at"]) or 0, r["name"]), reverse=True)
        return rows

    def experiment_meta(self, exp):
        """experiment.yaml, re-read at most once a minute (it changes about never)."""
        hit = self.exp_meta.get(exp)
        if hit and time.monotonic() - hit[0] < 60:
            return hit[1]
        try:
            meta = _read_yaml(self.store, self.store.join(self.root, exp, EXPERIMENT_YAML))
        except ExpmanError as exc:
            _log.warning("%s", exc)
            meta = {}
        self.exp_meta[exp] = (time.monotonic(), meta)
        return meta

    def experiment_rows(self):
        out = []
        for exp in sorted(self.experiments):
            runs = self.run_rows(exp)
            meta = self.experiment_meta(exp)
            if runs or meta:
                out.append(_experiment_row(exp, meta, runs))
        return out


def _restatus(entry, old, now):
    """entry with a running run's status recomputed from its cached run.yaml and the clock.
    An entry shared with the last scan is never changed in place (the scan compares them)."""
    if entry.status is not None and entry.status != "running":
        return entry
    status = _effective_status(entry.meta, now)
    if old is entry:
        if status == entry.status:
            return entry
        return _RunEntry(entry.stamp, status, entry.meta, entry.config)
    entry.status = status
    return entry


class _Subscriber:
    __slots__ = ("queue", "wake")

    def __init__(self):
        self.queue = collections.deque(maxlen=10_000)
        self.wake = threading.Event()

    def push(self, payload):
        self.queue.append(payload)
        self.wake.set()


def _sse(event, data):
    return f"event: {event}\ndata: {_json_dumps(data)}\n\n".encode()


# -- 11.2 series: metrics and histograms as JSON, downsampled for a chart --------------------------

def _series_json(table, keys, max_points=0, x_min=None, x_max=None, first_row=0):
    """{key: {"step": [...], "time": [...], "value": [...]}} for the rows where key is set.

    With max_points, each series is reduced as _chart_series reduces it (the same points:
    buckets of 2^k table rows, first_row being the table row of the table's first row, each
    keeping its first, min, max and last point and first NaN), so spikes and gaps survive.
    Times are seconds since the epoch.
    """
    out = {}
    steps_all = table.column("step")
    times_all = table.column("timestamp")
    downsampled = False
    for key in keys:
        if key not in table.column_names:
            continue
        values = table.column(key)
        mask = None
        if values.null_count:
            mask = pc.is_valid(values)
        if x_min is not None:
            above = pc.greater_equal(steps_all, _i64_scalar(math.ceil(x_min)))
            mask = above if mask is None else pc.and_(mask, above)
        if x_max is not None:
            below = pc.less_equal(steps_all, _i64_scalar(math.floor(x_max)))
            mask = below if mask is None else pc.and_(mask, below)
        steps, times = steps_all, times_all
        if mask is not None:
            mask = pc.fill_null(mask, _bools(1, False)[0])
            steps, times, values = (pc.filter(a, mask) for a in (steps, times, values))
        if max_points and len(steps) > max_points:
            rows = _arange(first_row, table.num_rows) if mask is None else pc.add(
                pc.indices_nonzero(mask).cast(pa.int64()), _i64_scalar(first_row))
            raw = _m4_rows(rows, steps.cast(pa.int64()), times.cast(pa.timestamp(
                "us", tz="UTC")), values.cast(pa.float64()))
            level = _m4_level(rows[0].as_py(), rows[-1].as_py(), max_points)
            out[key] = _points_json(_m4_points(_m4_combine(raw, level)))
            downsampled = True
            continue
        micros = times.cast(pa.int64())
        finite = pc.all(pc.is_finite(values)).as_py() is not False
        out[key] = {"step": steps.to_pylist(),
                    "time": pc.divide(micros.cast(pa.float64()), 1e6).to_pylist(),
                    "value": values.to_pylist() if finite else
                    [_json_number(v) for v in values.to_pylist()]}
    return out, downsampled


def _chart_series(store, path, keys, max_points, x_min=None, x_max=None, since=0):
    """(series, downsampled, rows, all_keys) of /metrics?max_points=: each series reduced to
    the points _m4_points keeps of buckets of 2^k rows (k from _m4_level), read from the
    run's chart summary where one matches (section 5.2), else from the rows, streamed one
    batch and only the needed columns and row groups at a time. Same points either way."""
    log = _SegmentLog.metrics(store, path)
    _SCAN_CACHE.groups = {}  # this request's decoded edge row groups (see _scan_batches)
    try:
        return log.read(lambda files: _chart_series_once(store, path, files, keys, max_points,
                                                         x_min, x_max, since))
    finally:
        _SCAN_CACHE.groups = None
        # Arrow's allocator keeps freed pages per thread for reuse; a server answers charts
        # from many threads, and kept them all (+100 MB after a page, until restarted).
        # Handing them back costs well under a millisecond per request.
        with contextlib.suppress(Exception):
            pa.default_memory_pool().release_unused()


def _chart_series_once(store, path, files, keys, max_points, x_min, x_max, since):
    sources, seen, rows = _chart_sources(store, path, files, since)
    all_keys = list(seen)
    if since:
        all_keys = _metric_keys(store, path)
    lo = None if x_min is None else math.ceil(x_min)
    hi = None if x_max is None else math.floor(x_max)
    summary = _chart_summary(store, path, files, sources, since,
                             [k for k in keys or all_keys if k in seen])
    out, downsampled = {}, False
    for key in keys or all_keys:
        if key not in seen or not _is_number_type(seen[key]):
            continue
        points, reduced = _key_points(summary, sources, key, max_points, lo, hi, since, rows)
        downsampled = downsampled or reduced
        out[key] = _points_json(points)
    return out, downsampled, rows, all_keys


def _chart_sources(store, path, files, since):
    """(sources, seen, rows) of the metrics files a chart reads: (start, parquet file, path)
    of each readable file not wholly before row `since`, the type of every non-reserved
    column they hold (first seen wins), and the run's row count."""
    sources, seen, rows = [], {}, 0
    for start, end, fpath in files:
        if _link_out_of(store, path, fpath):
            raise InvalidInputError(f"{store.display(fpath)} is a link out of the run")
        if end is not None and end <= since:
            rows = max(rows, end)
            continue
        try:
            pf = store.parquet_file(fpath)
            schema = pf.schema_arrow
        except Exception as exc:  # noqa: BLE001 - a half-written file from a crash
            if _is_missing(exc):
                raise
            _warn(f"expman: skipped unreadable metrics file {store.display(fpath)}: {exc}")
            continue
        n = pf.metadata.num_rows
        sources.append((start, pf, fpath))
        rows = max(rows, start + n if end is None else end)
        for name in schema.names:
            if name not in RESERVED_COLUMNS:
                seen.setdefault(name, schema.field(name).type)
    return sources, seen, rows


def _chart_summary(store, path, files, sources, since, keys=None):
    """The run's chart summary when it may answer a whole read (since 0): a closed run's one
    readable metrics.parquet with its summary; a live (or crashed) run's segments, all
    readable and tiling from row 0, of which some have a summary (a _LiveSummary); None
    otherwise, or when a summary is a link out of the run."""
    if not (since == 0 and sources and len(sources) == len(files)):
        return None
    if len(files) == 1 and files[0][1] is None:
        spath = store.join(path, SUMMARY_FILE)
        if _link_out_of(store, path, spath):
            return None
        found = _open_summary(store, sources[0][2], spath, sources[0][1].metadata.num_rows)
        return found and found.pin()
    if files[0][0] != 0 or any(a[1] != b[0] for a, b in zip(files, files[1:])) or \
            files[-1][1] is None or files[-1][1] < SEGMENT_SUMMARY_MIN_ROWS:
        return None
    sdir = store.join(path, SUMMARY_DIR)
    listed = {f.name: f for f in store.listdir(sdir)}
    pieces = []
    for (start, end, _fpath), source in zip(files, sources):
        info = listed.get(_segment_summary_name(start, end))
        summ = None
        if info is not None and not _link_out_of(store, path, store.join(sdir, info.name)):
            summ = _open_segment_summary(store, store.join(sdir, info.name), start, end,
                                         (info.size, info.mtime))
        pieces.append((start, end, summ, source))
    if all(p[2] is None for p in pieces):
        return None
    return _LiveSummary(pieces, files[-1][1], keys)


class _LiveSummary:
    """The chart summary of a run still in segments: the summaries of its big segments and,
    for the rows of the others, records computed from those rows when first asked (every
    key of the request in one read of each such file, kept for the request). Answers
    records() as _Summary does, so _summary_points serves live and closed runs alike.

    pieces: (start, end, _Summary or None, source) tiling rows [0, rows) in order, source
    being a _chart_sources entry (start, ParquetFile, path); keys: the keys the request
    charts (None: every numeric column)."""

    def __init__(self, pieces, rows, keys=None):
        # consecutive segments without a summary are one piece, read in one pass: a live
        # run's newest segments are many and small, and each pass costs a few ms per key
        self.pieces = []
        for s, e, summ, src in pieces:
            last = self.pieces[-1] if self.pieces else None
            if summ is None and last is not None and last[2] is None:
                self.pieces[-1] = (last[0], e, None, last[3] + [src])
            else:
                self.pieces.append((s, e, summ and summ.pin(), [src]))
        self.k0 = max([SUMMARY_MIN_LEVEL] + [p[2].k0 for p in pieces if p[2] is not None])
        self.top = max(self.k0, (rows - 1).bit_length())
        self.keys = keys
        self._rows_of = {}  # piece index -> {key: its level-k0 records}
        self._levels = {}   # (piece index, level) -> {key: records}, when several keys are asked

    def _row_records(self, key, i):
        found = self._rows_of.get(i)
        if found is None:
            found = self._rows_of[i] = {}
            files = [(start, pf) for start, pf, _path in self.pieces[i][3]]
            keys = set().union(*(_summary_keys(pf.schema_arrow) for _s, pf in files))
            keys = sorted(k for k in keys if self.keys is None or k in self.keys)
            found.update(_summary_table_parts(files, keys, self.k0))
        return found.get(key)

    def _span(self, key, columns):
        """records(key, top) when only the span is asked: from the summaries' spans."""
        count, first, last = 0, None, None
        for i, (_s, _e, summ, _src) in enumerate(self.pieces):
            if summ is not None:
                span = summ.span(key)
            else:
                recs = self._row_records(key, i)
                span = None if recs is None or not recs.num_rows else (
                    pc.sum(recs.column("count")).as_py(), recs.column("first_row")[0].as_py(),
                    recs.column("last_row")[-1].as_py())
            if span:
                count += span[0]
                first = span[1] if first is None else first
                last = span[2]
        values = {"bucket": 0, "count": count, "first_row": first, "last_row": last}
        return pa.Table.from_arrays([_i64s([values[c]] if count else []) for c in columns],
                                    names=list(columns))

    def records(self, key, level, b_lo=None, b_hi=None, s_lo=None, s_hi=None, columns=None):
        """Records of one key and level, buckets [b_lo, b_hi], sorted by bucket. Given s_lo
        or s_hi, segment summaries with no value in steps [s_lo, s_hi] are left out (as a
        _Summary prunes row groups): the caller keeps only the records in that range, and
        one cut by a piece boundary is read from its rows when its other part is out."""
        names = list(_M4_FIELDS) if columns is None else list(columns)
        if level >= self.top and set(names) <= {"bucket", "count", "first_row", "last_row"} \
                and b_lo in (None, 0) and b_hi is None:
            return self._span(key, names)
        parts = []
        for i, (start, end, summ, _src) in enumerate(self.pieces):
            if (b_lo is not None and (end - 1) >> level < b_lo) or (
                    b_hi is not None and start >> level > b_hi):
                continue
            if summ is not None:
                span = summ.span(key) if s_lo is not None or s_hi is not None else ()
                if span is None or (span and ((s_lo is not None and span[4] < s_lo) or (
                        s_hi is not None and span[3] > s_hi))):
                    continue  # no value of key here, or none in the steps asked (a hint)
                have = min(level, summ.top)  # level >= k0 >= summ.k0
                shift = level - have
                if self.keys is not None and len(self.keys) > 1 and \
                        ((end - 1) >> have) - (start >> have) < _SUMMARY_GROUP:
                    # every key of a segment summary's level in one read (one row group
                    # mostly holds them all), not one read of the same group per key
                    found = self._levels.get((i, have))
                    if found is None:
                        found = self._levels[(i, have)] = summ.level_records(have)
                    recs = found.get(key)
                    if recs is None:
                        continue
                else:
                    recs = summ.records(key, have, None if b_lo is None else b_lo << shift,
                                        None if b_hi is None else ((b_hi + 1) << shift) - 1)
            else:
                recs, shift = self._row_records(key, i), level - self.k0
                if recs is None:
                    continue
            if recs.num_rows:
                parts.append(_m4_combine(recs, shift) if shift else recs)
        if not parts:
            return pa.Table.from_arrays([pa.nulls(0, _m4_type(f)) for f in names], names=names)
        recs = _m4_combine(pa.concat_tables(parts), 0)
        if b_lo is not None or b_hi is not None:
            bucket = recs.column("bucket")
            mask = _bools(recs.num_rows, True)
            if b_lo is not None:
                mask = pc.and_(mask, pc.greater_equal(bucket, _i64_scalar(b_lo)))
            if b_hi is not None:
                mask = pc.and_(mask, pc.less_equal(bucket, _i64_scalar(b_hi)))
            recs = recs.filter(mask)
        return recs.select(names)




def _is_number_type(dtype):
    return pa.types.is_floating(dtype) or pa.types.is_integer(dtype)


def _key_points(summary, sources, key, max_points, lo, hi, since, rows):
    """(points, downsampled) of one key: from the chart summary when there is one and it can
    answer, else from the rows."""
    found = None
    if summary is not None:
        found = _summary_points(summary, sources, key, max_points, lo, hi)
    if found is None:
        found = _exact_points(sources, key, max_points, lo, hi, since, rows)
    return found


def _scan_key(sources, key, lo, hi, row_lo, row_hi, shift):
    """key's values in steps [lo, hi] and rows [row_lo, row_hi) of the files, read a batch at
    a time (only step, timestamp and key; only the row groups in the rows): level-0 records
    when shift is None, else records of buckets of 2^shift rows (memory: one batch and the
    buckets)."""
    parts = []
    for start, pf, _path in sources:
        for raw in _scan_file(pf, start, key, lo, hi, row_lo, row_hi):
            parts.append(raw if shift is None else _m4_combine(raw, shift))
            if shift is not None and len(parts) > 64:
                parts = [_m4_combine(pa.concat_tables(parts), 0)]
    if not parts:
        return None
    table = pa.concat_tables(parts)
    return table if shift is None else _m4_combine(table, 0)


def _scan_file(pf, start, key, lo, hi, row_lo, row_hi):
    """Yield the level-0 records of key in steps [lo, hi] and rows [row_lo, row_hi) of one
    file whose first row is `start`, one batch at a time, stopping past row_hi."""
    names = pf.schema_arrow.names
    if key not in names:
        return
    groups, at = _groups_in_rows(pf.metadata, start, row_lo, row_hi)
    if not groups:
        return
    cols = [c for c in ("step", "timestamp") if c in names] + [key]
    small = row_lo is not None and row_hi is not None and row_hi - row_lo <= _EDGE_ROWS
    for batch in _scan_batches(pf, groups, cols, small):
        first, n = at, batch.num_rows
        at += n
        if row_lo is not None and at <= row_lo:
            continue
        # only the rows asked go through _m4_batch: a zoom's edge bucket is a few hundred
        # rows of a row group of 65,536 or more
        a = 0 if row_lo is None else max(0, row_lo - first)
        b = n if row_hi is None else min(n, row_hi - first)
        if b > a:
            raw = _m4_batch(batch if (a, b) == (0, n) else batch.slice(a, b - a), key,
                            first + a, lo, hi)
            if raw is not None:
                yield raw
        if row_hi is not None and at >= row_hi:
            break


def _groups_in_rows(meta, start, row_lo, row_hi):
    """(row groups holding rows of [row_lo, row_hi), the first row of the first of them) of
    a file whose first row is `start`; None bounds are open."""
    groups, at, first = [], start, None
    for i in range(meta.num_row_groups):
        n = meta.row_group(i).num_rows
        if (row_hi is None or at < row_hi) and (row_lo is None or at + n > row_lo):
            groups.append(i)
            first = at if first is None else first
        at += n
    return groups, first


_EDGE_ROWS = 1 << 16      # a scan of at most this many rows reads whole row groups, kept
_SCAN_CACHE_ROWS = 1 << 20  # rows of such row groups one chart request keeps (its edges)
_SCAN_CACHE = threading.local()


def _scan_batches(pf, groups, cols, small=False):
    """The batches of row groups of one file. A small scan (a zoom's edge buckets: the same
    few row groups, asked for the span and again for the points) goes through the request's
    cache of decoded row groups, when _chart_series set one up."""
    if isinstance(pf, _ArrowStreamFile):  # an expman-rs segment: batches in memory
        return pf.read_row_groups(groups, columns=cols).to_batches()
    cache = getattr(_SCAN_CACHE, "groups", None)
    if small and cache is not None:
        return _cached_groups(cache, pf, groups, cols)
    meta = pf.metadata  # no batch larger than the groups read (see _summary_table_parts)
    batch_rows = max(1, min(sum(meta.row_group(g).num_rows for g in groups),
                            max(1 << 12, min(1 << 18, _CELL_BUDGET // 8))))
    return pf.iter_batches(batch_rows, row_groups=groups, columns=cols, use_threads=False)


def _cached_groups(cache, pf, groups, cols):
    """Row groups from the cache, step and timestamp apart from the key's column (shared by
    every key of the request)."""
    for group in groups:
        parts = []
        for part in (cols[:-1], cols[-1:]):
            key = (id(pf), group, tuple(part))
            table = cache.get(key)
            if table is None:
                table = pf.read_row_group(group, columns=part, use_threads=False)
                cache[key] = table
                while len(cache) > 2 and sum(t.num_rows for t in cache.values()) > \
                        _SCAN_CACHE_ROWS:
                    cache.pop(next(iter(cache)))
            parts.append(table)
        yield from pa.Table.from_arrays(parts[0].columns + parts[1].columns,
                                        names=cols).to_batches()


def _exact_points(sources, key, max_points, lo, hi, since, rows):
    """(points, downsampled) of one key from the rows: one pass building buckets of 2^k rows
    (k: at most 65,536 of them) that give the count and span of the values in range and,
    combined, the chart's buckets; a second pass only over the span when the chart needs
    finer buckets or every value (few values, or zoomed in far)."""
    k = SUMMARY_MIN_LEVEL
    while (max(0, rows - since) >> k) > 65536:
        k += 1
    recs = _scan_key(sources, key, lo, hi, since, None, k)
    if recs is None:
        return _m4_no_points(), False
    count = pc.sum(recs.column("count")).as_py()
    first, last = recs.column("first_row")[0].as_py(), recs.column("last_row")[-1].as_py()
    if not max_points or count <= max_points:
        return _m4_points(_scan_key(sources, key, lo, hi, first, last + 1, None)), False
    level = _m4_level(first, last, max_points)
    if level >= k:
        return _m4_points(_m4_combine(recs, level - k)), True
    return _m4_points(_scan_key(sources, key, lo, hi, first, last + 1, level)), True


def _summary_points(summary, sources, key, max_points, lo, hi):
    """(points, downsampled) of one key of a closed run from its summary: the same points
    _exact_points finds, reading summary records and, where a bucket straddles the edge of
    a zoom range, that bucket's rows. None when the summary cannot answer (steps so out of
    order that too many buckets straddle the range): the caller reads the rows."""
    k0 = summary.k0
    if lo is None and hi is None:
        span = _summary_span(summary, key)
    else:
        span = _summary_span_in(summary, sources, key, lo, hi)
    if not span:
        return None if span is None else (_m4_no_points(), False)
    count, first, last = span
    if count <= max_points:
        return _m4_points(_scan_key(sources, key, lo, hi, first, last + 1, None)), False
    level = _m4_level(first, last, max_points)
    if level < k0:  # zoomed in past the finest buckets: the rows (fewer than 2^(k0+1) * q)
        return _m4_points(_scan_key(sources, key, lo, hi, first, last + 1, level)), True
    recs = summary.records(key, level, first >> level, last >> level)
    if lo is None and hi is None:
        return _m4_points(recs), True
    recs = _mend_edges(recs, sources, key, lo, hi, level)
    return None if recs is None else (_m4_points(recs), True)


def _summary_span(summary, key):
    """(count, first row, last row) of all of key's values from the summary's top level;
    None when the summary does not cover key."""
    top = summary.records(key, summary.top, columns=("count", "first_row", "last_row"))
    if not top.num_rows:
        return None  # not a key the summary covers
    count = pc.sum(top.column("count")).as_py()
    return count, top.column("first_row")[0].as_py(), top.column("last_row")[-1].as_py()


def _summary_span_in(summary, sources, key, lo, hi):
    """(count, first row, last row) of key's values in steps [lo, hi]: the finest summary
    buckets wholly inside, and the rows of those straddling an edge. () when none is in the
    range; None when too many buckets straddle (the summary cannot answer)."""
    k0 = summary.k0
    cols = ("bucket", "count", "first_row", "last_row", "step_min", "step_max")
    recs = summary.records(key, k0, s_lo=lo, s_hi=hi, columns=cols)
    inside, partial = _split_range(recs, lo, hi)
    if partial.num_rows > _SUMMARY_MAX_PARTIAL:
        return None
    exact = [_scan_key(sources, key, lo, hi, b << k0, (b + 1) << k0, None)
             for b in partial.column("bucket").to_pylist()]
    exact = [t for t in exact if t is not None]
    count = pc.sum(inside.column("count")).as_py() or 0
    bounds = [t.column("first_row")[0].as_py() for t in exact]
    ends = [t.column("last_row")[-1].as_py() for t in exact]
    count += sum(t.num_rows for t in exact)
    if inside.num_rows:
        bounds.append(inside.column("first_row")[0].as_py())
        ends.append(inside.column("last_row")[-1].as_py())
    if not count:
        return ()
    return count, min(bounds), max(ends)


def _mend_edges(recs, sources, key, lo, hi, level):
    """Records of level `level` limited to steps [lo, hi]: those wholly inside as they are,
    those straddling an edge rebuilt from their rows, sorted by bucket. None when too many
    straddle (the summary cannot answer)."""
    inside, partial = _split_range(recs, lo, hi)
    if partial.num_rows > _SUMMARY_MAX_PARTIAL:
        return None
    fixed = [_scan_key(sources, key, lo, hi, b << level, (b + 1) << level, level)
             for b in partial.column("bucket").to_pylist()]
    recs = pa.concat_tables([inside] + [t for t in fixed if t is not None])
    return recs.take(pc.sort_indices(recs.column("bucket")))


def _split_range(recs, lo, hi):
    """(records wholly inside steps [lo, hi], records partly inside): the rest hold none."""
    smin, smax = recs.column("step_min"), recs.column("step_max")
    inside = overlap = None
    if lo is not None:
        inside = pc.greater_equal(smin, _i64_scalar(lo))
        overlap = pc.greater_equal(smax, _i64_scalar(lo))
    if hi is not None:
        a, b = pc.less_equal(smax, _i64_scalar(hi)), pc.less_equal(smin, _i64_scalar(hi))
        inside = a if inside is None else pc.and_(inside, a)
        overlap = b if overlap is None else pc.and_(overlap, b)
    return recs.filter(inside), recs.filter(pc.and_(overlap, pc.invert(inside)))


def _points_json(points):
    """{"step", "time" (seconds), "value"} of _m4_points' table; NaN/inf as JSON allows."""
    values = points.column("value")
    finite = pc.all(pc.is_finite(values)).as_py() is not False
    micros = points.column("time").cast(pa.int64())
    return {"step": points.column("step").to_pylist(),
            "time": pc.divide(micros.cast(pa.float64()), _lit(pa.float64(), 1e6)).to_pylist(),
            "value": values.to_pylist() if finite else
            [_json_number(v) for v in values.to_pylist()]}


def _m4_no_points():
    return pa.Table.from_arrays(
        [pa.nulls(0, pa.int64()), pa.nulls(0, pa.int64()),
         pa.nulls(0, pa.timestamp("us", tz="UTC")), pa.nulls(0, pa.float64())],
        names=["row", "step", "time", "value"])


def _i64_scalar(value):
    return _buffer_array(pa.int64(), array.array("q", [int(value)]))[0]


def _histograms_json(table, max_steps):
    """{"tags": [...], "histograms": {tag: {"step", "edges", "counts", "min", "max"}},
    "downsampled"}: each tag keeps at most max_steps rows, evenly spread, the last included."""
    rows_of = {}
    for i, tag in enumerate(table.column("tag").to_pylist()):
        rows_of.setdefault(tag, []).append(i)
    out, downsampled = {}, False
    steps = table.column("step").to_pylist()
    for tag, rows in rows_of.items():
        rows.sort(key=lambda i: steps[i])
        if len(rows) > max_steps:
            downsampled = True
            picks = sorted({round(k * (len(rows) - 1) / max(max_steps - 1, 1))
                            for k in range(max_steps)})
            rows = [rows[k] for k in picks]
        part = table.take(_buffer_array(pa.int64(), array.array("q", rows)))
        out[tag] = {"step": part.column("step").to_pylist(),
                    "edges": part.column("edges").to_pylist(),
                    "counts": part.column("counts").to_pylist(),
                    "min": part.column("min").to_pylist(), "max": part.column("max").to_pylist()}
    return {"tags": sorted(out), "histograms": out, "downsampled": downsampled}


# -- 11.3 routes: the JSON API as a table of (method, path, handler) -------------------------------

RUNS_LIST_SECS = 10.0         # a runs query reuses an experiment's rows this long (see _Api)
RUNS_LIST_EXPERIMENTS = 4     # ... of this many experiments at most
RUNS_FIRST_WINDOW = 2_000     # a first query for at most this many newest rows is a window
RUNS_BUILD_WAIT_SECS = 60.0   # the watcher waits this long at most for a list being made
_RUN = "/api/experiments/<exp>/runs/<run>"
_ROUTES = (
    ("GET", "/", "_page"),
    ("GET", "/api/health", "_api_health"),
    ("GET", "/api/experiments", "_api_experiments"),
    ("GET", "/api/projects", "_api_projects"),
    ("GET", "/api/experiments/<exp>/runs", "_api_runs"),
    ("GET", "/api/experiments/<exp>/metadata", "_api_experiment_meta"),
    ("GET", "/api/experiments/<exp>/views", "_api_views"),
    ("PUT", "/api/experiments/<exp>/views/<name>", "_api_view_save"),
    ("POST", "/api/experiments/<exp>/views/<name>", "_api_view_save"),
    ("DELETE", "/api/experiments/<exp>/views/<name>", "_api_view_delete"),
    ("GET", _RUN + "/metadata", "_api_run_meta"),
    ("PATCH", _RUN + "/metadata", "_api_run_meta_patch"),
    ("GET", _RUN + "/config", "_api_config"),
    ("GET", _RUN + "/metrics", "_api_metrics"),
    ("GET", _RUN + "/log", "_api_log"),
    ("GET", _RUN + "/artifacts", "_api_artifacts"),
    ("GET", _RUN + "/artifacts/content", "_api_artifact_content"),
    ("GET", _RUN + "/artifacts/raw", "_api_artifact_raw"),
    ("GET", _RUN + "/media", "_api_media"),
    ("GET", _RUN + "/media/raw", "_api_media_raw"),
    ("GET", _RUN + "/histograms", "_api_histograms"),
    ("GET", "/api/stream", "_api_stream"),
)
_STEP_LIMITS = (-2 ** 63, 2 ** 63 - 1)  # what an int64 step column can hold


def make_app(root=None, live=True, token=None):
    """The dashboard and JSON API for an experiments root, as a WSGI app (a bottle.Bottle).

    >>> app = expman.make_app("experiments")      # serve with any WSGI server
    """
    import bottle

    store, root_path = _open_store(root if root is not None else _default_root())
    app = bottle.Bottle()
    app.uninstall(bottle.JSONPlugin)
    app.install(bottle.JSONPlugin(json_dumps=_json_dumps))
    hub = _Hub(store, root_path, live=live)
    api = _Api(bottle, store, root_path, hub, live, token)
    app.config["expman.hub"] = hub
    app.config["expman.api"] = api
    for method, path, name in _ROUTES:
        app.route(path, method, getattr(api, name))
    app.add_hook("before_request", api.check_token)
    app.add_hook("after_request", api.security_headers)
    for code in (404, 405, 500):
        app.error(code)(api.error)
    hub.start()
    return app


class _Api:
    """The handlers behind _ROUTES, sharing one store, hub and token (a route table instead
    of closures, so a handler can be found, read and called on its own)."""

    def __init__(self, bottle, store, root_path, hub, live, token):
        self.bottle, self.store, self.root_path, self.hub = bottle, store, root_path, hub
        self.live, self.token = live, token
        self.guard = _TokenGuard(token) if token is not None else None
        self.page = DASHBOARD_HTML.replace("__EXPMAN_VERSION__", __version__)
        self.csp = _page_csp(self.page)
        self.streams = 0   # open /api/stream responses (each holds a worker thread)
        self.max_streams = SERVER_THREADS - SERVER_RESERVED_THREADS   # make_server sets it
        self.streams_lock = threading.Lock()
        self.run_lists = collections.OrderedDict()  # exp -> _RunList
        self.exp_rows = {}  # exp -> (stamp, made, its /api/experiments row)
        self.refreshing = set()  # experiments whose list is being made again (refresh_list)
        self.building = {}  # exp -> Event set when the list build_lists makes in a thread is in
        self.quick = 0      # first windows being answered (quick_answer)
        self.list_locks = {}
        self.lists_lock = threading.Lock()
        self.quiet = threading.Condition(self.lists_lock)   # notified when quick drops to 0
        hub.closed_runs = self.closed_runs

    # -- shared pieces -----------------------------------------------------------------
    def fail(self, status, message, headers=None):
        raise self.bottle.HTTPResponse(json.dumps({"error": message}), status=status,
                                       headers={**_JSON_HEADERS, **(headers or {})})

    def param(self, name, kind=int, default=None, low=None, high=None):
        """Query parameter `name` as an int or a finite float between low and high; absent or
        empty: default. Anything else is a 400 that names the parameter (the one parser of
        every handler: a bad value must never reach the code as a 500)."""
        raw = self.bottle.request.query.get(name)
        if not raw:
            return default
        what = "an integer" if kind is int else "a number"
        try:
            value = kind(raw)
        except (ValueError, OverflowError):
            self.fail(400, f"{name} must be {what}, not {raw[:40]!r}")
        if kind is float and not math.isfinite(value):
            self.fail(400, f"{name} must be a finite number")  # nan/inf: a 500 before
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (f"between {low} and {high}" if low is not None and high is not None
                      else f"at least {low}" if low is not None else f"at most {high}")
            self.fail(400, f"{name} must be {bounds}")
        return value

    def run_path(self, exp, run):
        """The run's path; 404 for a run that is not there, 403 for one holding a file the
        server would read that is a link out of the run."""
        store = self.store
        for name, what in ((exp, "experiment"), (run, "run")):
            if not _name_ok(name):
                self.fail(404, f"no such {what}: {name}")
        path = store.join(self.root_path, exp, run)
        if store.stat(store.join(path, RUN_YAML)) is None:
            self.fail(404, f"no such run: {exp}/{run}")
        linked = _run_links_out(store, path)
        if linked is not None:
            self.fail(403, f"{linked} of {exp}/{run} is a link out of the run; not served")
        return path

    def location(self, path):
        return path if self.store.is_local else self.store.display(path)

    def run_url(self, exp, run):
        quote = self.bottle.urlquote
        return f"/api/experiments/{quote(exp)}/runs/{quote(run)}"

    # -- hooks ---------------------------------------------------------------------------
    def check_token(self):
        req = self.bottle.request
        if self.token is None:
            # No token: answer only to loopback names and IP literals. A page on
            # evil.example whose name is re-pointed at 127.0.0.1 (DNS rebinding) is
            # same-origin with its own Host header; it could read every run and PATCH them.
            host = req.get_header("Host")
            if host is not None and not _local_host_header(host):
                self.fail(403, f"Host {host!r} refused: without a token this server answers "
                               f"only to localhost and IP addresses; serve with --token to use "
                               f"a name")
            return
        given = req.get_header("Authorization", "")
        given = given[7:] if given.startswith("Bearer ") else None
        given = given or req.query.get("token") or req.get_cookie("expman_token")
        verdict, wait = self.guard.check(given, req.environ.get("REMOTE_ADDR"))
        if verdict == "limited":
            self.fail(429, f"too many wrong tokens from this address; try again in {wait} s",
                      headers={"Retry-After": str(wait)})
        if verdict != "ok":
            self.fail(401, "this server needs a token: open the URL it printed "
                           "(…/?token=...) or send 'Authorization: Bearer <token>'")

    def security_headers(self):
        resp = self.bottle.response
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "no-referrer")
        resp.set_header("X-Frame-Options", "DENY")
        resp.set_header("Content-Security-Policy", self.csp)
        if self.token is not None and self.bottle.request.query.get("token"):
            resp.set_cookie("expman_token", self.token, httponly=True, samesite="strict",
                            path="/")
            # the token is in this URL: no cache, disk or shared, may keep the response
            resp.set_header("Cache-Control", "no-store")

    def error(self, err):
        self.bottle.response.content_type = "application/json"
        body = err.body if isinstance(err.body, str) and err.body else str(err.status)
        return json.dumps({"error": body})

    # -- the page and the lists ------------------------------------------------------------
    def _page(self):
        self.bottle.response.content_type = "text/html; charset=utf-8"
        # with a token the page is private: never stored by any cache (no-cache still stores)
        self.bottle.response.set_header("Cache-Control",
                                         "no-store" if self.token is not None else "no-cache")
        return self.page

    def _api_health(self):
        return {"status": "ok", "version": __version__,
                "root": self.store.display(self.root_path), "live": self.live,
                "watch": self.hub.stats()}

    def experiment_rows(self):
        """The rows of /api/experiments: each experiment's from the run list a runs query
        reads too (one scan of an experiment serves both the sidebar and the table, and the
        page asks for both at once), or, while nothing in it can have changed, from the row
        made last time: no scan at all (see experiment_row)."""
        if self.hub.cached():  # object store: the watcher's cache, not a request per run
            return self.hub.experiment_rows()
        store = self.store
        if not store.isdir(self.root_path):
            return []
        names = sorted(e.name for e in store.listdir(self.root_path)
                       if e.is_dir and not e.name.startswith(".") and _name_ok(e.name))
        rows, scanned = [], []
        for name in names:
            row = self.experiment_row(name, scanned)
            if row is not None:
                rows.append(row)
        with self.lists_lock:
            for gone in set(self.exp_rows) - set(names):
                del self.exp_rows[gone]
        for _activity, name, runs in scanned:   # the page opens the most recent: keep those
            self.keep_list(name, runs)          # (kept last, whatever the walk evicted)
        return rows

    @contextlib.contextmanager
    def quick_answer(self):
        """Around the work of an answer given without a run list (first_window): a scan for
        a list (build_lists, experiment_row) waits for these to end before it starts, since
        a scan of 10,000 runs beside one slows it several times over (one interpreter lock,
        handed back and forth at each of the scan's 50,000 stats), and it is what a page
        opening waits for."""
        with self.lists_lock:
            self.quick += 1
        try:
            yield
        finally:
            with self.quiet:
                self.quick -= 1
                if not self.quick:
                    self.quiet.notify_all()

    def experiment_row(self, exp, scanned):
        """One experiment's row (None: a folder that is no experiment). Kept while its folder,
        its catalog folder and experiment.yaml keep their stamps and none of its runs was
        live (a live run's heartbeat and status move by themselves), for RUNS_LIST_SECS.
        Its list goes into `scanned` ([(last activity, exp, list)], ascending) if it is among
        the RUNS_LIST_EXPERIMENTS most recently active."""
        store = self.store
        exp_path = store.join(self.root_path, exp)
        yaml_path = store.join(exp_path, EXPERIMENT_YAML)
        yaml_stamp = store.stat(yaml_path)
        stamp = self.list_stamp(exp_path)
        stamp = stamp and stamp + (yaml_stamp,)
        with self.lists_lock:
            hit = self.exp_rows.get(exp)
        if hit and stamp is not None and hit[0] == stamp and \
                time.monotonic() - hit[1] < RUNS_LIST_SECS:
            return hit[2]
        try:
            meta = _read_yaml(store, yaml_path)
        except ExpmanError as exc:
            _log.warning("%s", exc)
            meta = {}
        if not self.list_at_hand(exp, stamp and stamp[:2]):
            # the page asks for this and its first page of runs at once: that one answers
            # from a window of the newest runs (first_window) before this scan starts
            self.wait_quiet()
        runs = self.cached_run_rows(exp)
        row = runs.experiment_row(exp, meta)
        if row is not None:
            scanned.append((_parse_iso(row["last_activity"]) or 0, exp, runs))
            scanned.sort(key=lambda t: t[:2])
            del scanned[:-RUNS_LIST_EXPERIMENTS]
        with self.lists_lock:
            if runs.live:
                self.exp_rows.pop(exp, None)
            else:   # (the list's stamp: the one its scan left, see stamp_after_scan)
                self.exp_rows[exp] = (runs.stamp and runs.stamp + (yaml_stamp,), runs.made, row)
        return row

    def _api_experiments(self):
        project = self.bottle.request.query.getunicode("project")
        rows = self.experiment_rows()
        return {"experiments": _in_project(rows, project) if project else rows}

    def _api_projects(self):
        rows = self.experiment_rows()
        return {"projects": _project_rows(rows),
                "unassigned": sum(1 for e in rows if not e["projects"])}

    def _api_runs(self, exp):
        """RUN_ROWs of an experiment, newest first (only those ?where= holds for). With any
        of sort=, order=, offset=, limit=, names=, format= it is a query (see runs_query): the
        page asks for the rows it shows, sorted and counted on the server, from a list kept
        for a moment."""
        where = self.where()
        if self.runs_query_asked():
            return self.runs_query(exp, where)
        return {"experiment": exp, "runs": [r for r in self.run_rows(exp)
                                            if where is None or where(r)]}

    def run_rows(self, exp):
        store, hub = self.store, self.hub
        if hub.cached() and exp in hub.experiments:
            return hub.run_rows(exp)
        exp_path = store.join(self.root_path, exp)
        if not _name_ok(exp) or not store.isdir(exp_path):
            self.fail(404, f"no such experiment: {exp}")
        runs = _scan_runs(store, exp_path, time.time(), with_config=True)
        return [_confined_row(store, exp_path, r) for r in runs]

    # -- the runs table's queries: sorted, filtered, a window at a time, columnar ----------
    _RUNS_QUERY = ("sort", "order", "offset", "limit", "names", "format", "group",
                   "columns")

    def runs_query_asked(self):
        query = self.bottle.request.query
        return any(name in query for name in self._RUNS_QUERY)

    def list_stamp(self, exp_path):
        """What a kept run list of an experiment is checked against: the (size, mtime) of its
        folder (a run created or deleted moves it) and of its catalog folder (a run that
        closes adds a catalog part); None on object stores (a request each: the TTL alone)."""
        store = self.store
        if not store.is_local:
            return None
        return (store.stat(exp_path), store.stat(store.join(exp_path, CATALOG_DIR)))

    def cached_run_rows(self, exp):
        """run_rows(exp) as a _RunList, reused while list_stamp holds (a new or deleted run
        changes it at once, a closing run too; a run.yaml rewrite does not, and the page
        hears of those over the stream). Scanning 10,000 runs takes ~0.5 s; a sort, a
        filter, a scroll or the experiments list must not pay it again, and requests asking
        at once wait for one scan. A list older than RUNS_LIST_SECS still answers at once
        when none of its runs was live, and is made again beside (refresh_list): edits in
        place made by other processes show a moment later. The last RUNS_LIST_EXPERIMENTS
        lists made are kept."""
        store = self.store
        exp_path = store.join(self.root_path, exp)
        stamp = self.list_stamp(exp_path) if _name_ok(exp) else None
        with self.lists_lock:
            lock = self.list_locks.setdefault(exp, threading.Lock())
            hit = self.run_lists.get(exp)
        if hit and hit.stamp == stamp and stamp is not None and not hit.live and \
                time.monotonic() - hit.made >= RUNS_LIST_SECS:
            self.refresh_list(exp)   # (not waiting for a refresh under way either)
            return hit
        with lock:  # two requests for one experiment: one scan
            with self.lists_lock:
                hit = self.run_lists.get(exp)
            if hit and hit.stamp == stamp and time.monotonic() - hit.made < RUNS_LIST_SECS:
                return hit
            try:
                return self.scan_list(exp, exp_path, stamp)
            except BaseException:
                with self.lists_lock:   # no lock kept per name that was never an experiment
                    if exp not in self.run_lists:
                        self.list_locks.pop(exp, None)
                raise

    def list_at_hand(self, exp, stamp):
        """Whether cached_run_rows(exp) answers without a scan: a list is kept, its stamp still
        holds, and it is young or (closed runs only) may be refreshed beside."""
        with self.lists_lock:
            hit = self.run_lists.get(exp)
        if hit is None or hit.stamp != stamp:
            return False
        return time.monotonic() - hit.made < RUNS_LIST_SECS or \
            (stamp is not None and not hit.live)

    def build_lists(self, names):
        """Make the run lists of the experiments named in a thread (one list at a time, one
        build per experiment at once): the first page and the experiments list were answered
        without them, and the sort, filter or scroll that comes next should find them made."""
        with self.lists_lock:
            names = [n for n in names if n not in self.building]
            for name in names:
                self.building[name] = threading.Event()
        if names:
            threading.Thread(target=self._build_lists, args=(names,), name="expman-list",
                             daemon=True).start()

    def wait_quiet(self):
        """Wait (RUNS_BUILD_WAIT_SECS at most) until no quick_answer is under way."""
        with self.quiet:
            self.quiet.wait_for(lambda: not self.quick, RUNS_BUILD_WAIT_SECS)

    def _build_lists(self, names):
        self.wait_quiet()
        for exp in names:
            try:
                exp_path = self.store.join(self.root_path, exp)
                with self.lists_lock:
                    lock = self.list_locks.setdefault(exp, threading.Lock())
                with lock:   # (a request may have made it meanwhile: then nothing to do)
                    stamp = self.list_stamp(exp_path)
                    if not self.list_at_hand(exp, stamp):
                        self.scan_list(exp, exp_path, stamp)
            except Exception as exc:  # noqa: BLE001 - a vanished experiment: a request says
                _log.debug("expman: run list of %s not made: %s", exp, exc)
            finally:
                with self.lists_lock:
                    done = self.building.pop(exp, None)
                if done is not None:
                    done.set()

    def scan_list(self, exp, exp_path, stamp, rows=None, scanned_at=None):
        """Make and keep an experiment's list (of ``rows`` when the caller scanned them,
        starting at ``scanned_at``, after taking ``stamp``)."""
        if rows is None:
            scanned_at = time.time()
            rows = self.run_rows(exp)
        runs = _RunList(rows, stamp)
        runs.scanned_at = scanned_at
        runs.stamp = self.stamp_after_scan(exp_path, stamp, runs)
        self.prepare_list(runs)
        self.keep_list(exp, runs)
        return runs

    def prepare_list(self, runs):
        """Make what the page's first questions of a new list read before anyone waits on
        them: the newest-first order of every run, their extremes and keys (~0.15 s of
        10,000 runs). A page opening asks for these right after its first page (first_window)
        and sorts or filters right after: made here, with the list, they are not made then,
        at the same time as the sort's own (contending for one interpreter)."""
        if len(runs.rows) <= RUNS_FIRST_WINDOW:
            return   # a small list: made as fast when asked
        ask = {"sort": "started", "order": "desc", "where": "", "names": None,
               "key": _run_sort_key("started")}
        ordered = self.ordered_runs(runs, ask, None)
        runs.orders[("extremes", "", None)] = _run_extremes(ordered)
        runs.keys()
        # A list of 10,000 runs leaves ~300,000 new objects behind: the collector's next
        # full pass (~40 ms) would fall on whichever request comes next, the page's first
        # sort. Made here, with the list, it does not.
        import gc
        gc.collect()

    def refresh_list(self, exp):
        """Make an experiment's kept list again in a thread of its own (one at a time per
        experiment), and tell open streams what changed: a request asked, so this is no
        periodic work, and the request did not wait for it."""
        with self.lists_lock:
            if exp in self.refreshing:
                return
            self.refreshing.add(exp)
        threading.Thread(target=self._refresh_list, args=(exp,), name="expman-list",
                         daemon=True).start()

    def _refresh_list(self, exp):
        store = self.store
        exp_path = store.join(self.root_path, exp)
        try:
            with self.lists_lock:
                lock = self.list_locks.setdefault(exp, threading.Lock())
            with lock:
                with self.lists_lock:
                    old = self.run_lists.get(exp)
                runs = self.scan_list(exp, exp_path, self.list_stamp(exp_path))
            if old is not None:
                self.publish_changes(exp, old, runs)
        except Exception as exc:  # noqa: BLE001 - a vanished experiment: the next request says
            _log.debug("expman: run list of %s not refreshed: %s", exp, exc)
        finally:
            with self.lists_lock:
                self.refreshing.discard(exp)

    def publish_changes(self, exp, old, new):
        """Streams hear of the runs whose rows a refreshed list changed, as the watcher's
        events (runs, status, removed)."""
        if not self.hub.subscribers:
            return
        before = {r["name"]: r for r in old.rows}
        for row in new.rows:
            was = before.pop(row["name"], None)
            if was is None:
                self.hub.publish("runs", {"experiment": exp, "run": row})
            elif was != row:
                self.hub.publish("status", row)
        for name in before:
            self.hub.publish("removed", {"experiment": exp, "run": name})

    def stamp_after_scan(self, exp_path, before, runs):
        """The stamp a new list is kept with: the one taken before the scan, unless the scan
        itself moved it (its first catalog write makes the catalog folder) and nothing else
        did: the same run folders as listed, and no live run that may have closed since."""
        after = self.list_stamp(exp_path) if before is not None else None
        if after == before or runs.live or after is None or after[0] is None:
            return before
        names = _run_names(self.store, exp_path)
        if len(names) == len(runs.rows) and set(names) == {r["name"] for r in runs.rows}:
            return after
        return before

    def keep_list(self, exp, runs):
        """Keep an experiment's list as the newest of at most RUNS_LIST_EXPERIMENTS."""
        with self.lists_lock:
            kept = self.run_lists.get(exp)
            if kept is None or kept.made <= runs.made:
                self.run_lists[exp] = runs
            self.run_lists.move_to_end(exp)
            while len(self.run_lists) > RUNS_LIST_EXPERIMENTS:
                self.run_lists.popitem(last=False)

    def kept_list(self, exp):
        """The kept run list of an experiment if it still holds, else None (nothing read)."""
        stamp = self.list_stamp(self.store.join(self.root_path, exp)) if _name_ok(exp) else None
        with self.lists_lock:
            hit = self.run_lists.get(exp)
        if hit and time.monotonic() - hit.made < RUNS_LIST_SECS and hit.stamp == stamp:
            return hit
        return None

    def closed_runs(self, exp):
        """{run: (status, run.yaml's stamp)} of an experiment's closed runs from its kept run
        list, for the watcher's first look at it (_Hub._fill); None when no list is kept.
        A stat per run, no read (a parse of the catalog holds the GIL for its whole length;
        stats let the requests in between). A run.yaml changed since the scan began (or
        within the file system's coarse mtimes of it) gets a stamp that matches nothing,
        so the watcher reads it and announces what it holds."""
        with self.lists_lock:
            building = self.building.get(exp)
        if building is not None:   # being made (build_lists): wait for it, not a second parse
            building.wait(RUNS_BUILD_WAIT_SECS)
        runs = self.kept_list(exp)
        if runs is None:
            return None
        store = self.store
        exp_path = store.join(self.root_path, exp)
        since, out = runs.scanned_at - 2.0, {}
        for r in runs.rows:
            if r["status"] in _FINAL_STATUSES and not r.get("corrupt"):
                stamp = store.stat(store.join(exp_path, r["name"], RUN_YAML))
                if stamp is not None:
                    out[r["name"]] = (r["status"], stamp if stamp[1] < since else (-1, -1.0))
        return out

    def forget_list(self, exp):
        """Drop the kept list and row of an experiment (a run of it was edited here)."""
        with self.lists_lock:
            self.run_lists.pop(exp, None)
            self.exp_rows.pop(exp, None)

    def runs_query(self, exp, where=None):
        """?sort=COLUMN&order=asc|desc&offset=&limit=&names=a,b&format=rows|columns&where=
        &columns=ID,ID.

        COLUMN is a runs-table column id: name, status, started, duration, steps, tags,
        description, hostname, git, p:<param>, m:<metric> (its last value), min:<metric>,
        max:<metric>; empty values sort last either way, ties by name. names= keeps only the
        runs named, where= those its filter holds for (self.where). The answer counts
        the experiment's runs (total) and those that matched (matched), carries the param
        and metric keys of all runs (the page's column chooser), and the rows [offset,
        offset+limit) as a list or, with format=columns, as columns (see _columns_json).
        columns= keeps only the fields named (see _run_projection), and adds ``varying``:
        the params that take more than one value among the matched runs. The page's params
        vs results view draws 3 fields of 10,000 runs: it asks for those, not 10,000 rows.
        """
        ask = self.runs_query_args()
        first = self.first_window(exp, ask, where)
        if first is not None:
            return first
        runs = self.cached_run_rows(exp)
        ordered = self.ordered_runs(runs, ask, where)
        if ask["group"]:
            return self.runs_grouped(exp, runs, ordered, ask)
        return self.runs_answer(exp, runs, ordered, ask)

    def first_window(self, exp, ask, where):
        """The answer to the page's first question (newest first, rows [offset, offset+limit),
        no filter) when no run list is at hand: straight from a window of the catalog
        (_scan_window with a limit decodes and checks just the newest rows; 10,000 runs: ~0.1
        s, where making the list takes ~1 s), the list then made in a thread (build_lists)
        for what needs every run: other orders, filters, groups. Its counts are exact (the
        folder listing), its rows those the list's first page would hold; it says
        ``partial``: its param and metric keys are those of its rows and its extremes none,
        so the page asks again, and that answer waits for the list. None when the query is
        another, a list is at hand, or the window cannot tell its rows are the newest (start
        times tied across its edge): the list answers."""
        if not self.window_asked(ask, where) or not _name_ok(exp) or self.hub.cached():
            return None
        store = self.store
        exp_path = store.join(self.root_path, exp)
        stamp = self.list_stamp(exp_path)
        if self.list_at_hand(exp, stamp) or not store.isdir(exp_path):
            return None
        end = ask["offset"] + ask["limit"]
        with self.quick_answer():
            scanned_at = time.time()
            rows, beyond, cached = _scan_window(store, exp_path, scanned_at, True, end)
            rows = [_confined_row(store, exp_path, r) for r in rows]
            if not beyond:   # every run was read (a small experiment, or the catalog made
                # anew): that is the list, and the query answers from it
                self.scan_list(exp, exp_path, stamp, rows, scanned_at)
                return None
            by_name = sorted(rows, key=lambda r: _natural_key(str(r["name"])))
            ordered = _sorted_runs(by_name, ask["key"], True)
            edge = _parse_iso(ordered[end - 1]["started_at"]) if len(ordered) >= end else None
            newest_beyond = _start_key(cached.column("started_at")[beyond[0]], beyond[0])[0]
            out = None
            if edge is not None and newest_beyond < edge:   # else a tie across the edge:
                out = self.runs_answer(exp, _RunList(ordered, None), ordered, ask)  # the list
                out.update(total=len(rows) + len(beyond), matched=len(rows) + len(beyond),
                           extremes={}, partial=True)
        self.build_lists([exp])
        return out

    def window_asked(self, ask, where):
        """Whether a runs query is the page's first: newest first, a window from the top of at
        most RUNS_FIRST_WINDOW rows, every run (no where=, names=, group=, columns=)."""
        return (ask["sort"] == "started" and ask["order"] == "desc" and where is None and
                not ask["where"] and ask["names"] is None and not ask["group"] and
                ask["columns"] is None and ask["limit"] is not None and ask["limit"] > 0 and
                ask["offset"] + ask["limit"] <= RUNS_FIRST_WINDOW)

    def runs_query_args(self):
        """A runs query's parameters as a dict (sort, order, format, offset, limit, key: the
        sort key, names, where: its text), each checked: a bad one is a 400 naming it."""
        q = self.bottle.request.query
        sort = q.getunicode("sort") or "started"
        order = q.get("order") or ("asc" if sort in ("name", "status") or sort[:2] == "p:"
                                   else "desc")
        if order not in ("asc", "desc"):
            self.fail(400, "order must be asc or desc")
        form = q.get("format") or "rows"
        if form not in ("rows", "columns"):
            self.fail(400, "format must be rows or columns")
        offset = self.param("offset", default=0, low=0)
        limit = self.param("limit", default=None, low=0)
        key = _run_sort_key(sort)
        pick = q.getunicode("columns")
        try:
            pick = None if pick is None else _run_projection(pick)
        except ValueError as exc:
            self.fail(400, str(exc))
        if key is None:
            self.fail(400, f"sort must be a runs-table column (name, status, started, "
                           f"duration, steps, tags, description, hostname, git, p:<param>, "
                           f"m:<metric>, min:<metric>, max:<metric>), not {sort[:60]!r}")
        group = q.getunicode("group") or ""
        if group and group != "tags" and not (group[:2] == "p:" and len(group) > 2):
            self.fail(400, f"group must be tags or p:<param>, not {group[:60]!r}")
        return {"sort": sort, "order": order, "format": form, "offset": offset,
                "limit": limit, "key": key, "names": q.getunicode("names"),
                "where": q.getunicode("where") or "", "group": group, "columns": pick}

    def ordered_runs(self, runs, ask, where):
        """The rows of a _RunList that where and names= keep, in the order asked for. Scrolling
        asks for page after page of one order: sort once per list, not per page; and each
        column's sort values are made once per list, so another order of it is one sort of
        numbers (see _RunList.ordered)."""
        memo = (ask["sort"], ask["order"], ask["where"], ask["names"])
        ordered = runs.orders.get(memo)
        if ordered is None:
            picked = runs.picked(ask["where"], where, ask["names"])
            ordered = runs.ordered(ask["sort"], ask["key"], ask["order"] == "desc", picked)
            with self.lists_lock:
                runs.orders[memo] = ordered
                while len(runs.orders) > 8:
                    del runs.orders[next(iter(runs.orders))]
        return ordered

    def runs_answer(self, exp, runs, ordered, ask):
        """The answer to a runs query: counts, keys and extremes of all the ordered rows, and
        the window [offset, offset+limit) of them as a list or, with format=columns, as
        columns."""
        offset, limit = ask["offset"], ask["limit"]
        window = ordered[offset:offset + limit if limit is not None else None]
        memo = ("extremes", ask["where"], ask["names"])
        extremes = runs.orders.get(memo)
        if extremes is None:   # the same for every order of these rows: once
            extremes = runs.orders[memo] = _run_extremes(ordered)
        out = {"experiment": exp, "total": len(runs.rows), "matched": len(ordered),
               "offset": offset, "sort": ask["sort"], "order": ask["order"],
               "param_keys": runs.param_keys, "metric_keys": runs.metric_keys,
               "extremes": extremes}
        if ask["columns"] is not None:
            memo = ("varying", ask["where"], ask["names"])
            varying = runs.orders.get(memo)
            if varying is None:
                varying = runs.orders[memo] = _varying_params(ordered)
            out["varying"] = varying
            window = [ask["columns"](row) for row in window]
        if ask["format"] == "columns":
            out["format"], out["count"], out["columns"] = "columns", len(window), \
                _columns_json(window)
        else:
            out["runs"] = window
        return out

    def runs_grouped(self, exp, runs, ordered, ask):
        """A runs query with group=tags|p:<param>: the matching runs folded into one row per
        value (see _run_groups), every group in the order asked for (the group value for
        sort=name); offset and limit do not apply, since the groups of 10,000 runs are few
        and the page holds them all. Counts, keys and extremes are those of the runs."""
        memo = ("group", ask["group"], ask["sort"], ask["order"], ask["where"], ask["names"])
        groups = runs.orders.get(memo)
        if groups is None:
            groups = _run_groups(ordered, ask["group"], ask["key"], ask["order"] == "desc")
            with self.lists_lock:
                runs.orders[memo] = groups
                while len(runs.orders) > 8:
                    del runs.orders[next(iter(runs.orders))]
        out = self.runs_answer(exp, runs, ordered, dict(ask, offset=0, limit=0))
        for name in ("offset", "count", "columns", "runs", "format"):
            out.pop(name, None)
        out["group"], out["groups"] = ask["group"], groups
        return out

    def where(self):
        """The ``where`` query parameter as a RUN_ROW predicate (section 9.6), or None; a
        malformed one is a 400 with ``error``, ``position`` (from 0) and ``expression``."""
        text = self.bottle.request.query.getunicode("where")
        try:
            return _run_filter(text or None)
        except _ExpressionError as exc:
            raise self.bottle.HTTPResponse(json.dumps(
                {"error": str(exc), "position": exc.position, "expression": exc.expression}),
                status=400, headers=_JSON_HEADERS)

    def _api_experiment_meta(self, exp):
        store = self.store
        exp_path = store.join(self.root_path, exp)
        if not _name_ok(exp) or not store.isdir(exp_path):
            self.fail(404, f"no such experiment: {exp}")
        if _links_out(store, store.join(exp_path, EXPERIMENT_YAML)):
            self.fail(403, f"{EXPERIMENT_YAML} of {exp} is a link out of the experiment; "
                           f"not served")
        return _read_yaml(store, store.join(exp_path, EXPERIMENT_YAML))

    # -- saved views: <experiment>/.views/<name>.json, one small file each -----------------
    # One file per view, written whole (temp + rename; one PUT on object stores): two people
    # saving different views never touch the same file, and the same view is last-writer-wins
    # with no torn file. experiment.yaml would need a read-modify-write, and lose one of two.
    def views_dir(self, exp):
        store = self.store
        exp_path = store.join(self.root_path, exp)
        if not _name_ok(exp) or not store.isdir(exp_path):
            self.fail(404, f"no such experiment: {exp}")
        return store.join(exp_path, VIEWS_DIR)

    def view_name(self, name):
        if not _view_name_ok(name):
            self.fail(400, VIEW_NAME_RULE)
        return name

    def same_origin(self):
        """Refuse a cross-site write: the Origin a browser sends must be this server."""
        req = self.bottle.request
        origin = req.get_header("Origin")
        if origin and origin.split("://", 1)[-1] != req.get_header("Host"):
            self.fail(403, f"cross-site request from {origin} refused")

    def _api_views(self, exp):
        store, folder = self.store, self.views_dir(exp)
        views = []
        for entry in sorted(store.listdir(folder), key=lambda e: e.name):
            name = entry.name[:-5] if entry.name.endswith(".json") else None
            if entry.is_dir or not _view_name_ok(name) or entry.size > VIEW_MAX_BYTES:
                continue
            path = store.join(folder, entry.name)
            if _links_out(store, path):
                continue
            try:
                view = json.loads(store.read_bytes(path))
            except (OSError, ValueError):
                continue  # deleted meanwhile, or not ours: the list skips it
            if isinstance(view, dict) and isinstance(view.get("hash"), str):
                views.append({"name": name, "hash": view["hash"],
                              "saved_at": view.get("saved_at")})
        return {"experiment": exp, "views": views}

    def _api_view_save(self, exp, name):
        req = self.bottle.request
        self.same_origin()
        if not (req.content_type or "").startswith("application/json"):
            self.fail(415, "saving a view needs Content-Type: application/json")
        folder, name = self.views_dir(exp), self.view_name(name)
        try:
            body = json.loads(req.body.read(VIEW_MAX_BYTES + 1) or b"{}")
        except ValueError:
            self.fail(400, "body is not valid JSON")
        state = body.get("hash") if isinstance(body, dict) else None
        if not isinstance(state, str) or len(state) > VIEW_MAX_BYTES - 200:
            self.fail(400, "send an object {\"hash\": \"#exp=...\"} (the page's URL hash)")
        if state and not state.startswith("#"):
            state = "#" + state
        view = {"name": name, "hash": state, "saved_at": _iso()}
        self.store.mkdir(folder)
        self.store.write_atomic(self.store.join(folder, name + ".json"),
                                json.dumps(view, indent=1).encode())
        return view

    def _api_view_delete(self, exp, name):
        self.same_origin()
        folder, name = self.views_dir(exp), self.view_name(name)
        path = self.store.join(folder, name + ".json")
        if self.store.stat(path) is None:
            self.fail(404, f"no view named {name!r} in {exp}")
        self.store.delete(path)
        return {"deleted": name}

    # -- one run: metadata, config, metrics, log -----------------------------------------
    def _api_run_meta(self, exp, run):
        path = self.run_path(exp, run)
        try:
            return _json_safe(load_run(self.location(path)))
        except ExpmanError as exc:
            self.fail(500, str(exc))

    def _api_run_meta_patch(self, exp, run):
        path = self.run_path(exp, run)
        body = self.meta_patch_body()
        meta_path = self.store.join(path, RUN_YAML)
        meta = _read_yaml(self.store, meta_path)
        self.patch_meta(meta, body)
        self.store.write_atomic(meta_path, _yaml_dump(meta))
        self.hub.recheck.add((exp, run))  # the cached lists show the edit after the next scan
        if _closed_meta(meta):  # a fresh catalog row: on object stores rows are not stat'ed
            try:
                config = _read_listed_yaml(self.store, self.store.join(path, CONFIG_YAML))
            except ExpmanError:
                config = {}
            _catalog_closed_run(self.store, path, meta, config)
        self.forget_list(exp)   # the kept list holds the old row: the runs queries see it at once
        return _json_safe(load_run(self.location(path)))

    def meta_patch_body(self):
        """A metadata PATCH's body: a same-origin JSON object of description and/or tags."""
        req = self.bottle.request
        if not (req.content_type or "").startswith("application/json"):
            self.fail(415, "PATCH needs Content-Type: application/json")
        self.same_origin()
        try:
            body = json.loads(req.body.read(1 << 20) or b"{}")
        except ValueError:
            self.fail(400, "body is not valid JSON")
        if not isinstance(body, dict) or not body.keys() <= {"description", "tags"}:
            self.fail(400, "send an object with 'description' and/or 'tags'")
        return body

    def patch_meta(self, meta, body):
        """The run.yaml dict meta with the body's description and tags, checked and clipped."""
        if "description" in body:
            if not isinstance(body["description"], str):
                self.fail(400, "description must be a string")
            meta["description"] = body["description"][:10_000]
        if "tags" in body:
            tags = body["tags"]
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                self.fail(400, "tags must be a list of strings")
            meta["tags"] = [t.strip()[:100] for t in tags if t.strip()][:100]

    def _api_config(self, exp, run):
        path = self.run_path(exp, run)
        try:
            return {"config": _json_safe(_read_yaml(self.store,
                                                    self.store.join(path, CONFIG_YAML)))}
        except ExpmanError as exc:
            self.fail(500, str(exc))

    def _api_metrics(self, exp, run):
        path = self.run_path(exp, run)
        since = self.param("since", default=0, low=0, high=_STEP_LIMITS[1])
        max_points = self.param("max_points", default=0, low=0, high=_STEP_LIMITS[1])
        x_min = self.param("x_min", float, None, *_STEP_LIMITS)
        x_max = self.param("x_max", float, None, *_STEP_LIMITS)
        q = self.bottle.request.query
        keys = [k for k in (q.getunicode("keys") or "").split(",") if k]
        if max_points:  # a chart: the summary's buckets, or the rows a batch at a time
            series, downsampled, rows, all_keys = _chart_series(
                self.store, path, keys, max_points, x_min, x_max, since)
            return {"run": f"{exp}/{run}", "keys": all_keys, "rows": max(rows, since),
                    "next_since": max(rows, since), "downsampled": downsampled,
                    "series": series}
        table = load_metrics(self.location(path), keys=keys or None, since_row=since)
        if keys or since:
            all_keys = _metric_keys(self.store, path)
        else:  # every file was just read whole: no second pass over their footers (on an
            # object store that pass is a listing and two requests per file)
            all_keys = [c for c in table.column_names if c not in RESERVED_COLUMNS]
        series, downsampled = _series_json(table, keys or all_keys, max_points, x_min, x_max)
        return {"run": f"{exp}/{run}", "keys": all_keys, "rows": since + table.num_rows,
                "next_since": since + table.num_rows, "downsampled": downsampled,
                "series": series}

    def _api_log(self, exp, run):
        """?since=<byte offset> (never negative, as for metrics) or ?tail=<bytes>: the end."""
        path = self.run_path(exp, run)
        since = self.param("since", default=0, low=0)
        tail = self.param("tail", default=None, low=1)
        text, nxt = load_log(self.location(path), -tail if tail else since)
        st = self.store.stat(self.store.join(path, RUN_LOG))
        return {"text": text, "next": nxt, "size": st[0] if st else 0}

    # -- artifacts -------------------------------------------------------------------------
    def _api_artifacts(self, exp, run):
        return {"artifacts": list_artifacts(self.location(self.run_path(exp, run)))}

    def artifact(self, exp, run):
        store = self.store
        path = self.run_path(exp, run)
        rel = self.bottle.request.query.getunicode("path") or ""
        try:
            full = _artifact_path(store, path, rel)
        except InvalidInputError as exc:
            self.fail(403 if ".." in rel or rel.startswith("/") else 400, str(exc))
        try:
            st = store.stat(full)
            is_dir = st is not None and store.isdir(full)
        except OSError as exc:  # a name too long for the filesystem: a 500 before
            self.fail(400, f"bad artifact path: {exc.strerror or exc}")
        if st is None or is_dir:
            self.fail(404, f"no such artifact: {rel}")
        return path, rel, full, st[0]

    def _api_artifact_content(self, exp, run):
        _path, rel, full, size = self.artifact(exp, run)
        kind = _artifact_kind(rel)
        raw_url = (f"{self.run_url(exp, run)}/artifacts/raw?path="
                   f"{self.bottle.urlquote(rel)}")
        if kind == "table":
            try:
                return {"kind": "table", "path": rel, **_table_preview(self.store, full, rel)}
            except Exception as exc:  # noqa: BLE001 - a broken file still downloads
                return {"kind": "binary", "path": rel, "size": size, "url": raw_url,
                        "error": f"cannot preview: {exc}"}
        if kind == "text":
            data = self.store.read_range(full, 0, 256 * 1024)
            return {"kind": "text", "path": rel, "text": data.decode("utf-8", "replace"),
                    "truncated": size > len(data)}
        return {"kind": kind, "path": rel, "size": size, "url": raw_url}

    def _api_artifact_raw(self, exp, run):
        _path, rel, full, size = self.artifact(exp, run)
        ext = os.path.splitext(rel)[1].lower()
        headers = {"Content-Length": str(size), "Cache-Control": "no-cache"}
        if ext in _IMAGE_EXT:  # never SVG: it can carry script
            headers["Content-Type"] = "image/" + {".jpg": "jpeg"}.get(ext, ext[1:])
        else:
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Disposition"] = _attachment(os.path.basename(rel))
        return self.bottle.HTTPResponse(self.store.read_bytes(full), **{"headers": headers})

    # -- media and histograms ------------------------------------------------------------
    def _api_media(self, exp, run):
        path = self.run_path(exp, run)
        q = self.bottle.request.query
        since = self.param("since", default=0, low=0)
        kind, tag = q.get("kind") or None, q.getunicode("tag") or None
        if kind is not None and kind not in MEDIA_KINDS:
            self.fail(400, f"kind must be one of {', '.join(MEDIA_KINDS)}")
        items, nxt, bad, _torn = _read_media_index(self.store, path, since)
        base = f"{self.run_url(exp, run)}/media/raw?path="
        out = []
        for item in items:
            if (tag is None or item["tag"] == tag) and (kind is None or item["kind"] == kind):
                if isinstance(item.get("path"), str):
                    item["url"] = base + self.bottle.urlquote(item["path"])
                out.append(item)
        return {"run": f"{exp}/{run}", "items": out, "next": nxt, "skipped": bad}

    def _api_media_raw(self, exp, run):
        store, bottle = self.store, self.bottle
        path = self.run_path(exp, run)
        rel = bottle.request.query.getunicode("path") or ""
        try:
            full = _media_path(store, path, rel)
        except InvalidInputError as exc:
            self.fail(403 if ".." in rel or "leaves" in str(exc) else 400, str(exc))
        try:
            st = store.stat(full)
        except OSError as exc:
            self.fail(400, f"bad media path: {exc.strerror or exc}")
        if st is None or store.isdir(full):
            self.fail(404, f"no such media file: {rel}")
        # the type comes from the allowlist, never from the file: no HTML or SVG, ever
        mime = _MEDIA_TYPES[os.path.splitext(rel)[1].lower().lstrip(".")]
        size = st[0]
        headers = {"Content-Type": mime, "Content-Length": str(size), "Accept-Ranges": "bytes",
                   "Cache-Control": "private, max-age=86400"}  # media files never change
        wanted = bottle.request.environ.get("HTTP_RANGE")
        if wanted:  # <video> and <audio> seek with range requests
            ranges = list(bottle.parse_range_header(wanted, size))
            if not ranges:
                raise bottle.HTTPResponse(status=416, headers={
                    "Content-Range": f"bytes */{size}", "Content-Type": "text/plain"})
            start, end = ranges[0]
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            headers["Content-Length"] = str(end - start)
            return bottle.HTTPResponse(store.read_range(full, start, end - start), status=206,
                                       **{"headers": headers})
        return bottle.HTTPResponse(store.read_bytes(full), **{"headers": headers})

    def _api_histograms(self, exp, run):
        path = self.run_path(exp, run)
        max_steps = self.param("max_steps", default=60, low=1, high=1000)
        tag = self.bottle.request.query.getunicode("tag") or None
        table = _load_histograms(self.store, path, tag)
        return {"run": f"{exp}/{run}", **_histograms_json(table, max_steps)}

    # -- the live stream -------------------------------------------------------------------
    def _api_stream(self):
        """SSE: ?runs=exp/run[:since],... (each run once, however often it is named).

        Each open stream holds a Waitress thread, so streams get at most max_streams of them
        and the page and API keep the rest: one more stream is a 503 with Retry-After."""
        req = self.bottle.request
        cursors = self.stream_cursors(req.query)
        with self.streams_lock:
            if self.streams >= self.max_streams:
                self.fail(503, f"{self.streams} live streams are open, the most this server "
                               f"keeps; try again later", headers={
                                   "Retry-After": str(SSE_RETRY_SECS)})
            self.streams += 1
        resp = self.bottle.response
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        disconnected = req.environ.get("waitress.client_disconnected") or (lambda: False)
        return _stream(self.hub, cursors, disconnected, self.stream_closed)

    def stream_closed(self):
        with self.streams_lock:
            self.streams -= 1

    def stream_cursors(self, query):
        cursors = {}
        for item in self.stream_items(query):
            name, start = self.stream_item(item)
            known = cursors.get(name)
            if known is not None:  # named again: one cursor, from the earlier row
                if start is not None and (known.rows is None or start < known.rows):
                    known.rows = start
                continue
            exp, _, run = name.partition("/")
            try:
                path = self.run_path(exp, run)
            except self.bottle.HTTPResponse:
                self.fail(400, f"bad run in runs=: {item}")
            cursors[name] = _StreamCursor(name, path, start)
        return list(cursors.values())

    def stream_items(self, query):
        """The items of runs= (exp/run or exp/run:row), 500 different ones at most."""
        runs = query.getunicode("runs")
        if runs is None and query.get("runs"):  # bottle gives None for bad UTF-8: it
            self.fail(400, "runs= is not valid UTF-8")  # was taken for "no runs" (an empty 200)
        items = [item for item in (runs or "").split(",") if item]
        if len(set(items)) > 500:
            self.fail(400, "at most 500 runs per stream")
        return items

    def stream_item(self, item):
        """One item of runs= as (exp/run, the row to start from or None)."""
        name, _, since = item.partition(":")
        try:
            start = int(since) if since else None
        except ValueError:
            self.fail(400, f"bad run in runs=: {item}")
        if start is not None and not 0 <= start <= _STEP_LIMITS[1]:
            self.fail(400, f"bad run in runs=: {item}")
        return name, start


# The runs table sorts on the server as the page sorted it: empty values (None, "", NaN) last
# whichever the order, numbers before text (after it, descending), text compared without case
# and with digits as numbers (run2 < run10), ties by name.
_RUN_STATUS_ORDER = {"running": 0, "failed": 1, "crashed": 2, "interrupted": 3, "finished": 4}
_NATURAL_PARTS = re.compile(r"(\d+)")


def _natural_key(text):
    parts = _NATURAL_PARTS.split(text.casefold())
    return tuple((0, int(p), "") if i % 2 else (1, 0, p) for i, p in enumerate(parts) if p)


def _run_name(row):
    return row["name"]


def _run_sort_key(column):
    """A function of a RUN_ROW giving the value the page sorts the column by, or None for a
    column the table does not have."""
    fixed = {"name": _run_name,
             "status": lambda r: _RUN_STATUS_ORDER.get(r.get("status"), 9),
             "started": lambda r: _parse_iso(r.get("started_at")),
             "tags": _run_tags_text}
    fields = {"duration": "duration_secs", "steps": "last_step", "description": "description",
              "hostname": "hostname", "git": "git_commit"}
    if column in fixed:
        return fixed[column]
    if column in fields:
        field = fields[column]
        return lambda r: r.get(field)
    kind, _, name = column.partition(":")
    return _run_keyed_sort_key(kind, name) if name else None


def _run_tags_text(row):
    """The tags column's sort value: the tags joined by spaces; no tags is empty."""
    return " ".join(str(t) for t in row.get("tags") or ()) or None


def _run_keyed_sort_key(kind, name):
    """The sort key of a column named by kind and key (p:<param>, m:<metric>, min:<metric>,
    max:<metric>), or None for another kind."""
    if kind == "p":
        return lambda r: (r.get("params") or {}).get(name)
    if kind not in ("m", "min", "max"):
        return None
    field = "summary" if kind == "m" else "summary_" + kind  # summary_min/max: None unrecorded
    return lambda r: _sort_number((r.get(field) or {}).get(name))


def _sort_number(value):
    """A metric's value as the page reads it (Number(text)); NaN and unreadable are empty."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if value != value else value


def _sort_values(rows, key):
    """[(kind, value)] of rows as the runs table sorts them: kind 0 a number, 1 a text (its
    natural key), 2 empty (None, "", NaN: last either way)."""
    out = []
    for row in rows:
        value = key(row)
        if value is None or value == "" or (isinstance(value, float) and value != value):
            out.append((2, None))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((0, value))
        else:
            text = ("true" if value else "false") if isinstance(value, bool) else (
                value if isinstance(value, str) else _json_dumps(value))
            out.append((1, _natural_key(text)))
    return out


def _sorted_positions(values, positions, descending):
    """positions (ascending) ordered by values[p]: numbers, then texts (texts first when
    descending), empty last; ties keep their order (name order)."""
    numbers, texts, empty = [], [], []
    for p in positions:
        kind = values[p][0]
        (numbers if kind == 0 else texts if kind == 1 else empty).append(p)
    numbers.sort(key=lambda p: values[p][1], reverse=descending)   # stable: ties by name
    texts.sort(key=lambda p: values[p][1], reverse=descending)
    first, then = (texts, numbers) if descending else (numbers, texts)
    return first + then + empty


def _sorted_runs(rows, key, descending):
    """rows (in name order) sorted by key(row) as the runs table sorts them (the group rows
    of group=, which are made per query and so have no kept sort values)."""
    if key is _run_name:  # already in that order
        return rows[::-1] if descending else list(rows)
    return [rows[i] for i in _sorted_positions(_sort_values(rows, key), range(len(rows)),
                                               descending)]


class _RunList:
    """An experiment's RUN_ROWs as a runs query reads them: in name order (every sort's tie
    order), with the param and metric keys of all of them, made once per scan, and the
    orders asked for since, each column's sort values, the rows each filter keeps, and the
    experiment's /api/experiments row. All of it goes with the list (RUNS_LIST_SECS). The
    name order and the keys are made when a query first asks: the experiments list alone
    (the sidebar, the watcher) never needs them."""
    __slots__ = ("made", "stamp", "rows", "_by_name", "_keys", "orders", "values", "picks",
                 "live", "summary", "lock", "scanned_at")

    def __init__(self, rows, stamp):
        self.made, self.stamp = time.monotonic(), stamp
        self.orders = {}  # (sort, order, where, names) -> rows in that order, the last 8
        self.values = {}  # column -> _sort_values of by_name, the last 16 columns
        self.picks = {}   # (where, names) -> positions in by_name that they keep, the last 8
        self.summary = None  # (experiment.yaml it was made with, the experiment's row)
        self.lock = threading.Lock()   # requests of one page come on several threads
        self.rows = rows   # as the scan gave them
        self.scanned_at = time.time()   # (wall clock) when the scan began: scan_list sets it
        self._by_name = self._keys = None
        # a running run's row moves by itself (heartbeat, status)
        self.live = any(row.get("status") == "running" for row in rows)

    @property
    def by_name(self):
        if self._by_name is None:
            by_name = sorted(self.rows, key=lambda r: _natural_key(str(r["name"])))
            with self.lock:
                if self._by_name is None:
                    self._by_name = by_name
        return self._by_name

    @property
    def param_keys(self):
        return self.keys()[0]

    @property
    def metric_keys(self):
        return self.keys()[1]

    def keys(self):
        """(param keys, metric keys) of all the runs, sorted."""
        if self._keys is None:
            params, metrics = set(), set()
            for row in self.rows:
                params.update(row.get("params") or ())
                metrics.update(row.get("summary") or ())
            self._keys = (sorted(params), sorted(metrics))
        return self._keys

    def picked(self, text, where, names):
        """Positions (ascending) of the rows that the filter `where` (made from `text`, or
        None) and names= (comma-separated, or None) keep."""
        memo = (text, names)
        hit = self.picks.get(memo)
        if hit is None:
            rows, hit = self.by_name, range(len(self.by_name))
            if where is not None:
                hit = [i for i in hit if where(rows[i])]
            if names is not None:
                wanted = set(names.split(","))
                hit = [i for i in hit if rows[i]["name"] in wanted]
            with self.lock:
                self.picks[memo] = hit
                while len(self.picks) > 8:
                    del self.picks[next(iter(self.picks))]
        return hit

    def ordered(self, column, key, descending, positions):
        """The rows at positions, sorted by the column (its key function) as the table sorts."""
        rows = self.by_name
        if key is _run_name:  # already in that order
            return [rows[i] for i in (reversed(positions) if descending else positions)]
        values = self.values.get(column)
        if values is None:
            values = _sort_values(rows, key)
            with self.lock:
                self.values[column] = values
                while len(self.values) > 16:
                    del self.values[next(iter(self.values))]
        return [rows[i] for i in _sorted_positions(values, positions, descending)]

    def experiment_row(self, exp, meta):
        """The experiment's /api/experiments row (None for a folder with neither runs nor an
        experiment.yaml), made once per list and experiment.yaml."""
        hit = self.summary
        if hit is None or hit[0] != meta:
            row = _experiment_row(exp, meta, self.rows) if self.rows or meta else None
            hit = self.summary = (meta, row)
        return hit[1]


def _run_extremes(rows):
    """{column id: [lowest, highest]} of the metric columns (m:KEY, min:KEY, max:KEY) over
    rows: the paged table marks the best value of a column among every matching run, not
    only among the rows it holds. Values as the table reads them (_sort_number); NaN and
    infinities left out."""
    out, number = {}, (int, float)
    for prefix, field in (("m:", "summary"), ("min:", "summary_min"), ("max:", "summary_max")):
        columns = {}
        for row in rows:
            values = row.get(field)
            if values:
                for key, value in values.items():
                    column = columns.get(key)
                    if column is None:
                        column = columns[key] = []
                    column.append(value)
        for key, column in columns.items():
            # the common case (floats and ints) without a call per value; bools are not numbers
            found = [v for v in column if type(v) in number]
            if len(found) < len(column):
                found += [v for v in map(_sort_number, (v for v in column
                                                         if type(v) not in number))
                          if v is not None]
            found = [v for v in found if v == v and v != math.inf and v != -math.inf]
            if found:
                out[prefix + key] = [min(found), max(found)]
    return out


def _run_group_value(row, by):
    """A run's value for group=: its param p:<key> (None when not set), or for tags its tags
    sorted and joined by ", " (None when it has none)."""
    if by == "tags":
        tags = sorted((str(t) for t in row.get("tags") or ()), key=_natural_key)
        return ", ".join(tags) or None
    value = (row.get("params") or {}).get(by[2:])
    return None if value == "" else value


def _run_groups(rows, by, key, descending):
    """rows (in table order) folded by their group value (_run_group_value) into one row per
    group, a RUN_ROW-like dict the runs table's columns read as they read a run's:

      value, count, names   the group's value, its runs' number and names (in table order)
      status                the most urgent of its runs' (running first, as the table sorts)
      started_at            the earliest start; duration_secs, last_step: the largest; rows: sum
      tags                  every tag of its runs; params: those all its runs share
      summary, summary_min, summary_max   per metric, the mean over its runs that have one
      spread                {column id: [lowest, highest, runs with a value]} of m:, min:, max:

    The groups are sorted with key (a runs-table column's) applied to these rows, by value
    for the name column; like runs, groups with no value for the column come last."""
    folded = {}
    for row in rows:
        value = _run_group_value(row, by)
        folded.setdefault(_json_dumps(value), (value, []))[1].append(row)
    groups = [_run_group_row(value, members) for value, members in folded.values()]
    if key is _run_name:  # the group's value, not a run's name; no value last either way
        return _sorted_runs(groups, _group_value, descending)
    by_value = _sorted_runs(groups, _group_value, False)   # ties in value order
    return _sorted_runs(by_value, key, descending)


def _group_value(group):
    return group["value"]


def _run_group_row(value, members):
    """One group's row (see _run_groups): its runs' fields folded by the helpers below."""
    starts = [(t, r.get("started_at")) for r in members
              for t in [_parse_iso(r.get("started_at"))] if t is not None]
    durations = _group_numbers(members, "duration_secs")
    steps = _group_numbers(members, "last_step")
    out = {"name": _group_label(value), "value": value, "count": len(members),
           "names": [r["name"] for r in members], "status": _group_status(members),
           "started_at": min(starts)[1] if starts else None,
           "duration_secs": max(durations) if durations else None,
           "last_step": max(steps) if steps else None,
           "rows": sum(r.get("rows") or 0 for r in members if isinstance(r.get("rows"), int)),
           "tags": list(dict.fromkeys(str(t) for r in members for t in r.get("tags") or ())),
           "params": _group_shared_params(members), "spread": {}}
    for prefix, field in (("m:", "summary"), ("min:", "summary_min"), ("max:", "summary_max")):
        values = _group_metric_values(members, field)
        out[field] = {k: math.fsum(vs) / len(vs) for k, vs in values.items()}
        for k, vs in values.items():
            out["spread"][prefix + k] = [min(vs), max(vs), len(vs)]
    return out


def _group_label(value):
    """The group row's name: its value as text ("" for no value, JSON for a non-string)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else _json_dumps(value)


def _group_status(members):
    """The most urgent status among a group's runs (running first, as the table sorts)."""
    urgent = min(members, key=lambda r: _RUN_STATUS_ORDER.get(r.get("status"), 9))
    return urgent.get("status")


def _group_numbers(members, field):
    """The runs' values of field that sort as numbers (_sort_number), others left out."""
    return [v for v in (_sort_number(r.get(field)) for r in members) if v is not None]


def _group_shared_params(members):
    """The params every run of the group has with one value (compared as JSON)."""
    first = members[0].get("params") or {}
    return {k: v for k, v in first.items()
            if all(k in (r.get("params") or {}) and
                   _json_dumps(r["params"][k]) == _json_dumps(v) for r in members[1:])}


def _group_metric_values(members, field):
    """{metric key: [finite numeric values of the runs' field dict (summary, summary_min or
    summary_max)]}, keys in first-seen order."""
    values = {}
    for row in members:
        for k, v in (row.get(field) or {}).items():
            v = _sort_number(v)
            if v is not None and v not in (math.inf, -math.inf):
                values.setdefault(k, []).append(v)
    return values


# columns=: the RUN_ROW fields a runs query answers with. An id is a field of the row (status,
# tags, params, ...) or one key of its dicts: p:KEY (params), m:KEY (summary, the last value),
# min:KEY, max:KEY (summary_min/summary_max); the run's name always comes. Ids are split at
# commas, so a key with a comma in it cannot be picked alone (ask for "params" whole).
_RUN_ROW_DICTS = {"p": "params", "m": "summary", "min": "summary_min", "max": "summary_max"}
_RUN_ROW_FIELDS = ("name", "experiment", "path", "status", "started_at", "finished_at",
                   "duration_secs", "heartbeat_at", "description", "tags", "hostname", "pid",
                   "command", "git_commit", "rows", "last_step", "params", "summary",
                   "summary_min", "summary_max", "project", "group", "rank", "world_size")


def _run_projection(text):
    """A function RUN_ROW -> the row with only the fields of columns= text; ValueError names
    an id that is no field (a typo would otherwise answer with nothing, silently)."""
    whole, keyed = ["name"], {}
    for part in text.split(","):
        kind, colon, key = part.partition(":")
        if colon and kind in _RUN_ROW_DICTS and key:
            keyed.setdefault(_RUN_ROW_DICTS[kind], []).append(key)
        elif not colon and part in _RUN_ROW_FIELDS:
            whole.append(part)
        else:
            raise ValueError(f"columns: {part[:60]!r} is not a run field ("
                             f"{', '.join(_RUN_ROW_FIELDS)}) nor p:/m:/min:/max:<key>")
    keyed = {f: keys for f, keys in keyed.items() if f not in whole}

    def project(row):
        out = {f: row.get(f) for f in whole}
        for field, keys in keyed.items():
            have = row.get(field) or {}
            out[field] = {k: have[k] for k in keys if k in have}
        return out
    return project


def _varying_params(rows):
    """The param keys with more than one value among rows (missing and null not counted, as
    the page counts them: 1 and 1.0 are one value, true and 1 two)."""
    first, varying = {}, set()
    for row in rows:
        for key, value in (row.get("params") or {}).items():
            if value is None or key in varying or isinstance(value, (dict, list)):
                continue   # the page's axes skip lists and dicts too
            mark = (type(value) is bool, value) if value == value else "nan"
            seen = first.setdefault(key, mark)
            if seen != mark:
                varying.add(key)
    return sorted(varying, key=_natural_key)


def _columns_json(rows):
    """RUN_ROWs as columns: {field: COLUMN}, each field named once, not once per run.

    A COLUMN is a list of the rows' values when every row has the field, else
    {"sparse": [row indices], "values": [their values]}; a field that is a dict in every row
    (params, summary) is {"fields": {key: COLUMN}}, so 10,000 runs' params cost their values,
    not 10,000 copies of their names. Decoding it gives the rows back exactly."""
    n = len(rows)
    fields = {}
    for row in rows:
        for name in row:
            fields.setdefault(name, None)
    out = {}
    for name in fields:
        present = [i for i, row in enumerate(rows) if name in row]
        values = [rows[i][name] for i in present]
        if len(present) == n and n and all(isinstance(v, dict) for v in values):
            keys = {}
            for v in values:
                for k in v:
                    keys.setdefault(k, None)
            out[name] = {"fields": {k: _column(values, k) for k in keys}}
        elif len(present) == n:
            out[name] = values
        else:
            out[name] = {"sparse": present, "values": values}
    return out


def _column(dicts, key):
    present = [i for i, d in enumerate(dicts) if key in d]
    if len(present) == len(dicts):
        return [d[key] for d in dicts]
    return {"sparse": present, "values": [dicts[i][key] for i in present]}


def _table_preview(store, full, rel, limit=100):
    """First rows of a parquet/csv/arrow artifact, every cell as JSON-safe text or number."""
    ext = os.path.splitext(rel)[1].lower()
    if ext == ".parquet":
        pf = store.parquet_file(full)
        total = pf.metadata.num_rows
        batch = next(pf.iter_batches(batch_size=limit), None)
        table = pa.Table.from_batches([batch]) if batch is not None else \
            pf.schema_arrow.empty_table()
    elif ext in (".arrow", ".feather"):
        import pyarrow.feather as feather
        table = feather.read_table(pa.BufferReader(store.read_bytes(full)))
        total = table.num_rows
        table = table.slice(0, limit)
    else:
        import csv as _csv
        data = store.read_range(full, 0, 1 << 20).decode("utf-8", "replace")
        reader = _csv.reader(io.StringIO(data), delimiter="\t" if ext == ".tsv" else ",")
        rows = [r for _, r in zip(range(limit + 1), reader)]
        header, body = (rows[0], rows[1:]) if rows else ([], [])
        return {"columns": [{"name": h, "type": "string"} for h in header], "rows": body,
                "total_rows": None}
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    rows = []
    pylists = [table.column(i).to_pylist() for i in range(table.num_columns)]
    for i in range(table.num_rows):
        rows.append([_cell(col[i]) for col in pylists])
    return {"columns": columns, "rows": rows, "total_rows": total}


def _cell(value):
    if isinstance(value, float):
        return _json_number(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


# -- 11.4 SSE: one stream per page, bounded work per tick ------------------------------------------

class _StreamCursor:
    """Where one stream is in one run: the next metrics row to send, the log byte offset,
    and the media index size and histograms stamp last announced."""
    __slots__ = ("name", "path", "rows", "log", "media", "histograms", "failing")

    def __init__(self, name, path, rows=None):
        self.name, self.path, self.rows = name, path, rows   # rows None: from the current end
        self.log = self.media = self.histograms = None
        self.failing = False   # the last read failed: said once, not every tick


def _stream(hub, cursors, disconnected, on_close=None):
    """The generator behind one page's EventSource.

    A tick sends at most SSE_TICK_ROWS rows over all the stream's runs (SSE_EVENT_ROWS per
    run and event), starting each tick one run further along, so a backlog or a stream
    naming hundreds of runs costs bounded work per tick and no run waits for ever."""
    sub = hub.subscribe()  # bottle takes the first event at once, so on_close always runs
    try:
        yield b"retry: 2000\n\n" + _sse("hello", {"version": __version__,
                                                  "runs": [c.name for c in cursors]})
        for cursor in cursors:  # start where the page said, or at the current end
            rows, log_size = hub.cache.state(cursor.path)
            cursor.rows = rows if cursor.rows is None else cursor.rows
            cursor.log = log_size
            cursor.media, cursor.histograms = hub.cache.media_state(cursor.path)
        last_ping, turn = time.monotonic(), 0
        while not hub.closed.is_set() and not disconnected():
            while sub.queue:
                yield sub.queue.popleft()
            budget = SSE_TICK_ROWS
            for i in range(len(cursors)):
                cursor = cursors[(turn + i) % len(cursors)]
                for payload, rows in _tail_run(hub, cursor, budget):
                    budget -= rows
                    yield payload
                if budget <= 0:
                    break
            turn += 1
            if time.monotonic() - last_ping >= SSE_PING_SECS:
                last_ping = time.monotonic()
                yield b": ping\n\n"
            sub.wake.wait(SSE_POLL_SECS)
            sub.wake.clear()
    finally:
        hub.unsubscribe(sub)
        if on_close is not None:
            on_close()


def _tail_run(hub, cursor, budget=SSE_EVENT_ROWS):
    """(event, rows in it) for what is new in one run: metrics rows (at most SSE_EVENT_ROWS,
    when budget is left; shared with other streams asking for the same rows), log text, and
    notices of new media and histograms."""
    store, name, path = hub.store, cursor.name, cursor.path
    rows, log_size = hub.cache.state(path)
    if rows > cursor.rows and budget > 0:
        upto = min(rows, (cursor.rows // SSE_EVENT_ROWS + 1) * SSE_EVENT_ROWS)
        try:
            payload, nxt = hub.cache.metrics_event(name, path, cursor.rows, upto)
        except Exception as exc:  # noqa: BLE001 - a torn or linked file: the rest still flows
            if not cursor.failing:
                _log.warning("expman: stream %s: %s", name, exc)
            cursor.failing = True
        else:
            cursor.failing = False
            sent, cursor.rows = nxt - cursor.rows, max(cursor.rows, nxt)
            if payload:
                yield payload, sent
    if log_size > cursor.log:
        location = path if store.is_local else store.display(path)
        text, nxt = load_log(location, cursor.log)
        cursor.log = nxt
        if text:
            yield _sse("log", {"run": name, "text": text, "next": nxt}), 0
    # media and histograms: a notice only; the page fetches what is new from its own offset
    media_size, hist_stamp = hub.cache.media_state(path)
    if media_size != cursor.media:
        cursor.media = media_size
        yield _sse("media", {"run": name, "size": media_size}), 0
    if hist_stamp != cursor.histograms:
        cursor.histograms = hist_stamp
        yield _sse("histograms", {"run": name}), 0


# -- 11.5 security: who may ask, which names and files may be served -------------------------------

class _TokenGuard:
    """Checks a request's token, and rate-limits wrong ones per client address: TOKEN_GUESSES
    at once, then TOKEN_GUESS_RATE a second (2,780 guesses in 3 s went through before). While
    a client is over its budget no token of its is compared at all, the right one included:
    otherwise the limit would still let a guesser learn when it hit."""

    def __init__(self, token):
        self.token = token
        self.lock = threading.Lock()
        self.budgets = {}  # client address -> (wrong guesses it may still send, updated at)

    def check(self, given, client):
        """("ok" | "wrong" | "limited", seconds to wait when limited)."""
        now = time.monotonic()
        with self.lock:
            left, at = self.budgets.get(client, (TOKEN_GUESSES, now))
            left = min(TOKEN_GUESSES, left + (now - at) * TOKEN_GUESS_RATE)
            if left < 1:
                self.budgets[client] = (left, now)
                return "limited", max(1, math.ceil((1 - left) / TOKEN_GUESS_RATE))
        if given is not None and _consteq(given, self.token):
            return "ok", 0
        if given is None:  # no token at all is a page opened without the URL, not a guess
            return "wrong", 0
        with self.lock:
            self.budgets[client] = (left - 1, now)
            if len(self.budgets) > 10_000:  # forget clients whose budget is whole again
                self.budgets = {c: b for c, b in self.budgets.items()
                                if b[0] + (now - b[1]) * TOKEN_GUESS_RATE < TOKEN_GUESSES}
        return "wrong", 0


def _weak_token(token):
    """Why a --token is easy to guess (None when it is not): short, or few distinct chars."""
    if len(token) < 16:
        return f"it has {len(token)} characters"
    if len(set(token)) < 8:
        return f"it uses only {len(set(token))} distinct characters"
    return None


def _read_token_file(path):
    """The token in a file (first line, stripped): kept out of the process list, where a
    --token argument is visible to every user of the machine."""
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.readline().strip()
    except OSError as exc:
        raise InvalidInputError(f"cannot read the token file {path}: "
                                f"{(exc.strerror or str(exc)).lower()}") from None
    if not token:
        raise InvalidInputError(f"the token file {path} is empty")
    return token


def _consteq(a, b):
    import hmac
    return hmac.compare_digest(a.encode(), b.encode())


def _name_ok(name):
    """True for an experiment or run name the server may open: one safe path component."""
    if not name or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        return False
    try:
        return _safe_name(name) == name
    except InvalidInputError:  # '___', 300 characters: a clean 404 (it was a 500)
        return False


_VIEW_NAME = re.compile(r"[^\W_][\w .,+=@()-]{0,79}")


def _view_name_ok(name):
    """True for a saved view's name: one safe file name, no leading dot, no trailing space."""
    return (isinstance(name, str) and _VIEW_NAME.fullmatch(name) is not None
            and not name.endswith((" ", ".")))


def _links_out(store, path):
    """True when a local path is a symlink resolving outside the directory that holds it.

    Whoever can write into a shared experiments directory could plant config.yaml ->
    ~/.kube/config, and the server, running as its owner, served the target to anyone
    with the page. Runs or experiments that are themselves links (another disk) are fine.
    """
    if not store.is_local or not os.path.islink(path):
        return False
    base = os.path.realpath(os.path.dirname(path))
    return not os.path.realpath(path).startswith(base + os.sep)


_SERVED_RUN_FILES = (RUN_YAML, CONFIG_YAML, RUN_LOG, METRICS_FILE, SEGMENTS_DIR, MEDIA_DIR,
                     HISTOGRAMS_FILE, HISTOGRAMS_DIR, _RS_METRICS_FILE)


def _run_links_out(store, path):
    """The name of the first file of a run the server would read that is a link out of the
    run (None when there is none): its own files, every metrics segment and histogram file
    (read whole), and the media index. Media files and artifacts are checked one by one
    when asked for (_media_path, _artifact_path). Local only: object stores have no links."""
    if not store.is_local:
        return None
    base = os.path.realpath(path) + os.sep
    for name in _SERVED_RUN_FILES + (os.path.join(MEDIA_DIR, MEDIA_INDEX),):
        full = os.path.join(path, name)
        if os.path.islink(full) and not os.path.realpath(full).startswith(base):
            return name
    for folder in (SEGMENTS_DIR, HISTOGRAMS_DIR):
        try:
            with os.scandir(os.path.join(path, folder)) as entries:
                for entry in entries:
                    if entry.is_symlink() and not os.path.realpath(entry.path).startswith(base):
                        return f"{folder}/{entry.name}"
        except OSError:  # no such folder (a closed run) or not a folder: nothing to read
            continue
    return None


def _link_out_of(store, run_path, full):
    """True when the local file `full` of a run resolves outside the run."""
    return store.is_local and not os.path.realpath(full).startswith(
        os.path.realpath(run_path) + os.sep)


def _confined_row(store, exp_path, row):
    """A runs-table row without what a run.yaml/config.yaml link out of the run brought in."""
    run_dir = store.join(exp_path, row["name"])
    if _links_out(store, store.join(run_dir, RUN_YAML)):
        return {"name": row["name"], "experiment": row.get("experiment", ""),
                "path": row["path"], "status": "crashed", "started_at": None,
                "finished_at": None, "duration_secs": None, "heartbeat_at": None,
                "description": "", "tags": [], "hostname": None, "pid": None,
                "command": None, "git_commit": None, "rows": 0, "last_step": None,
                "params": {}, "summary": {}, "corrupt": True,
                "error": f"{RUN_YAML} is a link out of the run; not read"}
    if _links_out(store, store.join(run_dir, CONFIG_YAML)):
        row = dict(row, params={})
    return row


def _local_host_header(host):
    """True for a Host header naming this machine by loopback name or any IP literal."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    import ipaddress
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _page_csp(page):
    """_CSP with the page's one inline script allowed by its hash instead of 'unsafe-inline':
    markup injected by some future bug could then run no script (onerror= included)."""
    import base64
    import hashlib
    if "<script>" not in page or "</script>" not in page:
        return _CSP.replace("script-src 'unsafe-inline'", "script-src 'none'")
    script = page.split("<script>", 1)[1].rsplit("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    return _CSP.replace("script-src 'unsafe-inline'", f"script-src 'sha256-{digest}'")


def _attachment(name):
    """A Content-Disposition that downloads name: ASCII fallback plus RFC 5987 UTF-8 form.
    A CR/LF in an artifact's name made bottle refuse the header (a 500)."""
    import urllib.parse
    fallback = re.sub(r"[^A-Za-z0-9._ ()+=-]", "_", name) or "artifact"
    utf8 = urllib.parse.quote(name, safe="", errors="replace")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{utf8}"


def _artifact_path(store, run_path, rel):
    """The full path of an artifact; InvalidInputError for anything that could leave the
    run's artifacts/ (.., absolute paths, NUL, backslashes, symlinks pointing outside)."""
    if not rel or "\0" in rel or "\\" in rel or rel.startswith("/") or re.match(r"^[a-zA-Z]:",
                                                                                 rel):
        raise InvalidInputError(f"bad artifact path: {rel!r}")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidInputError(f"artifact path must stay inside the run: {rel!r}")
    base = store.join(run_path, ARTIFACTS_DIR)
    full = store.join(base, *parts)
    if store.is_local:
        real_base = os.path.realpath(base)
        if not os.path.realpath(full).startswith(real_base + os.sep):
            raise InvalidInputError(f"artifact path leaves the run: {rel!r}")
    return full


# -- 11.6 serving: Waitress with connection limits, make_server, serve -----------------------------

class _ConnectionGuard:
    """Per-client connection limits and a deadline for a request to arrive, on a Waitress
    server (slowloris: 99 sockets sending headers a byte a second took every one of the
    100 connections Waitress allows; nobody else got in).

    A connection is closed when its request (headers and body) has not arrived whole within
    SERVER_REQUEST_SECS of its first byte (the first request: of the connect). Idle
    keep-alive connections between requests are left to Waitress's channel_timeout. A remote
    address holds at most SERVER_CLIENT_CONNECTIONS sockets; loopback, which every local tab
    and tool shares, is bounded by SERVER_MAX_CONNECTIONS only."""

    def __init__(self):
        self.lock = threading.Lock()
        self.open = collections.Counter()   # remote address -> open connections

    def admit(self, client):
        if client is None or _loopback_address(client):
            return True
        with self.lock:
            if self.open[client] >= SERVER_CLIENT_CONNECTIONS:
                return False
            self.open[client] += 1
            return True

    def release(self, client):
        with self.lock:
            self.open[client] -= 1
            if self.open[client] <= 0:
                del self.open[client]

    def install(self, server):
        """Use this guard on a Waitress server (one listening socket or several)."""
        from waitress.server import BaseWSGIServer
        servers = [server] if isinstance(server, BaseWSGIServer) else [
            s for s in server.map.values() if isinstance(s, BaseWSGIServer)]
        channel = self.channel_class()
        for srv in servers:
            srv.channel_class = channel
            srv.maintenance = (lambda now, srv=srv, waitress_own=srv.maintenance:
                               self.maintenance(srv, waitress_own, now))

    @staticmethod
    def maintenance(srv, waitress_maintenance, now):
        waitress_maintenance(now)
        cutoff = time.monotonic() - SERVER_REQUEST_SECS
        for channel in list(srv.active_channels.values()):
            began = getattr(channel, "request_began", None)
            if began is not None and began < cutoff and not channel.requests:
                channel.will_close = True

    def channel_class(self):
        from waitress.channel import HTTPChannel
        guard = self

        class _GuardedChannel(HTTPChannel):
            def __init__(self, server, sock, addr, adj, map=None):
                super().__init__(server, sock, addr, adj, map)
                self.request_began = time.monotonic()
                self.client = addr[0] if isinstance(addr, tuple) and addr else None
                self.counted = guard.admit(self.client)
                if not self.counted:
                    self.will_close = True   # closed on the next loop, nothing read

            def received(self, data):
                if self.request is None and self.request_began is None and data:
                    self.request_began = time.monotonic()
                done = super().received(data)
                if self.request is None:
                    self.request_began = None
                elif self.request_began is None:
                    self.request_began = time.monotonic()
                return done

            def del_channel(self, map=None):
                if self.counted and not _loopback_address(self.client or ""):
                    self.counted = False
                    guard.release(self.client)
                super().del_channel(map)

        return _GuardedChannel


def _loopback_address(address):
    return address in ("::1", "localhost") or address.startswith("127.") or \
        address.startswith("::ffff:127.")


def _use_system_memory_pool():
    """Give a serving process pyarrow's system-allocator pool (unless ARROW_DEFAULT_MEMORY_POOL
    says otherwise). With the default (mimalloc in pyarrow 26) a dashboard with 20 open pages
    on a live run kept what each request freed: RSS grew ~30 MB a minute (120 -> 250 MB in
    4 min, benchmarks/bench_load.py); with the system allocator it grew ~8 MB a minute while
    that run kept growing, and stayed flat on finished runs.
    Only for a process that serves: a library call must not change a training script's pool.
    Before pyarrow is imported the choice goes through ARROW_DEFAULT_MEMORY_POOL, which also
    sets the pool Arrow's C++ code uses by itself (the Parquet reader's buffers): with
    set_memory_pool alone those stayed on mimalloc, and a server answering charts of a live
    run grew ~0.5 MB a second (tests/test_reliability.py's load test).
    """
    _return_freed_memory()
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    if "pyarrow" not in sys.modules:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
        pa.default_memory_pool()   # imports it now, with that pool, beside the first requests
        return
    try:
        pa.set_memory_pool(pa.system_memory_pool())
    except Exception:  # noqa: BLE001 - an allocator choice is never worth failing for
        pass


def _return_freed_memory():
    """glibc: give blocks of 256 KiB and more back to the system when freed, in at most two
    arenas. By default glibc raises its mmap threshold to the largest block freed (up to
    32 MiB), after which a request's multi-MB tables and JSON strings came from heaps that
    never shrink, one per busy thread: a server with 20 streams and a /metrics poller on a
    live run grew ~100 MB a minute. MALLOC_* variables set by the user win."""
    if not sys.platform.startswith("linux") or any(
            k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX")):
        return
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 * 1024)   # M_MMAP_THRESHOLD (fixed: no longer raised)
        libc.mallopt(-8, 2)            # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass


class _Server:
    """A running Waitress server: ``url``, ``run()`` (blocks), ``close()``."""

    def __init__(self, app, server):
        self.app, self.server = app, server
        host = server.effective_host
        host = f"[{host}]" if ":" in str(host) else host
        self.url = f"http://{host}:{server.effective_port}"

    def run(self):
        try:
            self.server.run()
        except OSError:
            if not self.app.config["expman.hub"].closed.is_set():
                raise

    def close(self):
        """Stop streams first, then worker threads, then the socket (the other order makes
        a finishing worker write to a closed trigger)."""
        self.app.config["expman.hub"].close()
        try:
            self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        except Exception:  # noqa: BLE001 - best effort on shutdown
            pass
        # Waitress leaves accepted connections open; close them so a browser that reuses one
        # sees the server go away instead of waiting on a silent socket.
        for channel in list(getattr(self.server, "_map", {}).values()):
            if channel is not self.server:
                try:
                    channel.close()
                except Exception:  # noqa: BLE001
                    pass
        self.server.close()


def make_server(root=None, host="127.0.0.1", port=8000, live=True, token=None,
                threads=SERVER_THREADS):
    """A Waitress server for the dashboard, bound but not yet serving (port 0: any free port).

    >>> server = expman.make_server("experiments", port=0)
    >>> print(server.url); server.run()
    """
    import waitress

    app = make_app(root, live=live, token=token)
    # Streams get the threads the page and the API do not need; the next one is a 503.
    app.config["expman.api"].max_streams = max(1, threads - SERVER_RESERVED_THREADS)
    # outbuf_high_watermark: Waitress keeps every byte a connection has sent in one growing
    # buffer until that buffer passes this mark (16 MiB by default), so each open SSE stream
    # held up to 16 MiB of old events: the "server grows ~10 MB a minute" of a dashboard on a
    # live run. At 1 MiB a stream rotates its buffer 16 times sooner.
    server = waitress.create_server(app, host=host, port=port, threads=threads,
                                    channel_request_lookahead=1, ident="expman",
                                    clear_untrusted_proxy_headers=True,
                                    outbuf_high_watermark=SERVER_OUTBUF_BYTES,
                                    connection_limit=_connection_limit(),
                                    cleanup_interval=1)
    _ConnectionGuard().install(server)
    return _Server(app, server)


def _connection_limit():
    """SERVER_MAX_CONNECTIONS, or fewer when the process may not open that many files."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 100   # Waitress's own default
    if soft == resource.RLIM_INFINITY:
        return SERVER_MAX_CONNECTIONS
    return max(100, min(SERVER_MAX_CONNECTIONS, soft - 64))


def serve(root=None, host="127.0.0.1", port=8000, live=True, token=None, open_browser=False,
          out=None):
    """Serve the dashboard until Ctrl-C; prints the URL (the CLI's ``expman serve``)."""
    out = out or sys.stdout
    # '' is no token (it was a token nobody could send, and a printed URL without one)
    token = token or os.environ.get(ENV_TOKEN) or None
    loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
    warnings = []
    if not loopback:  # warned with a token too: the address is the user's choice to check
        if token is None:
            import secrets
            token = secrets.token_urlsafe(18)
        warnings.append(f"serving on {host}, reachable from other machines; every request "
                        f"needs the token in the URL below (set your own with --token-file or "
                        f"{ENV_TOKEN})")
    weak = token and _weak_token(token)
    if weak:
        warnings.append(f"the token is easy to guess ({weak}); use 16 or more random "
                        f"characters, or leave it out on a non-loopback host for a made-up one")
    if warnings:  # one line: scripts and tests look for one warning
        print("expman: warning: " + "; ".join(warnings), file=sys.stderr)
    _return_freed_memory()
    # importing pyarrow (0.3 s and more) to switch its pool is not needed to answer the first
    # requests (the page, /api/health, the lists): it happens beside them. Buffers allocated
    # before the switch stay valid and go back to the pool they came from.
    threading.Thread(target=_use_system_memory_pool, name="expman-pool", daemon=True).start()
    server = make_server(root, host=host, port=port, live=live, token=token)
    url = server.url + (f"/?token={token}" if token else "/")
    store, root_path = _open_store(root if root is not None else _default_root())
    print(f"expman {__version__}: serving {store.display(root_path)} at {url}", file=out,
          flush=True)
    if open_browser:
        import webbrowser
        threading.Timer(0.3, webbrowser.open, args=(url,)).start()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


# 12 CLI #####################################################################################
#
#   expman list [DIR] [-e EXP]            experiments, or the runs of one, newest first
#   expman inspect RUN                    metadata, params, metric stats, artifacts, log tail
#   expman compare RUN RUN...             params that differ, each metric's last / best
#   expman tail RUN                       follow new metric rows and log lines of a live run
#   expman export RUN --format F          the whole metrics table as csv, json or parquet,
#                                         or TensorBoard event files (section 10)
#   expman import TB_LOGDIR               TensorBoard event files -> runs (section 10)
#   expman clean EXP --keep N             delete old runs (a dry run without --force)
#   expman reap [DIR|EXP|RUN]             mark dead runs crashed (a dry run without --force)
#   expman serve [DIR] / expman demo      the dashboard (section 11)
#
# RUN is a run directory, EXP/RUN under the root, or EXP/latest, EXP/-2 (_cli_run); EXP a
# name or a directory (_cli_experiment). `exp` (expman-rs's name) is the same command.
# Each command gathers a model (_*_model) that its text printer and --json both render.
#
# Results go to stdout; warnings and the one-line error to stderr. Exit codes: 0 for
# success, 1 failure, 2 bad usage, 130 Ctrl-C. Every read command but tail takes --json.
# `list` must stay fast over thousands of runs, so nothing here imports pyarrow unless a
# command reads metrics.

_EXIT_OK, _EXIT_FAIL, _EXIT_USAGE, _EXIT_INTERRUPTED = 0, 1, 2, 130
_STATUS_COLORS = {"running": "36", "finished": "32", "failed": "31", "interrupted": "33",
                  "crashed": "35"}
_TAIL_CONTEXT_ROWS = 10          # tail starts with this many rows / log lines already there
_NUMERIC_FORMAT = ".6g"
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class _UsageError(ExpmanError):
    """Bad command-line usage: exit code 2."""


def _cli_error(message):
    first = str(message).strip().splitlines()[0] if str(message).strip() else "unknown error"
    print(f"expman: error: {first}", file=sys.stderr)


_SHOWN_WARNINGS = []   # every ExpmanWarning the current command printed


def _show_warning(message, category, filename, lineno, file=None, line=None,
                  _default=warnings.showwarning):
    """Print the library's ExpmanWarnings (a corrupt run, a skipped segment) as one
    ``expman: warning:`` line each, instead of Python's two-line warning format."""
    if not issubclass(category, ExpmanWarning):
        return _default(message, category, filename, lineno, file, line)
    text = str(message)
    text = text[len("expman: "):] if text.startswith("expman: ") else text
    _SHOWN_WARNINGS.append(text)
    print(f"expman: warning: {text.splitlines()[0] if text else ''}", file=sys.stderr)
    return None


def _stderr_warnings_handler():
    """Readers also log some problems (a garbled run.yaml while listing): one line each.
    (The class is made here, not at import: ``import expman`` does not import logging.)"""

    class _StderrWarnings(logging.Handler):
        def emit(self, record):
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad log call must not break a command
                message = str(record.msg)
            if message.startswith("expman: "):
                message = message[len("expman: "):]
            _SHOWN_WARNINGS.append(message)
            print(f"expman: warning: {message.splitlines()[0] if message else ''}",
                  file=sys.stderr)

    return _StderrWarnings(logging.WARNING)


@contextlib.contextmanager
def _reader_warnings():
    """The warnings shown while the block ran (e.g. a truncated segment was skipped)."""
    start = len(_SHOWN_WARNINGS)
    problems = []
    try:
        yield problems
    finally:
        problems.extend(_SHOWN_WARNINGS[start:])


# -- 12.1 formatting -------------------------------------------------------------------------------

def _use_color():
    return not os.environ.get("NO_COLOR") and _isatty(sys.stdout)


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class _Cell:
    """Table cell text plus its coloured rendering (padding counts only the plain text)."""
    __slots__ = ("text", "styled")

    def __init__(self, text, styled=None):
        self.text, self.styled = text, text if styled is None else styled


def _status_cell(status, color):
    status = str(status)
    code = _STATUS_COLORS.get(status)
    return _Cell(status, f"\033[{code}m{status}\033[0m" if color and code else status)


def _table(headers, rows, right=(), indent="", width=None):
    """Aligned lines of a table; cells are str or _Cell; columns in ``right`` right-aligned.
    With ``width``, the widest columns are narrowed (cells cut with an ellipsis) until the
    lines fit, where they can."""
    rows = [[c if isinstance(c, _Cell) else _Cell(str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell.text))
    if width is not None:
        widths = _narrowed(widths, width - len(indent))
        # names (headers, the first column) keep both ends: runs often differ at the end
        headers = [_clip(h, w, middle=True) for h, w in zip(headers, widths)]
        rows = [[cell if len(cell.text) <= widths[i] else
                 _Cell(_clip(cell.text, widths[i], middle=i == 0))
                 for i, cell in enumerate(row)] for row in rows]

    def line(cells):
        out = []
        for i, cell in enumerate(cells):
            pad = " " * (widths[i] - len(cell.text))
            out.append(pad + cell.styled if i in right else cell.styled + pad)
        return (indent + "  ".join(out)).rstrip()

    return [line([_Cell(h) for h in headers])] + [line(row) for row in rows]


_MIN_COLUMN = 6   # a column is never narrowed below this many characters


def _narrowed(widths, width, gap=2):
    """Column widths that fit in ``width``: the widest column loses a character at a time
    (so one long value does not set a column's width), none below _MIN_COLUMN."""
    widths = list(widths)
    excess = sum(widths) + gap * (len(widths) - 1) - width
    while excess > 0:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= _MIN_COLUMN:
            break
        widths[widest] -= 1
        excess -= 1
    return widths


def _clip(text, limit, middle=False):
    """text cut to ``limit`` characters with an ellipsis where it was cut: at the end, or in
    the middle (``20261203_081811`` -> ``2026…81811``)."""
    if len(text) <= limit:
        return text
    if not middle:
        return text[:max(limit - 1, 0)] + "\u2026"
    head = (limit - 1) // 2
    return text[:head] + "\u2026" + text[len(text) - (limit - 1 - head):]


def _fit_width():
    """The terminal's width (honouring $COLUMNS) when stdout is one, else None: a pipe or a
    file gets whole lines."""
    if not _isatty(sys.stdout):
        return None
    return shutil.get_terminal_size((120, 24)).columns


def _print_lines(lines):
    out = sys.stdout
    for text in lines:
        out.write(text + "\n")


def _fmt_num(value, spec=_NUMERIC_FORMAT):
    """Compact text of a metric value: '-' when missing, 'nan'/'inf' kept visible."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (math.inf, -math.inf):
            return "inf" if value > 0 else "-inf"
        return _fmt_float(value, spec)
    return str(value)


def _fmt_float(value, spec):
    """format(value, spec), with more digits where rounding would turn a fraction into a
    whole number (999.999 at 5 digits is '1000', which reads as exactly 1000)."""
    text = format(value, spec)
    match = re.fullmatch(r"\.(\d+)g", spec)
    if match is None or value.is_integer():
        return text
    digits = int(match.group(1))
    while "e" not in text and float(text).is_integer() and digits < 17:
        digits += 1
        text = format(value, f".{digits}g")
    return text


def _fmt_param(value, missing="-", limit=40):
    if value is _MISSING:
        return missing
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"



def _fmt_time(iso, time_format=None):
    """ISO-8601 text -> local 'YYYY-MM-DD HH:MM:SS' (the terminal's clock), '-' if unknown."""
    ts = _parse_iso(iso)
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts).strftime(time_format or "%Y-%m-%d %H:%M:%S")


def _fmt_ago(iso, now=None):
    ts = _parse_iso(iso)
    if ts is None:
        return "-"
    secs = max(0.0, (now or time.time()) - ts)
    if secs < 60:
        return f"{int(secs)}s ago"
    if secs < 3600:
        return f"{int(secs // 60)}m ago"
    if secs < 48 * 3600:
        return f"{int(secs // 3600)}h ago"
    return f"{int(secs // 86400)}d ago"


def _print_json(data):
    json.dump(_json_safe(data), sys.stdout, indent=2, ensure_ascii=False, allow_nan=False)
    sys.stdout.write("\n")


def _print_json_rows(data):
    """_print_json for a mapping holding long lists of rows (`expman list --json`): the
    same JSON, with each row on one line. indent=2 sends json to its pure-Python encoder
    (10,000 runs: 3 s); a row at a time through the C encoder is ~20x faster, and a row a
    line is what grep and head want."""
    def dumps(value):
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (ValueError, TypeError):  # NaN/inf, or a datetime from a hand-edited YAML
            return json.dumps(_json_safe(value), ensure_ascii=False, allow_nan=False)

    out, fields = [], list(data.items())
    for i, (key, value) in enumerate(fields):
        comma = "," if i < len(fields) - 1 else ""
        head = f"  {json.dumps(str(key), ensure_ascii=False)}: "
        if isinstance(value, list) and value:
            out.append(head + "[\n" + ",\n".join("    " + dumps(v) for v in value) +
                       "\n  ]" + comma)
        else:
            out.append(head + dumps(value) + comma)
    sys.stdout.write("{\n" + "\n".join(out) + ("\n}\n" if out else "}\n"))


def _location(store, path):
    """What to hand back to the readers for a path of this store (a URI off the local disk)."""
    return path if store.is_local else store.display(path)


def _split_parent(store, path):
    if store.is_local:
        return os.path.split(path.rstrip(os.sep) or path)
    parent, _, name = path.rstrip("/").rpartition("/")
    return parent, name


# -- 12.2 naming runs and experiments: one resolver for every command ------------------------------
#
# Wherever a command takes a run, it takes any of
#   a run directory              experiments/resnet/20240101_120000, /abs/path, s3://b/x/y
#   EXP/RUN under the root       resnet/20240101_120000 (root: --dir, $EXPMAN_DIR, ./experiments)
#   EXP/latest, EXP/-2, ...      the newest run of EXP, the one before it ... (by start time;
#                                also after an experiment directory: experiments/resnet/latest)
# and wherever it takes an experiment, its name under the root or its directory.

_RUN_SELECTOR = re.compile(r"^(?:latest|-[1-9][0-9]*)$")


def _pick_run(store, exp_path, selector):
    """The run directory ``selector`` ('latest', '-1', '-2', ...) names among exp_path's runs."""
    rows = _scan_runs(store, exp_path, time.time())  # newest first
    index = 0 if selector == "latest" else -int(selector) - 1
    if index >= len(rows):
        have = f"{len(rows)} run{'s' if len(rows) != 1 else ''}"
        raise InvalidInputError(f"{store.display(exp_path)} has {have}: no run {selector}")
    return store.join(exp_path, rows[index]["name"])


def _relative_name(text):
    """(experiment, run) when text reads as EXP/RUN relative to a root, else None."""
    if _URI_RE.match(text) or os.path.isabs(text) or text.startswith(("~", "./", "../")):
        return None
    parts = [p for p in text.replace(os.sep, "/").split("/") if p]
    if len(parts) != 2 or any(p in (".", "..") for p in parts):
        return None
    return parts[0], parts[1]


def _cli_run(text, root=None):
    """The run directory a user named on the command line (any form above), as a location the
    readers take; InvalidInputError naming what was tried when there is none."""
    text = os.fspath(text)
    store, path = _open_store(text)
    if store.stat(store.join(path, RUN_YAML)) is not None:
        return _location(store, path)
    parent, last = _split_parent(store, path)
    if _RUN_SELECTOR.match(last) and store.isdir(parent):
        return _location(store, _pick_run(store, parent, last))
    named = _relative_name(text)
    if named is not None:
        root_store, root_path = _open_store(root if root is not None else _default_root())
        exp_path = root_store.join(root_path, named[0])
        if _RUN_SELECTOR.match(named[1]) and root_store.isdir(exp_path):
            return _location(root_store, _pick_run(root_store, exp_path, named[1]))
        run_path = root_store.join(exp_path, named[1])
        if root_store.stat(root_store.join(run_path, RUN_YAML)) is not None:
            return _location(root_store, run_path)
        if not store.isdir(path):
            where = root_store.display(root_path)
            if not root_store.isdir(exp_path):
                raise InvalidInputError(f"no experiment {named[0]!r} in {where} "
                                        f"(and no such directory: {store.display(path)})")
            raise InvalidInputError(f"no run {named[1]!r} in experiment {named[0]!r} of "
                                    f"{where} (and no such directory: {store.display(path)})")
    if not store.isdir(path):
        raise InvalidInputError(f"{_not_a_dir(store, path)}: {store.display(path)}")
    raise InvalidInputError(f"not a run directory (no {RUN_YAML}): {store.display(path)}")


def _cli_experiment(text, root=None):
    """(root, experiment name) for an experiment named on the command line: its name under
    the root, or its directory (which then sets the root)."""
    text = os.fspath(text)
    looks_like_path = (_URI_RE.match(text) or os.path.isabs(text) or os.sep in text or
                       "/" in text or text in (".", ".."))
    if looks_like_path:
        store, path = _open_store(text)
        if store.stat(store.join(path, RUN_YAML)) is not None:
            raise InvalidInputError(f"{store.display(path)} is a run directory, not an "
                                    f"experiment")
        if not store.isdir(path):
            raise InvalidInputError(f"{_not_a_dir(store, path)}: {store.display(path)}")
        parent, name = _split_parent(store, path)
        return _location(store, parent), name
    return (root if root is not None else _default_root()), text


def _resolve_names(args):
    """Turn the run and experiment names of a parsed command line into locations, so every
    command takes the same forms (see above) without knowing about them."""
    root = getattr(args, "dir", None)
    if getattr(args, "run_dir", None) is not None:
        args.run_dir = _cli_run(args.run_dir, root)
    if getattr(args, "run_dirs", None):
        args.run_dirs = [_cli_run(text, root) for text in args.run_dirs]
    if getattr(args, "experiment_arg", False) and args.experiment is not None:
        args.dir, args.experiment = _cli_experiment(args.experiment, root)
    if getattr(args, "target_arg", False) and args.dir is not None:
        args.dir = _cli_target(args.dir)
    return args


def _cli_target(text):
    """A directory to work through (root, experiment or run), or a run/experiment by name
    under the default root (``expman reap resnet/latest``, ``expman reap resnet``)."""
    store, path = _open_store(text)
    if store.isdir(path):
        return text
    named = _relative_name(text)
    if named is not None:
        return _cli_run(text)
    if not _URI_RE.match(text) and os.sep not in text and "/" not in text:
        root_store, root_path = _open_store(_default_root())
        exp_path = root_store.join(root_path, text)
        if root_store.isdir(exp_path):
            return _location(root_store, exp_path)
    return text


# -- 12.3 list -------------------------------------------------------------------------------------

def _is_corrupt(row):
    """A run row made up for a run whose run.yaml could not be read (see _scan_runs)."""
    return bool(row.get("corrupt"))


def _cmd_list(args):
    _SCAN_PROGRESS[0] = not args.json
    try:
        return _list(args)
    finally:
        _SCAN_PROGRESS[0] = False


def _list(args):
    root = args.dir if args.dir is not None else _default_root()
    root, experiment = _list_target(root, args.experiment)
    if experiment is None:
        for flag in ("tags", "where", "limit"):
            if getattr(args, flag) is not None:
                raise _UsageError(f"--{flag} {'limits' if flag == 'limit' else 'filters'} "
                                  f"the runs of one experiment: add -e EXPERIMENT")
        model = _experiments_model(root, args.project)
        render = _print_experiments
    else:
        try:
            where = _run_filter(args.where)
        except _ExpressionError as exc:  # bad usage: the message, then where it went wrong
            _cli_error(exc)
            print(exc.caret(), file=sys.stderr)
            return _EXIT_USAGE
        model = _runs_model(root, experiment, args.project, args.tags, where,
                            _runs_limit(args))
        model["filtered"] = model["filtered"] or where is not None
        render = _print_runs
    if args.json:
        _print_json_rows({k: v for k, v in model.items() if k != "filtered" and
                          (k != "total" or v > len(model["runs"]))})
    else:
        render(model, _use_color(), _fit_width())
    return _EXIT_OK


def _list_target(root, experiment):
    """(root, experiment or None): `expman list experiments/resnet` means the runs of
    resnet, not an empty table; a run directory is an error that says what to type."""
    if experiment is not None:
        return root, experiment
    store, path = _open_store(root)
    if store.stat(store.join(path, RUN_YAML)) is not None:
        raise InvalidInputError(f"{store.display(path)} is a run directory: use "
                                f"'expman inspect {root}'")
    if store.stat(store.join(path, EXPERIMENT_YAML)) is not None:
        parent, experiment = _split_parent(store, path)
        return _location(store, parent), experiment
    return root, None


def _experiments_model(root, project=None):
    store, root_path = _resolve_root(root)
    return {"root": store.display(root_path), "project": project,
            "experiments": list_experiments(root, project=project)}


def _status_counts_cell(counts, color):
    parts = [(f"{counts[s]} {s}", s) for s in STATUSES if counts.get(s)]
    parts += [(f"{n} {s}", s) for s, n in counts.items() if s not in STATUSES]
    text = ", ".join(p for p, _ in parts)
    styled = ", ".join(f"\033[{_STATUS_COLORS.get(s, '0')}m{p}\033[0m" if color else p
                       for p, s in parts)
    return _Cell(text or "-", styled or "-")


def _print_experiments(model, color, width=None):
    experiments, project = model["experiments"], model["project"]
    if not experiments:
        print(f"no experiments in {model['root']}" +
              (f" for project {project!r}" if project is not None else ""))
        return
    now = time.time()
    with_projects = any(e["projects"] for e in experiments)
    headers = ["EXPERIMENT"] + (["PROJECT"] if with_projects else []) + [
        "RUNS", "STATUS", "LAST ACTIVITY", ""]
    rows = [[exp["name"]] + ([", ".join(exp["projects"]) or "-"] if with_projects else []) +
            [str(exp["runs"]), _status_counts_cell(exp["status_counts"], color),
             _fmt_ago(exp["last_activity"], now), _fmt_time(exp["last_activity"])]
            for exp in experiments]
    lines = _table(headers, rows, right={2 if with_projects else 1})
    if width is not None and max(len(_ANSI_ESCAPE.sub("", line)) for line in lines) > width:
        # the time of day repeats LAST ACTIVITY: the first thing to go on a narrow terminal
        lines = _table(headers[:-1], [row[:-1] for row in rows],
                       right={2 if with_projects else 1}, width=width)
    _print_lines(lines)


_TTY_RUNS = 50   # runs `expman list -e` shows on a terminal without --limit or --all


def _runs_limit(args):
    """How many runs `list -e` shows: --limit, or every run with --all, to a pipe, a file
    or as --json (a script wants them all), and on a terminal the newest _TTY_RUNS, with a
    footer saying how many more there are (10,000 rows scroll past unread, as gh run list
    and docker's --last know)."""
    if args.all:
        if args.limit is not None:
            raise _UsageError("--all and --limit say different things: pick one")
        return None
    if args.limit is not None:
        return args.limit
    return _TTY_RUNS if not args.json and _isatty(sys.stdout) else None


def _runs_model(root, experiment, project=None, tags=None, where=None, limit=None):
    """The runs `expman list -e` shows (newest first), filtered by project, tags and a
    ``where`` predicate (_run_filter); the newest ``limit`` of them when it is given, and
    ``total``, how many there are. Unfiltered, a limit reads just the rows shown."""
    store, root_path = _resolve_root(root)
    if limit is not None and project is None and tags is None and where is None:
        exp_path = store.join(root_path, _safe_name(experiment, "experiment name"))
        if not store.isdir(exp_path):
            raise InvalidInputError(f"no experiment {experiment!r} in "
                                    f"{store.display(root_path)}")
        runs, beyond, _entries = _scan_window(store, exp_path, time.time(), True, limit)
        return {"root": store.display(root_path), "experiment": experiment,
                "runs": runs[:limit], "total": len(runs) + len(beyond), "filtered": False}
    runs = list_runs(root, experiment)
    match = _tag_filter(tags)
    if project is not None:
        runs = [r for r in runs if r["project"] == project]
    if match is not None:
        runs = [r for r in runs if match(set(r["tags"]))]
    if where is not None:
        runs = [r for r in runs if where(r)]
    return {"root": store.display(root_path), "experiment": experiment,
            "runs": runs if limit is None else runs[:limit], "total": len(runs),
            "filtered": project is not None or tags is not None}


def _run_columns(runs):
    """The optional columns of the runs table, [(header, cells, kind, rank)]: each metric's
    last value (and its best over the run, ``min:KEY``/``max:KEY``, for a metric whose name
    says which way is better, where that differs from the last), and the params that tell
    the runs apart (all of them for a single run). A param and a metric of one name are
    headed ``p:KEY`` and ``m:KEY``, as the filter language names them (issue 14 defect 11).
    Lower rank = more useful, kept first on a narrow terminal: metrics with a goal (val/test
    ones before the others), then params, then other metrics, then ROWS (STEP tells most of
    it)."""
    metric_keys = list(dict.fromkeys(k for r in runs for k in r["summary"]))
    param_keys = list(dict.fromkeys(k for r in runs for k in r["params"]))
    if len(runs) > 1:  # the main params are the ones that tell runs apart
        param_keys = [k for k in param_keys if _param_differs(runs, k)]
    shared = set(metric_keys) & set(param_keys)
    columns = [("ROWS", [str(r["rows"]) for r in runs], "column", 4)]
    for key in metric_keys:
        columns += _metric_columns(runs, key, f"m:{key}" if key in shared else key)
    columns += [(f"p:{k}" if k in shared else k,
                 _memo_cells(runs, "params", k, _MISSING, _param_text), "param", 2)
                for k in param_keys]
    return columns


def _metric_columns(runs, key, header):
    """The last-value column of a metric, and its best-value column when that tells more."""
    held_out = key.lower().startswith(("val", "test", "eval", "best"))
    goal = _metric_goal(key)
    rank = (0 if held_out else 1) if goal else 3
    columns = [(header, _memo_cells(runs, "summary", key, None, _metric_text), "metric", rank)]
    if goal:
        last = [r["summary"].get(key) for r in runs]
        best = [(r.get(f"summary_{goal}") or {}).get(key) for r in runs]
        if any(b is not None and b != v for b, v in zip(best, last)):
            columns.append((f"{goal}:{key}", [_fmt_num(b, ".5g") for b in best], "metric",
                            rank))
    return columns


def _metric_text(value):
    return _fmt_num(value, ".5g")


def _memo_cells(runs, field, key, missing, fmt):
    """[fmt(run[field].get(key, missing))] for the runs, each distinct value formatted once
    (a sweep's 10,000 runs share most of their values). Keyed by (type, value), so 1, 1.0
    and True stay apart; float zeros and NaN are formatted each time (-0.0 == 0.0)."""
    texts, cells = {}, []
    append = cells.append
    for r in runs:
        value = r[field].get(key, missing)
        kind = type(value)
        if kind in _MEMO_KINDS or (kind is float and value != 0.0 and value == value):
            memo = (kind, value)
            text = texts.get(memo)
            if text is None:
                text = texts[memo] = fmt(value)
        else:
            text = fmt(value)
        append(text)
    return cells


_MEMO_KINDS = frozenset((str, int, bool, type(None)))


def _param_text(value):
    """_fmt_param(value, limit=24); an int (a seed: a new value per run) without json."""
    if type(value) is int:
        text = str(value)
        if len(text) <= 24:
            return text
    return _fmt_param(value, limit=24)


def _value_key(value):
    """A hashable key equal for two values exactly when their JSON texts are (floats by
    repr: 0.0 and -0.0 differ), or None for lists, dicts and others."""
    kind = type(value)
    if kind is float:
        return kind, repr(value)
    if value is None or kind in (str, int, bool):
        return kind, value
    return None


def _param_differs(runs, key):
    """Whether the runs hold more than one value of a param (a missing one counts as null),
    as their JSON text would tell; stops at the first difference."""
    def comparable(value):
        return _value_key(value) or json.dumps(value, sort_keys=True, default=str)
    first = comparable(runs[0]["params"].get(key, None))
    return any(comparable(r["params"].get(key, None)) != first for r in runs)


def _choose_columns(fixed_width, columns, width, cap=16):
    """The columns that fit beside ``fixed_width`` characters, most useful first (in their
    own order on screen), each cut to ``cap`` characters; and a Counter of the hidden kinds."""
    clipped = [(_clip(h, cap), [_clip(c, cap) for c in cells], kind, rank)
               for h, cells, kind, rank in columns]
    used, keep = fixed_width, set()
    for i in sorted(range(len(clipped)), key=lambda i: clipped[i][3]):
        need = 2 + max([len(clipped[i][0])] + [len(c) for c in clipped[i][1]])
        if used + need <= width:
            keep.add(i)
            used += need
    hidden = collections.Counter(c[2] for i, c in enumerate(clipped) if i not in keep)
    return [c for i, c in enumerate(clipped) if i in keep], hidden


_RUN_FIXED = ["RUN", "STATUS", "STARTED", "DURATION", "STEP"]


def _fixed_run_rows(runs, color, time_format=None):
    return [[r["name"], _status_cell(r["status"], color),
             "unreadable run.yaml" if _is_corrupt(r) else _fmt_time(r["started_at"], time_format),
             _human_duration(r["duration_secs"]), _fmt_num(r["last_step"])] for r in runs]


def _table_width(headers, rows):
    """The width of _table(headers, rows)'s widest line, from the column widths (rendering
    10,000 rows to measure them cost more than printing them)."""
    widths = [len(h) for h in headers]
    for i, column in enumerate(zip(*rows)):
        widths[i] = max(widths[i], max(len(c.text if isinstance(c, _Cell) else str(c))
                                       for c in column))
    # the last column's padding is stripped: its widest cell (or header) ends the widest line
    return sum(widths) + 2 * (len(widths) - 1)


def _runs_layout(runs, color, width):
    """(fixed rows, optional columns, hidden Counter) of the runs table: everything when it
    fits (or on no terminal), else a short start time and the most useful columns."""
    rows, columns = _fixed_run_rows(runs, color), _run_columns(runs)
    if width is None or _table_width(_RUN_FIXED + [c[0] for c in columns],
                                     [row + [c[1][i] for c in columns]
                                      for i, row in enumerate(rows)]) <= width:
        return rows, columns, collections.Counter()
    rows = _fixed_run_rows(runs, color, "%m-%d %H:%M")  # leaves room for metrics
    columns, hidden = _choose_columns(_table_width(_RUN_FIXED, rows), columns, width)
    return rows, columns, hidden


def _plain_table(headers, columns, right):
    """_table's lines for plain cells given column by column, with no width to fit: each
    column padded in one pass, then joined row by row (10,000 runs x 15 columns as cell
    objects took a second)."""
    padded = []
    for i, (header, cells) in enumerate(zip(headers, columns)):
        cells = [c.text if isinstance(c, _Cell) else c for c in cells]
        width = max(len(header), max(map(len, cells), default=0))
        pad = str.rjust if i in right else str.ljust
        padded.append([pad(header, width)] + [pad(c, width) for c in cells])
    return ["  ".join(parts).rstrip() for parts in zip(*padded)]


def _print_run_table(runs, color, width):
    """Print the runs table (every row, whole and plain, to a pipe or a file; fitted to the
    terminal otherwise); the Counter of what was left out to fit."""
    rows, columns, hidden = _runs_layout(runs, color, width)
    right = {3, 4} | {len(_RUN_FIXED) + i for i, c in enumerate(columns) if c[2] != "param"}
    headers = _RUN_FIXED + [c[0] for c in columns]
    if width is None and not color:   # a pipe or a file: every row, whole, plain
        _print_lines(_plain_table(headers, [list(col) for col in zip(*rows)] +
                                  [c[1] for c in columns], right))
    else:
        _print_lines(_table(headers,
                            [row + [c[1][i] for c in columns] for i, row in enumerate(rows)],
                            right=right, width=width))
    return hidden


def _hidden_note(hidden, width):
    """'(3 metrics and 1 param not shown to fit the terminal; see --json)', clipped."""
    parts = [f"{hidden[k]} {k}{'s' if hidden[k] > 1 else ''}" for k in ("metric", "param")
             if hidden[k]] + (["ROWS"] if hidden["column"] else [])
    what = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
    return _clip(f"({what} not shown to fit the terminal; see --json)", width)


def _print_runs(model, color, width=None):
    runs = model["runs"]
    if not runs:
        what = " matching the filters" if model["filtered"] else ""
        print(f"no runs{what} in experiment {model['experiment']!r}")
        return
    hidden = _print_run_table(runs, color, width)
    if hidden:
        print(_hidden_note(hidden, width))
    more = model.get("total", len(runs)) - len(runs)
    if more > 0:
        print(f"\u2026 {more:,} more run{'s' if more > 1 else ''} (the newest {len(runs):,} of "
              f"{model['total']:,} shown): --all or --limit N")
    for run in runs:  # a garbled run.yaml was already reported by the reader; not this one
        if _is_corrupt(run) and run["error"] == "empty run.yaml":
            print(f"expman: warning: {run['path']}: empty run.yaml", file=sys.stderr)


# -- 12.4 inspect ----------------------------------------------------------------------------------

def _log_tail(run_dir, lines):
    """The last ``lines`` lines of run.log (reads only the end of a big log)."""
    if lines <= 0:
        return []
    want = max(8192, lines * 200)
    while True:
        text, end = load_log(run_dir, since=-want, max_bytes=want)
        from_start = end <= want
        got = text.splitlines()
        if not from_start and got:
            got = got[1:]  # the first line was cut in the middle
        if len(got) >= lines or from_start or want >= 1 << 26:
            return got[-lines:]
        want *= 4


def _tree_lines(mapping, indent="  "):
    out = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.append(f"{indent}{key}:")
            out.extend(_tree_lines(value, indent + "  "))
        else:
            out.append(f"{indent}{key}: {_fmt_param(value, limit=200)}")
    return out


def _job_text(run):
    """'group 4711, rank 3 of 8 (local 1)' for a rank of a distributed job, else None."""
    if not run.get("group"):
        return None
    text = f"group {run['group']}"
    if run.get("rank") is not None:
        text += f", rank {run['rank']}"
        if run.get("world_size"):
            text += f" of {run['world_size']}"
        local = run.get("local_rank")
        if type(local) is int:
            text += f" (local {local})"
    return text


def _mapping_text(value):
    if not isinstance(value, dict) or not value:
        return None
    return ", ".join(f"{k} {v}" if isinstance(value, dict) and k.islower() else f"{k}={v}"
                     for k, v in value.items())


def _cmd_inspect(args):
    model = _inspect_model(args.run_dir, args.log_lines)
    if args.json:
        _print_json(_inspect_json(model))
    else:
        _print_inspect(model, _use_color(), args.log_lines)
    return _EXIT_OK


def _inspect_model(run_dir, log_lines):
    """Everything `expman inspect` shows of one run, for its text and its --json."""
    run = load_run(run_dir)
    stats = metric_stats(run_dir)
    return {"run": run, "metrics": stats, "artifacts": list_artifacts(run_dir),
            "log_tail": _log_tail(run_dir, log_lines),
            "scalars": {k: v for k, v in run["summary"].items() if k not in stats},
            "media": _media_summary(*_resolve_run(run_dir))}


def _inspect_json(model):
    return {**model["run"], "metrics": model["metrics"], "scalars": model["scalars"],
            "artifacts": model["artifacts"], "log_tail": model["log_tail"], **model["media"]}


def _git_text(git):
    """'0123456789ab (main, dirty)' from run.yaml's git mapping, or None."""
    git = git if isinstance(git, dict) else {}
    if not git.get("commit"):
        return None
    extra = ([str(git["branch"])] if git.get("branch") else []) + (
        ["dirty"] if git.get("dirty") else [])
    return str(git["commit"])[:12] + (f" ({', '.join(extra)})" if extra else "")


def _inspect_fields(run, color):
    """The (name, text) lines at the top of `expman inspect`; None texts are left out."""
    status = _status_cell(run["status"], color).styled
    recorded = run.get("recorded_status")
    if isinstance(recorded, str) and recorded.lower() != run["status"]:
        status += f" (run.yaml says {recorded}: the process is gone)"
    git = run.get("git") if isinstance(run.get("git"), dict) else {}
    host = run.get("hostname") or "-"
    if run.get("pid"):
        host += f" (pid {run['pid']}" + (f", user {run['user']})" if run.get("user") else ")")
    fields = [
        ("run", f"{run['experiment']}/{run['name']}" if run["experiment"] else run["name"]),
        ("path", run["path"]), ("status", status),
        ("started", _fmt_time(run["started_at"])), ("finished", _fmt_time(run["finished_at"])),
        ("duration", _human_duration(run["duration_secs"])),
        ("rows", f"{run['rows']} (last step {_fmt_num(run['last_step'])})"),
        ("host", host), ("command", run.get("command")), ("cwd", run.get("cwd")),
        ("python", run.get("python")), ("git", _git_text(git)),
        ("git diff", f"artifacts/{git['diff_artifact']}" if git.get("diff_artifact") else None),
        ("project", run.get("project")), ("job", _job_text(run)),
        ("packages", _mapping_text(run.get("packages"))),
        ("scheduler", _mapping_text(run.get("scheduler"))),
        ("tags", ", ".join(run["tags"]) or None), ("description", run["description"] or None),
        ("error", run.get("error")),
    ]
    if run.get("dropped_rows"):
        fields.append(("dropped rows", str(run["dropped_rows"])))
    return fields


def _print_inspect(model, color, log_lines):
    run = model["run"]
    fields = _inspect_fields(run, color)
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        if value not in (None, ""):
            text = str(value).splitlines()[0] if key == "error" else str(value)
            print(f"{key:<{width}}  {text}")
    print()
    print("params" if run["config"] else "params: none")
    _print_lines(_tree_lines(run["config"]))
    print()
    _print_metric_stats(model["metrics"], model["scalars"])
    print()
    _print_artifacts(model["artifacts"])
    _print_media_summary(model["media"])
    if log_lines > 0:
        print()
        _print_log_tail(model["log_tail"])


def _print_metric_stats(stats, scalars):
    if stats:
        print("metrics")
        rows = [[k, _fmt_num(s["last"]), _fmt_num(s["min"]), _fmt_num(s["max"]),
                 str(s["count"]), _fmt_num(s["last_step"])] for k, s in stats.items()]
        _print_lines(_table(["KEY", "LAST", "MIN", "MAX", "COUNT", "LAST STEP"], rows,
                            right={1, 2, 3, 4, 5}, indent="  "))
    else:
        print("metrics: none")
    if scalars:
        print()
        print("scalars")
        _print_lines(_table(["KEY", "VALUE"], [[k, _fmt_num(v)] for k, v in scalars.items()],
                            right={1}, indent="  "))


def _print_artifacts(artifacts):
    if not artifacts:
        print("artifacts: none")
        return
    total = sum(a["size"] for a in artifacts)
    print(f"artifacts ({len(artifacts)} file{'s' if len(artifacts) > 1 else ''}, "
          f"{_human_bytes(total)})")
    _print_lines(_table(["PATH", "SIZE", "KIND"],
                        [[a["path"], _human_bytes(a["size"]), a["kind"]] for a in artifacts],
                        right={1}, indent="  "))


def _print_log_tail(lines):
    if not lines:
        print("log: empty")
        return
    print(f"log (last {len(lines)} line{'s' if len(lines) > 1 else ''} of run.log)")
    _print_lines(("  " + line).rstrip() for line in lines)


def _print_media_summary(media):
    """The media and histogram tags of `expman inspect` (nothing when the run logged none)."""
    def plural(n, word):
        return f"{n} {word}{'' if n == 1 else 's'}"
    if media["media"]:
        items = sum(m["count"] for m in media["media"].values())
        print()
        print(f"media ({plural(len(media['media']), 'tag')}, {plural(items, 'item')})")
        _print_lines(_table(["TAG", "KIND", "COUNT", "LAST STEP"],
                            [[tag, m["kind"], str(m["count"]), str(m["last_step"])]
                             for tag, m in media["media"].items()], right={2, 3}, indent="  "))
    if media["histograms"]:
        rows = sum(m["count"] for m in media["histograms"].values())
        print()
        print(f"histograms ({plural(len(media['histograms']), 'tag')}, "
              f"{plural(rows, 'histogram')})")
        _print_lines(_table(["TAG", "COUNT", "LAST STEP"],
                            [[tag, str(m["count"]), str(m["last_step"])]
                             for tag, m in media["histograms"].items()], right={1, 2},
                            indent="  "))


# -- 12.5 compare ----------------------------------------------------------------------------------

def _run_labels(runs, given):
    labels = [r["name"] for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{r['experiment']}/{r['name']}" for r in runs]
    if len(set(labels)) < len(labels):
        labels = list(given)
    return labels


def _cmd_compare(args):
    if len(args.run_dirs) < 2:
        raise _UsageError("compare needs at least two run directories")
    both = set(args.minimize or ()) & set(args.maximize or ())
    if both:
        raise _UsageError(f"--minimize and --maximize both name {sorted(both)[0]!r}")
    model = _compare_model(args.run_dirs, args.minimize or (), args.maximize or ())
    if args.json:
        _print_json(_compare_json(model))
    else:
        _print_compare(model, _use_color(), _fit_width())
    return _EXIT_OK


def _compare_model(run_dirs, minimize=(), maximize=()):
    """What `expman compare` shows, for its text and its --json: the runs, params that differ
    (_MISSING where a run lacks one), the same params, and per metric its goal and, for each
    run, last and best value."""
    runs = [load_run(d) for d in run_dirs]
    stats = [metric_stats(d) for d in run_dirs]
    differ, same = _split_params(runs)
    metric_keys = list(dict.fromkeys(k for s in stats for k in s))
    metrics = {key: _compare_metric([s.get(key) for s in stats],
                                    _metric_goal(key, minimize, maximize))
               for key in metric_keys}
    return {"runs": runs, "labels": _run_labels(runs, run_dirs), "params": differ,
            "same_params": same, "metrics": metrics}


def _split_params(runs):
    """({key: [value per run]} of the params that differ, {key: value} of those that don't)."""
    differ, same = {}, {}
    for key in dict.fromkeys(k for r in runs for k in r["params"]):
        values = [r["params"].get(key, _MISSING) for r in runs]
        texts = {json.dumps(v, sort_keys=True, default=str) if v is not _MISSING else
                 "\0missing" for v in values}
        if len(texts) > 1:
            differ[key] = values
        else:
            same[key] = values[0]
    return differ, same


def _compare_metric(per_run_stats, goal):
    """{"best_is": goal, "best_run": index or None, "runs": [per-run cell or None]}; a cell
    holds the run's last value, its min and max (finite values; taken from the rows, as last
    is, so a crashed run's run.yaml lagging behind its data cannot disagree with it) and best:
    its min or max by the goal. The best run is the one with the best finite value, and only
    when there is a goal."""
    cells = []
    for st in per_run_stats:
        best = None if st is None or goal is None else st[goal]
        cells.append(None if st is None else {"last": st["last"], "min": st["min"],
                                              "max": st["max"], "best": best,
                                              "count": st["count"],
                                              "last_step": st["last_step"]})
    finite = [c["best"] for c in cells
              if c and isinstance(c["best"], float) and math.isfinite(c["best"])]
    best_run = None
    if goal is not None and finite and len(cells) > 1:
        winner = min(finite) if goal == "min" else max(finite)
        best_run = next(i for i, c in enumerate(cells) if c and c["best"] == winner)
    return {"best_is": goal, "best_run": best_run, "runs": cells}


def _compare_json(model):
    return {
        "runs": [{"label": lab, "name": r["name"], "experiment": r["experiment"],
                  "path": r["path"], "status": r["status"],
                  "duration_secs": r["duration_secs"], "rows": r["rows"]}
                 for lab, r in zip(model["labels"], model["runs"])],
        "params": {k: [None if v is _MISSING else v for v in vals]
                   for k, vals in model["params"].items()},
        "same_params": model["same_params"],
        "metrics": {k: {"best_is": m["best_is"],
                        "best_run": None if m["best_run"] is None else
                        model["labels"][m["best_run"]], "runs": m["runs"]}
                    for k, m in model["metrics"].items()}}


def _print_compare(model, color, width=None):
    """The text of `expman compare`: a table of the runs, one of the params that differ and
    one of the metrics (last, min, max per run; the best starred)."""
    right = set(range(2, 2 + len(model["runs"])))
    _print_compare_runs(model, color, right, width)
    print()
    _print_compare_params(model, right, width)
    print()
    _print_compare_metrics(model, right, width)


def _print_compare_runs(model, color, right, width):
    runs = model["runs"]
    rows = [["status", ""] + [_status_cell(r["status"], color) for r in runs],
            ["duration", ""] + [_human_duration(r["duration_secs"]) for r in runs],
            ["rows", ""] + [str(r["rows"]) for r in runs]]
    _print_lines(_table(["", ""] + model["labels"], rows, right=right, width=width))


def _print_compare_params(model, right, width):
    differ, same = model["params"], model["same_params"]
    if not differ:
        print(f"params: all {len(same)} the same" if same else "params: none")
        return
    print(f"params that differ ({len(differ)}; {len(same)} the same)")
    rows = [[k, ""] + [_fmt_param(v) for v in vals] for k, vals in differ.items()]
    _print_lines(_table(["PARAM", ""] + model["labels"], rows, right=right, indent="  ",
                        width=width))


def _print_compare_metrics(model, right, width):
    if not model["metrics"]:
        print("metrics: none")
        return
    print("metrics (best: min for loss/error-like keys, max for acc/f1/auc-like ones)")
    rows = []
    for key, info in model["metrics"].items():
        rows.extend(_compare_metric_rows(key, info))
    _print_lines(_table(["METRIC", ""] + model["labels"], rows, right=right, indent="  ",
                        width=width))
    print("  (* the best run)")


def _compare_metric_rows(key, info):
    """A metric's three text rows: last, then min and max, the goal's one as "best (goal)"
    with the winning run starred ("-" for a run without the metric)."""
    cells, goal = info["runs"], info["best_is"]
    winner = None if info["best_run"] is None else cells[info["best_run"]]["best"]

    def plain(which):
        return [(_fmt_num(c[which]) if c else "-") + "  " for c in cells]

    def starred(c):
        if not c:
            return "-  "
        return _fmt_num(c["best"]) + (" *" if winner is not None and c["best"] == winner
                                      else "  ")

    rows = [[key, "last"] + plain("last")]
    for which in ("min", "max"):   # the goal's extreme is the best, starred on the winner
        if which == goal:
            rows.append(["", f"best ({goal})"] + [starred(c) for c in cells])
        else:
            rows.append(["", which] + plain(which))
    return rows


# -- 12.6 tail -------------------------------------------------------------------------------------

def _print_rows(table):
    """One line per row: ``step 120  train/loss=0.123 val/acc=0.91`` (keys it logged only)."""
    if not table.num_rows:
        return
    names = [n for n in table.column_names if n not in RESERVED_COLUMNS]
    steps = table.column("step").to_pylist()
    columns = [table.column(n).to_pylist() for n in names]
    out = sys.stdout
    for i, step in enumerate(steps):
        values = " ".join(f"{name}={_fmt_num(col[i])}" for name, col in zip(names, columns)
                          if col[i] is not None)
        out.write(f"step {step}  {values}\n" if values else f"step {step}\n")
    out.flush()


def _cmd_tail(args):
    store, path = _resolve_run(args.run_dir)
    run_dir = _location(store, path)
    meta_path = store.join(path, RUN_YAML)
    meta = _read_yaml(store, meta_path)
    name = f"{meta.get('experiment') or '?'}/{_split_parent(store, path)[1]}"
    status = _effective_status(meta)
    print(f"-- {name} ({status}); following metrics and run.log, Ctrl-C to stop", flush=True)
    cursor = max(0, _row_count(store, path) - _TAIL_CONTEXT_ROWS)
    # start with the last few log lines, as tail(1) does
    log_size = (store.stat(store.join(path, RUN_LOG)) or (0, 0))[0]
    start = max(0, log_size - 64 * 1024)
    text, log_offset = load_log(run_dir, since=start)
    if start:
        text = text.partition("\n")[2]  # the first line was cut in the middle
    pending = "".join(text.splitlines(keepends=True)[-_TAIL_CONTEXT_ROWS:])
    try:
        while True:
            # status first: once it says finished, everything written before it is on disk
            status = _effective_status(_read_yaml(store, meta_path))
            table = load_metrics(run_dir, since_row=cursor)
            cursor += table.num_rows
            _print_rows(table)
            while True:
                more, log_offset = load_log(run_dir, since=log_offset)
                if not more:
                    break
                pending += more
            if "\n" in pending:
                done, pending = pending.rsplit("\n", 1)
                sys.stdout.write(done + "\n")
                sys.stdout.flush()
            if status != "running":
                if pending:
                    print(pending, flush=True)
                print(f"-- {name} {status}", flush=True)
                return _EXIT_OK
            time.sleep(args.interval)
    except KeyboardInterrupt:
        if pending:
            print(pending)
        return _EXIT_OK


# -- 12.7 export -----------------------------------------------------------------------------------
#
# Every format streams: _MetricStream hands over a batch at a time, each written as it comes,
# so memory stays bounded whatever the run's size. json keeps its shape (one array of records,
# one record a line): an array streams as well as JSON lines do. parquet gets one row group
# per batch (65,536 rows).

def _json_records(batch, first):
    """The records of one batch as JSON text, each on its own line after a separator:
    timestamps as ISO-8601 text, NaN/inf as "NaN"/"Infinity"/"-Infinity" (as in the HTTP API;
    Python's float() and JS Number() read them), missing as null."""
    names = batch.schema.names
    columns = []
    for name, column in zip(names, batch.columns):
        if name == "timestamp":
            # via integers: to_pylist() of a tz-aware column needs a time-zone database,
            # which bare machines (and Windows without tzdata) do not have
            epoch = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
            values = [None if v is None else (epoch + _dt.timedelta(microseconds=v)).isoformat()
                      for v in column.cast(pa.int64()).to_pylist()]
        elif name == "step":
            values = column.to_pylist()
        else:
            values = [_json_number(v) for v in column.to_pylist()]
        columns.append(values)
    dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
    chunks = []
    for i in range(batch.num_rows):
        record = {name: col[i] for name, col in zip(names, columns)}
        chunks.append(("\n" if first and i == 0 else ",\n") + dumps(record))
    return "".join(chunks).encode("utf-8")


def _export_stream(stream, fmt, sink, progress):
    """Write every batch of stream to the binary file object sink; the rows written."""
    rows = 0
    if fmt == "json":
        sink.write(b"[")
        for batch in stream:
            for offset in range(0, batch.num_rows, 8192):   # a batch as Python objects is big
                part = batch.slice(offset, 8192)
                sink.write(_json_records(part, rows == 0))
                rows += part.num_rows
                progress.update(part.num_rows)
        sink.write(b"\n]\n" if rows else b"]\n")
        return rows
    if fmt == "csv":
        writer = importlib.import_module("pyarrow.csv").CSVWriter(sink, stream.schema)
    else:
        writer = pq.ParquetWriter(sink, stream.schema, compression="snappy")
    with writer:
        for batch in stream:
            writer.write_batch(batch)
            rows += batch.num_rows
            progress.update(batch.num_rows)
    return rows


class _TextSink:
    """A binary write() onto a text-only stdout (an embedding app): text formats only."""

    def __init__(self, stream):
        self.stream = stream
        self.decoder = __import__("codecs").getincrementaldecoder("utf-8")()

    def write(self, data):
        self.stream.write(self.decoder.decode(bytes(data)))
        return len(data)

    def flush(self):
        self.stream.flush()


@contextlib.contextmanager
def _output_sink(output):
    """A binary file object for -o FILE (written beside it and renamed into place at the end,
    so a crash never leaves a half-written file) or stdout."""
    if output in (None, "-"):
        sys.stdout.flush()
        buffer = getattr(sys.stdout, "buffer", None)
        sink = _TextSink(sys.stdout) if buffer is None else buffer
        yield sink
        sink.flush()
        return
    output = os.path.abspath(os.path.expanduser(output))
    if os.path.isdir(output):
        raise InvalidInputError(f"-o {output} is a directory; give a file name")
    tmp = f"{output}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, output)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def _no_rows_error(run_dir, problems=()):
    name = os.path.basename(os.path.normpath(os.fspath(run_dir)))
    why = (f"{len(problems)} unreadable metrics file(s)" if problems
           else "it logged no metrics")
    return ExpmanError(f"nothing to export: run {name} ({run_dir}) has no metric rows ({why})")


def _cmd_export(args):
    if args.format == "tensorboard":
        return _cmd_export_tensorboard(args)
    to_stdout = args.output in (None, "-")
    if args.format == "parquet" and to_stdout and _isatty(sys.stdout):
        raise _UsageError("parquet is binary: not writing it to a terminal; use -o FILE "
                          "or redirect stdout")
    with _reader_warnings() as problems:
        stream = _MetricStream(args.run_dir)
        if not stream.total:   # refused before any output: no "[]" or empty file, exit 1
            stream.warn_unreadable()
            raise _no_rows_error(args.run_dir, problems)
        # no bar over rows being printed to the same terminal
        show = not (to_stdout and _isatty(sys.stdout))
        with _output_sink(args.output) as sink, _Progress(
                "export", total=stream.total, unit="rows", enabled=show) as progress:
            rows = _export_stream(stream, args.format, sink, progress)
    if problems:  # the readable rows are out; the exit code still says some were not
        if not rows:
            raise _no_rows_error(args.run_dir, problems)
        raise ExpmanError(f"{len(problems)} metrics file(s) of {args.run_dir} are unreadable "
                          f"(truncated or corrupt); exported the {rows} readable rows")
    if not to_stdout:
        print(f"wrote {rows} rows ({len(stream.keys)} metrics) to {args.output}",
              file=sys.stderr)
    return _EXIT_OK


def _cmd_export_tensorboard(args):
    meta = load_run(args.run_dir)
    output = args.output
    if output in (None, "-"):
        output = os.path.join("tensorboard", str(meta.get("experiment") or "expman"),
                              str(meta.get("name") or os.path.basename(
                                  os.path.normpath(args.run_dir))))
    if not _MetricStream(args.run_dir).total:
        raise _no_rows_error(args.run_dir)
    with _Progress("export", total=None, unit="rows") as progress:
        result = _export_tensorboard(args.run_dir, output, progress)
    print(f"wrote {result['rows']} rows ({result['metrics']} metrics) as TensorBoard events to "
          f"{result['output']}  (view: tensorboard --logdir {result['output']})",
          file=sys.stderr)
    return _EXIT_OK


# -- 12.8 import -----------------------------------------------------------------------------------

def _cmd_import(args):
    root = args.dir if args.dir is not None else _default_root()
    with _Progress("import", unit="B", enabled=not args.json) as progress:
        results = _import_tensorboard(args.logdir, root, args.experiment, progress)
    written = [r for r in results if not r.get("skipped")]
    if args.json:
        _print_json({"root": os.path.abspath(root), "runs": written,
                     "skipped": [r for r in results if r.get("skipped")],
                     "events": sum(r["events"] for r in results)})
    else:
        base = os.path.abspath(args.logdir)
        base = os.path.dirname(base) if os.path.isfile(base) else base   # one event file
        rows = [[r["run"], r["rows"], len(r["metrics"]), r["hparams"], r["events"],
                 os.path.relpath(r["source"], base)] for r in written]
        _print_lines(_table(["RUN", "ROWS", "METRICS", "HPARAMS", "EVENTS", "SOURCE"], rows,
                            right=(1, 2, 3, 4)))
        for r in results:
            if r.get("skipped"):
                print(f"skipped {r['source']}: {r['skipped']}")
            elif r.get("ignored"):
                kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(r["ignored"].items()))
                print(f"not imported from {r['run']} (not scalars, hparams or text): {kinds}")
        if written:
            print(f"experiment {written[0]['experiment']} in {os.path.abspath(root)}")
    if not written:
        raise ExpmanError(f"no scalars, hparams or text in the event files under "
                          f"{args.logdir}")
    return _EXIT_OK


# -- 12.9 clean ------------------------------------------------------------------------------------

def _cmd_clean(args):
    root = args.dir if args.dir is not None else _default_root()
    model = _clean_model(root, args.experiment, args.keep)
    if args.force:
        _delete_runs(model, progress=not args.json)
    if args.json:
        _print_json(_clean_json(model))
    else:
        _print_clean(model, _use_color())
    return _EXIT_FAIL if model["failures"] else _EXIT_OK


def _clean_model(root, experiment, keep):
    """What `expman clean` would delete: the experiment's runs sorted into running ones (never
    touched), skipped ones (unreadable and recently written), kept and doomed ones."""
    runs = list_runs(root, experiment)
    store, root_path = _resolve_root(root)
    exp_path = store.join(root_path, _safe_name(experiment, "experiment name"))
    quiet_secs = STALE_HEARTBEATS * DEFAULT_HEARTBEAT_SECS + 5
    now = time.time()
    running, skipped, candidates = [], [], []
    for run in runs:
        run_path = store.join(exp_path, run["name"])
        files = store.walk_files(run_path)
        entry = {"name": run["name"], "status": run["status"], "started_at": run["started_at"],
                 "path": store.display(run_path), "size_bytes": sum(f[1] for f in files)}
        if run["status"] == "running":
            running.append(entry)
        elif _is_corrupt(run) and any(now - f[2] < quiet_secs for f in files):
            # run.yaml is unreadable, so the status is a guess; recent writes mean a live run
            entry["reason"] = "run.yaml is unreadable and the run was written to recently"
            skipped.append(entry)
        else:
            candidates.append(entry)
    return {"store": store, "root": store.display(root_path), "exp_path": exp_path,
            "experiment": experiment, "keep": keep, "dry_run": True, "runs": len(runs),
            "running": running, "skipped": skipped, "kept": candidates[:keep],
            "delete": candidates[keep:], "failures": []}


def _delete_runs(model, progress=True):
    """Delete the doomed runs of a clean model, each looked at once more first: a run that
    started running meanwhile stays. Marks each entry deleted or not, with the reason."""
    store, doomed = model["store"], model["delete"]
    model["dry_run"] = False
    with _Progress("clean", total=len(doomed), unit="runs", enabled=progress) as bar:
        for entry in doomed:
            _delete_run(store, store.join(model["exp_path"], entry["name"]), entry,
                        model["failures"])
            bar.update()


def _delete_run(store, run_path, entry, failures):
    try:  # look once more: never delete a run that is running now
        if _effective_status(_read_yaml(store, store.join(run_path, RUN_YAML))) == "running":
            entry["deleted"], entry["reason"] = False, "started running"
            return
    except ExpmanError:
        pass
    try:
        store.delete_tree(run_path)
        entry["deleted"] = True
    except OSError as exc:
        entry["deleted"], entry["reason"] = False, exc.strerror or str(exc)
        failures.append(entry)


def _clean_gone(model):
    """The runs deleted (or, in a dry run, to delete), and the bytes that frees."""
    gone = model["delete"] if model["dry_run"] else [e for e in model["delete"]
                                                     if e.get("deleted")]
    return gone, sum(e["size_bytes"] for e in gone)


def _clean_json(model):
    return {"root": model["root"], "experiment": model["experiment"], "keep": model["keep"],
            "dry_run": model["dry_run"], "delete": model["delete"],
            "freed_bytes": _clean_gone(model)[1], "kept": [e["name"] for e in model["kept"]],
            "running": [e["name"] for e in model["running"]], "skipped": model["skipped"]}


def _print_clean(model, color):
    running, doomed, force = model["running"], model["delete"], not model["dry_run"]
    print(f"{model['experiment']}: {model['runs']} runs; keeping the {len(model['kept'])} "
          f"newest that are not running" +
          (f"; {len(running)} running left alone" if running else ""))
    for entry in model["skipped"]:
        print(f"skipping {entry['name']}: {entry['reason']}")
    if not doomed:
        print(f"nothing to delete (keep {model['keep']})")
        return
    gone, freed = _clean_gone(model)
    print(f"{'deleted' if force else 'would delete'} {len(gone)} "
          f"run{'s' if len(gone) != 1 else ''}, {_human_bytes(freed)}{' freed' if force else ''}:")
    rows = [[e["name"], _status_cell(e["status"], color), _fmt_time(e["started_at"]),
             _human_bytes(e["size_bytes"])] +
            ([("deleted" if e.get("deleted") else f"NOT deleted: {e.get('reason')}")]
             if force else []) for e in doomed]
    headers = ["RUN", "STATUS", "STARTED", "SIZE"] + (["RESULT"] if force else [])
    _print_lines(_table(headers, rows, right={3}, indent="  "))
    if not force:
        print(f"dry run: nothing deleted; add --force to delete these {len(doomed)} runs")
    for entry in model["failures"]:
        _cli_error(f"could not delete {entry['path']}: {entry['reason']}")


# -- 12.10 reap ------------------------------------------------------------------------------------

def _cmd_reap(args):
    if args.force and args.dry_run:
        raise _UsageError("--force and --dry-run contradict each other")
    store, path = _open_store(args.dir if args.dir is not None else _default_root())
    report = _reap_model(store, path, args.stale, not args.force, args.compact,
                         progress=not args.json)
    if args.json:
        _print_json({k: v for k, v in report.items() if k != "failures"})
    else:
        _print_reap(report)
    return _EXIT_FAIL if report["failures"] else _EXIT_OK


def _reap_targets(store, path):
    """The run directories under path: a root, one experiment, or one run."""
    if store.stat(store.join(path, RUN_YAML)) is not None:
        return [path]
    if not store.isdir(path):
        raise InvalidInputError(f"{_not_a_dir(store, path)}: {store.display(path)}")
    exps = [path] if store.stat(store.join(path, EXPERIMENT_YAML)) is not None else [
        store.join(path, e.name) for e in store.listdir(path)
        if e.is_dir and not e.name.startswith(".")]
    return sorted(store.join(exp, e.name) for exp in exps for e in store.listdir(exp)
                  if e.is_dir and not e.name.startswith(".")
                  and store.stat(store.join(exp, e.name, RUN_YAML)) is not None)


def _reap_model(store, path, stale, dry_run, compact, progress=True):
    """What `expman reap` did (or would do) to each run under path: the one model its text
    and --json outputs render."""
    runs = _reap_targets(store, path)
    now, results, failures = time.time(), [], 0
    with _Progress("reap", total=len(runs), unit="runs", enabled=progress) as bar:
        for run_path in runs:
            try:
                entry = _reap_run(store, run_path, stale, now, dry_run, compact)
            except OSError as exc:
                failures += 1
                entry = {"path": store.display(run_path), "action": "failed",
                         "reason": exc.strerror or str(exc)}
            results.append(entry)
            bar.update()
    return {"root": store.display(path), "dry_run": dry_run, "stale_secs": stale,
            "runs": results, "failures": failures}


def _print_reap(report):
    results, dry_run = report["runs"], report["dry_run"]
    acted = [e for e in results if e["action"] in ("reaped", "would-reap", "failed")]
    alive = sum(1 for e in results if e["action"] == "alive")
    for entry in acted:
        verb = {"reaped": "marked crashed", "would-reap": "would mark crashed",
                "failed": "could not mark"}[entry["action"]]
        extra = ""
        if entry.get("compacted_segments"):
            extra = f"; {entry['compacted_segments']} segments compacted into {METRICS_FILE}"
        print(f"{verb}: {entry['path']} ({entry['reason']}{extra})")
    done = sum(1 for e in acted if e["action"] != "failed")
    print(f"{done} run{'s' if done != 1 else ''} {'to mark' if dry_run else 'marked'} "
          f"crashed; {alive} running left alone; {len(results)} runs checked" +
          ("; dry run: nothing written" + ("; add --force to mark them" if done else "")
           if dry_run else ""))


# -- 12.11 serve / demo ----------------------------------------------------------------------------

def _serve_function():
    fn = globals().get("serve")
    if not callable(fn):
        raise ExpmanError("the dashboard server is not part of this build of expman")
    _check_server_packages()
    return fn


_SERVER_PACKAGES = ("bottle", "waitress")


def _check_server_packages():
    """Name every missing server package in one line (a vendored expman.py has only pyarrow
    and pyyaml beside it), rather than one per try."""
    import importlib.util
    missing = []
    for name in _SERVER_PACKAGES:
        try:
            found = (sys.modules.get(name) is not None or
                     importlib.util.find_spec(name) is not None)
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if not missing:
        return
    if getattr(sys, "frozen", False):
        raise ExpmanError(f"this expman binary was built without {' and '.join(missing)}, "
                          f"which the dashboard needs")
    raise ExpmanError(f"the dashboard needs {' and '.join(missing)}: "
                      f"pip install {' '.join(missing)}")


def _run_server(root, host, port, live, token):
    fn = _serve_function()
    try:
        return fn(root, host=host, port=port, live=live, token=token) or _EXIT_OK
    except KeyboardInterrupt:
        return _EXIT_OK
    except OSError as exc:
        raise ExpmanError(f"cannot serve on {host}:{port}: "
                          f"{(exc.strerror or str(exc)).lower()}") from None


def _cmd_serve(args):
    root = args.dir if args.dir is not None else _default_root()
    _resolve_root(root)
    token = args.token
    if token is None and args.token_file:
        token = _read_token_file(args.token_file)
    return _run_server(root, args.host, args.port, not args.no_live, token)


def _cmd_demo(args):
    make_demo = globals().get("_demo_data")
    if not callable(make_demo):
        raise ExpmanError("demo data is not available in this build of expman "
                          "(_demo_data is missing)")
    if not args.no_serve:
        _serve_function()  # a missing server package is said before the data is written
    root = args.dir if args.dir is not None else _default_root()
    store, path = _open_store(root)
    store.mkdir(path)
    import inspect
    if args.no_serve and "live_secs" in inspect.signature(make_demo).parameters:
        make_demo(root, live_secs=0)  # nobody would watch the live run: do not start it
    else:
        make_demo(root)
    print(f"demo runs written to {store.display(path)}", flush=True)
    if args.no_serve:
        return _EXIT_OK
    return _run_server(root, "127.0.0.1", args.port, True, None)


# -- 12.12 the parser ------------------------------------------------------------------------------

def _int_at_least(low):
    def parse(text):
        import argparse
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}")
        return value
    return parse


def _port(text):
    import argparse
    value = _int_at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def _number_of_seconds(text, holds, rule):
    """float(text) when holds(value), else argparse's error naming the rule."""
    import argparse
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not holds(value):
        raise argparse.ArgumentTypeError(f"{text} must be {rule}")
    return value


def _interval(text):
    return _number_of_seconds(text, lambda v: 0 < v <= 3600,
                              "more than 0 and at most 3600 seconds")


def _seconds(text):
    return _number_of_seconds(text, lambda v: v >= 0 and v != float("inf"),
                              "a number of seconds >= 0")


def _prog_name():
    """'exp' when run as the `exp` command (expman-rs's name, installed beside `expman`),
    else 'expman' (also for `python expman.py`)."""
    name = os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "expman")
    name = name[:-4] if name.lower().endswith(".exe") else name
    return "exp" if name == "exp" else "expman"


def _did_you_mean(message):
    """argparse's 'invalid choice' message plus the closest choice, where one is close
    (argparse does this itself from Python 3.14: then the message is left alone)."""
    match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if match is None or "maybe you meant" in message:
        return message
    import difflib
    choices = re.findall(r"'([^']*)'", match.group(2)) or [
        c.strip() for c in match.group(2).split(",")]
    close = difflib.get_close_matches(match.group(1), choices, n=1, cutoff=0.6)
    return f"{message}; did you mean '{close[0]}'?" if close else message


def _build_parser():
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one line, exit 2 (argparse would print the usage too)
            raise _UsageError(f"{_did_you_mean(message)} (see '{self.prog} --help')")

    dir_help = f"experiments directory (default: ${ENV_DIR} or ./{DEFAULT_ROOT})"
    options = dict(prog=_prog_name(), description="expman: a local-first experiment manager "
                   "for machine learning. Read runs, export metrics, serve the dashboard.")
    try:  # Python 3.14+: argparse says "maybe you meant" itself
        parser = Parser(suggest_on_error=True, **options)
    except TypeError:
        parser = Parser(**options)

    class Version(argparse.Action):  # argparse's own would re-wrap the build line
        def __call__(self, parser, namespace, values, option_string=None):
            print(_version_text())
            parser.exit()

    parser.add_argument("--version", action=Version, nargs=0,
                        help="show program's version number and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, handler, help_text, **kwargs):
        p = sub.add_parser(name, help=help_text, description=help_text, **kwargs)
        p.set_defaults(func=handler)
        return p

    def json_flag(p):
        p.add_argument("--json", action="store_true", help="machine-readable output")

    run_help = ("a run: its directory, EXP/RUN under the root, or EXP/latest, EXP/-2 ... "
                "(the newest run, the one before it ...)")
    root_help = f"root for EXP/RUN names (default: ${ENV_DIR} or ./{DEFAULT_ROOT})"

    p = command("list", _cmd_list, "list experiments, or the runs of one (newest first)")
    p.add_argument("dir", nargs="?", metavar="DIR", help=dir_help)
    p.add_argument("-e", "--experiment", metavar="EXP",
                   help="list the runs of this experiment (a name or its directory)")
    p.set_defaults(experiment_arg=True)
    p.add_argument("--project", metavar="P", help="only experiments (or runs) of this project")
    p.add_argument("--tags", metavar="EXPR", help="with -e: only runs whose tags match, e.g. "
                   "'baseline AND (cifar OR NOT tiny)'")
    p.add_argument("--where", metavar="EXPR", help="with -e: only runs the filter holds for, "
                   "e.g. 'lr>0.01 AND min:val/loss<0.3 AND (tag:base OR status=running)'; "
                   "p:KEY / m:KEY pick the param / metric of a shared name (bare: the param)")
    p.add_argument("--limit", type=_int_at_least(1), metavar="N",
                   help=f"with -e: the newest N runs only (on a terminal the newest "
                   f"{_TTY_RUNS} are shown unless --all; to a pipe or as --json, every run)")
    p.add_argument("--all", action="store_true", help="with -e: every run, on a terminal too")
    json_flag(p)

    p = command("inspect", _cmd_inspect, "show a run: metadata, params, metric stats, "
                "artifacts and the end of run.log")
    p.add_argument("run_dir", metavar="RUN", help=run_help)
    p.add_argument("--dir", metavar="DIR", help=root_help)
    p.add_argument("--log-lines", type=_int_at_least(0), default=20, metavar="N",
                   help="lines of run.log to show (default 20; 0: none)")
    json_flag(p)

    p = command("compare", _cmd_compare, "compare runs: params that differ and each metric's "
                "last, min and max, the best marked (min for loss/error-like keys, max for acc/f1/auc-like keys, "
                "none for others unless --minimize/--maximize)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN", help=run_help)
    p.add_argument("--dir", metavar="DIR", help=root_help)
    p.add_argument("--minimize", action="append", metavar="KEY",
                   help="lower KEY is better (repeatable; for keys the name does not tell)")
    p.add_argument("--maximize", action="append", metavar="KEY",
                   help="higher KEY is better (repeatable)")
    json_flag(p)

    p = command("tail", _cmd_tail, "follow a run's new metric rows and log lines until it ends "
                "(or Ctrl-C)")
    p.add_argument("run_dir", metavar="RUN", help=run_help)
    p.add_argument("--dir", metavar="DIR", help=root_help)
    p.add_argument("--interval", type=_interval, default=1.0, metavar="S",
                   help="seconds between checks (default 1)")

    p = command("export", _cmd_export, "write a run's whole metrics table (live runs too). "
                "json: a list of records, timestamps as ISO-8601 text, NaN/inf as the strings "
                "\"NaN\"/\"Infinity\"/\"-Infinity\", missing values null")
    p.add_argument("run_dir", metavar="RUN", help=run_help)
    p.add_argument("--dir", metavar="DIR", help=root_help)
    p.add_argument("-f", "--format", choices=("csv", "json", "parquet", "tensorboard"),
                   default="csv", help="tensorboard: event files in a directory (-o DIR, "
                   "default ./tensorboard/EXPERIMENT/RUN); needs the tensorboard package")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write here instead of stdout (a directory for tensorboard)")

    p = command("import", _cmd_import, "turn TensorBoard event files into expman runs: one "
                "run per directory holding event files (scalars with their steps and wall "
                "times, hparams, text); needs the tensorboard package")
    p.add_argument("logdir", metavar="TB_LOGDIR",
                   help="a directory holding event files (searched recursively), or one file")
    p.add_argument("--dir", metavar="DIR", help=dir_help)
    p.add_argument("-e", "--experiment", metavar="EXP",
                   help="experiment to import into (default: the name of TB_LOGDIR)")
    json_flag(p)

    p = command("clean", _cmd_clean, "delete an experiment's old runs, keeping the newest; "
                "running runs are never touched; a dry run unless --force")
    p.add_argument("experiment", metavar="EXPERIMENT", help="its name or its directory")
    p.add_argument("--dir", metavar="DIR", help=dir_help)
    p.set_defaults(experiment_arg=True)
    p.add_argument("-k", "--keep", type=_int_at_least(0), default=5, metavar="N",
                   help="runs to keep, newest first, running ones not counted (default 5)")
    p.add_argument("--force", action="store_true", help="really delete")
    json_flag(p)

    p = command("reap", _cmd_reap, "mark runs whose heartbeat is stale and whose process is "
                "gone as crashed in their run.yaml (runs on other hosts of a shared "
                "filesystem: the heartbeat alone decides)")
    p.add_argument("dir", nargs="?", metavar="DIR", help=dir_help + "; or one experiment or "
                   "run (a directory, EXP, EXP/RUN, EXP/latest)")
    p.set_defaults(target_arg=True)
    p.add_argument("--stale", type=_seconds, default=None, metavar="S",
                   help="heartbeat age, in seconds, past which a run counts as stale "
                        f"(default: {STALE_HEARTBEATS} heartbeat intervals + 5 s, about "
                        f"{STALE_HEARTBEATS * DEFAULT_HEARTBEAT_SECS + 5:.0f} s)")
    p.add_argument("--force", action="store_true", help="really mark them (without it, a dry "
                   "run that only says what would be marked, as clean does)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be marked "
                   "(the default; kept for scripts that pass it)")
    p.add_argument("--compact", action="store_true", help="also merge a reaped run's leftover "
                   "segments into metrics.parquet, so it reads like a closed run")
    json_flag(p)

    p = command("serve", _cmd_serve, "serve the live dashboard")
    p.add_argument("dir", nargs="?", metavar="DIR", help=dir_help)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("-p", "--port", type=_port, default=8000,
                   help="port (default 8000; 0: any free)")
    p.add_argument("--no-live", action="store_true", help="no live updates (static snapshot)")
    p.add_argument("--token", help="require this token (default: $EXPMAN_TOKEN; one is made "
                                   "up when binding a non-loopback host)")
    p.add_argument("--token-file", metavar="FILE", help="read the token from FILE (unlike "
                                                        "--token, not shown by ps)")

    p = command("demo", _cmd_demo, "write a few demo runs, then serve the dashboard on them")
    p.add_argument("dir", nargs="?", metavar="DIR", help=dir_help)
    p.add_argument("-p", "--port", type=_port, default=8000)
    p.add_argument("--no-serve", action="store_true", help="only write the demo runs")
    return parser


def _version_text():
    """'expman X.Y.Z', and in the binary a line saying what it was built from (BUILD_INFO,
    which build_binary.sh writes and expman.spec bundles)."""
    text = f"expman {__version__}"
    if getattr(sys, "frozen", False):
        try:
            with open(os.path.join(sys._MEIPASS, "BUILD_INFO"), encoding="utf-8") as f:
                text += "\n" + f.read().strip()
        except (AttributeError, OSError):
            pass
    return text


def _describe_error(exc):
    if isinstance(exc, ExpmanError):
        return str(exc)
    if isinstance(exc, OSError):
        what = (exc.strerror or str(exc) or type(exc).__name__)
        what = what[:1].lower() + what[1:]
        return f"{what}: {exc.filename}" if exc.filename else what
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        package = {"yaml": "pyyaml"}.get(exc.name.split(".")[0], exc.name.split(".")[0])
        if package in ("pyarrow", "pyyaml", "bottle", "waitress"):
            if getattr(sys, "frozen", False):
                return (f"this expman binary was built without {exc.name}, which this "
                        f"command needs")
            return f"this command needs {package}: pip install {package}"
    arrow = sys.modules.get("pyarrow")
    if arrow is not None and isinstance(exc, arrow.ArrowException):
        return f"cannot read the metrics: {exc}"
    return f"unexpected {type(exc).__name__}: {exc} (set EXPMAN_DEBUG=1 for the traceback)"


def main(argv=None):
    """The command line: ``expman list|inspect|compare|tail|export|import|clean|reap|serve``
    (and ``demo``).

    >>> expman.main(["list", "experiments", "-e", "resnet"])     # returns the exit code

    Prints results on stdout and one ``expman: error: ...`` line on stderr for a failure:
    exit 0 success, 1 failure, 2 bad usage, 130 interrupted.
    """
    handler = _stderr_warnings_handler()
    _log.addHandler(handler)
    with warnings.catch_warnings():
        warnings.simplefilter("always", ExpmanWarning)
        warnings.showwarning = _show_warning
        try:
            return _main(argv)
        finally:
            _log.removeHandler(handler)


def _main(argv):
    try:
        parser = _build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else _EXIT_OK
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return _EXIT_USAGE
        return args.func(_resolve_names(args))
    except _UsageError as exc:
        _cli_error(exc)
        return _EXIT_USAGE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return _EXIT_INTERRUPTED
    except BrokenPipeError:  # `expman export ... | head`: the reader left, that is fine
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass
        return _EXIT_FAIL
    except Exception as exc:  # noqa: BLE001 - a user never sees a traceback
        if os.environ.get(ENV_DEBUG):
            import traceback
            traceback.print_exc()
        _cli_error(_describe_error(exc))
        return _EXIT_FAIL


# -- 12.13 demo data: `expman demo` writes these experiments and serves them -----------------------

def _demo_curve(rng, step, steps, lr, noise=0.04):
    progress = 1 - math.exp(-step * lr * 40 / steps)
    loss = 2.3 * (1 - progress) + 0.08 + rng.gauss(0, noise) * (1 - 0.7 * progress)
    acc = min(0.995, 0.1 + 0.88 * progress + rng.gauss(0, noise / 3))
    return max(loss, 0.01), max(acc, 0.0)


class _DemoClock:
    """Timestamps for demo rows as if the run had trained for real (secs_per_call apart)."""

    def __init__(self, start, secs_per_call):
        self.now, self.step = start, secs_per_call

    def __call__(self):
        self.now += self.step
        return self.now


def _backdate(exp, started, finished):
    """Make a finished demo run's run.yaml tell the times its synthetic rows tell."""
    path = _LOCAL_STORE.join(exp._path, RUN_YAML)
    meta = _read_yaml(_LOCAL_STORE, path)
    meta.update(started_at=_iso(started), finished_at=_iso(finished),
                heartbeat_at=_iso(finished), duration_secs=round(finished - started, 3))
    _LOCAL_STORE.write_atomic(path, _yaml_dump(meta))


def _demo_sample_grid(rng, progress, cells=4, cell=12):
    """A PNG of cells x cells generated "samples": noise that sharpens into rings as the model
    trains (progress 0..1)."""
    seeds = [(rng.random(), rng.random(), rng.random()) for _ in range(cells * cells)]
    size = cells * cell

    def pixel(x, y):
        r, g, b = seeds[(y // cell) * cells + x // cell]
        cx, cy = x % cell - cell / 2 + 0.5, y % cell - cell / 2 + 0.5
        ring = 0.5 + 0.5 * math.cos(math.hypot(cx, cy) * (1.2 + 2 * r))
        noise = ((x * 7919 + y * 104729 + int(r * 1000)) % 97) / 97
        v = progress * ring + (1 - progress) * noise
        return int(255 * v * (0.4 + 0.6 * r)), int(255 * v * (0.4 + 0.6 * g)), \
            int(255 * v * (0.4 + 0.6 * b))
    return _png_bytes(size, size, pixel)


_DEMO_WORDS = ("the", "model", "a", "cat", "sat", "on", "mat", "learns", "to", "predict", "next",
               "token", "slowly", "and", "then", "quickly", "image", "of", "dog", "red", "car")


def _demo_media(exp, rng, step, steps, acc):
    """Sample images, weight histograms and text generations, now and then, for the demo."""
    import random
    rng = random.Random(step * 7 + int(acc * 1000))  # not the run's rng: curves stay the same
    progress = step / max(1, steps - 1)
    if step % 100 == 0:
        spread = 1.0 - 0.6 * progress
        exp.log_histogram("weights/fc1", [rng.gauss(0.3 * progress, spread)
                                          for _ in range(1500)], step=step, bins=32)
        exp.log_histogram("grads/fc1", [rng.gauss(0, 0.5 / (1 + 10 * progress)) *
                                        rng.choice((1, 1, 1, 4)) for _ in range(1500)],
                          step=step, bins=32)
    if step % 250 == 0 or step == steps - 1:
        exp.log_image("samples", _demo_sample_grid(random.Random(step), min(1.0, acc)),
                      step=step)
    if step % 400 == 0 or step == steps - 1:
        n = 6 + int(10 * progress)
        words = [rng.choice(_DEMO_WORDS) for _ in range(n)]
        exp.log_text("val/generation", f"step {step}: " + " ".join(words) +
                     f"\n(accuracy {acc:.3f})", step=step)


def _demo_job(root, steps):
    """A distributed job in project 'llm': four ranks of one SLURM job (the dashboard folds
    them into one row and can draw their mean with a min/max band), plus a single-GPU run."""
    import random
    started = time.time() - 2 * 3600
    for rank in range(4):
        rng = random.Random(40 + rank)
        clock = _DemoClock(started, 1.5)
        with Experiment("gpt_small", base_dir=root, rank=rank, group="slurm-4711",
                        project="llm", config={"lr": 6e-4, "batch_size": 32, "world_size": 4},
                        tags=["demo", "ddp"], clock=clock, capture_git=False) as exp:
            for step in range(steps):
                loss, _acc = _demo_curve(rng, step, steps, 0.08, noise=0.06)
                exp.log_metrics({"train/loss": loss + 0.02 * rank,
                                 "train/tokens_per_sec": 41_000 + rng.gauss(0, 900)},
                                step=step)
        _backdate(exp, started, clock.now)
    clock = _DemoClock(started - 3600, 3.0)
    with Experiment("gpt_small", base_dir=root, run_name="single_gpu", project="llm",
                    config={"lr": 6e-4, "batch_size": 32, "world_size": 1}, tags=["demo"],
                    clock=clock, capture_git=False) as exp:
        rng = random.Random(39)
        for step in range(steps):
            loss, _acc = _demo_curve(rng, step, steps, 0.05, noise=0.06)
            exp.log_metrics({"train/loss": loss, "train/tokens_per_sec": 11_000 +
                             rng.gauss(0, 400)}, step=step)
    _backdate(exp, started - 3600, clock.now)


def _demo_data(root, live_secs=60.0, steps=2000):
    """Write realistic example experiments under root; returns the live thread (or None).

    Finished runs with different params, one that failed (diverged to NaN), one interrupted,
    and one that keeps logging for live_secs in a background thread, so the dashboard shows a
    live curve."""
    import random
    import tempfile

    root = os.fspath(root)
    quiet = dict(capture_git=False)
    grid = [(0.1, 64, "sgd"), (0.03, 64, "sgd"), (0.01, 128, "adam"), (0.003, 128, "adam"),
            (0.001, 256, "adamw")]
    tmp = tempfile.mkdtemp(prefix="expman-demo-")
    for i, (lr, batch, opt) in enumerate(grid):
        rng = random.Random(i)
        config = {"lr": lr, "batch_size": batch, "optimizer": {"name": opt, "momentum": 0.9,
                                                               "weight_decay": 5e-4},
                  "model": {"depth": 18, "width": 64}, "augment": ["flip", "crop"]}
        started = time.time() - (len(grid) + 1 - i) * 3600
        clock = _DemoClock(started, 1.2 + 0.3 * i)
        with Experiment("resnet_cifar10", base_dir=root, run_name=f"{opt}_lr{lr}",
                        config=config, tags=["demo", opt], description=f"{opt}, lr={lr}",
                        clock=clock, **quiet) as exp:
            best = 0.0
            for step in range(steps):
                loss, acc = _demo_curve(rng, step, steps, lr * (3 if opt != "sgd" else 1))
                row = {"train/loss": loss, "train/acc": acc,
                       "train/lr": lr * 0.5 * (1 + math.cos(math.pi * step / steps))}
                if step % 50 == 49:
                    row["val/loss"] = loss * 1.1 + 0.05
                    row["val/acc"] = acc * 0.97
                    best = max(best, row["val/acc"])
                exp.log_metrics(row, step=step)
                if step % 500 == 0:
                    exp.info(f"step {step}: loss {loss:.4f} acc {acc:.3f}")
                _demo_media(exp, rng, step, steps, acc)
            exp.log_scalar("best/val_acc", best)
            preds = os.path.join(tmp, "predictions.csv")
            with open(preds, "w") as fh:
                fh.write("id,label,predicted,confidence\n")
                for k in range(50):
                    fh.write(f"{k},{k % 10},{(k + (k % 7 == 0)) % 10},{rng.random():.3f}\n")
            exp.save_artifact(preds)
            png = os.path.join(tmp, "confusion.png")
            with open(png, "wb") as fh:
                fh.write(_png_bytes(100, 100, lambda x, y, a=acc: (
                    (int(255 * a), 60, 90) if x // 10 == y // 10 else
                    (30, 30 + (x * y) % 40, 60))))
            exp.save_artifact(png, "plots/confusion.png")
            table = pa.table({"epoch": list(range(10)),
                              "val_acc": [round(best * (1 - 0.5 ** (e + 1)), 4)
                                          for e in range(10)]})
            pq.write_table(table, os.path.join(tmp, "epochs.parquet"))
            exp.save_artifact(os.path.join(tmp, "epochs.parquet"))
        _backdate(exp, started, clock.now)
    # a run that diverged and raised (on the demo clock too: 300 steps take time)
    started, clock = time.time() - 30 * 60, _DemoClock(time.time() - 30 * 60, 1.3)
    try:
        with Experiment("resnet_cifar10", base_dir=root, run_name="sgd_lr1.0",
                        config={"lr": 1.0, "batch_size": 64, "optimizer": {"name": "sgd"}},
                        tags=["demo", "sgd"], description="lr too high: diverges",
                        clock=clock, **quiet) as exp:
            for step in range(300):
                loss = 2.3 * math.exp(step / 60)
                exp.log_metrics({"train/loss": loss if step < 280 else float("nan"),
                                 "train/acc": 0.1}, step=step)
            exp.warn("loss is NaN")
            raise FloatingPointError("loss diverged to NaN at step 280")
    except FloatingPointError:
        pass
    _backdate(exp, started, clock.now)
    # a second experiment: a small sweep with a different metric set
    for i, hidden in enumerate((64, 128, 256, 512)):
        rng = random.Random(100 + i)
        started = time.time() - (5 - i) * 900
        clock = _DemoClock(started, 0.4 * (1 + i))
        with Experiment("mnist_mlp", base_dir=root, run_name=f"h{hidden}",
                        config={"hidden": hidden, "lr": 1e-3, "dropout": 0.1 * i},
                        tags=["demo"], clock=clock, **quiet) as exp:
            for step in range(500):
                loss, acc = _demo_curve(rng, step, 500, 0.002 * (1 + i), noise=0.02)
                exp.log_metrics({"loss": loss, "accuracy": acc,
                                 "grad_norm": abs(rng.gauss(1, 0.3)) / (1 + step / 100)},
                                step=step)
        _backdate(exp, started, clock.now)
    _demo_job(root, steps)
    shutil.rmtree(tmp, ignore_errors=True)
    if live_secs <= 0:
        return None
    live = Experiment("resnet_cifar10", base_dir=root, run_name="live_adamw",
                      config={"lr": 0.002, "batch_size": 128, "optimizer": {"name": "adamw"}},
                      tags=["demo", "live"], description="still training", flush_interval_ms=200,
                      system_metrics=2.0, **quiet)  # sys/... charts (of this demo process)

    def train():
        rng, step, t_end = random.Random(7), 0, time.time() + live_secs
        while time.time() < t_end and not live.closed:
            loss, acc = _demo_curve(rng, step, steps, 0.006)
            row = {"train/loss": loss, "train/acc": acc}
            if step % 50 == 49:
                row["val/loss"], row["val/acc"] = loss * 1.1 + 0.05, acc * 0.97
            live.log_metrics(row, step=step)
            if step % 100 == 0:
                live.info(f"step {step}: loss {loss:.4f}")
            _demo_media(live, rng, step, steps, acc)
            step += 1
            time.sleep(0.05)
        live.close()

    thread = threading.Thread(target=train, name="expman-demo", daemon=True)
    thread.start()
    return thread


# 13 Dashboard page ##########################################################################
# One constant, so the module and the one-file binary need no data files and the
# page works offline. The server sends it verbatim (after swapping in the version);
# all data arrives through fetch("/api/...") and one EventSource, and whatever a
# user logged is put into the DOM as text, never parsed as HTML.
#
# The script's sections are numbered 13.1, 13.2, ... as `// --- 13.N name` lines, so
#   grep -n '^# [0-9]\|^# --\|^// --- [0-9]' expman.py
# prints the Python map and the page's in one list. 13.4 charts is the only code that draws
# (line charts and histogram heat maps). .ci/lint_page.py runs node --check and eslint on the
# script (the charts section also under one-statement-per-line and no one-letter names).
DASHBOARD_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>expman</title>
<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'%3E%3Crect width='32' height='32' rx='8' fill='%234a5ee0'/%3E%3Cpath d='M7 22l6-7 5 4 7-10' fill='none' stroke='white' stroke-width='3' stroke-linecap='round' stroke-linejoin='round'/%3E%3C/svg%3E">
<style>
:root {
  --bg: #ffffff; --bg-soft: #f4f5f7; --panel: #ffffff; --panel-2: #f9fafb;
  --fg: #1b1f24; --fg-2: #3d454f; --muted: #687380; --faint: #a3abb5;
  --border: #e3e6ea; --border-2: #d2d7de;
  --accent: #4a5ee0; --accent-2: #3a4dcc; --accent-soft: rgba(74, 94, 224, .10);
  --hover: #f4f6f9; --sel: #eef1fd;
  --ok: #1a9f53; --warn: #c27400; --err: #d1293d; --neutral: #8a939d;
  --err-soft: #fdecee; --warn-soft: #fff4de;
  --chart-grid: #eef0f3; --chart-axis: #cdd3da; --chart-text: #6f7782; --chart-cross: #8a939d;
  --chart-zoom: rgba(74, 94, 224, .12);
  --shadow: 0 1px 2px rgba(16, 24, 40, .05);
  --shadow-lg: -10px 0 32px rgba(16, 24, 40, .16);
  --mono: ui-monospace, "SF Mono", SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace;
  --row-h: 30px;
  color-scheme: light;
}
:root[data-theme=dark] {
  --bg: #0d0f13; --bg-soft: #0f1216; --panel: #161a20; --panel-2: #1a1f26;
  --fg: #e4e7eb; --fg-2: #c0c6ce; --muted: #8b949e; --faint: #5b636d;
  --border: #262c34; --border-2: #353c46;
  --accent: #7b8cff; --accent-2: #95a3ff; --accent-soft: rgba(123, 140, 255, .15);
  --hover: #1b2027; --sel: #1c2238;
  --ok: #3fb950; --warn: #e3a33a; --err: #f36b6b; --neutral: #7d8590;
  --err-soft: #3a1d21; --warn-soft: #3a2d14;
  --chart-grid: #21262e; --chart-axis: #39404a; --chart-text: #8b949e; --chart-cross: #6e7681;
  --chart-zoom: rgba(123, 140, 255, .16);
  --shadow: 0 1px 2px rgba(0, 0, 0, .3);
  --shadow-lg: -10px 0 32px rgba(0, 0, 0, .5);
  color-scheme: dark;
}
@media (prefers-color-scheme: dark) {
  :root:not([data-theme]) {
    --bg: #0d0f13; --bg-soft: #0f1216; --panel: #161a20; --panel-2: #1a1f26;
    --fg: #e4e7eb; --fg-2: #c0c6ce; --muted: #8b949e; --faint: #5b636d;
    --border: #262c34; --border-2: #353c46;
    --accent: #7b8cff; --accent-2: #95a3ff; --accent-soft: rgba(123, 140, 255, .15);
    --hover: #1b2027; --sel: #1c2238;
    --chart-grid: #21262e; --chart-axis: #39404a; --chart-text: #8b949e;
    color-scheme: dark;
  }
}
*, *::before, *::after { box-sizing: border-box; }
html, body { margin: 0; height: 100%; }
body {
  font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Noto Sans", Arial, sans-serif;
  color: var(--fg); background: var(--bg-soft); overflow: hidden;
  -webkit-font-smoothing: antialiased; text-rendering: optimizeLegibility;
}
button, input, select, textarea { font: inherit; color: inherit; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code, pre, .mono { font-family: var(--mono); font-size: 12px; }
[hidden] { display: none !important; }
.muted { color: var(--muted); }
.ico { fill: none; stroke: currentColor; stroke-width: 2; stroke-linecap: round; stroke-linejoin: round; flex: none; }
h2 { font-size: 14px; font-weight: 620; margin: 0; letter-spacing: -.005em; }
h4 { font-size: 11.5px; font-weight: 620; margin: 0 0 8px; color: var(--muted); text-transform: uppercase; letter-spacing: .05em; }

/* controls */
.btn {
  display: inline-flex; align-items: center; gap: 6px; height: 28px; padding: 0 10px;
  border: 1px solid var(--border-2); border-radius: 6px; background: var(--panel); cursor: pointer;
  font-size: 12.5px; white-space: nowrap;
}
.btn:hover { background: var(--hover); }
.btn.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
.btn.primary:hover { background: var(--accent-2); }
.btn.small { height: 24px; padding: 0 8px; font-size: 12px; }
.icon-btn {
  display: inline-grid; place-items: center; width: 28px; height: 28px; border-radius: 6px;
  border: 1px solid transparent; background: transparent; cursor: pointer; color: var(--muted);
}
.icon-btn:hover { background: var(--hover); color: var(--fg); }
input[type=search], input[type=text], select, textarea {
  height: 28px; border: 1px solid var(--border-2); border-radius: 6px; background: var(--panel);
  padding: 0 9px; outline: none; font-size: 12.5px;
}
textarea { height: auto; padding: 6px 9px; resize: vertical; width: 100%; line-height: 1.45; }
input:focus, select:focus, textarea:focus { border-color: var(--accent); box-shadow: 0 0 0 3px var(--accent-soft); }
input[type=checkbox] { accent-color: var(--accent); margin: 0; cursor: pointer; width: 14px; height: 14px; }
input[type=range] { accent-color: var(--accent); width: 110px; margin: 0; }
.switch { position: relative; display: inline-flex; align-items: center; gap: 7px; cursor: pointer; user-select: none; }
.switch input { position: absolute; opacity: 0; width: 1px; height: 1px; }
.switch .track { width: 28px; height: 16px; border-radius: 8px; background: var(--border-2); position: relative; transition: background .15s; }
.switch .track::after {
  content: ""; position: absolute; top: 2px; left: 2px; width: 12px; height: 12px; border-radius: 50%;
  background: #fff; transition: transform .15s; box-shadow: 0 1px 2px rgba(0,0,0,.25);
}
.switch input:checked + .track { background: var(--accent); }
.switch input:checked + .track::after { transform: translateX(12px); }
.switch input:focus-visible + .track { box-shadow: 0 0 0 3px var(--accent-soft); }

/* top bar */
#topbar {
  height: 46px; display: flex; align-items: center; gap: 12px; padding: 0 14px;
  background: var(--panel); border-bottom: 1px solid var(--border); position: relative; z-index: 30;
}
.brand { display: flex; align-items: center; gap: 8px; font-weight: 680; font-size: 15px; letter-spacing: -.02em; }
.brand .logo { width: 24px; height: 24px; border-radius: 7px; display: grid; place-items: center; color: #fff;
  background: linear-gradient(135deg, #4a5ee0, #8b5cf6); }
#crumbs { display: flex; align-items: center; gap: 6px; color: var(--muted); min-width: 0; font-size: 13px; }
#crumbs .sep { color: var(--faint); }
#crumb-exp { color: var(--fg); font-weight: 560; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.spacer { flex: 1; }
#live-indicator {
  display: inline-flex; align-items: center; gap: 7px; font-size: 12px; color: var(--muted);
  height: 26px; padding: 0 10px; border: 1px solid var(--border); border-radius: 999px; white-space: nowrap;
}
#live-indicator i { width: 7px; height: 7px; border-radius: 50%; background: var(--faint); }
#live-indicator[data-state=live] { color: var(--fg-2); }
#live-indicator[data-state=live] i { background: var(--ok); position: relative; }
#live-indicator[data-state=reconnecting] i, #live-indicator[data-state=connecting] i { background: var(--warn); }
#version { font-size: 11.5px; color: var(--faint); font-variant-numeric: tabular-nums; }

/* banner */
#banner {
  position: fixed; top: 56px; left: 50%; transform: translateX(-50%); z-index: 60; max-width: min(720px, 90vw);
  display: flex; align-items: flex-start; gap: 10px; padding: 8px 8px 8px 12px; border-radius: 8px;
  background: var(--err-soft); color: var(--err); border: 1px solid color-mix(in srgb, var(--err) 35%, transparent);
  box-shadow: 0 6px 20px rgba(0,0,0,.12); font-size: 12.5px;
}
#banner.info { background: var(--panel); color: var(--fg-2); border-color: var(--border-2); }
#banner-text { padding-top: 3px; overflow-wrap: anywhere; }
#banner .icon-btn { width: 24px; height: 24px; color: inherit; }

.diff-scroll { overflow: auto; max-height: 360px; padding: 0 12px 12px; }
#diff-table td.differs { background: var(--warn-soft); }
#diff-table th i { display: inline-block; width: 10px; height: 3px; border-radius: 2px; margin-right: 6px; vertical-align: middle; }
#runs-table tbody tr.cursor td { box-shadow: inset 0 1px 0 var(--accent), inset 0 -1px 0 var(--accent); }
#shortcuts { position: fixed; top: 80px; left: 50%; transform: translateX(-50%); padding: 14px 18px; width: 360px; }
kbd { font-family: var(--mono); font-size: 11px; border: 1px solid var(--border-2); border-bottom-width: 2px; border-radius: 4px; padding: 0 5px; background: var(--panel-2); }
.chart.full { position: fixed; inset: 56px 24px 24px 24px; z-index: 70; box-shadow: 0 12px 40px rgba(0,0,0,.3); display: flex; flex-direction: column; }
.chart.full .plot-wrap { flex: 1; height: auto; }
.chart-tool { border: 0; background: none; color: var(--faint); font-size: 11px; cursor: pointer; padding: 0 4px; height: 20px; border-radius: 4px; }
.chart-tool:hover { background: var(--hover); color: var(--fg); }
.goal-btn { border: 0; background: none; color: var(--faint); font-size: 11px; cursor: pointer; padding: 0 4px; height: 20px; border-radius: 4px; white-space: nowrap; }
.goal-btn:hover { background: var(--hover); color: var(--fg); }
.goal-btn[data-goal=min], .goal-btn[data-goal=max] { color: var(--accent); }
#runs-table th .goal { color: var(--accent); margin-left: 3px; font-size: 11px; }
#runs-table td.best { font-weight: 650; color: var(--ok); }
#offline {
  position: fixed; left: 0; right: 0; top: 46px; z-index: 61; padding: 7px 16px; text-align: center;
  background: var(--warn-soft); color: var(--fg); border-bottom: 1px solid var(--warn); font-size: 12.5px;
}
#offline strong { color: var(--warn); }
#filter-error { color: var(--err); font-size: 12px; white-space: nowrap; max-width: 340px; overflow: hidden; text-overflow: ellipsis; }
#filter.bad { border-color: var(--err); }
#charts-notes { margin: 8px 12px 0; padding: 6px 10px; border-radius: 6px; background: var(--err-soft); color: var(--err); font-size: 12.5px; }
#run-detail.missing .drawer-body > section:not(:first-child) { display: none; }
.detail-missing { color: var(--err); font-weight: 560; grid-column: 1 / -1; }
.run-problem { margin-left: 6px; color: var(--err); font-size: 11.5px; white-space: nowrap; }
.chip.problem .chip-label { color: var(--err); }
#runs-table th .col-resize { position: absolute; right: 0; top: 0; bottom: 0; width: 6px; cursor: col-resize; z-index: 2; }
#runs-table th .col-resize:hover { background: var(--accent-soft); }

/* layout */
#layout { display: grid; grid-template-columns: 232px minmax(0, 1fr); height: calc(100vh - 46px); }
#sidebar { background: var(--panel); border-right: 1px solid var(--border); overflow: auto; padding: 10px 8px; }
.side-head { display: flex; align-items: center; justify-content: space-between; padding: 4px 8px 8px;
  font-size: 11.5px; font-weight: 620; color: var(--muted); text-transform: uppercase; letter-spacing: .05em; }
#experiments { list-style: none; margin: 0; padding: 0; }
.exp-item {
  display: block; width: 100%; text-align: left; border: 0; background: transparent; cursor: pointer;
  padding: 7px 9px; border-radius: 7px; margin-bottom: 1px;
}
.exp-item:hover { background: var(--hover); }
.exp-item.active { background: var(--sel); }
.exp-item.active .exp-name { color: var(--accent); }
.exp-name { display: flex; align-items: center; gap: 6px; font-weight: 560; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.exp-name span { overflow: hidden; text-overflow: ellipsis; }
.exp-meta { font-size: 11.5px; color: var(--muted); display: flex; gap: 8px; margin-top: 1px; }
.exp-meta .live { color: var(--ok); display: inline-flex; align-items: center; gap: 4px; }
.side-empty { padding: 8px 10px; color: var(--muted); font-size: 12px; }
#main { overflow: auto; padding: 16px 20px 48px; }
.panel { background: var(--panel); border: 1px solid var(--border); border-radius: 10px; box-shadow: var(--shadow); margin-bottom: 16px; min-width: 0; }
.panel-head { display: flex; align-items: center; gap: 10px; padding: 10px 12px; flex-wrap: wrap; border-bottom: 1px solid var(--border); }
.panel-head .title { display: flex; align-items: baseline; gap: 10px; min-width: 0; flex: 1 1 200px; }
#exp-desc { color: var(--muted); font-size: 12.5px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#filter { width: 300px; }
#runs-count { color: var(--muted); font-size: 12px; white-space: nowrap; font-variant-numeric: tabular-nums; }

/* runs table */
#runs-scroll { overflow: auto; max-height: 38vh; position: relative; }
#runs-table { min-width: 100%; border-collapse: separate; border-spacing: 0; table-layout: fixed; font-size: 12.5px; font-variant-numeric: tabular-nums; }
#runs-table th, #runs-table td {
  height: var(--row-h); padding: 0 10px; text-align: left; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
  border-bottom: 1px solid var(--border); background: var(--panel);
}
#runs-table thead th {
  position: sticky; top: 0; z-index: 2; background: var(--panel-2); font-weight: 600; font-size: 12px; color: var(--fg-2);
  cursor: pointer; user-select: none; height: 32px;
}
#runs-table thead th:hover { color: var(--fg); }
#runs-table th .arrow { color: var(--accent); margin-left: 4px; font-size: 10px; }
#runs-table th.grp-param, #runs-table td.grp-param.first { border-left: 1px solid var(--border); }
#runs-table th.grp-metric.first, #runs-table td.grp-metric.first { border-left: 1px solid var(--border); }
#runs-table th .kind { font-weight: 500; color: var(--faint); margin-right: 4px; font-size: 10.5px; }
#runs-table td.num, #runs-table th.num { text-align: right; }
#runs-table .c-sel { position: sticky; left: 0; z-index: 1; width: 34px; padding: 0 0 0 12px; }
#runs-table .c-name { position: sticky; left: 34px; z-index: 1; border-right: 1px solid var(--border); }
#runs-table thead .c-sel, #runs-table thead .c-name { z-index: 3; }
#runs-table tbody tr:hover td { background: var(--hover); }
#runs-table tbody tr.selected td { background: var(--sel); }
#runs-table tbody tr.flash td { animation: flash 2.4s ease-out; }
#runs-table tr.spacer td { padding: 0; border: 0; height: auto; background: transparent; }
/* a distributed job's ranks: one group row that expands */
#runs-table tr.job-row td, #runs-table tr.group-row td { font-weight: 560; }
#runs-table tr.group-row td .spread { color: var(--muted); font-weight: 400; font-size: 11px; margin-left: 6px; }
#runs-table tr.group-row td .varies { color: var(--muted); font-weight: 400; font-style: italic; }
#runs-table tr.group-more td { font-size: 12px; padding-left: 30px; }
#runs-table tr.job-member td.c-name { padding-left: 30px; }
.job-toggle { border: 0; background: none; padding: 0 4px 0 0; cursor: pointer; color: var(--muted); vertical-align: middle; }
.job-toggle .ico { transition: transform .12s; }
.job-row.open .job-toggle .ico, .group-row.open .job-toggle .ico { transform: rotate(90deg); }
.job-count { color: var(--muted); font-weight: 450; margin-left: 6px; font-size: 11.5px; }
#project-filter { margin: 0 8px 8px; width: calc(100% - 16px); }
.swatch {
  display: inline-block; width: 9px; height: 9px; border-radius: 3px; margin-right: 7px; vertical-align: -0.5px;
  background: transparent; box-shadow: inset 0 0 0 1px var(--border-2);
}
.selected .swatch { box-shadow: none; }
.run-link { border: 0; background: none; padding: 0; color: var(--fg); font-weight: 550; cursor: pointer; max-width: calc(100% - 18px);
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; vertical-align: middle; text-align: left; }
.run-link:hover { color: var(--accent); text-decoration: underline; }
.null { color: var(--faint); }
.tag { display: inline-block; padding: 0 7px; height: 19px; line-height: 19px; border-radius: 10px; font-size: 11.5px;
  background: var(--accent-soft); color: var(--accent); margin-right: 4px; max-width: 120px; overflow: hidden; text-overflow: ellipsis; vertical-align: middle; }
.status { display: inline-flex; align-items: center; gap: 6px; font-size: 12px; color: var(--fg-2); }
.status .dot { width: 8px; height: 8px; border-radius: 50%; background: var(--neutral); flex: none; }
.status.running .dot { background: var(--ok); position: relative; }
.status.failed .dot, .status.crashed .dot { background: var(--err); }
.status.failed, .status.crashed { color: var(--err); }
.status.interrupted .dot { background: var(--warn); }
.status.finished .dot { background: var(--neutral); }
/* The pulse is a ring scaled and faded on its own layer (transform and opacity run on the
   compositor), three times when the dot appears (a running row re-renders, so it pulses again
   as data arrives). A forever box-shadow pulse made an idle page paint and commit 60 frames a
   second (20% of a core in headless Chromium; forever on the compositor alone, 10%). */
#live-indicator[data-state=live] i::after, .status.running .dot::after {
  content: ''; position: absolute; inset: 0; border-radius: 50%; background: var(--ok); opacity: 0; pointer-events: none;
  animation: pulse 1.8s 3; }
@keyframes pulse { 0% { transform: scale(1); opacity: .55; } 70% { transform: scale(2.5); opacity: 0; } 100% { transform: scale(2.5); opacity: 0; } }
@keyframes flash { 0% { background: color-mix(in srgb, var(--accent) 22%, var(--panel)); } 100% { background: var(--panel); } }
.table-empty { padding: 28px 16px; text-align: center; color: var(--muted); }
.resizer { height: 8px; cursor: ns-resize; border-top: 1px solid var(--border); border-radius: 0 0 10px 10px; position: relative; }
.resizer::after { content: ""; position: absolute; left: 50%; top: 2px; width: 36px; height: 3px; margin-left: -18px; border-radius: 2px; background: var(--border-2); }
.resizer:hover::after { background: var(--faint); }

/* popover */
.popover {
  position: fixed; z-index: 70; width: 300px; max-height: 60vh; overflow: auto; background: var(--panel);
  border: 1px solid var(--border-2); border-radius: 10px; box-shadow: 0 12px 32px rgba(16,24,40,.18); padding: 8px;
}
.popover input[type=search] { width: 100%; margin-bottom: 6px; }
.pop-group { font-size: 11px; font-weight: 620; color: var(--muted); text-transform: uppercase; letter-spacing: .05em; padding: 8px 6px 4px; display: flex; justify-content: space-between; }
.pop-group button { border: 0; background: none; color: var(--accent); cursor: pointer; font-size: 11px; text-transform: none; letter-spacing: 0; padding: 0; }
.pop-item { display: flex; align-items: center; gap: 8px; padding: 4px 6px; border-radius: 5px; cursor: pointer; font-size: 12.5px; }
.pop-item:hover { background: var(--hover); }
.pop-item span { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }

/* charts */
.charts-toolbar { gap: 14px; }
.charts-toolbar label { display: inline-flex; align-items: center; gap: 7px; font-size: 12.5px; color: var(--fg-2); white-space: nowrap; }
#smoothing-value { font-variant-numeric: tabular-nums; width: 30px; color: var(--muted); font-size: 12px; }
#chart-filter { width: 190px; }
#legend { display: flex; flex-wrap: wrap; gap: 6px; padding: 10px 12px 0; }
#legend:empty { display: none; }
.chip {
  display: inline-flex; align-items: center; gap: 6px; height: 24px; padding: 0 4px 0 9px; border-radius: 12px;
  border: 1px solid var(--border); background: var(--panel); cursor: pointer; font-size: 12px; max-width: 260px;
}
.chip:hover { border-color: var(--border-2); background: var(--hover); }
.chip i { width: 10px; height: 3px; border-radius: 2px; flex: none; }
.chip .chip-label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.chip.off { opacity: .45; }
.chip.off .chip-label { text-decoration: line-through; }
.chip .x { border: 0; background: none; padding: 0; width: 18px; height: 18px; border-radius: 9px; display: grid; place-items: center; color: var(--muted); cursor: pointer; }
.chip .x:hover { background: var(--border); color: var(--fg); }
.chip .only { opacity: 0; }
.chip:hover .only, .chip .only:focus-visible, .chip.solo .only { opacity: 1; }
.chip.solo .only { color: var(--accent); }
.chip .spin { width: 10px; height: 10px; border: 2px solid var(--border-2); border-top-color: var(--accent); border-radius: 50%; animation: spin .8s linear infinite; }
@keyframes spin { to { transform: rotate(360deg); } }
#charts { padding: 4px 12px 12px; }
.group { border-bottom: 1px solid var(--border); }
.group:last-child { border-bottom: 0; }
.group > summary {
  list-style: none; cursor: pointer; display: flex; align-items: center; gap: 8px; padding: 10px 2px;
  font-weight: 620; font-size: 13px; user-select: none;
}
.group > summary::-webkit-details-marker { display: none; }
.group > summary .ico { color: var(--muted); transition: transform .15s; }
.group[open] > summary .ico { transform: rotate(90deg); }
.group > summary .count { font-weight: 500; color: var(--muted); font-size: 11.5px; background: var(--hover); border-radius: 9px; padding: 0 7px; }
.chart-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 12px; padding: 0 0 14px; }
.chart { border: 1px solid var(--border); border-radius: 8px; background: var(--panel); padding: 8px 6px 4px 4px; min-width: 0; }
.chart-head { display: flex; align-items: center; height: 22px; padding: 0 2px 0 8px; gap: 6px; }
.chart-title { flex: 1; font-size: 12.5px; font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.chart-prefix { color: var(--muted); font-weight: 500; }
.chart .reset-zoom { width: 22px; height: 22px; visibility: hidden; }
.chart.zoomed .reset-zoom { visibility: visible; }
.plot-wrap { position: relative; height: 190px; }
.plot-wrap canvas { position: absolute; left: 0; top: 0; width: 100%; height: 100%; display: block; }
.plot-wrap .chart-overlay { cursor: crosshair; }
.chart-tip {
  position: fixed; left: 0; top: 0; z-index: 80; pointer-events: none; min-width: 160px; max-width: 380px;
  background: var(--panel); border: 1px solid var(--border-2); border-radius: 8px; box-shadow: 0 8px 24px rgba(16,24,40,.16);
  padding: 6px 8px; font-size: 12px; font-variant-numeric: tabular-nums;
}
.tip-x { color: var(--muted); font-size: 11.5px; margin-bottom: 3px; }
.tip-row { display: flex; align-items: center; gap: 7px; line-height: 19px; }
.tip-row i { width: 10px; height: 3px; border-radius: 2px; flex: none; }
.tip-name { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: var(--fg-2); }
.tip-row b { font-weight: 600; }
.tip-row small { color: var(--muted); min-width: 48px; text-align: right; }
/* media and histograms */
#media, #hists { padding: 4px 12px 12px; }
.media-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 12px; padding: 4px 0 14px; }
.media-card { border: 1px solid var(--border); border-radius: 8px; background: var(--panel); padding: 8px 10px 10px; min-width: 0; }
.media-card.wide { grid-column: 1 / -1; }
.media-head { display: flex; align-items: center; gap: 8px; min-height: 24px; }
.media-head .chart-title { flex: 1; }
.media-kind { font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .05em; }
.media-steps { display: flex; align-items: center; gap: 8px; margin: 4px 0 8px; font-size: 12px; color: var(--muted); }
.media-steps input[type=range] { flex: 1; min-width: 60px; }
.media-steps output { min-width: 72px; text-align: right; font-variant-numeric: tabular-nums; }
.media-card.many { grid-column: 1 / -1; }
.media-runs { display: flex; flex-wrap: wrap; gap: 10px; }
.media-run { flex: 1 1 150px; min-width: 120px; max-width: 330px; display: flex; flex-direction: column; gap: 4px; }
.media-card.wide .media-run { max-width: none; }
.media-run-label { display: flex; align-items: center; gap: 6px; font-size: 11.5px; color: var(--muted); overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.media-run-label i { width: 10px; height: 3px; border-radius: 2px; flex: none; }
.media-run img { width: 100%; max-width: 320px; height: auto; max-height: 320px; object-fit: contain; image-rendering: pixelated; background: var(--bg-soft); border-radius: 4px; align-self: flex-start; }
.media-run audio, .media-run video { width: 100%; max-height: 260px; }
.media-run pre { margin: 0; padding: 8px; background: var(--bg-soft); border-radius: 6px; white-space: pre-wrap; word-break: break-word; max-height: 260px; overflow: auto; font-size: 12px; }
.media-none { font-size: 12px; color: var(--faint, var(--muted)); padding: 6px 0; }
.hist-wrap { position: relative; height: 200px; }
.hist-wrap canvas { position: absolute; left: 0; top: 0; width: 100%; height: 100%; display: block; }
.hist-tip { font-size: 11.5px; color: var(--muted); min-height: 17px; font-variant-numeric: tabular-nums; }
.empty-state { padding: 36px 20px; text-align: center; color: var(--muted); }
.empty-state strong { display: block; color: var(--fg); font-size: 14px; margin-bottom: 4px; }

/* welcome */
#empty { max-width: 720px; margin: 40px auto; padding: 28px 32px; }
#empty h2 { font-size: 18px; margin-bottom: 6px; }
#empty p { color: var(--fg-2); }
pre.code { background: var(--panel-2); border: 1px solid var(--border); border-radius: 8px; padding: 12px 14px; overflow: auto; line-height: 1.55; }

/* run detail drawer */
#run-detail {
  position: fixed; top: 46px; right: 0; bottom: 0; width: min(760px, 94vw); z-index: 40; display: flex; flex-direction: column;
  background: var(--panel); border-left: 1px solid var(--border); box-shadow: var(--shadow-lg); animation: slidein .16s ease-out;
}
@keyframes slidein { from { transform: translateX(24px); opacity: .4; } to { transform: none; opacity: 1; } }
.drawer-head { display: flex; align-items: center; gap: 10px; padding: 12px 14px 12px 18px; border-bottom: 1px solid var(--border); }
.drawer-title { min-width: 0; flex: 1; }
#detail-name { font-size: 16px; font-weight: 650; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; letter-spacing: -.01em; }
#detail-sub { font-size: 12px; color: var(--muted); display: flex; gap: 10px; align-items: center; }
.drawer-body { overflow: auto; padding: 14px 18px 40px; flex: 1; }
.drawer-body section { margin-bottom: 22px; }
.meta-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(165px, 1fr)); gap: 10px 18px; }
.meta-grid div { min-width: 0; }
.meta-grid dt { font-size: 11.5px; color: var(--muted); margin-bottom: 1px; }
.meta-grid dd { margin: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-variant-numeric: tabular-nums; }
.meta-grid .wide { grid-column: 1 / -1; }
.meta-grid .wide dd { white-space: pre-wrap; overflow-wrap: anywhere; font-family: var(--mono); font-size: 12px;
  background: var(--panel-2); border: 1px solid var(--border); border-radius: 6px; padding: 6px 8px; }
.desc-text { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0 0 6px; }
.row-actions { display: flex; gap: 6px; margin-top: 6px; }
.tags-edit { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
.tags-edit .tag { display: inline-flex; align-items: center; gap: 2px; padding-right: 2px; max-width: 260px; }
.tags-edit .tag span { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.tags-edit .tag button { border: 0; background: none; color: inherit; cursor: pointer; padding: 0; width: 16px; height: 16px; display: grid; place-items: center; border-radius: 8px; }
.tags-edit .tag button:hover { background: var(--accent-soft); }
.tags-edit input { height: 24px; width: 120px; font-size: 12px; }
.kv { width: 100%; border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
.kv td { padding: 4px 8px; border-bottom: 1px solid var(--border); }
.kv td:first-child { color: var(--fg-2); padding-left: 0; overflow-wrap: anywhere; }
.kv td:last-child { text-align: right; font-family: var(--mono); font-size: 12px; }
.tree { font-family: var(--mono); font-size: 12px; line-height: 1.7; }
.tree .tree { padding-left: 16px; border-left: 1px solid var(--border); margin-left: 4px; }
.tree summary { cursor: pointer; list-style: none; }
.tree summary::-webkit-details-marker { display: none; }
.tree summary::before { content: "\25B8"; display: inline-block; width: 12px; color: var(--muted); transition: transform .12s; }
.tree details[open] > summary::before { transform: rotate(90deg); }
.tree-leaf { padding-left: 12px; overflow-wrap: anywhere; }
.tree-key { color: var(--fg-2); }
.tree-key::after { content: ": "; color: var(--faint); }
.tree summary .tree-key::after { content: ""; }
.tree-count { color: var(--faint); margin-left: 6px; }
.tree-val.number { color: #2f7bd6; }
.tree-val.boolean { color: #b1539a; }
.tree-val.string { color: var(--ok); }
:root[data-theme=dark] .tree-val.number { color: #79b8ff; }
:root[data-theme=dark] .tree-val.boolean { color: #e59bd0; }
.sec-head { display: flex; align-items: center; gap: 10px; margin-bottom: 8px; }
.sec-head h4 { margin: 0; }
.sec-head .note { font-size: 11.5px; color: var(--muted); }
.sec-head .spacer { flex: 1; }
#log {
  margin: 0; min-height: 72px; max-height: 340px; overflow: auto; white-space: pre-wrap; overflow-wrap: anywhere; line-height: 1.5;
  background: #0f1318; color: #d5dae0; border-radius: 8px; padding: 10px 12px; font-size: 11.5px; border: 1px solid var(--border);
}
#log .log-warn { color: #f0b44c; }
#log .log-err { color: #ff7b7b; }
#log .log-empty { color: #7d8590; }
#artifacts { border: 1px solid var(--border); border-radius: 8px; overflow: hidden; }
.af-row { display: flex; align-items: center; gap: 8px; height: 30px; padding: 0 10px; border-bottom: 1px solid var(--border); cursor: pointer; font-size: 12.5px; }
.af-row:last-child { border-bottom: 0; }
.af-row:hover { background: var(--hover); }
.af-row.active { background: var(--sel); }
.af-row .name { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.af-row .size { color: var(--muted); font-variant-numeric: tabular-nums; font-size: 12px; }
.af-row .ico { color: var(--muted); }
.af-row a { color: var(--muted); display: grid; place-items: center; width: 22px; height: 22px; border-radius: 5px; }
.af-row a:hover { color: var(--fg); background: var(--border); }
.af-dir .ico.chev { transition: transform .12s; }
.af-dir.open .ico.chev { transform: rotate(90deg); }
.af-empty { padding: 14px; color: var(--muted); }
#artifact-preview { margin-top: 12px; }
#artifact-preview:empty { display: none; }
.preview-head { display: flex; align-items: center; gap: 8px; font-size: 12px; color: var(--muted); margin-bottom: 6px; }
.preview-head .name { color: var(--fg); font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.preview-box { border: 1px solid var(--border); border-radius: 8px; overflow: auto; max-height: 420px; background: var(--panel-2); }
.preview-box img { display: block; max-width: 100%; height: auto; margin: 0 auto; background: repeating-conic-gradient(var(--border) 0 25%, transparent 0 50%) 0 0 / 16px 16px; }
.preview-box pre { margin: 0; padding: 10px 12px; white-space: pre-wrap; overflow-wrap: anywhere; }
table.data { border-collapse: collapse; font-size: 12px; font-variant-numeric: tabular-nums; width: max-content; min-width: 100%; }
table.data th, table.data td {
  padding: 4px 10px; border-bottom: 1px solid var(--border); border-right: 1px solid var(--border);
  text-align: left; white-space: nowrap; max-width: 280px; overflow: hidden; text-overflow: ellipsis;
}
table.data th { position: sticky; top: 0; background: var(--panel); font-weight: 600; }
table.data th small { display: block; font-weight: 400; color: var(--muted); font-family: var(--mono); font-size: 10.5px; }
table.data td.num { text-align: right; font-family: var(--mono); }
.preview-foot { font-size: 11.5px; color: var(--muted); margin-top: 6px; }
.preview-binary { padding: 22px; text-align: center; color: var(--muted); }
/* saved views, group by, params vs results (13.19-13.21) */
#views { display: flex; align-items: center; gap: 6px; margin-left: 8px; }
#view-picker { height: 26px; padding: 2px 6px; max-width: 220px; font-size: 12.5px; }
#view-form { width: 280px; }
#view-form input { width: 100%; }
#view-error { color: var(--err); font-size: 12px; margin-top: 6px; }
#view-error:empty { display: none; }
.chart-head .x-label { font-size: 11px; color: var(--muted); white-space: nowrap; }
.chart-head .x-label:empty { display: none; }
#group-legend { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; padding: 10px 12px 0; }
#group-legend .group-by-name { font-size: 12px; color: var(--muted); margin-right: 2px; }
#group-legend .chip i { height: 8px; width: 14px; border-radius: 3px; }
#group-legend .chip .count { color: var(--muted); font-variant-numeric: tabular-nums; }
#color-legend { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 8px; padding: 8px 12px 0; font-size: 12px; }
#color-legend .group-by-name { color: var(--muted); }
#color-legend .cbar { display: inline-block; width: 160px; height: 10px; border-radius: 3px; }
#color-legend .ckey { display: inline-flex; align-items: center; gap: 5px; }
#color-legend .ckey i { display: inline-block; width: 14px; height: 8px; border-radius: 3px; }
#pvr-panel .panel-head { border-bottom: 0; }
#pvr-panel.open .panel-head { border-bottom: 1px solid var(--border); }
#pvr-panel:not(.open) .pvr-ctl { display: none; }
#pvr-toggle .ico { transition: transform .15s; }
#pvr-panel.open #pvr-toggle .ico { transform: rotate(90deg); }
.seg { display: inline-flex; }
.seg .btn { border-radius: 0; }
.seg .btn:first-child { border-radius: 6px 0 0 6px; }
.seg .btn:last-child { border-radius: 0 6px 6px 0; margin-left: -1px; }
.seg .btn.on { background: var(--accent-soft); border-color: var(--accent); color: var(--accent); position: relative; }
.pvr-wrap { position: relative; height: 320px; margin: 10px 12px 4px; }
.pvr-wrap canvas { position: absolute; inset: 0; width: 100%; height: 100%; display: block; cursor: crosshair; }
.pvr-hint { font-size: 11.5px; padding: 0 12px 10px; }
@media (max-width: 900px) { #layout { grid-template-columns: 180px minmax(0, 1fr); } #filter { width: 200px; } }
</style>
</head>
<body>
<header id="topbar">
  <div class="brand"><span class="logo"><svg class="ico" width="15" height="15" viewBox="0 0 24 24"><path d="M4 17l5-6 4 3 7-9"/></svg></span>expman</div>
  <nav id="crumbs" aria-label="breadcrumb"><span class="sep" id="crumb-sep" hidden>/</span><span id="crumb-exp" data-testid="crumb-exp"></span></nav>
  <div id="views" data-testid="views" hidden>
    <select id="view-picker" data-testid="view-picker" aria-label="Saved views" title="Views saved into this experiment: open one to restore its runs, filter and chart settings"><option value="">Saved views</option></select>
    <button id="view-save" class="btn small" type="button" data-testid="view-save" title="Save what you see (the URL's state) into the experiment, for everyone who opens it">Save view</button>
    <button id="view-delete" class="icon-btn" type="button" data-testid="view-delete" title="Delete the chosen view" aria-label="Delete the chosen view" hidden>
      <svg class="ico" width="14" height="14" viewBox="0 0 24 24"><path d="M5 7h14M10 11v6M14 11v6M6 7l1 12h10l1-12M9 7V4h6v3"/></svg>
    </button>
  </div>
  <div class="spacer"></div>
  <span id="live-indicator" data-testid="live-indicator" data-state="connecting" title="Live updates"><i></i><span id="live-text">Connecting</span></span>
  <button id="theme-toggle" class="icon-btn" type="button" title="Toggle dark mode" aria-label="Toggle dark mode">
    <svg class="ico" width="16" height="16" viewBox="0 0 24 24"><path d="M21 12.8A9 9 0 1 1 11.2 3a7 7 0 0 0 9.8 9.8z"/></svg>
  </button>
  <span id="version">v__EXPMAN_VERSION__</span>
</header>
<div id="offline" role="alert" data-testid="offline" hidden><strong>Server unreachable.</strong> <span id="offline-text">The expman server does not answer; what you see may be out of date. Retrying…</span></div>
<div id="banner" role="alert" hidden>
  <span id="banner-text"></span>
  <button class="icon-btn" id="banner-close" type="button" aria-label="Dismiss">
    <svg class="ico" width="14" height="14" viewBox="0 0 24 24"><path d="M6 6l12 12M18 6L6 18"/></svg>
  </button>
</div>
<div id="layout">
  <aside id="sidebar">
    <div class="side-head"><span>Experiments</span><span id="exp-count"></span></div>
    <select id="project-filter" data-testid="project-filter" aria-label="Project" hidden><option value="">All projects</option></select>
    <ul id="experiments" data-testid="experiments"></ul>
  </aside>
  <main id="main">
    <section id="empty" class="panel" data-testid="empty" hidden>
      <h2>No experiments yet</h2>
      <p>Log a run from any Python script and it appears here while it trains. Runs are written to <code id="empty-root">./experiments</code>.</p>
      <pre class="code">import expman

with expman.Experiment("my-experiment") as exp:
    exp.log_params({"lr": 1e-3, "batch_size": 64})
    for step in range(1000):
        loss = train_step()
        exp.log_metrics({"train/loss": loss}, step=step)</pre>
      <p class="muted">Or try it with example data: <code>expman demo</code></p>
    </section>
    <section id="runs-panel" class="panel" data-testid="runs-panel" hidden>
      <div class="panel-head">
        <div class="title"><h2 id="exp-title"></h2><span id="exp-desc"></span></div>
        <input id="filter" data-testid="filter" type="search" placeholder="Filter: name, tag, lr>0.01, optimizer=adam, name~abc   ( / )" autocomplete="off" spellcheck="false" title="Words match anywhere; key=value is exact, key~text a substring (key~/regex/i), key!=v key!~v; > >= < <= compare numbers; p: m: min: max: pick a param or metric; tag:NAME; AND OR NOT ( ), terms side by side must all hold (as expman list --where).">
        <span id="filter-error" data-testid="filter-error" role="status" hidden></span>
        <span id="runs-count" data-testid="runs-count"></span>
        <button id="diff-button" class="btn" type="button" data-testid="diff-button" title="Params that differ between the selected runs" disabled>Diff params</button>
        <button id="columns-button" class="btn" type="button" data-testid="columns-button">
          <svg class="ico" width="14" height="14" viewBox="0 0 24 24"><path d="M4 5h16v14H4zM10 5v14M15 5v14"/></svg>Columns
        </button>
      </div>
      <div id="runs-scroll">
        <table id="runs-table" data-testid="runs-table"><colgroup id="runs-cols"></colgroup><thead></thead><tbody></tbody></table>
        <div id="runs-empty" class="table-empty" hidden></div>
      </div>
      <div class="resizer" id="runs-resizer" title="Drag to resize"></div>
    </section>
    <section id="diff-panel" class="panel" data-testid="diff-panel" hidden>
      <div class="panel-head"><div class="title"><h2>Params that differ</h2><span id="diff-note" class="muted"></span></div>
        <button id="diff-close" class="icon-btn" type="button" aria-label="Close the diff" title="Close">
          <svg class="ico" width="14" height="14" viewBox="0 0 24 24"><path d="M6 6l12 12M18 6L6 18"/></svg>
        </button>
      </div>
      <div class="diff-scroll"><table id="diff-table" class="data" data-testid="diff-table"></table></div>
    </section>
    <section id="pvr-panel" class="panel" data-testid="pvr-panel" hidden>
      <div class="panel-head charts-toolbar">
        <button id="pvr-toggle" class="icon-btn" type="button" aria-expanded="false" aria-label="Show params vs results" data-testid="pvr-toggle"><svg class="ico" width="14" height="14" viewBox="0 0 24 24"><path d="M9 6l6 6-6 6"/></svg></button>
        <div class="title"><h2>Params vs results</h2><span id="pvr-note" class="muted" data-testid="pvr-note"></span></div>
        <span class="pvr-ctl seg" role="group" aria-label="View">
          <button type="button" class="btn small" data-pvr-mode="scatter" data-testid="pvr-scatter">Scatter</button><button type="button" class="btn small" data-pvr-mode="parallel" data-testid="pvr-parallel">Parallel coordinates</button>
        </span>
        <label class="pvr-ctl" id="pvr-x-label">X <select id="pvr-x" data-testid="pvr-x"></select></label>
        <label class="pvr-ctl">Y <select id="pvr-y" data-testid="pvr-y"></select></label>
        <button id="pvr-clear" class="btn small pvr-ctl" type="button" data-testid="pvr-clear" title="Remove the brushed ranges from the runs filter" hidden>Clear brush</button>
      </div>
      <div id="pvr-body" hidden>
        <div class="pvr-wrap"><canvas id="pvr-canvas" data-testid="pvr-canvas"></canvas><div id="pvr-empty" class="empty-state" hidden></div></div>
        <div class="pvr-hint muted">Drag across an axis (or a box on the scatter) to filter the runs to that range; click a point to select its run.</div>
      </div>
    </section>
    <section id="charts-panel" class="panel" data-testid="charts-panel" hidden>
      <div class="panel-head charts-toolbar">
        <div class="title"><h2>Charts</h2></div>
        <input id="chart-filter" data-testid="chart-filter" type="search" placeholder="Filter metrics" autocomplete="off" spellcheck="false">
        <label title="Exponential moving average; the raw curve stays visible behind">Smoothing
          <input id="smoothing" data-testid="smoothing" type="range" min="0" max="0.99" step="0.01" value="0">
          <output id="smoothing-value">0</output>
        </label>
        <label class="switch" title="Logarithmic y axis"><input id="logy" data-testid="logy" type="checkbox"><span class="track"></span>Log y</label>
        <label class="switch" title="Fit the y axis to the bulk of the values (5th to 95th percentile, plus a quarter of that span either side), so one spike or a diverged run does not flatten the others. Drag along a chart's y axis to zoom y by hand."><input id="clip-outliers" data-testid="clip-outliers" type="checkbox"><span class="track"></span>Ignore outliers</label>
        <label>X axis
          <select id="xaxis" data-testid="xaxis">
            <option value="step">Step</option><option value="wall">Wall time</option>
            <option value="relative">Relative time</option>
            <optgroup id="xaxis-metrics" label="Metric (joined by step)"></optgroup>
          </select>
        </label>
        <label title="Runs with the same value of a param (or the same tags) are drawn as one mean line with a band">Group by
          <select id="group-by" data-testid="group-by"><option value="">None</option><option value="tags">Tags</option></select>
        </label>
        <label title="Colour each run's line by a param's value: a cool-to-warm ramp for numbers, distinct colours for text">Colour by
          <select id="color-by" data-testid="color-by"><option value="">Run</option></select>
        </label>
        <label id="group-band-label" title="The band around a group's mean" hidden>Band
          <select id="group-band" data-testid="group-band"><option value="minmax">Min / max</option><option value="std">± 1 std</option></select>
        </label>
        <label id="job-mode-label" title="How the selected ranks of one distributed job are drawn" hidden>Ranks
          <select id="job-mode" data-testid="job-mode">
            <option value="overlay">Overlaid</option><option value="band">Mean, min/max band</option>
          </select>
        </label>
      </div>
      <div id="legend" data-testid="legend"></div>
      <div id="group-legend" data-testid="group-legend" hidden></div>
      <div id="color-legend" data-testid="color-legend" hidden></div>
      <div id="charts-notes" data-testid="charts-notes" hidden></div>
      <div id="charts" data-testid="charts"></div>
      <div id="charts-empty" class="empty-state" hidden></div>
    </section>
    <section id="media-panel" class="panel" data-testid="media-panel" hidden>
      <div class="panel-head"><div class="title"><h2>Media</h2></div><span id="media-count" class="muted"></span></div>
      <div id="media" data-testid="media"></div>
    </section>
    <section id="hist-panel" class="panel" data-testid="hist-panel" hidden>
      <div class="panel-head"><div class="title"><h2>Histograms</h2></div><span class="muted">value distribution per step: darker is more</span></div>
      <div id="hists" data-testid="hists"></div>
    </section>
  </main>
</div>
<aside id="run-detail" data-testid="run-detail" hidden aria-label="Run detail">
  <div class="drawer-head">
    <div class="drawer-title"><div id="detail-name" data-testid="detail-name"></div><div id="detail-sub"><span id="detail-status"></span><span id="detail-exp"></span></div></div>
    <label class="switch" title="Show this run in the charts"><input id="detail-select" type="checkbox"><span class="track"></span>Compare</label>
    <button id="detail-close" class="icon-btn" type="button" title="Close (Esc)" aria-label="Close">
      <svg class="ico" width="16" height="16" viewBox="0 0 24 24"><path d="M6 6l12 12M18 6L6 18"/></svg>
    </button>
  </div>
  <div class="drawer-body">
    <section><dl id="detail-meta" class="meta-grid" data-testid="detail-meta"></dl></section>
    <section><div class="sec-head"><h4>Description</h4></div><div id="detail-desc" data-testid="detail-desc"></div></section>
    <section><div class="sec-head"><h4>Tags</h4></div><div id="detail-tags" class="tags-edit" data-testid="detail-tags"></div></section>
    <section id="detail-summary-sec"><div class="sec-head"><h4>Summary</h4></div><table id="detail-summary" class="kv" data-testid="detail-summary"></table></section>
    <section><div class="sec-head"><h4>Parameters</h4></div><div id="detail-params" data-testid="detail-params"></div></section>
    <section>
      <div class="sec-head"><h4>Log</h4><span class="note" id="log-note"></span><span class="spacer"></span>
        <label class="switch" title="Keep scrolled to the newest line"><input id="log-follow" type="checkbox" checked><span class="track"></span>Follow</label>
      </div>
      <pre id="log" data-testid="log"></pre>
    </section>
    <section>
      <div class="sec-head"><h4>Artifacts</h4><span class="note" id="artifacts-note"></span></div>
      <div id="artifacts" data-testid="artifacts"></div>
      <div id="artifact-preview" data-testid="artifact-preview"></div>
    </section>
  </div>
</aside>
<div id="columns-popover" class="popover" data-testid="columns-popover" hidden></div>
<form id="view-form" class="popover" data-testid="view-form" hidden>
  <h4>Save view</h4>
  <input id="view-name" data-testid="view-name" type="text" maxlength="80" placeholder="Name, e.g. lr sweep" autocomplete="off" spellcheck="false">
  <div class="row-actions"><button class="btn small primary" type="submit" data-testid="view-name-ok">Save</button><button class="btn small" type="button" id="view-cancel">Cancel</button></div>
  <div id="view-error" data-testid="view-error" role="status"></div>
</form>
<div id="shortcuts" class="popover" data-testid="shortcuts" role="dialog" aria-label="Keyboard shortcuts" hidden>
  <h4>Keyboard</h4>
  <table class="kv">
    <tr><td><kbd>/</kbd></td><td>filter runs</td></tr>
    <tr><td><kbd>j</kbd> <kbd>k</kbd></td><td>next / previous run in the table</td></tr>
    <tr><td><kbd>space</kbd></td><td>select the run for the charts</td></tr>
    <tr><td><kbd>Enter</kbd></td><td>open the run's details</td></tr>
    <tr><td><kbd>f</kbd></td><td>full-screen the chart under the pointer (or the first)</td></tr>
    <tr><td><kbd>Esc</kbd></td><td>close</td></tr>
    <tr><td><kbd>?</kbd></td><td>this list</td></tr>
  </table>
</div>
<script>
(function () {
'use strict';

// --- 13.1 util
const VERSION = '__EXPMAN_VERSION__';
const $ = (s, r) => (r || document).querySelector(s);
const enc = encodeURIComponent;
const PROPS = new Set(['checked', 'value', 'disabled', 'open', 'indeterminate', 'selected']);

// Element builder: strings become text nodes, attributes go through setAttribute,
// so nothing a user logged is ever parsed as markup.
function h(tag, attrs) {
  const e = document.createElement(tag);
  if (attrs) for (const k of Object.keys(attrs)) {
    const v = attrs[k];
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k === 'style') e.style.cssText = v;
    else if (k.slice(0, 2) === 'on' && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (PROPS.has(k)) e[k] = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (let i = 2; i < arguments.length; i++) add(e, arguments[i]);
  return e;
}
function add(e, c) {
  if (c === null || c === undefined || c === false) return;
  if (Array.isArray(c)) { for (const x of c) add(e, x); return; }
  e.append(c instanceof Node ? c : String(c));
}
const SVGNS = 'http://www.w3.org/2000/svg';
const ICONS = {
  close: 'M6 6l12 12M18 6L6 18',
  chev: 'M9 6l6 6-6 6',
  folder: 'M3 7.5A1.5 1.5 0 0 1 4.5 6H9l2 2h8.5A1.5 1.5 0 0 1 21 9.5v8a1.5 1.5 0 0 1-1.5 1.5h-15A1.5 1.5 0 0 1 3 17.5z',
  file: 'M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8zM14 3v5h5',
  image: 'M4 5h16v14H4zM4 16l5-5 4 4 3-3 4 4M15.5 9.5h.01',
  table: 'M4 5h16v14H4zM4 10h16M4 15h16M10 5v14',
  text: 'M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8zM14 3v5h5M9 13h6M9 17h6',
  download: 'M12 4v11M7 10l5 5 5-5M5 20h14',
  reset: 'M4 12a8 8 0 1 0 2.4-5.7M4 4v5h5',
  sun: 'M12 4V2M12 22v-2M4 12H2M22 12h-2M5.6 5.6 4.2 4.2M19.8 19.8l-1.4-1.4M5.6 18.4l-1.4 1.4M19.8 4.2l-1.4 1.4M12 8a4 4 0 1 0 0 8 4 4 0 0 0 0-8z',
  moon: 'M21 12.8A9 9 0 1 1 11.2 3a7 7 0 0 0 9.8 9.8z',
  plus: 'M12 5v14M5 12h14',
  solo: 'M12 9a3 3 0 1 0 0 6a3 3 0 1 0 0-6M12 2v4M12 18v4M2 12h4M18 12h4'
};
function icon(name, size, cls) {
  const s = document.createElementNS(SVGNS, 'svg');
  s.setAttribute('viewBox', '0 0 24 24');
  s.setAttribute('width', size || 14); s.setAttribute('height', size || 14);
  s.setAttribute('class', 'ico' + (cls ? ' ' + cls : '')); s.setAttribute('aria-hidden', 'true');
  const p = document.createElementNS(SVGNS, 'path'); p.setAttribute('d', ICONS[name]); s.appendChild(p);
  return s;
}
function store(k, v) {   // localStorage get (v undefined), remove (v null) or set
  try {
    if (v === undefined) return localStorage.getItem(k);
    if (v === null) localStorage.removeItem(k); else localStorage.setItem(k, v);
  } catch (e) { /* storage disabled: settings just do not persist */ }
  return null;
}

// Metric values arrive as numbers, or "NaN"/"Infinity"/"-Infinity"; missing is null.
function num(v) { return v === null || v === undefined || v === '' ? NaN : typeof v === 'number' ? v : Number(v); }
function isNull(v) { return v === null || v === undefined || v === '' || (typeof v === 'number' && Number.isNaN(v)); }
function fmtNum(v) {
  if (typeof v !== 'number') v = num(v);
  if (Number.isNaN(v)) return 'NaN';
  if (!isFinite(v)) return v > 0 ? 'inf' : '-inf';
  const a = Math.abs(v);
  if (Number.isInteger(v) && a < 1e6) return String(v);
  if (a >= 1e6 || (a < 1e-4 && a > 0)) return v.toExponential(3).replace(/\.?0+e/, 'e').replace('e+', 'e');
  return String(Number(v.toPrecision(5)));
}
function fmtValue(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') return fmtNum(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
function fmtDur(s) {
  if (s === null || s === undefined || !isFinite(s)) return '';
  const neg = s < 0; s = Math.abs(s);
  let out;
  if (s < 10 && s % 1 > 0.05) out = s.toFixed(1) + 's';
  else if (s < 60) out = Math.round(s) + 's';
  else if (s < 3600) { const m = Math.floor(s / 60), r = Math.floor(s % 60); out = m + 'm' + (r ? ' ' + r + 's' : ''); }
  else if (s < 86400) { const hh = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60); out = hh + 'h' + (m ? ' ' + m + 'm' : ''); }
  else { const d = Math.floor(s / 86400), hh = Math.floor(s % 86400 / 3600); out = d + 'd' + (hh ? ' ' + hh + 'h' : ''); }
  return (neg ? '-' : '') + out;
}
function fmtBytes(n) {
  if (n === null || n === undefined || !isFinite(n)) return '';
  if (n < 1024) return n + ' B';
  const u = ['KB', 'MB', 'GB', 'TB']; let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return (n < 10 ? n.toFixed(1) : Math.round(n)) + ' ' + u[i];
}
const MON = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad2 = n => String(n).padStart(2, '0');
function parseTime(iso) { if (!iso) return null; const t = Date.parse(iso); return isNaN(t) ? null : t / 1000; }
function fmtClock(d, sec) { return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + (sec ? ':' + pad2(d.getSeconds()) : ''); }
function fmtWhen(t) {
  if (t === null || t === undefined) return '';
  const d = new Date(t * 1000), now = new Date();
  if (d.toDateString() === now.toDateString()) return 'Today ' + fmtClock(d);
  if (d.getFullYear() === now.getFullYear()) return MON[d.getMonth()] + ' ' + d.getDate() + ', ' + fmtClock(d);
  return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate());
}
function fmtFull(t) {
  if (t === null || t === undefined) return '';
  const d = new Date(t * 1000);
  return MON[d.getMonth()] + ' ' + d.getDate() + ', ' + d.getFullYear() + ' ' + fmtClock(d, true);
}
function fmtAgo(t) {
  if (t === null || t === undefined) return '';
  const s = Date.now() / 1000 - t;
  if (s < 45) return 'just now';
  if (s < 3600) return Math.round(s / 60) + 'm ago';
  if (s < 86400) return Math.round(s / 3600) + 'h ago';
  if (s < 86400 * 30) return Math.round(s / 86400) + 'd ago';
  return fmtWhen(t);
}
function utf8len(s) { return new TextEncoder().encode(s).length; }
function lowerBound(a, x) { let lo = 0, hi = a.length; while (lo < hi) { const m = (lo + hi) >> 1; if (a[m] < x) lo = m + 1; else hi = m; } return lo; }
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
const natural = (a, b) => collator.compare(a, b);
function cmpValues(a, b) {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'number') return -1;
  if (typeof b === 'number') return 1;
  return collator.compare(String(a), String(b));
}

// Run colours: 24 categorical colours picked (greedy max-min in CIELAB) to stay apart for
// normal vision and under simulated deuteranopia and protanopia, each with contrast >= 2.3
// against the light panel and >= 2.8 against the dark one. They are handed out in selection
// order: a newly selected run takes the first free colour and keeps it while it stays selected,
// so colours do not jump when other runs come and go. Past 24 runs colours repeat.
const PALETTE = ['#3b7dd8', '#e8850c', '#00bb99', '#dd0044', '#7744ff', '#33aacc', '#995588', '#ff7755',
  '#dd0000', '#ee6677', '#ff33ff', '#bb22bb', '#ff66cc', '#447744', '#bb5577', '#22bb55',
  '#557700', '#aa55aa', '#33bb11', '#8844dd', '#6688ff', '#dd66aa', '#cc88ee', '#cc6633'];
const colorSlots = new Map();
function hashSlot(key) {
  let x = 2166136261;
  for (let i = 0; i < key.length; i++) { x ^= key.charCodeAt(i); x = Math.imul(x, 16777619); }
  return (x >>> 0) % PALETTE.length;
}
function assignColors(keys) {
  const want = new Set(keys);
  for (const k of Array.from(colorSlots.keys())) if (!want.has(k)) colorSlots.delete(k);
  const used = new Set(colorSlots.values());
  let next = 0;
  for (const k of keys) {
    if (colorSlots.has(k)) continue;
    while (next < PALETTE.length && used.has(next)) next++;
    const slot = next < PALETTE.length ? next : colorSlots.size % PALETTE.length;
    used.add(slot); colorSlots.set(k, slot);
  }
}
// a run that is not selected (a job's rank, a run detail) still gets a steady colour
function colorOf(key) { const byParam = S.colorBy ? paramColor(key) : null; if (byParam) return byParam; const i = colorSlots.get(key); return PALETTE[i === undefined ? hashSlot(key) : i]; }
// Which way is better for a metric: the same words as _metric_goal in Python (`expman
// compare`); keep the two lists in step. A key with neither or both kinds of word has no goal.
const GOAL_MIN_WORDS = new Set(['loss', 'error', 'err', 'perplexity', 'ppl', 'mse', 'mae', 'rmse', 'nll', 'wer', 'cer']);
const GOAL_MAX_WORDS = new Set(['acc', 'accuracy', 'f1', 'auc', 'auroc', 'bleu', 'rouge', 'precision', 'recall', 'map', 'iou', 'miou', 'dice',
  'reward', 'return', 'score']);
function inferGoal(key) {
  const words = new Set();
  for (const w of String(key).toLowerCase().split(/[^a-z0-9]+/)) { if (w) words.add(w); const bare = w.replace(/[0-9]+$/, ''); if (bare) words.add(bare); }
  const ws = Array.from(words);
  const lower = ws.some(w => GOAL_MIN_WORDS.has(w) || /(loss|error)$/.test(w)), higher = ws.some(w => GOAL_MAX_WORDS.has(w));
  return lower === higher ? null : lower ? 'min' : 'max';
}
// the goal in force: what the user set in the page (saved in the URL), else the inferred one
function goalOf(key) { return S.goals.has(key) ? S.goals.get(key) : inferGoal(key); }
const splitKey = k => { const i = k.indexOf('/'); return [k.slice(0, i), k.slice(i + 1)]; };

// --- 13.2 api
const TOKEN = new URLSearchParams(location.search).get('token');
function withToken(url) { return TOKEN ? url + (url.indexOf('?') >= 0 ? '&' : '?') + 'token=' + enc(TOKEN) : url; }
async function api(path, opts) {
  let r;
  try { r = await fetch(withToken(path), Object.assign({ cache: 'no-store' }, opts || {})); }
  catch (e) { setOffline(true); const err = new Error('the expman server does not answer'); err.offline = true; throw err; }
  setOffline(false);
  const text = await r.text();
  let body = null;
  try { body = JSON.parse(text); }
  catch (e) {
    // Python's json writes bare NaN/Infinity; read them as the strings the API promises.
    try { body = JSON.parse(text.replace(/([:\[,]\s*)(-?Infinity|NaN)(?=\s*[,\]}])/g, '$1"$2"')); } catch (e2) { body = null; }
    if (r.ok && body === null) throw new Error('bad JSON from ' + path);
  }
  if (!r.ok) {
    const err = new Error((body && body.error) || (r.status + ' ' + r.statusText));
    err.status = r.status; throw err;
  }
  return body;
}
function expPath(exp) { return '/api/experiments/' + enc(exp); }
function runPath(key) { const p = splitKey(key); return expPath(p[0]) + '/runs/' + enc(p[1]); }
function rawUrl(key, path) { return withToken(runPath(key) + '/artifacts/raw?path=' + enc(path)); }
function safeUrl(u, key, path) { return typeof u === 'string' && u.slice(0, 5) === '/api/' ? withToken(u) : rawUrl(key, path); }
// At most a few metric fetches at once: the EventSource holds one of the browser's six connections.
let inflight = 0; const waiting = [];
function limited(fn) {
  return new Promise((resolve, reject) => {
    const go = () => { inflight++; fn().then(resolve, reject).finally(() => { inflight--; if (waiting.length) waiting.shift()(); }); };
    if (inflight < 4) go(); else waiting.push(go);
  });
}

// --- 13.3 banner
// A server that stops answering is a page-wide state, not a passing error: a bar under the
// header stays until a request or the stream gets through again.
function setOffline(down) {
  const bar = document.getElementById('offline');
  if (bar && bar.hidden === !!down) bar.hidden = !down;
}
let bannerTimer = 0;
function showBanner(msg, info) {
  const b = $('#banner');
  $('#banner-text').textContent = msg;
  b.classList.toggle('info', !!info); b.hidden = false;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => { b.hidden = true; }, info ? 4000 : 12000);
}
const showError = (what, e) => showBanner(what + (e ? ': ' + (e.message || e) : ''));

// --- 13.4 charts
// Canvas charts: the only code on the page that draws (line charts and the histograms' heat
// maps). The rest of the page talks to a line chart through
//   Charts.create(canvas) -> chart with setSeries(id, {x, y, color, label, [lo, hi]}),
//   appendPoints(id, xs, ys), removeSeries(id), setXRange([x0, x1] | null),
//   setYRange([y0, y1] | null), setGoal('min' | 'max' | null), hover(x | null), points(),
//   yLabels(), xLabels(), bestPoints(), toCsv(), destroy(),
//   callbacks chart.onZoom(x0, x1) / chart.onYZoom(y0, y1) / chart.onReset(),
// plus Charts.configure({smoothing, logy, xFormat, xLabel, hidden, highlight, clipOutliers}) shared by
// every chart (xFormat 'step' | 'wall' | 'relative' | 'metric': x is another metric named xLabel),
// Charts.drawHeatmap / Charts.heatmapCell for the histogram panel, and Charts.drawScatter /
// Charts.drawParallel for params vs results (13.19).
// Charts draw only while on screen (IntersectionObserver) and at most once per frame: a
// change marks a chart dirty, and one requestAnimationFrame draws every dirty visible chart.
const Charts = (function () {
  const options = { smoothing: 0, logy: false, xFormat: 'step', xLabel: '', hidden: new Set(), highlight: null, clipOutliers: false };
  const dirtyCharts = new Set();
  const allCharts = new Set();
  let frameRequest = 0;
  // Read-only statistics (window.__expmanDraws, for tests and benchmarks): draws, frames that
  // drew, the most draws one frame made, and draws of a chart already drawn in that frame.
  const stats = { draws: 0, frames: 0, maxPerFrame: 0, repeats: 0 };
  let frameSeq = 0;
  let theme = null;
  let tooltip = null;
  const LABEL_GAP = 13;          // px between two y labels' centres: closer ones are dropped
  // Past this many curves or points a chart draws one-device-pixel lines: a software rasteriser
  // (Skia without a GPU) draws those as hairlines, 20x faster than 1.6 px strokes with round
  // joins (50 curves x 180 points: 2 ms against 44 ms a draw), and many thin curves read better.
  const THIN_AFTER = 10;
  const THIN_POINTS = 4000;
  const seenObserver = window.IntersectionObserver ? new IntersectionObserver(onSeen, { rootMargin: '200px 0px' }) : null;
  const sizeObserver = window.ResizeObserver ? new ResizeObserver(onResized) : null;

  function onResized(entries) {
    for (const entry of entries) {
      if (entry.target.__chart) request(entry.target.__chart);
    }
  }
  function onSeen(entries) {
    for (const entry of entries) {
      const chart = entry.target.__chart;
      if (!chart) continue;
      chart.visible = entry.isIntersecting;
      if (!chart.visible) release(chart);
      else if (chart.stale) request(chart);
    }
  }
  function request(chart) {
    chart.stale = true;
    if (!chart.visible || !chart.alive) return;
    dirtyCharts.add(chart);
    if (!frameRequest) frameRequest = requestAnimationFrame(flush);
  }
  function flush() {
    frameRequest = 0;
    frameSeq++;
    const list = Array.from(dirtyCharts);
    dirtyCharts.clear();
    const before = stats.draws;
    for (const chart of list) {
      if (chart.alive && chart.visible) chart.draw();
    }
    if (stats.draws > before) {
      stats.frames++;
      stats.maxPerFrame = Math.max(stats.maxPerFrame, stats.draws - before);
    }
  }
  Object.defineProperty(window, '__expmanDraws', {
    get: () => Object.assign({}, stats, {
      charts: Array.from(allCharts, chart => {
        const card = chart.wrap.closest('[data-key]');
        return { key: card ? card.getAttribute('data-key') : null, draws: chart.draws, visible: chart.visible };
      })
    })
  });
  // Off-screen charts give their pixels back, so hundreds of charts cost only what is visible.
  function release(chart) {
    if (!chart.canvas.width) return;
    chart.canvas.width = 0;
    chart.canvas.height = 0;
    chart.stale = true;
  }
  function getTheme() {
    if (!theme) {
      const style = getComputedStyle(document.documentElement);
      const cssVar = name => style.getPropertyValue(name).trim();
      theme = {
        grid: cssVar('--chart-grid'), axis: cssVar('--chart-axis'), text: cssVar('--chart-text'),
        cross: cssVar('--chart-cross'), zoom: cssVar('--chart-zoom'), bg: cssVar('--panel'),
        font: '11px ' + getComputedStyle(document.body).fontFamily
      };
    }
    return theme;
  }
  function fitCanvas(canvas, width, height, dpr) {
    const pixelWidth = Math.round(width * dpr);
    const pixelHeight = Math.round(height * dpr);
    if (canvas.width !== pixelWidth || canvas.height !== pixelHeight) {
      canvas.width = pixelWidth;
      canvas.height = pixelHeight;
    }
  }
  const isFiniteNumber = value => value > -Infinity && value < Infinity;

  // scales and ticks
  function niceStep(span, count) {
    if (!(span > 0)) return 1;
    const raw = span / Math.max(1, count);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const fraction = raw / power;
    return (fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10) * power;
  }
  function linTicks(low, high, count, minStep) {
    let step = niceStep(high - low, count);
    if (minStep && step < minStep) step = minStep;
    const ticks = [];
    const first = Math.ceil(low / step - 1e-9);
    const last = Math.floor(high / step + 1e-9);
    for (let i = first; i <= last && ticks.length < 60; i++) ticks.push(i * step);
    return { ticks: ticks, step: step };
  }
  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 172800, 604800, 2592000, 31536000];
  function timeTicks(low, high, count, wallClock) {
    if (high - low < 4) return linTicks(low, high, count);
    const wanted = (high - low) / Math.max(1, count);
    let step = TIME_STEPS[TIME_STEPS.length - 1];
    for (const candidate of TIME_STEPS) {
      if (candidate >= wanted) {
        step = candidate;
        break;
      }
    }
    // hour and day ticks fall on local midnight and whole local hours
    const offset = wallClock && step >= 3600 ? -new Date(low * 1000).getTimezoneOffset() * 60 : 0;
    const ticks = [];
    for (let value = Math.ceil((low + offset) / step) * step - offset; value <= high + 1e-9 && ticks.length < 60; value += step) {
      ticks.push(value);
    }
    return { ticks: ticks, step: step };
  }
  // Ticks of a log axis whose ends are lowLog..highLog (log10 of the values), plotHeight px tall:
  // every decade gets a grid line, 2..9 times a decade a fainter one, and labels go where they
  // fit (1 / 2 / 5 per decade when decades are tall, every n-th decade when they are short).
  // With fewer than three such labels (about one decade) they are the linear ticks of the values.
  function logTicks(lowLog, highLog, plotHeight) {
    const firstDecade = Math.floor(lowLog);
    const lastDecade = Math.ceil(highLog);
    const decadePx = plotHeight / Math.max(1e-9, highLog - lowLog);
    const inside = value => {
      const log = Math.log10(value);
      return log >= lowLog - 1e-9 && log <= highLog + 1e-9;
    };
    const labelled = decadePx >= 110 ? [1, 2, 5] : [1];
    const labelEvery = Math.max(1, Math.ceil(LABEL_GAP * 1.6 / decadePx));
    const major = [];
    const minor = [];
    for (let decade = firstDecade; decade <= lastDecade; decade++) {
      for (let multiple = 1; multiple <= 9; multiple++) {
        const value = multiple * Math.pow(10, decade);
        if (!inside(value)) continue;
        const isLabel = labelled.indexOf(multiple) >= 0 && (multiple > 1 || decade % labelEvery === 0);
        if (isLabel) major.push(value);
        else if (multiple === 1 || decadePx >= 24) minor.push(value);
      }
    }
    if (major.length < 3) {
      const linear = linTicks(Math.pow(10, lowLog), Math.pow(10, highLog), plotHeight / 34);
      return { ticks: linear.ticks.filter(value => value > 0), step: linear.step, minor: minor };
    }
    return { ticks: major, step: 0, minor: minor };
  }
  function fmtTickY(value, ticks) {
    if (value === 0) return '0';
    const magnitude = Math.abs(value);
    if (magnitude >= 1e5 || magnitude < 1e-4) return Number(value.toPrecision(3)).toExponential().replace('e+', 'e');
    if (!ticks.step) return String(Number(value.toPrecision(3)));
    const decimals = Math.max(0, Math.min(10, -Math.floor(Math.log10(ticks.step) + 1e-9)));
    return value.toFixed(decimals);
  }
  function compact(value) {
    const magnitude = Math.abs(value);
    const short = number => String(Number(number.toPrecision(3)));
    if (magnitude >= 1e9) return short(value / 1e9) + 'B';
    if (magnitude >= 1e6) return short(value / 1e6) + 'M';
    if (magnitude >= 1e4) return short(value / 1e3) + 'k';
    return String(Math.round(value * 1000) / 1000);
  }
  function fmtTickX(value, step) {
    if (options.xFormat === 'step') return compact(value);
    if (options.xFormat === 'metric') return fmtTickY(value, { step: step });
    if (step < 1) {
      const decimals = Math.min(6, Math.max(1, -Math.floor(Math.log10(step) + 1e-9)));
      return (options.xFormat === 'relative' ? value : value % 60).toFixed(decimals) + 's';
    }
    if (options.xFormat === 'relative') return fmtDur(value);
    const date = new Date(value * 1000);
    if (step >= 86400) return MON[date.getMonth()] + ' ' + date.getDate();
    return fmtClock(date, step < 60);
  }
  function fmtX(value) {
    if (options.xFormat === 'metric') return options.xLabel + ' ' + fmtNum(value);
    if (options.xFormat === 'step') return 'Step ' + (Number.isInteger(value) ? value.toLocaleString('en-US') : fmtNum(value));
    if (options.xFormat === 'relative') {
      return (Math.abs(value) < 10 ? fmtNum(Number(value.toPrecision(3))) + 's' : fmtDur(value)) + ' after start';
    }
    const date = new Date(value * 1000);
    return MON[date.getMonth()] + ' ' + date.getDate() + ', ' + fmtClock(date, true);
  }

  // series helpers
  function isSorted(xs, from) {
    for (let i = Math.max(1, from); i < xs.length; i++) {
      if (!(xs[i] >= xs[i - 1])) return false;
    }
    return true;
  }
  // EMA with TensorBoard's debiasing, so the first points are not dragged towards zero.
  function smoothFrom(series, startIndex) {
    const weight = options.smoothing;
    if (startIndex === 0 || series.smoothWeight !== weight) {
      startIndex = 0;
      series.ema = 0;
      series.emaCount = 0;
      series.smoothed.length = 0;
    }
    for (let i = startIndex; i < series.y.length; i++) {
      const value = series.y[i];
      if (!isFiniteNumber(value)) {
        series.smoothed[i] = value;
        continue;
      }
      series.ema = series.ema * weight + (1 - weight) * value;
      series.emaCount++;
      series.smoothed[i] = weight ? series.ema / (1 - Math.pow(weight, series.emaCount)) : value;
    }
    series.smoothWeight = weight;
  }
  function ensureSmooth(series) {
    if (series.smoothWeight !== options.smoothing || series.smoothed.length !== series.y.length) smoothFrom(series, 0);
  }
  // [first, end) indexes of a series' points that can show between x0 and x1 (one either side)
  function indexRange(series, x0, x1) {
    if (!series.sorted) return [0, series.x.length];
    return [Math.max(0, lowerBound(series.x, x0) - 1), Math.min(series.x.length, lowerBound(series.x, x1) + 1)];
  }
  function nearestIndex(series, x) {
    const count = series.x.length;
    if (!count) return -1;
    if (series.sorted) {
      const i = lowerBound(series.x, x);
      if (i <= 0) return 0;
      if (i >= count) return count - 1;
      return x - series.x[i - 1] <= series.x[i] - x ? i - 1 : i;
    }
    let best = -1;
    let bestDistance = Infinity;
    for (let i = 0; i < count; i++) {
      const distance = Math.abs(series.x[i] - x);
      if (distance < bestDistance) {
        bestDistance = distance;
        best = i;
      }
    }
    return best;
  }
  // The value at a fraction of the sorted values (clipOutliers: the 5th and 95th percentiles).
  function quantile(sorted, fraction) {
    const position = (sorted.length - 1) * fraction;
    const below = Math.floor(position);
    const above = Math.min(sorted.length - 1, below + 1);
    return sorted[below] + (sorted[above] - sorted[below]) * (position - below);
  }

  // One polyline per run; non-finite values (and values <= 0 on a log axis) break it into
  // gaps. Dense series are folded into min/max per pixel column, so cost follows width.
  function trace(ctx, series, ys, range, scale, alpha, width) {
    const xs = series.x;
    const first = range[0];
    const end = range[1];
    const count = end - first;
    const dense = count > scale.plotWidth * 2.5;
    const sparse = count < scale.plotWidth / 10;
    const floor = scale.logy ? 0 : -Infinity;
    ctx.globalAlpha = alpha;
    ctx.strokeStyle = series.color;
    ctx.fillStyle = series.color;
    ctx.lineWidth = width;
    ctx.lineJoin = 'round';
    ctx.lineCap = 'round';
    ctx.beginPath();
    let penDown = false;
    let runLength = 0;
    let lastX = 0;
    let lastY = 0;
    const column = { x: null, first: 0, min: 0, max: 0, last: 0 };
    const dots = [];
    const flushColumn = () => {
      if (column.x === null) return;
      const px = column.x + 0.5;
      if (penDown) ctx.lineTo(px, column.first);
      else {
        ctx.moveTo(px, column.first);
        penDown = true;
      }
      if (column.min < column.first) ctx.lineTo(px, column.min);
      if (column.max > column.min) ctx.lineTo(px, column.max);
      ctx.lineTo(px, column.last);
      column.x = null;
    };
    for (let i = first; i < end; i++) {
      const value = ys[i];
      const xValue = xs[i];
      if (!(value > floor && value < Infinity) || !isFiniteNumber(xValue)) {
        if (dense) flushColumn();
        if (runLength === 1 && !sparse) dots.push(lastX, lastY);
        penDown = false;
        runLength = 0;
        continue;
      }
      const px = scale.toX(xValue);
      const py = Math.max(-1e5, Math.min(1e5, scale.toY(value)));
      if (dense) {
        const pixelColumn = Math.floor(px);
        if (pixelColumn !== column.x) {
          flushColumn();
          column.x = pixelColumn;
          column.first = py;
          column.min = py;
          column.max = py;
          column.last = py;
        } else {
          column.min = Math.min(column.min, py);
          column.max = Math.max(column.max, py);
          column.last = py;
        }
      } else if (penDown) ctx.lineTo(px, py);
      else {
        ctx.moveTo(px, py);
        penDown = true;
      }
      runLength++;
      lastX = px;
      lastY = py;
      if (sparse) dots.push(px, py);
    }
    if (dense) flushColumn();
    if (runLength === 1 && !sparse) dots.push(lastX, lastY);
    ctx.stroke();
    if (dots.length) {
      const radius = width * 0.9 + 0.6;
      ctx.beginPath();
      for (let i = 0; i < dots.length; i += 2) {
        ctx.moveTo(dots[i] + radius, dots[i + 1]);
        ctx.arc(dots[i], dots[i + 1], radius, 0, Math.PI * 2);
      }
      ctx.fill();
    }
    ctx.globalAlpha = 1;
  }

  // The min/max band of an aggregated series, filled under its line and outlined at its
  // edges so it reads on both themes (gaps where values are not finite).
  function band(ctx, series, range, scale, alpha) {
    const floor = scale.logy ? 0 : -Infinity;
    const usable = i => series.lo[i] > floor && series.hi[i] < Infinity && isFiniteNumber(series.x[i]);
    ctx.fillStyle = series.color;
    ctx.strokeStyle = series.color;
    ctx.lineWidth = 1;
    let i = range[0];
    while (i < range[1]) {
      while (i < range[1] && !usable(i)) i++;
      const start = i;
      while (i < range[1] && usable(i)) i++;
      if (i - start < 2) continue;
      ctx.beginPath();
      ctx.moveTo(scale.toX(series.x[start]), scale.toY(series.hi[start]));
      for (let j = start + 1; j < i; j++) ctx.lineTo(scale.toX(series.x[j]), scale.toY(series.hi[j]));
      for (let j = i - 1; j >= start; j--) ctx.lineTo(scale.toX(series.x[j]), scale.toY(series.lo[j]));
      ctx.closePath();
      ctx.globalAlpha = alpha;
      ctx.fill();
      ctx.globalAlpha = Math.min(1, alpha * 2.2);
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
  }
  function showTip(hits, clientX, clientY) {
    if (!tooltip) {
      tooltip = h('div', { class: 'chart-tip', role: 'tooltip', 'data-testid': 'chart-tooltip' });
      tooltip.hidden = true;
      document.body.appendChild(tooltip);
    }
    if (!hits || !hits.length) {
      tooltip.hidden = true;
      return;
    }
    const rows = hits.slice().sort((left, right) => {
      const leftOk = isFiniteNumber(left.shown);
      const rightOk = isFiniteNumber(right.shown);
      if (leftOk && rightOk) return right.shown - left.shown;
      return leftOk ? -1 : rightOk ? 1 : 0;
    });
    const kids = [h('div', { class: 'tip-x', text: fmtX(hits.x) })];
    for (const hit of rows.slice(0, 24)) {
      kids.push(h('div', { class: 'tip-row' }, h('i', { style: 'background:' + hit.color }), h('span', { class: 'tip-name', text: hit.label }),
        h('b', { text: fmtNum(hit.shown) }), options.smoothing > 0 ? h('small', { text: fmtNum(hit.raw), title: 'raw' }) : null));
    }
    if (rows.length > 24) kids.push(h('div', { class: 'tip-x', text: '+' + (rows.length - 24) + ' more' }));
    tooltip.replaceChildren.apply(tooltip, kids);
    tooltip.hidden = false;
    const box = tooltip.getBoundingClientRect();
    let left = clientX + 16;
    let top = clientY + 14;
    if (left + box.width > innerWidth - 8) left = clientX - box.width - 16;
    if (top + box.height > innerHeight - 8) top = Math.max(8, innerHeight - box.height - 8);
    tooltip.style.transform = 'translate(' + Math.round(left) + 'px,' + Math.round(top) + 'px)';
  }

  function Chart(canvas) {
    this.canvas = canvas;
    this.wrap = canvas.parentNode;
    this.overlay = document.createElement('canvas');
    this.overlay.className = 'chart-overlay';
    this.wrap.appendChild(this.overlay);
    this.series = new Map();
    this.xRange = null;
    this.yRange = null;
    this.goal = null;
    this.bestShown = [];
    this.layout = null;
    this.shownLabels = [];
    this.shownXLabels = [];
    this.visible = !seenObserver;
    this.stale = true;
    this.alive = true;
    this.hoverPx = null;
    this.drag = null;
    this.onZoom = null;
    this.onYZoom = null;
    this.onReset = null;
    this.emptyText = 'No data';
    this.draws = 0;
    this.drawnInFrame = -1;
    this.wrap.__chart = this;
    this.bind();
    if (seenObserver) seenObserver.observe(this.wrap);
    if (sizeObserver) sizeObserver.observe(this.wrap);
    allCharts.add(this);
    request(this);
  }
  Chart.prototype.setSeries = function (id, spec) {
    const series = {
      id: id, label: spec.label || id, color: spec.color || '#888', x: Array.from(spec.x), y: Array.from(spec.y),
      smoothed: [], smoothWeight: -1, ema: 0, emaCount: 0,
      lo: spec.lo ? Array.from(spec.lo) : null,      // lo/hi: a shaded band around the line
      hi: spec.hi ? Array.from(spec.hi) : null
    };
    series.sorted = isSorted(series.x, 0);
    this.series.set(id, series);
    request(this);
  };
  Chart.prototype.appendPoints = function (id, xs, ys) {
    const series = this.series.get(id);
    if (!series || !xs.length) return;
    const before = series.x.length;
    for (let i = 0; i < xs.length; i++) {
      series.x.push(xs[i]);
      series.y.push(ys[i]);
    }
    if (series.sorted) series.sorted = isSorted(series.x, before);
    if (series.smoothWeight === options.smoothing && series.smoothed.length === before) smoothFrom(series, before);
    request(this);
  };
  Chart.prototype.removeSeries = function (id) {
    if (this.series.delete(id)) request(this);
  };
  Chart.prototype.setXRange = function (range) {
    this.xRange = range && range[1] > range[0] ? [range[0], range[1]] : null;
    request(this);
  };
  Chart.prototype.setYRange = function (range) {
    this.yRange = range && range[1] > range[0] ? [range[0], range[1]] : null;
    request(this);
  };
  // With a goal, each run's best value (lowest or highest raw value) gets a ringed marker.
  Chart.prototype.setGoal = function (goal) {
    this.goal = goal === 'min' || goal === 'max' ? goal : null;
    request(this);
  };
  // The best markers as last drawn: [{id, value, x, y}] (x, y in CSS px on the canvas).
  Chart.prototype.bestPoints = function () {
    return this.bestShown.slice();
  };
  // The shown series (hidden runs left out) as CSV text: run,x,value per point.
  Chart.prototype.toCsv = function (xName) {
    const quote = text => /[",\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
    const lines = ['run,' + xName + ',value'];
    for (const series of this.series.values()) {
      if (options.hidden.has(series.id)) continue;
      for (let i = 0; i < series.x.length; i++) lines.push(quote(series.label) + ',' + series.x[i] + ',' + series.y[i]);
    }
    return lines.join('\n') + '\n';
  };
  Chart.prototype.points = function () {
    const counts = {};
    for (const [id, series] of this.series) counts[id] = series.x.length;
    return counts;
  };
  // The y labels as last drawn: [{text, y}] (y in CSS px from the canvas top).
  Chart.prototype.yLabels = function () {
    return this.shownLabels.slice();
  };
  // The x labels as last drawn: [{text, x}] (x in CSS px from the canvas left).
  Chart.prototype.xLabels = function () {
    return this.shownXLabels.slice();
  };
  Chart.prototype.destroy = function () {
    this.alive = false;
    dirtyCharts.delete(this);
    allCharts.delete(this);
    if (seenObserver) seenObserver.unobserve(this.wrap);
    if (sizeObserver) sizeObserver.unobserve(this.wrap);
    this.wrap.__chart = null;
    this.series.clear();
    if (this.hoverPx !== null) showTip(null);
  };
  Chart.prototype.message = function (ctx, width, height, text) {
    const colours = getTheme();
    ctx.fillStyle = colours.text;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.font = colours.font;
    ctx.fillText(text, width / 2, height / 2);
  };
  // x extent of the shown series (or the zoomed range)
  Chart.prototype.xExtent = function (list) {
    if (this.xRange) return [this.xRange[0], this.xRange[1]];
    let x0 = Infinity;
    let x1 = -Infinity;
    for (const series of list) {
      const count = series.x.length;
      if (series.sorted) {
        x0 = Math.min(x0, series.x[0]);
        x1 = Math.max(x1, series.x[count - 1]);
        continue;
      }
      for (let i = 0; i < count; i++) {
        if (!isFiniteNumber(series.x[i])) continue;   // x from another metric: none before its first row
        x0 = Math.min(x0, series.x[i]);
        x1 = Math.max(x1, series.x[i]);
      }
    }
    return [x0, x1];
  };
  // y extent of what shows between x0 and x1: all of it, or, when clipOutliers is on, the
  // bulk of it: the 5th to 95th percentile of the values, widened by a quarter of that span on
  // each side (never past the real extremes). One spike or a diverged run (a few % of the
  // points) no longer flattens the other curves; a curve's ordinary range stays whole.
  Chart.prototype.yExtent = function (list, ranges, x0, x1) {
    const floor = options.logy ? 0 : -Infinity;
    const values = [];
    for (const series of list) {
      const range = ranges.get(series);
      for (let i = range[0]; i < range[1]; i++) {
        const xValue = series.x[i];
        if (!(xValue >= x0 && xValue <= x1)) continue;
        const value = series.y[i];
        if (value > floor && value < Infinity) values.push(value);
        if (series.lo && series.lo[i] > floor && series.lo[i] < Infinity) values.push(series.lo[i]);
        if (series.hi && series.hi[i] > floor && series.hi[i] < Infinity) values.push(series.hi[i]);
      }
    }
    if (!values.length) return null;
    if (options.clipOutliers && values.length >= 20) {
      const sorted = Float64Array.from(values).sort();
      const low = quantile(sorted, 0.05);
      const high = quantile(sorted, 0.95);
      const margin = (high - low) * 0.25;
      return [Math.max(sorted[0], low - margin), Math.min(sorted[sorted.length - 1], high + margin)];
    }
    let y0 = Infinity;
    let y1 = -Infinity;
    for (const value of values) {
      if (value < y0) y0 = value;
      if (value > y1) y1 = value;
    }
    return [y0, y1];
  };
  Chart.prototype.draw = function () {
    this.stale = false;
    stats.draws++;
    this.draws++;
    if (this.drawnInFrame === frameSeq) stats.repeats++;
    this.drawnInFrame = frameSeq;
    const colours = getTheme();
    const width = this.wrap.clientWidth;
    const height = this.wrap.clientHeight;
    if (width < 20 || height < 20) return;
    const dpr = window.devicePixelRatio || 1;
    fitCanvas(this.canvas, width, height, dpr);
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = colours.font;
    ctx.textBaseline = 'middle';
    this.shownLabels = [];
    this.shownXLabels = [];
    const list = [];
    for (const series of this.series.values()) {
      if (!options.hidden.has(series.id) && series.x.length) list.push(series);
    }
    if (options.highlight) list.sort((left, right) => (left.id === options.highlight) - (right.id === options.highlight));
    const logy = options.logy;
    let [x0, x1] = this.xExtent(list);
    if (!(x1 >= x0) || !isFinite(x0) || !isFinite(x1)) {
      this.layout = null;
      this.message(ctx, width, height, this.series.size ? 'All runs hidden' : this.emptyText);
      return;
    }
    if (x1 === x0) {
      const pad = options.xFormat === 'step' ? 1 : options.xFormat === 'metric' ? Math.abs(x0) * 0.1 || 1 : Math.max(1, Math.abs(x0) * 1e-9);
      x0 -= pad;
      x1 += pad;
    }
    const ranges = new Map();
    for (const series of list) ranges.set(series, indexRange(series, x0, x1));
    let yExtent = this.yExtent(list, ranges, x0, x1);
    if (this.yRange && !(logy && this.yRange[0] <= 0)) yExtent = this.yRange;
    if (!yExtent || !(yExtent[1] >= yExtent[0])) {
      this.layout = null;
      this.message(ctx, width, height, logy ? 'No positive values for a log axis' : 'No finite values in this range');
      return;
    }
    let low = logy ? Math.log10(yExtent[0]) : yExtent[0];
    let high = logy ? Math.log10(yExtent[1]) : yExtent[1];
    if (high - low < 1e-12 * Math.max(1, Math.abs(low))) {
      const pad = logy ? 0.5 : (Math.abs(low) * 0.1 || 1);
      low -= pad;
      high += pad;
    } else if (!this.yRange) {
      const pad = (high - low) * 0.06;
      low -= pad;
      high += pad;
      // a positive series starting near zero keeps zero as its floor
      if (!logy && yExtent[0] >= 0 && low < 0 && yExtent[0] - (high - low) * 0.25 <= 0) low = 0;
    }
    const top = 8;
    const bottom = 22;
    const right = 12;
    const plotHeight = height - top - bottom;
    const yTicks = logy ? logTicks(low, high, plotHeight) : linTicks(low, high, plotHeight / 34);
    const yLabels = yTicks.ticks.map(tick => fmtTickY(tick, yTicks));
    let labelWidth = 0;
    for (const label of yLabels) labelWidth = Math.max(labelWidth, ctx.measureText(label).width);
    const left = Math.ceil(labelWidth) + 12;
    const plotWidth = width - left - right;
    if (plotWidth < 20 || plotHeight < 20) return;
    const scale = {
      logy: logy, plotWidth: plotWidth,
      toX: x => left + (x - x0) / (x1 - x0) * plotWidth,
      toY: logy ? value => top + (1 - (Math.log10(value) - low) / (high - low)) * plotHeight
        : value => top + (1 - (value - low) / (high - low)) * plotHeight
    };
    const xTicks = options.xFormat === 'step' ? linTicks(x0, x1, plotWidth / 80, 1)
      : options.xFormat === 'metric' ? linTicks(x0, x1, plotWidth / 80)
        : timeTicks(x0, x1, plotWidth / 95, options.xFormat === 'wall');
    const inPlotY = py => py >= top && py <= top + plotHeight + 1;
    // grid: minor log ticks faint, then the labelled lines
    ctx.lineWidth = 1;
    ctx.strokeStyle = colours.grid;
    if (yTicks.minor && yTicks.minor.length) {
      ctx.globalAlpha = 0.55;
      ctx.beginPath();
      for (const tick of yTicks.minor) {
        const py = Math.round(scale.toY(tick)) + 0.5;
        if (!inPlotY(py)) continue;
        ctx.moveTo(left, py);
        ctx.lineTo(left + plotWidth, py);
      }
      ctx.stroke();
      ctx.globalAlpha = 1;
    }
    ctx.beginPath();
    for (const tick of yTicks.ticks) {
      const py = Math.round(scale.toY(tick)) + 0.5;
      if (!inPlotY(py)) continue;
      ctx.moveTo(left, py);
      ctx.lineTo(left + plotWidth, py);
    }
    for (const tick of xTicks.ticks) {
      const px = Math.round(scale.toX(tick)) + 0.5;
      if (px < left || px > left + plotWidth + 1) continue;
      ctx.moveTo(px, top);
      ctx.lineTo(px, top + plotHeight);
    }
    ctx.stroke();
    ctx.strokeStyle = colours.axis;
    ctx.beginPath();
    const axisY = Math.round(top + plotHeight) + 0.5;
    ctx.moveTo(left, axisY);
    ctx.lineTo(left + plotWidth, axisY);
    ctx.stroke();
    // y labels, top to bottom, never closer than LABEL_GAP
    ctx.fillStyle = colours.text;
    ctx.textAlign = 'right';
    const placed = yTicks.ticks.map((tick, i) => ({ text: yLabels[i], y: scale.toY(tick) }))
      .filter(label => label.y >= top - 2 && label.y <= top + plotHeight + 2)
      .map(label => ({ text: label.text, y: Math.max(top + 4, Math.min(top + plotHeight - 2, label.y)) }))
      .sort((above, below) => above.y - below.y);
    let lastLabelY = -Infinity;
    for (const label of placed) {
      if (label.y - lastLabelY < LABEL_GAP) continue;
      ctx.fillText(label.text, left - 6, label.y);
      this.shownLabels.push(label);
      lastLabelY = label.y;
    }
    ctx.textAlign = 'center';
    let lastRight = -Infinity;
    for (const tick of xTicks.ticks) {
      const px = scale.toX(tick);
      if (px < left - 1 || px > left + plotWidth + 1) continue;
      const label = fmtTickX(tick, xTicks.step);
      const labelW = ctx.measureText(label).width;
      const centre = Math.min(Math.max(px, left + labelW / 2), width - labelW / 2 - 1);
      if (centre - labelW / 2 < lastRight + 8) continue;
      ctx.fillText(label, centre, top + plotHeight + 12);
      this.shownXLabels.push({ text: label, x: centre });
      lastRight = centre + labelW / 2;
    }
    // series: bands, faint raw curves, then the (smoothed) curves on top
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top - 2, plotWidth + 1, plotHeight + 4);
    ctx.clip();
    const smoothing = options.smoothing > 0;
    const highlighted = options.highlight;
    const dimmed = series => highlighted && highlighted !== series.id;
    let shownPoints = 0;
    for (const range of ranges.values()) shownPoints += range[1] - range[0];
    const thin = list.length > THIN_AFTER || shownPoints > THIN_POINTS ? 1 / dpr : 0;
    for (const series of list) {
      if (series.lo) band(ctx, series, ranges.get(series), scale, dimmed(series) ? 0.06 : 0.24);
    }
    if (smoothing) {
      for (const series of list) {
        ensureSmooth(series);
        trace(ctx, series, series.y, ranges.get(series), scale, dimmed(series) ? 0.06 : 0.2, thin || 1.2);
      }
    }
    for (const series of list) {
      trace(ctx, series, smoothing ? series.smoothed : series.y, ranges.get(series), scale,
        dimmed(series) ? 0.2 : 1, highlighted === series.id ? 2.2 : thin || 1.6);
    }
    ctx.restore();
    // drawn unclipped: a run's best is often its last point, at the plot's right edge
    const inPlot = (px, py) => px >= left - 1 && px <= left + plotWidth + 1 && py >= top - 1 && py <= top + plotHeight + 1;
    this.bestShown = this.goal ? this.drawBest(ctx, list, scale, colours, inPlot) : [];
    this.layout = { left: left, top: top, plotWidth: plotWidth, plotHeight: plotHeight, x0: x0, x1: x1, low: low, high: high,
      logy: logy, toX: scale.toX, toY: scale.toY };
    if (this.hoverPx !== null || this.drag) this.drawOverlay();
  };
  Chart.prototype.drawBest = function (ctx, list, scale, colours, inPlot) {
    const floor = scale.logy ? 0 : -Infinity;
    const shown = [];
    for (const series of list) {
      let best = -1;
      for (let i = 0; i < series.y.length; i++) {
        const value = series.y[i];
        if (!(value > floor && value < Infinity) || !isFiniteNumber(series.x[i])) continue;
        if (best < 0 || (this.goal === 'min' ? value < series.y[best] : value > series.y[best])) best = i;
      }
      if (best < 0) continue;
      const markerX = scale.toX(series.x[best]);
      const markerY = scale.toY(series.y[best]);
      if (!inPlot(markerX, markerY)) continue;   // outside a zoomed range
      ctx.globalAlpha = 1;
      ctx.lineWidth = 2;
      ctx.strokeStyle = colours.bg;
      ctx.fillStyle = series.color;
      ctx.beginPath();
      ctx.arc(markerX, markerY, 5, 0, Math.PI * 2);
      ctx.fill();
      ctx.stroke();
      ctx.strokeStyle = series.color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      ctx.arc(markerX, markerY, 8, 0, Math.PI * 2);
      ctx.stroke();
      shown.push({ id: series.id, value: series.y[best], x: markerX, y: markerY });
    }
    return shown;
  };
  Chart.prototype.valuesAt = function (x) {
    const out = [];
    for (const series of this.series.values()) {
      if (options.hidden.has(series.id) || !series.x.length) continue;
      const i = nearestIndex(series, x);
      if (i < 0) continue;
      if (options.smoothing > 0) ensureSmooth(series);
      out.push({ id: series.id, label: series.label, color: series.color, x: series.x[i], raw: series.y[i],
        shown: options.smoothing > 0 ? series.smoothed[i] : series.y[i] });
    }
    return out;
  };
  // y value at a pixel row of the plot
  Chart.prototype.valueAtY = function (py) {
    const layout = this.layout;
    const fraction = 1 - (py - layout.top) / layout.plotHeight;
    const scaled = layout.low + fraction * (layout.high - layout.low);
    return layout.logy ? Math.pow(10, scaled) : scaled;
  };
  Chart.prototype.drawDragBox = function (ctx, colours) {
    const layout = this.layout;
    const drag = this.drag;
    ctx.fillStyle = colours.zoom;
    ctx.strokeStyle = colours.cross;
    ctx.lineWidth = 1;
    ctx.beginPath();
    if (drag.axis === 'y') {
      const upper = Math.max(layout.top, Math.min(drag.from, drag.to));
      const lower = Math.min(layout.top + layout.plotHeight, Math.max(drag.from, drag.to));
      ctx.fillRect(layout.left, upper, layout.plotWidth, lower - upper);
      ctx.moveTo(layout.left, Math.round(upper) + 0.5);
      ctx.lineTo(layout.left + layout.plotWidth, Math.round(upper) + 0.5);
      ctx.moveTo(layout.left, Math.round(lower) - 0.5);
      ctx.lineTo(layout.left + layout.plotWidth, Math.round(lower) - 0.5);
    } else {
      const start = Math.max(layout.left, Math.min(drag.from, drag.to));
      const end = Math.min(layout.left + layout.plotWidth, Math.max(drag.from, drag.to));
      ctx.fillRect(start, layout.top, end - start, layout.plotHeight);
      ctx.moveTo(Math.round(start) + 0.5, layout.top);
      ctx.lineTo(Math.round(start) + 0.5, layout.top + layout.plotHeight);
      ctx.moveTo(Math.round(end) - 0.5, layout.top);
      ctx.lineTo(Math.round(end) - 0.5, layout.top + layout.plotHeight);
    }
    ctx.stroke();
  };
  Chart.prototype.drawOverlay = function () {
    const overlay = this.overlay;
    const width = this.wrap.clientWidth;
    const height = this.wrap.clientHeight;
    const layout = this.layout;
    if (this.hoverPx === null && !this.drag) {
      if (overlay.width) {
        overlay.width = 0;
        overlay.height = 0;
      }
      return null;
    }
    const dpr = window.devicePixelRatio || 1;
    fitCanvas(overlay, width, height, dpr);
    const ctx = overlay.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    if (!layout) return null;
    const colours = getTheme();
    if (this.drag) {
      this.drawDragBox(ctx, colours);
      return null;
    }
    if (this.hoverPx < layout.left - 4 || this.hoverPx > layout.left + layout.plotWidth + 4) return null;
    const x = layout.x0 + (this.hoverPx - layout.left) / layout.plotWidth * (layout.x1 - layout.x0);
    const hits = this.valuesAt(x);
    if (!hits.length) return hits;
    let best = hits[0];
    for (const hit of hits) {
      if (Math.abs(hit.x - x) < Math.abs(best.x - x)) best = hit;
    }
    hits.x = best.x;
    const crossX = Math.round(layout.toX(best.x)) + 0.5;
    if (crossX >= layout.left && crossX <= layout.left + layout.plotWidth + 1) {
      ctx.strokeStyle = colours.cross;
      ctx.lineWidth = 1;
      ctx.setLineDash([3, 3]);
      ctx.beginPath();
      ctx.moveTo(crossX, layout.top);
      ctx.lineTo(crossX, layout.top + layout.plotHeight);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    for (const hit of hits) {
      const value = hit.shown;
      if (!(value > (layout.logy ? 0 : -Infinity) && value < Infinity)) continue;
      const markerX = layout.toX(hit.x);
      const markerY = layout.toY(value);
      if (Math.abs(markerX - crossX) > 14) continue;   // a run that ended far from the cursor gets no marker
      if (markerX < layout.left - 1 || markerX > layout.left + layout.plotWidth + 1) continue;
      if (markerY < layout.top - 1 || markerY > layout.top + layout.plotHeight + 1) continue;
      ctx.fillStyle = hit.color;
      ctx.strokeStyle = colours.bg;
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(markerX, markerY, 3.5, 0, Math.PI * 2);
      ctx.fill();
      ctx.stroke();
    }
    return hits;
  };
  Chart.prototype.hover = function (x) {
    if (x === null || x === undefined || !this.layout) {
      this.hoverPx = null;
      this.drawOverlay();
      showTip(null);
      return [];
    }
    this.hoverPx = this.layout.toX(x);
    const hits = this.drawOverlay() || [];
    const box = this.overlay.getBoundingClientRect();
    showTip(hits, box.left + this.hoverPx, box.top + this.layout.top + 10);
    return hits.map(hit => ({ run: hit.id, x: hit.x, value: hit.shown, raw: hit.raw }));
  };
  // A drag across the plot zooms x; a drag along the y axis (left of the plot) zooms y.
  Chart.prototype.finishDrag = function () {
    const drag = this.drag;
    const layout = this.layout;
    this.drag = null;
    if (!layout || Math.abs(drag.to - drag.from) < 6) return;
    if (drag.axis === 'y') {
      const clampY = py => Math.max(layout.top, Math.min(layout.top + layout.plotHeight, py));
      const range = [this.valueAtY(clampY(Math.max(drag.from, drag.to))), this.valueAtY(clampY(Math.min(drag.from, drag.to)))];
      if (range[1] > range[0]) {
        this.setYRange(range);
        if (this.onYZoom) this.onYZoom(range[0], range[1]);
      }
      return;
    }
    const toX = px => layout.x0 + (Math.max(layout.left, Math.min(layout.left + layout.plotWidth, px)) - layout.left) / layout.plotWidth * (layout.x1 - layout.x0);
    const range = [toX(Math.min(drag.from, drag.to)), toX(Math.max(drag.from, drag.to))];
    if (range[1] > range[0]) {
      this.setXRange(range);
      if (this.onZoom) this.onZoom(range[0], range[1]);
    }
  };
  Chart.prototype.bind = function () {
    const overlay = this.overlay;
    const self = this;
    const localX = event => event.clientX - overlay.getBoundingClientRect().left;
    const localY = event => event.clientY - overlay.getBoundingClientRect().top;
    overlay.addEventListener('mousemove', event => {
      if (self.drag) return;
      self.hoverPx = localX(event);
      overlay.style.cursor = self.layout && self.hoverPx < self.layout.left ? 'ns-resize' : '';
      showTip(self.drawOverlay(), event.clientX, event.clientY);
    });
    overlay.addEventListener('mouseleave', () => {
      if (self.drag) return;
      self.hoverPx = null;
      self.drawOverlay();
      showTip(null);
    });
    overlay.addEventListener('mousedown', event => {
      if (event.button !== 0 || !self.layout) return;
      event.preventDefault();
      const onAxis = localX(event) < self.layout.left;
      const where = onAxis ? localY : localX;
      const start = where(event);
      self.drag = { axis: onAxis ? 'y' : 'x', from: start, to: start };
      showTip(null);
      const move = moveEvent => {
        self.drag.to = where(moveEvent);
        self.drawOverlay();
      };
      const up = () => {
        window.removeEventListener('mousemove', move);
        window.removeEventListener('mouseup', up);
        self.finishDrag();
        self.drawOverlay();
      };
      window.addEventListener('mousemove', move);
      window.addEventListener('mouseup', up);
    });
    overlay.addEventListener('dblclick', event => {
      event.preventDefault();
      if (!self.xRange && !self.yRange) return;
      self.setXRange(null);
      self.setYRange(null);
      if (self.onReset) self.onReset();
    });
  };

  // Histogram heat maps: x is the step, y the value, each cell's darkness the share of that
  // step's values in the bin (steps are normalised separately, so early and late distributions
  // read alike). Bins may differ per step; each column draws its own edges. `range` {low, high,
  // firstStep, lastStep} is shared by every run's map of one tag, so they can be compared.
  function heatmapLayout(canvas, histogram, range) {
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    const margin = { left: 50, right: 6, top: 6, bottom: 18 };
    let low = range ? range.low : Infinity;
    let high = range ? range.high : -Infinity;
    if (!range) {
      for (const edges of histogram.edges) {
        if (!edges.length) continue;
        low = Math.min(low, num(edges[0]));
        high = Math.max(high, num(edges[edges.length - 1]));
      }
    }
    if (!(high > low)) {
      low -= 0.5;
      high = low + 1;
    }
    const steps = histogram.step;
    const firstStep = range ? range.firstStep : steps[0];
    const lastStep = range ? range.lastStep : steps[steps.length - 1];
    const plotWidth = Math.max(1, width - margin.left - margin.right);
    const plotHeight = Math.max(1, height - margin.top - margin.bottom);
    const stepSpan = lastStep > firstStep ? lastStep - firstStep : 1;
    // a column is as wide as the typical gap between logged steps
    const gap = steps.length > 1 ? (steps[steps.length - 1] - steps[0]) / (steps.length - 1) : stepSpan;
    const columnWidth = Math.max(1, plotWidth * gap / (stepSpan + gap));
    const toX = step => margin.left + (step - firstStep) / (stepSpan + gap) * plotWidth;
    const toY = value => margin.top + plotHeight * (1 - (value - low) / (high - low));
    return { width: width, height: height, margin: margin, plotWidth: plotWidth, plotHeight: plotHeight, low: low, high: high,
      firstStep: firstStep, lastStep: lastStep, columnWidth: columnWidth, toX: toX, toY: toY };
  }
  function fmtHeatTick(value) {
    const magnitude = Math.abs(value);
    return magnitude && (magnitude >= 1e5 || magnitude < 1e-3) ? value.toExponential(1) : String(Number(value.toPrecision(3)));
  }
  function drawHeatmap(canvas, histogram, color, range) {
    const dpr = window.devicePixelRatio || 1;
    const layout = heatmapLayout(canvas, histogram, range);
    canvas.width = Math.round(layout.width * dpr);
    canvas.height = Math.round(layout.height * dpr);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, layout.width, layout.height);
    const colours = getTheme();
    ctx.fillStyle = color;
    const columns = histogram.step.length;
    for (let i = 0; i < columns; i++) {
      const edges = histogram.edges[i];
      const counts = histogram.counts[i];
      let largest = 0;
      for (const count of counts) largest = Math.max(largest, num(count));
      if (!(largest > 0)) continue;
      const columnX = layout.toX(histogram.step[i]);
      for (let bin = 0; bin < counts.length; bin++) {
        const count = num(counts[bin]);
        if (!(count > 0)) continue;
        const binTop = layout.toY(num(edges[bin + 1]));
        const binBottom = layout.toY(num(edges[bin]));
        ctx.globalAlpha = 0.08 + 0.92 * count / largest;
        ctx.fillRect(columnX, binTop, Math.max(1, layout.columnWidth + 0.5), Math.max(1, binBottom - binTop));
      }
    }
    ctx.globalAlpha = 1;
    const margin = layout.margin;
    ctx.strokeStyle = colours.axis;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(margin.left - 0.5, margin.top);
    ctx.lineTo(margin.left - 0.5, margin.top + layout.plotHeight + 0.5);
    ctx.lineTo(margin.left + layout.plotWidth, margin.top + layout.plotHeight + 0.5);
    ctx.stroke();
    ctx.fillStyle = colours.text;
    ctx.font = '10.5px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    const labels = [];
    for (const value of [layout.high, (layout.low + layout.high) / 2, layout.low]) {
      const labelY = Math.min(margin.top + layout.plotHeight - 4, Math.max(margin.top + 4, layout.toY(value)));
      ctx.fillText(fmtHeatTick(value), margin.left - 4, labelY);
      labels.push(fmtHeatTick(value));
    }
    ctx.textBaseline = 'alphabetic';
    ctx.textAlign = 'left';
    ctx.fillText('step ' + layout.firstStep, margin.left, layout.height - 4);
    ctx.textAlign = 'right';
    ctx.fillText(String(layout.lastStep), margin.left + layout.plotWidth, layout.height - 4);
    labels.push('step ' + layout.firstStep, String(layout.lastStep));
    return { columns: columns, labels: labels };
  }
  // Which step column and value a pointer at (px, py) on a heat map's canvas is over.
  function heatmapCell(canvas, histogram, range, px, py) {
    const layout = heatmapLayout(canvas, histogram, range);
    let column = -1;
    for (let i = 0; i < histogram.step.length; i++) {
      const columnX = layout.toX(histogram.step[i]);
      if (px >= columnX && px < columnX + layout.columnWidth + 0.5) column = i;
    }
    const value = layout.low + (layout.high - layout.low) * (1 - (py - layout.margin.top) / layout.plotHeight);
    return { column: column, value: value };
  }

  function configure(changes) {
    let changed = false;
    for (const key of Object.keys(changes)) {
      if (options[key] !== changes[key]) {
        options[key] = changes[key];
        changed = true;
      }
    }
    if (changed) {
      for (const chart of allCharts) request(chart);
    }
  }
  function refreshTheme() {
    theme = null;
    for (const chart of allCharts) request(chart);
  }

  // Params vs results (13.19 owns the data and the brushing; this only draws). A spec holds
  // axes [{label, ticks: [{u, text}]}] and marks in unit coordinates (0..1 along each axis):
  // points [{id, units: [u per axis], color}] (color null: drawn faint, under the others) and
  // boxes [{axis, from, to}] (parallel: a range on axis `axis`) or [{x0, x1, y0, y1}] (scatter).
  // Both return the layout: unit <-> pixel functions and each mark's pixel position.
  function prepareCanvas(canvas) {
    const width = canvas.parentNode.clientWidth;
    const height = canvas.parentNode.clientHeight;
    const dpr = window.devicePixelRatio || 1;
    fitCanvas(canvas, width, height, dpr);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = getTheme().font;
    return { ctx: ctx, width: width, height: height };
  }
  function styleVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }
  function drawBoxes(ctx, rects) {
    const colours = getTheme();
    ctx.fillStyle = colours.zoom;
    ctx.strokeStyle = colours.cross;
    ctx.lineWidth = 1;
    for (const rect of rects) {
      ctx.fillRect(rect[0], rect[1], rect[2], rect[3]);
      ctx.strokeRect(rect[0] + 0.5, rect[1] + 0.5, rect[2], rect[3]);
    }
  }
  function markColour(mark, faint) {
    return mark.color || faint;
  }
  function drawScatter(canvas, spec) {
    const surface = prepareCanvas(canvas);
    const ctx = surface.ctx;
    const colours = getTheme();
    const left = 64;
    const top = 10;
    const plotWidth = surface.width - left - 16;
    const plotHeight = surface.height - top - 40;
    const toX = unit => left + unit * plotWidth;
    const toY = unit => top + (1 - unit) * plotHeight;
    const layout = { left: left, top: top, plotWidth: plotWidth, plotHeight: plotHeight, toX: toX, toY: toY, marks: [] };
    if (plotWidth < 20 || plotHeight < 20) return layout;
    ctx.strokeStyle = colours.grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = colours.text;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    ctx.beginPath();
    let lastY = Infinity;
    for (const tick of spec.axes[1].ticks) {
      const py = Math.round(toY(tick.u)) + 0.5;
      ctx.moveTo(left, py);
      ctx.lineTo(left + plotWidth, py);
      if (lastY - py < LABEL_GAP) continue;
      ctx.fillText(tick.text, left - 6, py);
      lastY = py;
    }
    ctx.textAlign = 'center';
    let lastRight = -Infinity;
    for (const tick of spec.axes[0].ticks) {
      const px = Math.round(toX(tick.u)) + 0.5;
      const labelWidth = ctx.measureText(tick.text).width;
      ctx.moveTo(px, top);
      ctx.lineTo(px, top + plotHeight);
      if (px - labelWidth / 2 < lastRight + 6) continue;
      ctx.fillText(tick.text, px, top + plotHeight + 12);
      lastRight = px + labelWidth / 2;
    }
    ctx.stroke();
    ctx.strokeStyle = colours.axis;
    ctx.strokeRect(left + 0.5, top + 0.5, plotWidth, plotHeight);
    ctx.fillStyle = styleVar('--fg-2');
    ctx.fillText(spec.axes[0].label, left + plotWidth / 2, surface.height - 8);
    ctx.save();
    ctx.translate(12, top + plotHeight / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(spec.axes[1].label, 0, 0);
    ctx.restore();
    const faint = styleVar('--faint');
    const ink = Math.min(1, 14 / Math.sqrt(Math.max(1, spec.points.length)));   // as drawParallel's
    for (const mark of spec.points) {
      const px = toX(mark.units[0]);
      const py = toY(mark.units[1]);
      ctx.globalAlpha = (mark.color ? 0.9 : 0.6) * Math.max(0.4, ink);
      ctx.fillStyle = markColour(mark, faint);
      ctx.beginPath();
      ctx.arc(px, py, mark.color ? 4.5 : 3.5, 0, Math.PI * 2);
      ctx.fill();
      layout.marks.push({ id: mark.id, x: px, y: py, matched: !!mark.color });
    }
    ctx.globalAlpha = 1;
    drawBoxes(ctx, spec.boxes.map(box => {
      const x0 = toX(box.x0);
      const y0 = toY(box.y1);
      return [x0, y0, toX(box.x1) - x0, toY(box.y0) - y0];
    }));
    return layout;
  }
  function drawParallel(canvas, spec) {
    const surface = prepareCanvas(canvas);
    const ctx = surface.ctx;
    const colours = getTheme();
    const count = spec.axes.length;
    const top = 26;
    const plotHeight = surface.height - top - 24;
    const gap = (surface.width - 112) / Math.max(1, count - 1);
    const axisX = index => 56 + index * gap;
    const toY = unit => top + (1 - unit) * plotHeight;
    const layout = { top: top, plotHeight: plotHeight, gap: gap, axisX: axisX, toY: toY, marks: [] };
    if (plotHeight < 20 || gap < 10) return layout;
    const faint = styleVar('--faint');
    ctx.lineWidth = 1.4;
    // a thousand lines at 0.8 are one solid block: thinner ink the more runs, so density shows
    const ink = Math.min(1, 14 / Math.sqrt(Math.max(1, spec.points.length)));
    for (const mark of spec.points) {
      const ys = mark.units.map(toY);
      ctx.globalAlpha = (mark.color ? 0.8 : 0.45) * Math.max(0.3, ink);
      ctx.strokeStyle = markColour(mark, faint);
      ctx.beginPath();
      let penDown = false;
      for (let i = 0; i < count; i++) {
        if (!isFiniteNumber(ys[i])) {
          penDown = false;
          continue;
        }
        if (penDown) ctx.lineTo(axisX(i), ys[i]);
        else ctx.moveTo(axisX(i), ys[i]);
        penDown = true;
      }
      ctx.stroke();
      layout.marks.push({ id: mark.id, x: axisX(count - 1), y: ys[count - 1], ys: ys, matched: !!mark.color });
    }
    ctx.globalAlpha = 1;
    ctx.textBaseline = 'middle';
    const labelColour = styleVar('--fg-2');
    const shorten = (text, most) => text.length > most ? text.slice(0, most - 1) + '\u2026' : text;
    for (let i = 0; i < count; i++) {
      const axis = spec.axes[i];
      const px = Math.round(axisX(i)) + 0.5;
      const last = i === count - 1;
      ctx.strokeStyle = colours.axis;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(px, top);
      ctx.lineTo(px, top + plotHeight);
      ctx.stroke();
      ctx.fillStyle = labelColour;
      ctx.textAlign = 'center';
      ctx.fillText(shorten(axis.label, 22), Math.min(surface.width - 40, Math.max(40, px)), 10);
      ctx.fillStyle = colours.text;
      ctx.textAlign = last ? 'left' : 'right';
      let lastY = -Infinity;
      // a halo of the panel's colour: the lines meet a category's label right where it sits
      ctx.lineWidth = 3;
      ctx.lineJoin = 'round';
      ctx.strokeStyle = colours.bg;
      for (const tick of axis.ticks.slice().sort((above, below) => below.u - above.u)) {
        const py = toY(tick.u);
        if (py - lastY < LABEL_GAP - 1) continue;
        ctx.strokeText(shorten(tick.text, 10), px + (last ? 5 : -5), py);
        ctx.fillText(shorten(tick.text, 10), px + (last ? 5 : -5), py);
        lastY = py;
      }
    }
    drawBoxes(ctx, spec.boxes.map(box => [axisX(box.axis) - 7, toY(box.to), 14, toY(box.from) - toY(box.to)]));
    return layout;
  }
  return { create: canvas => new Chart(canvas), configure: configure, refreshTheme: refreshTheme,
    drawHeatmap: drawHeatmap, heatmapCell: heatmapCell,
    drawScatter: drawScatter, drawParallel: drawParallel };
})();

// --- 13.5 state
const AUTO_SELECT = 5;          // runs shown in the charts when a link names none
const PAGE_ALL = 500;           // an experiment with at most this many runs is held whole (sorted,
                                // filtered and folded into jobs in the page); past it, paged
const PAGE = 200;               // rows per window the paged table asks for
const SELECT_CAP = 100;         // "select all" selects at most this many runs (each is charted)
const COMPACT_AT = 60000;       // live points per series before the page thins them out
const S = {
  health: null, experiments: [], exp: null, expToken: 0,
  rows: new Map(),              // run name -> RUN_ROW of the current experiment
  view: [],                     // filtered, sorted rows
  paramKeys: new Set(), metricKeys: new Set(),
  rangeKeys: new Set(),         // metrics whose min/max over the run rows carry (summary_min/_max)
  sort: { col: 'started', dir: -1 }, filter: '',
  colPrefs: null,               // Set of visible column ids, or null for the defaults
  selected: [], selectedSet: new Set(), autoSelect: true, hidden: new Set(),
  smoothing: 0, logy: false, clipOutliers: false, xaxis: 'step', chartFilter: '',
  detail: null, detailToken: 0, editingDesc: false, prefetch: null,
  project: '', jobMode: 'overlay', openJobs: new Set(),
  goals: new Map(),             // metric key -> 'min' | 'max' | null, set in the page (URL: goal=)
  groupBy: '', groupBand: 'minmax',   // 13.20: 'p:<param>' | 'tags' | ''; band 'minmax' | 'std'
  colorBy: '',                  // 13.20 colour by: 'p:<param>' | ''
  pvr: { open: false, mode: 'scatter', x: '', y: '' },  // 13.19 params vs results (URL: pvr=)
  paged: false,                 // more runs than PAGE_ALL: the server sorts, counts and pages (S.win)
  total: 0,                     // runs in the experiment (paged: the server's count)
  win: null                     // paged: { sig, matched, rows: sparse array by position, index, pages }
};
const data = new Map();         // "exp/run" -> metrics held by the page for a selected run
const known = new Map();        // "exp/run" -> latest RUN_ROW (plus metadata) seen anywhere
const flash = new Set();

// --- 13.6 url hash
// #exp=mnist&runs=mnist/a,mnist/b&smooth=0.6&logy=1&x=wall&run=mnist/a  (reload reproduces the view)
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const list = k => p.has(k) ? p.get(k).split(',').filter(Boolean) : null;
  const sm = parseFloat(p.get('smooth'));
  return { exp: p.get('exp'), runs: list('runs'), hide: list('hide') || [], smooth: isFinite(sm) ? Math.max(0, Math.min(0.99, sm)) : 0,
    logy: p.get('logy') === '1', outliers: p.get('outliers') === 'clip',
    x: ['step', 'wall', 'relative'].indexOf(p.get('x')) >= 0 || /^m:./.test(p.get('x') || '') ? p.get('x') : 'step',
    group: /^(p:.|tags$)/.test(p.get('group') || '') ? p.get('group') : '', gband: p.get('gband') === 'std' ? 'std' : 'minmax', cby: /^p:./.test(p.get('cby') || '') ? p.get('cby') : '', pvr: readPvr(p.get('pvr')),
    run: p.get('run'), q: p.get('q') || '', metrics: p.get('metrics') || '',
    project: p.get('project') || '', jobs: p.get('ranks') === 'band' ? 'band' : 'overlay', goals: readGoals(p.get('goal')) };
}
// goal=val/acc:max,train/lr:min,grad_norm:none
function readGoals(text) {
  const out = new Map();
  for (const part of (text || '').split(',')) {
    const i = part.lastIndexOf(':'); if (i <= 0) continue;
    const g = part.slice(i + 1);
    if (g === 'min' || g === 'max' || g === 'none') out.set(part.slice(0, i), g === 'none' ? null : g);
  }
  return out;
}
let hashTimer = 0;
function writeHash(push) {
  clearTimeout(hashTimer);
  const go = () => {
    const parts = [], put = (k, v) => parts.push(k + '=' + enc(v).replace(/%2F/gi, '/').replace(/%2C/gi, ',').replace(/%3A/gi, ':'));
    if (S.exp) put('exp', S.exp);
    if (!S.autoSelect) put('runs', S.selected.join(','));
    const hid = S.selected.filter(k => S.hidden.has(k)); if (hid.length) put('hide', hid.join(','));
    if (S.smoothing) put('smooth', String(S.smoothing));
    if (S.logy) put('logy', '1');
    if (S.clipOutliers) put('outliers', 'clip');
    if (S.xaxis !== 'step') put('x', S.xaxis);
    if (S.filter) put('q', S.filter);
    if (S.chartFilter) put('metrics', S.chartFilter);
    if (S.detail) put('run', S.detail);
    if (S.project) put('project', S.project);
    if (S.jobMode !== 'overlay') put('ranks', S.jobMode);
    if (S.goals.size) put('goal', Array.from(S.goals).map(e => e[0] + ':' + (e[1] || 'none')).join(','));
    if (S.groupBy) put('group', S.groupBy);
    if (S.groupBy && S.groupBand !== 'minmax') put('gband', S.groupBand);
    if (S.colorBy) put('cby', S.colorBy);
    if (S.pvr.open) put('pvr', writePvr());
    const hs = parts.length ? '#' + parts.join('&') : location.pathname + location.search;
    if ((parts.length ? hs : '') === location.hash) return;
    if (push) history.pushState(null, '', hs); else history.replaceState(null, '', hs);
  };
  if (push) go(); else hashTimer = setTimeout(go, 120);
}
async function applyHash() {
  const hs = readHash();
  applyChartSettings(hs);
  if (S.filter !== hs.q) { S.filter = hs.q; $('#filter').value = hs.q; scheduleTable(); }
  if (S.chartFilter !== hs.metrics) { S.chartFilter = hs.metrics; $('#chart-filter').value = hs.metrics; scheduleCharts(); }
  if (hs.exp && hs.exp !== S.exp) await selectExperiment(hs.exp, { runs: hs.runs, hide: hs.hide });
  else if (hs.runs && hs.runs.join(',') !== S.selected.join(',')) setSelection(hs.runs, true);
  if (hs.run !== S.detail) { if (hs.run) openDetail(hs.run); else closeDetail(); }
}
function applyChartSettings(hs) {
  applyJobSettings(hs);
  const goalSig = m => Array.from(m).map(e => e.join(':')).join(',');
  if (goalSig(hs.goals) !== goalSig(S.goals)) { S.goals = hs.goals; applyGoals(); }
  S.smoothing = hs.smooth; S.logy = hs.logy; S.clipOutliers = hs.outliers;
  $('#clip-outliers').checked = S.clipOutliers;
  $('#smoothing').value = String(S.smoothing); $('#smoothing-value').textContent = S.smoothing.toFixed(2);
  $('#logy').checked = S.logy;
  if (S.xaxis !== hs.x) { S.xaxis = hs.x; showXAxis(); resetAllZoom(); }
  Charts.configure({ smoothing: S.smoothing, logy: S.logy, clipOutliers: S.clipOutliers, xFormat: xFormat(), xLabel: xMetric() });
  applyGroupSettings(hs); applyPvrSettings(hs.pvr);
}

// --- 13.7 experiments
let expRefreshTimer = 0, expRefreshAt = 0, expsLoaded = false;
async function loadExperiments() {
  try {
    const j = await api('/api/experiments');
    S.experiments = (j && j.experiments) || [];
  } catch (e) { showError('Could not load experiments', e); }
  expsLoaded = true;
  renderExperiments();
}
function refreshExperimentsSoon() {
  if (expRefreshTimer) return;
  const wait = Math.max(300, 2000 - (Date.now() - expRefreshAt));
  expRefreshTimer = setTimeout(async () => { expRefreshTimer = 0; expRefreshAt = Date.now(); await loadExperiments(); if (!S.exp && S.experiments.length) start(); }, wait);
}
function renderExperiments() {
  const ul = $('#experiments');
  renderProjectFilter();
  const list = S.experiments.filter(inProject).sort((a, b) => (parseTime(b.last_activity) || 0) - (parseTime(a.last_activity) || 0) || natural(a.name, b.name));
  $('#exp-count').textContent = list.length ? String(list.length) : '';
  // (a linked experiment's table may come first: the list is not known to be empty yet)
  if (!list.length) { ul.replaceChildren(h('li', { class: 'side-empty', text: expsLoaded ? 'No experiments yet' : 'Loading\u2026' })); return; }
  ul.replaceChildren.apply(ul, list.map(e => {
    const running = (e.status_counts && e.status_counts.running) || 0;
    const failed = ((e.status_counts && e.status_counts.failed) || 0) + ((e.status_counts && e.status_counts.crashed) || 0);
    return h('li', null, h('button', { type: 'button', class: 'exp-item' + (e.name === S.exp ? ' active' : ''), 'data-exp': e.name, title: e.description || e.name,
      onclick: () => { if (e.name !== S.exp) selectExperiment(e.name, { push: true }); } },
    h('div', { class: 'exp-name' }, h('span', { text: e.display_name || e.name })),
    h('div', { class: 'exp-meta' }, h('span', { text: e.runs + (e.runs === 1 ? ' run' : ' runs') }),
      running ? h('span', { class: 'live', text: running + ' live' }) : null,
      failed ? h('span', { style: 'color:var(--err)', text: failed + ' failed' }) : null,
      h('span', { text: fmtAgo(parseTime(e.last_activity)) }))));
  }));
}
function showWelcome() {
  $('#empty').hidden = false; $('#runs-panel').hidden = true; $('#charts-panel').hidden = true; $('#pvr-panel').hidden = true;
  $('#media-panel').hidden = true; $('#hist-panel').hidden = true;
  $('#crumb-exp').textContent = '';
  if (S.health && S.health.root) $('#empty-root').textContent = S.health.root;
}
async function selectExperiment(name, opts) {
  opts = opts || {};
  const token = ++S.expToken;
  S.exp = name; S.rows = new Map(); S.view = []; S.paramKeys = new Set(); S.metricKeys = new Set(); S.rangeKeys = new Set(); colsCache = null;
  S.paged = false; S.win = null; S.total = 0; clearTimeout(winRefreshTimer); winRefreshTimer = 0; requerySig = null; filterProblem = '';
  S.colPrefs = loadColPrefs(name); S.colWidths = loadColWidths(name);
  $('#empty').hidden = true; $('#runs-panel').hidden = false; $('#charts-panel').hidden = false; $('#pvr-panel').hidden = false;
  $('#crumb-exp').textContent = name; $('#crumb-sep').hidden = false; $('#exp-title').textContent = name;
  document.title = name + ' \u00b7 expman';
  const meta = S.experiments.find(e => e.name === name);
  $('#exp-desc').textContent = (meta && meta.description) || '';
  renderExperiments();
  loadViews(name);
  // nothing of the previous experiment stays on screen, whether or not this one loads (the
  // stream is left alone: reopening it here would race the runs' first metric fetches)
  clearSelection();
  $('#runs-empty').hidden = false; $('#runs-empty').textContent = 'Loading runs\u2026';
  renderTable();
  let j;
  const pre = S.prefetch; S.prefetch = null;
  try {
    j = await (pre && pre.exp === name ? pre.promise : api(firstRunsUrl(name)));
    // more than a page but few enough to hold whole: the rest in one more (cached) answer
    if (j.columns && j.total > j.count && j.total <= PAGE_ALL && token === S.expToken) j = await api(runsUrl(name));
  }
  catch (e) {
    if (token !== S.expToken) return;
    const why = e.status === 404 ? 'No experiment named \u201c' + name + '\u201d was found here.'
      : e.offline ? 'Could not load the runs of \u201c' + name + '\u201d: the server does not answer.'
      : 'Could not load the runs of \u201c' + name + '\u201d: ' + e.message;
    $('#runs-empty').textContent = why;
    $('#exp-desc').textContent = e.status === 404 ? 'not found' : 'not loaded';
    showError(why); scheduleStream(); return;
  }
  if (token !== S.expToken) return;
  takeFirstRuns(j);
  if (j.partial && S.paged) completeFirstRuns(name, token, S.win);
  if (opts.runs && S.paged) {
    // runs a link names that are not on the first page: their rows, by name
    const want = opts.runs.filter(k => splitKey(k)[0] === name && !S.rows.has(splitKey(k)[1])).map(k => splitKey(k)[1]);
    if (want.length) {
      try { for (const r of decodeRuns(await api(expPath(name) + '/runs?format=columns&names=' + enc(want.join(','))))) addRow(r); }
      catch (e) { showError('Could not load the linked runs', e); }
      if (token !== S.expToken) return;
    }
  }
  if (opts.runs) {
    // runs a link names that this experiment does not have: say so, do not keep a legend entry
    const missing = opts.runs.filter(k => splitKey(k)[0] === name && !S.rows.has(splitKey(k)[1]));
    if (missing.length) showBanner('Run not found: ' + missing.map(k => splitKey(k)[1]).join(', '));
    S.hidden = new Set(opts.hide || []);
    setSelection(opts.runs.filter(k => missing.indexOf(k) < 0), true);
  }
  else {
    S.hidden = new Set();
    const newest = Array.from(S.rows.values()).sort((a, b) => (parseTime(b.started_at) || 0) - (parseTime(a.started_at) || 0));
    setSelection(newest.slice(0, AUTO_SELECT).map(r => name + '/' + r.name), false);
  }
  renderTable();
  writeHash(opts.push);
}

// --- 13.8 runs table
function addRow(r) {
  r._recv = Date.now();
  // run.yaml is rewritten at heartbeats, the stream is faster: keep what the stream told us
  const old = S.rows.get(r.name);
  if (old && r.status === 'running' && !isNull(old.last_step) && (isNull(r.last_step) || old.last_step > r.last_step)) {
    r.last_step = old.last_step; r.rows = Math.max(r.rows || 0, old.rows || 0);
    r.summary = Object.assign({}, r.summary, old.summary);
  }
  S.rows.set(r.name, r);
  known.set(r.experiment + '/' + r.name, Object.assign({}, known.get(r.experiment + '/' + r.name) || {}, r));
  let fresh = false;
  for (const k of Object.keys(r.params || {})) if (!S.paramKeys.has(k)) { S.paramKeys.add(k); fresh = true; }
  for (const k of Object.keys(r.summary || {})) if (!S.metricKeys.has(k)) { S.metricKeys.add(k); fresh = true; }
  for (const f of ['summary_min', 'summary_max']) {
    const o = r[f] && typeof r[f] === 'object' ? r[f] : {};
    for (const k of Object.keys(o)) if (!S.rangeKeys.has(k)) { S.rangeKeys.add(k); fresh = true; }
  }
  if (fresh) colsCache = null;
}
// The runs route answers a query: sorted on the server, a window [offset, offset+limit), and
// columns (each field named once). The first answer is one page; an experiment of up to PAGE_ALL
// runs is then held whole (a second answer if it has more than a page) and the page sorts,
// filters and folds it itself; a bigger one is paged: S.win holds
// the windows fetched for the current sort (holes elsewhere), renderBody asks for the pages it
// is about to show, and a sort asks the server for the rows on screen in the new order.
function runsUrl(exp, extra) {
  const q = ['format=columns', 'sort=' + enc(S.sort.col), 'order=' + (S.sort.dir > 0 ? 'asc' : 'desc')];
  if (S.paged && S.filter) q.push('where=' + enc(S.filter));   // the server's filter language (9.6)
  for (const k of Object.keys(extra || {})) q.push(k + '=' + enc(String(extra[k])));
  return expPath(exp) + '/runs?' + q.join('&');
}
function firstRunsUrl(exp) { return runsUrl(exp, { limit: PAGE }); }
function decodeRuns(j) {
  if (!j || !j.columns) return (j && j.runs) || [];
  const rows = [];
  for (let i = 0; i < j.count; i++) rows.push({});
  const put = (col, set) => {
    if (Array.isArray(col)) { for (let i = 0; i < col.length; i++) set(i, col[i]); }
    else if (col && col.sparse) { for (let x = 0; x < col.sparse.length; x++) set(col.sparse[x], col.values[x]); }
  };
  for (const f of Object.keys(j.columns)) {
    const col = j.columns[f];
    if (col && !Array.isArray(col) && col.fields) {
      for (const r of rows) r[f] = {};
      for (const k of Object.keys(col.fields)) put(col.fields[k], (i, v) => { rows[i][f][k] = v; });
    } else put(col, (i, v) => { rows[i][f] = v; });
  }
  return rows;
}
function takeKeys(j) {
  let fresh = false;
  for (const k of j.param_keys || []) if (!S.paramKeys.has(k)) { S.paramKeys.add(k); fresh = true; }
  for (const k of j.metric_keys || []) if (!S.metricKeys.has(k)) { S.metricKeys.add(k); fresh = true; }
  if (fresh) colsCache = null;
}
// The first answer of an experiment: all of it (held whole), or its first page (paged).
function takeFirstRuns(j) {
  const rows = decodeRuns(j);
  S.paged = !!j.columns && j.total > rows.length;
  S.total = S.paged ? j.total : rows.length;
  takeKeys(j);
  for (const r of rows) addRow(r);
  if (S.paged) {
    S.win = newWindow(j.matched); fillWindow(S.win, j.offset || 0, rows, 0); S.win.extremes = j.extremes || null;
    if (S.filter) S.win.sig = '';   // asked before it was known to be paged: unfiltered, so ask again
  }
}
// A first page the server answered before it had made its list of every run (j.partial: the
// keys of that page's runs, no extremes; see first_window in 11.3): the counts, keys and
// extremes of every run, asked once more with no rows (that answer waits for the list), unless
// a sort, a filter or another experiment has replaced the window meanwhile.
async function completeFirstRuns(exp, token, w) {
  let j;
  try { j = await api(runsUrl(exp, { limit: 0 })); }
  catch (e) { return; }   // the next page, sort or filter asks the server again
  if (token !== S.expToken || S.win !== w || w.sig !== querySig()) return;
  takeKeys(j);
  if (j.matched !== w.matched) { w.matched = j.matched; w.rows.length = j.matched; }
  S.total = j.total; w.extremes = j.extremes || null;
  scheduleTable();
}
function querySig() { return S.sort.col + '|' + S.sort.dir + '|' + (S.filter || ''); }
function newWindow(matched) { return { sig: querySig(), matched: matched, rows: new Array(matched), index: new Map(), pages: new Set() }; }
// Rows of a window answer into w; a row the stream changed after the request went out is newer.
function fillWindow(w, offset, rows, sentAt) {
  rows.forEach((r, i) => {
    const cur = S.rows.get(r.name);
    const row = cur && cur._sse && cur._recv > sentAt ? cur : (addRow(r), S.rows.get(r.name));
    const old = w.rows[offset + i];
    if (old && w.index.get(old.name) === offset + i) w.index.delete(old.name);
    w.rows[offset + i] = row; w.index.set(r.name, offset + i);
  });
  const end = offset + rows.length;   // a page counts as held when all its rows are (or it is the last)
  for (let p = Math.ceil(offset / PAGE); p * PAGE < end; p++) if ((p + 1) * PAGE <= end || end >= w.matched) w.pages.add(p);
}
async function fetchPage(w, page) {
  const sentAt = Date.now(), exp = S.exp;
  const j = await api(runsUrl(exp, { offset: page * PAGE, limit: PAGE }));
  return { j: j, rows: decodeRuns(j), sentAt: sentAt, exp: exp };
}
// The pages of rows [start, end) that w has not got yet, fetched (renderBody calls this).
const pageLoads = new Map();
function needRows(start, end) {
  const w = S.win; if (!w) return;
  for (let p = Math.floor(start / PAGE); p * PAGE < end; p++) {
    const id = w.sig + '#' + p;
    if (w.pages.has(p) || pageLoads.has(id)) continue;
    pageLoads.set(id, fetchPage(w, p).then(res => {
      pageLoads.delete(id);
      if (S.win !== w || res.exp !== S.exp) return;
      takeKeys(res.j);
      if (res.j.matched !== w.matched) { w.matched = res.j.matched; w.rows.length = res.j.matched; }
      S.total = res.j.total; if (res.j.extremes) w.extremes = res.j.extremes;
      fillWindow(w, p * PAGE, res.rows, res.sentAt);
      scheduleTable();
    }, e => { showError('Could not load runs', e); setTimeout(() => pageLoads.delete(id), 3000); }));   // no retry storm while the server is away
  }
}
function visibleRange() {
  const sc = $('#runs-scroll'), top = Math.max(0, sc.scrollTop - 32), vh = sc.clientHeight || 400;
  return [Math.max(0, Math.floor(top / ROW_H) - 8), Math.ceil((top + vh) / ROW_H) + 8];
}
// A new sort (or fresh counts after new runs): the rows on screen in one go, then swap windows,
// so the table never shows an empty page between two orders.
let requeryToken = 0, requerySig = null;
async function requery() {
  if (S.groupBy) { refreshGroups(); return; }   // grouped: the groups are asked again (13.20)
  const token = ++requeryToken, exp = S.exp, range = visibleRange(), w = newWindow(S.win ? S.win.matched : 0);
  requerySig = w.sig;
  const pages = [];
  for (let p = Math.floor(range[0] / PAGE); p * PAGE < Math.max(range[1], 1); p++) pages.push(p);
  let got;
  try { got = await Promise.all(pages.map(p => fetchPage(w, p))); }
  catch (e) {
    if (token !== requeryToken) return;   // requerySig stays: the same query is not asked again
    if (e.status === 400 && S.filter) { filterProblem = e.message; renderTable(); }   // a malformed where=
    else showError('Could not load runs', e);
    return;
  }
  if (token !== requeryToken || exp !== S.exp || !S.paged) return;
  requerySig = null; filterProblem = '';
  const last = got[got.length - 1].j;
  w.matched = last.matched; w.rows.length = last.matched; S.total = last.total; w.extremes = last.extremes || null;
  got.forEach((res, i) => { takeKeys(res.j); fillWindow(w, pages[i] * PAGE, res.rows, res.sentAt); });
  S.win = w;
  renderTable();
}
// "Select all" of a paged table: the first SELECT_CAP matching runs in table order, said so.
async function selectAllPaged(on) {
  const exp = S.exp;
  if (!on) {
    let drop = S.selected.filter(k => splitKey(k)[0] === exp);
    if (S.filter && drop.length) {   // only the selected runs the filter matches
      try { drop = decodeRuns(await api(runsUrl(exp, { names: drop.map(k => splitKey(k)[1]).join(',') }))).map(r => exp + '/' + r.name); }
      catch (e) { showError('Could not unselect the runs', e); return; }
    }
    const gone = new Set(drop);
    setSelection(S.selected.filter(k => !gone.has(k)), true);
    return;
  }
  let j;
  try { j = await api(runsUrl(exp, { limit: SELECT_CAP })); } catch (e) { showError('Could not select the runs', e); return; }
  if (exp !== S.exp) return;
  const rows = decodeRuns(j);
  for (const r of rows) if (!S.rows.has(r.name)) addRow(r);
  const add = rows.map(r => exp + '/' + r.name).filter(k => !S.selectedSet.has(k)).slice(0, Math.max(0, SELECT_CAP - S.selected.length));
  const now = S.selected.length + add.length;
  if (j.matched > now) showBanner('Selected ' + now + ' of ' + j.matched + ' matching runs: at most ' + SELECT_CAP + ' are charted at once; select others one by one.', true);
  setSelection(S.selected.concat(add), true);
}
// New runs in a paged table: the rows on screen and the counts again, at most once a second.
let winRefreshTimer = 0;
function refreshWindowSoon() {
  if (winRefreshTimer) return;
  winRefreshTimer = setTimeout(() => { winRefreshTimer = 0; if (S.paged) requery(); }, 800);
}
const STATUS_ORDER = { running: 0, failed: 1, crashed: 2, interrupted: 3, finished: 4 };
function statusEl(st) {
  st = st || 'unknown';
  return h('span', { class: 'status ' + st, 'data-status': st }, h('span', { class: 'dot' }), h('span', { text: st }));
}
function liveDuration(r) {
  if (r.duration_secs === null || r.duration_secs === undefined) return null;
  return r.status === 'running' ? r.duration_secs + (Date.now() - (r._recv || Date.now())) / 1000 : r.duration_secs;
}
let colsCache = null;
function allColumns() {
  if (colsCache) return colsCache;
  const base = [
    { id: 'status', label: 'Status', w: 108, get: r => STATUS_ORDER[r.status] === undefined ? 9 : STATUS_ORDER[r.status], cell: r => statusEl(r.status) },
    { id: 'started', label: 'Started', w: 124, get: r => parseTime(r.started_at), cell: r => fmtWhen(parseTime(r.started_at)), title: r => fmtFull(parseTime(r.started_at)) },
    { id: 'duration', label: 'Duration', w: 88, num: true, get: liveDuration, cell: r => fmtDur(liveDuration(r)), live: true },
    { id: 'steps', label: 'Steps', w: 76, num: true, get: r => isNull(r.last_step) ? null : r.last_step,
      cell: r => isNull(r.last_step) ? null : Number(r.last_step).toLocaleString('en-US') },
    { id: 'tags', label: 'Tags', w: 150, get: r => (r.tags || []).join(' ') || null, title: r => (r.tags || []).join(', '),
      cell: r => (r.tags || []).slice(0, 3).map(t => h('span', { class: 'tag', text: t, title: t })) },
    { id: 'description', label: 'Description', w: 200, opt: true, get: r => r.description || null, cell: r => r.description || null, title: r => r.description || '' },
    { id: 'hostname', label: 'Host', w: 120, opt: true, get: r => r.hostname || null, cell: r => r.hostname || null },
    { id: 'git', label: 'Git commit', w: 96, opt: true, get: r => r.git_commit || null, cell: r => r.git_commit ? String(r.git_commit).slice(0, 8) : null, mono: true }
  ];
  // a param and a metric of one name (lr) get headers that say which is which
  const clash = k => S.paramKeys.has(k) && S.metricKeys.has(k);
  const params = Array.from(S.paramKeys).sort(natural).map((k, i) => ({
    id: 'p:' + k, label: k, kind: 'param', tag: clash(k) ? 'param' : null, first: i === 0, w: Math.max(84, Math.min(180, 7 * k.length + 34)),
    get: r => { const v = r.params ? r.params[k] : undefined; return isNull(v) ? null : v; },
    cell: r => { const v = r.params ? r.params[k] : undefined; return isNull(v) ? null : fmtValue(v); }, numish: true
  }));
  // per metric: its last value (shown by default), and its min and max over the run (chosen in
  // the column chooser; best-run finding). Ids m:KEY, min:KEY, max:KEY are the server's sort keys.
  const stat = (k, which) => {
    const field = which === 'last' ? 'summary' : 'summary_' + which;
    return r => { const o = r[field]; return o && typeof o === 'object' ? o[k] : undefined; };
  };
  const metrics = [];
  Array.from(new Set(Array.from(S.metricKeys).concat(Array.from(S.rangeKeys)))).sort(natural).forEach(k => {
    for (const which of ['last', 'min', 'max']) {
      if (which === 'last' ? !S.metricKeys.has(k) : !S.rangeKeys.has(k)) continue;
      const raw = stat(k, which), label = which === 'last' ? k : k + ' (' + which + ')';
      metrics.push({
        id: (which === 'last' ? 'm' : which) + ':' + k, label: label, key: k, stat: which, opt: which !== 'last',
        kind: 'metric', tag: which === 'last' && clash(k) ? 'metric' : null, goal: goalOf(k), first: !metrics.length, num: true,
        w: Math.max(84, Math.min(190, 7 * label.length + 30)),
        get: r => { const v = num(raw(r)); return Number.isNaN(v) ? null : v; },
        cell: r => { const v = raw(r); return v === null || v === undefined ? null : fmtNum(v); }
      });
    }
  });
  colsCache = { base: base, params: params, metrics: metrics, all: base.concat(params, metrics) };
  return colsCache;
}
// Default columns: the run basics, the params that differ between runs, and the first metrics.
function defaultColumns() {
  const c = allColumns(), rows = Array.from(S.rows.values()), out = new Set(['status', 'started', 'duration', 'steps']);
  if (rows.some(r => r.tags && r.tags.length)) out.add('tags');
  const varying = c.params.filter(p => { const seen = new Set(); for (const r of rows) { seen.add(JSON.stringify(p.get(r))); if (seen.size > 1) return true; } return false; });
  (varying.length ? varying : c.params).slice(0, 8).forEach(p => out.add(p.id));
  c.metrics.filter(m => m.stat === 'last').slice(0, 8).forEach(m => out.add(m.id));
  return out;
}
function visibleColumns() {
  const c = allColumns(), on = S.colPrefs || defaultColumns();
  const cols = c.all.filter(x => on.has(x.id));
  let fp = true, fm = true;
  return cols.map(x => { const y = Object.assign({}, x); if (x.kind === 'param') { y.first = fp; fp = false; } if (x.kind === 'metric') { y.first = fm; fm = false; } return y; });
}
function loadColPrefs(exp) { try { const v = JSON.parse(store('expman.cols.' + exp) || 'null'); return Array.isArray(v) ? new Set(v) : null; } catch (e) { return null; } }
function saveColPrefs() { store('expman.cols.' + S.exp, S.colPrefs ? JSON.stringify(Array.from(S.colPrefs)) : null); }

// The runs filter: section 9.6's _parse_filter (its `where` dialect) ported line for line, so
// the page, `expman list --where`, load_runs(where=) and ?where= keep the same runs. No eval:
// a recursive-descent parser over tokens builds closures over RUN_ROWs.
//   NOT ! (tightest), AND && (or nothing: terms side by side), OR ||, parentheses, any case.
//   key=v key==v exact (numbers as numbers, text case-sensitive, =null: missing), key!=v,
//   key~text substring any case, key~/re/ key~/re/i regex, key!~v, key>n >= < <= numbers only.
//   Keys: name status tag project group host description rank step rows duration, then
//   p:KEY param, m:KEY metric:KEY last:KEY last value, min:KEY max:KEY; a bare KEY is the
//   param, else the metric. A bare word matches anywhere, any case; tag:NAME is a tag exactly.
// A malformed expression gives {error, pos}: pos counts from 1 (Python's position + 1) and the
// table stays unfiltered.
const FILTER_OPS = ['==', '>=', '<=', '!=', '!~', '>', '<', '=', '~'];
const FILTER_WORD = /(?:[^\s()"<>=!~&|]|&(?!&)|\|(?!\|))+/y;
const FILTER_VALUE = /(?:[^\s()"&|]|&(?!&)|\|(?!\|))+/y;
const FILTER_QUOTED = /"((?:[^"\\]|\\[^\n])*)"/y;
const FILTER_REGEX = /\/((?:[^/\\]|\\[^\n])*)\/(i?)/y;
const FILTER_KEYWORDS = { 'AND': 'AND', 'OR': 'OR', 'NOT': 'NOT', '&&': 'AND', '||': 'OR', '!': 'NOT' };
const FILTER_FIELDS = {
  name: r => [r.name],
  status: r => [r.status],
  tag: r => r.tags || [],
  tags: r => r.tags || [],
  project: r => [r.project],
  group: r => [r.group],
  host: r => [r.hostname],
  hostname: r => [r.hostname],
  description: r => [r.description],
  rank: r => [r.rank],
  step: r => [r.last_step],
  rows: r => [r.rows],
  duration: r => [r.duration_secs]
};
const FILTER_PREFIXES = { p: 'params', param: 'params', m: 'summary', metric: 'summary', last: 'summary', min: 'summary_min', max: 'summary_max' };
const PY_FLOAT = /^\s*[+-]?(?:(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?|inf|infinity|nan)\s*$/i;

function FilterError(message, pos) {
  this.message = message;
  this.pos = pos;
}
function stickyMatch(pattern, text, pos) {
  pattern.lastIndex = pos;
  return pattern.exec(text);
}
function unescapeQuoted(body) {
  return body.replace(/\\(.)/g, '$1');
}
function pyRepr(text) {
  return "'" + text + "'";
}
// float(text) as Python reads it, or null
function pyFloat(text) {
  if (!PY_FLOAT.test(text)) return null;
  const plain = text.trim().replace(/_/g, '').toLowerCase();
  const sign = plain.charAt(0) === '-' ? -1 : 1;
  const bare = plain.replace(/^[+-]/, '');
  if (bare === 'nan') return NaN;
  if (bare === 'inf' || bare === 'infinity') return sign * Infinity;
  return Number(plain);
}
// str(number) as Python writes a float (1e-05, 0.01), an integral value as an int
function pyNumberText(n) {
  if (Number.isNaN(n)) return 'nan';
  if (n === Infinity) return 'inf';
  if (n === -Infinity) return '-inf';
  if (Number.isInteger(n)) return String(n);
  const parts = n.toExponential().split('e');
  const exponent = Number(parts[1]);
  if (exponent >= -4 && exponent < 16) return String(n);
  const digits = String(Math.abs(exponent)).padStart(2, '0');
  return parts[0] + 'e' + (exponent < 0 ? '-' : '+') + digits;
}
// json.dumps(value, sort_keys=True) as Python writes it
function pyJson(value) {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') return Number.isFinite(value) ? pyNumberText(value) : Number.isNaN(value) ? 'NaN' : value > 0 ? 'Infinity' : '-Infinity';
  if (typeof value === 'string') return JSON.stringify(value).replace(/[\u0080-\uffff]/g, c => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  if (Array.isArray(value)) return '[' + value.map(pyJson).join(', ') + ']';
  const keys = Object.keys(value).sort();
  return '{' + keys.map(k => pyJson(k) + ': ' + pyJson(value[k])).join(', ') + '}';
}
// a value as the filter's text comparisons see it (_filter_text)
function filterText(value) {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return pyNumberText(value);
  return pyJson(value);
}
// a param or metric value as a number for comparisons, or null (bools and text are not numbers)
function filterNumber(value) {
  return typeof value === 'number' ? value : null;
}

function lexFilter(text) {
  const tokens = [];
  let pos = 0;
  while (true) {
    while (pos < text.length && /\s/.test(text.charAt(pos))) pos += 1;
    if (pos >= text.length) break;
    const at = pos;
    const char = text.charAt(pos);
    if (char === '(' || char === ')') {
      tokens.push({ kind: char, value: null, at: at });
      pos += 1;
      continue;
    }
    const pair = text.slice(pos, pos + 2);
    if (pair === '&&' || pair === '||') {
      tokens.push({ kind: FILTER_KEYWORDS[pair], value: null, at: at });
      pos += 2;
      continue;
    }
    const after = text.slice(pos + 1, pos + 2);
    if (char === '!' && after !== '=' && after !== '~') {
      tokens.push({ kind: 'NOT', value: null, at: at });
      pos += 1;
      continue;
    }
    const word = lexWord(text, pos);
    pos = word.end;
    if (word.kind === 'word' && Object.prototype.hasOwnProperty.call(FILTER_KEYWORDS, word.text.toUpperCase())) {
      tokens.push({ kind: FILTER_KEYWORDS[word.text.toUpperCase()], value: null, at: at });
      continue;
    }
    const op = FILTER_OPS.find(o => text.startsWith(o, pos));
    if (op === undefined) {
      tokens.push({ kind: word.kind, value: word.text, at: at });
      continue;
    }
    pos += op.length;
    const value = lexValue(text, pos, op);
    tokens.push({ kind: 'term', value: { key: word.text, op: op, value: value.text, regex: value.regex, at: value.at }, at: at });
    pos = value.end;
  }
  tokens.push({ kind: 'end', value: null, at: text.length });
  return tokens;
}
function lexWord(text, pos) {
  if (text.charAt(pos) === '"') {
    const quoted = stickyMatch(FILTER_QUOTED, text, pos);
    if (!quoted) throw new FilterError('unterminated quote', pos);
    return { kind: 'quoted', text: unescapeQuoted(quoted[1]), end: pos + quoted[0].length };
  }
  const match = stickyMatch(FILTER_WORD, text, pos);
  if (!match) throw new FilterError('unexpected ' + pyRepr(text.charAt(pos)), pos);
  return { kind: 'word', text: match[0], end: pos + match[0].length };
}
function lexValue(text, pos, op) {
  const char = text.charAt(pos);
  if (char === '"') {
    const quoted = stickyMatch(FILTER_QUOTED, text, pos);
    if (!quoted) throw new FilterError('unterminated quote', pos);
    return { text: unescapeQuoted(quoted[1]), regex: null, at: pos, end: pos + quoted[0].length };
  }
  if (char === '/' && (op === '~' || op === '!~')) {
    const slashed = stickyMatch(FILTER_REGEX, text, pos);
    if (!slashed) throw new FilterError('unterminated /regex/', pos);
    let regex = null;
    try {
      regex = new RegExp(slashed[1], slashed[2] ? 'i' : '');
    } catch (e) {
      throw new FilterError('bad regex (' + e.message + ')', pos + 1);
    }
    return { text: slashed[1], regex: regex, at: pos, end: pos + slashed[0].length };
  }
  const match = stickyMatch(FILTER_VALUE, text, pos);
  if (!match || '<>=!~'.indexOf(match[0].charAt(0)) >= 0) {
    const key = text.slice(0, pos).replace(/^[\s\S]*[\s()]/, '');
    throw new FilterError('a value is missing after \u201c' + key + '\u201d', pos);
  }
  return { text: match[0], regex: null, at: pos, end: pos + match[0].length };
}

// {test: predicate on a RUN_ROW or null for none, error, pos (from 1)}
function parseFilter(text) {
  try {
    return { test: parseFilterTokens(text, lexFilter(text)), error: null, pos: 0 };
  } catch (e) {
    if (!(e instanceof FilterError)) throw e;
    return { test: null, error: e.message, pos: e.pos + 1 };
  }
}
function parseFilterTokens(text, tokens) {
  const starts = new Set(['(', 'NOT', 'word', 'quoted', 'term']);
  let index = 0;
  const peek = () => tokens[index].kind;
  const fail = expected => {
    const token = tokens[index];
    const found = token.kind === 'end' ? 'the end' : pyRepr(text.slice(token.at, token.at + 20).trim().split(/\s+/)[0]);
    throw new FilterError('expected ' + expected + ', found ' + found, token.at);
  };
  const parseOr = depth => {
    let node = parseAnd(depth);
    while (peek() === 'OR') {
      index += 1;
      const left = node;
      const right = parseAnd(depth);
      node = r => left(r) || right(r);
    }
    return node;
  };
  const parseAnd = depth => {
    let node = parseNot(depth);
    while (peek() === 'AND' || starts.has(peek())) {
      if (peek() === 'AND') index += 1;
      const left = node;
      const right = parseNot(depth);
      node = r => left(r) && right(r);
    }
    return node;
  };
  const parseNot = depth => {
    if (depth > 100) fail('a shallower expression (more than 100 levels of nesting)');
    const token = tokens[index];
    if (token.kind === 'NOT') {
      index += 1;
      const inner = parseNot(depth + 1);
      return r => !inner(r);
    }
    if (token.kind === '(') {
      index += 1;
      const node = parseOr(depth + 1);
      if (peek() !== ')') fail("')'");
      index += 1;
      return node;
    }
    if (token.kind === 'word' || token.kind === 'quoted' || token.kind === 'term') {
      index += 1;
      return token.kind === 'term' ? filterTerm(token.value) : filterWord(token.value, token.kind);
    }
    return fail("a term, NOT or '('");
  };
  if (peek() === 'end') return null;
  const tree = parseOr(0);
  if (peek() !== 'end') fail('a term, AND, OR or the end');
  return tree;
}

const haystacks = new WeakMap();
function haystack(r) {
  let text = haystacks.get(r);
  if (text === undefined) {
    const parts = [r.name, r.status, r.description, r.hostname, r.project, r.group].concat(r.tags || []);
    for (const k of Object.keys(r.params || {})) parts.push(k + '=' + filterText(r.params[k]));
    text = parts.filter(p => p !== null && p !== undefined && p !== '').map(String).join('\n').toLowerCase();
    haystacks.set(r, text);
  }
  return text;
}
function filterWord(word, kind) {
  if (kind === 'word' && word.toLowerCase().startsWith('tag:') && word.length > 4) {
    const tag = word.slice(4);
    return r => (r.tags || []).indexOf(tag) >= 0;
  }
  const needle = word.toLowerCase();
  return r => haystack(r).indexOf(needle) >= 0;
}
function has(mapping, key) {
  return !!mapping && Object.prototype.hasOwnProperty.call(mapping, key);
}
// RUN_ROW -> [values] for a term's key
function filterGetter(key) {
  const lower = key.toLowerCase();
  const plain = get => r => get(r).map(v => (v === undefined ? null : v));
  if (has(FILTER_FIELDS, lower)) return plain(FILTER_FIELDS[lower]);
  const colon = key.indexOf(':');
  const prefix = colon >= 0 ? key.slice(0, colon).toLowerCase() : '';
  const rest = colon >= 0 ? key.slice(colon + 1) : '';
  if (colon >= 0 && rest && has(FILTER_PREFIXES, prefix)) {
    const field = FILTER_PREFIXES[prefix];
    return r => (has(r[field], rest) ? [r[field][rest]] : []);
  }
  return r => {
    if (has(r.params, key)) return [r.params[key]];
    if (has(r.summary, key)) return [r.summary[key]];
    return [];
  };
}
function filterTerm(term) {
  const get = filterGetter(term.key);
  const value = term.value;
  const number = pyFloat(value);
  if (term.op === '<' || term.op === '<=' || term.op === '>' || term.op === '>=') {
    if (number === null || !Number.isFinite(number)) throw new FilterError('\u201c' + value + '\u201d is not a number (' + term.op + ' compares numbers)', term.at);
    const op = term.op;
    const holds = n => (op === '<' ? n < number : op === '<=' ? n <= number : op === '>' ? n > number : n >= number);
    return r => get(r).some(v => filterNumber(v) !== null && holds(filterNumber(v)));
  }
  if (term.op === '~' || term.op === '!~') {
    const needle = value.toLowerCase();
    const regex = term.regex;
    const hit = v => {
      if (v === null) return false;
      return regex === null ? filterText(v).toLowerCase().indexOf(needle) >= 0 : regex.test(filterText(v));
    };
    if (term.op === '~') return r => get(r).some(hit);
    return r => !get(r).some(hit);
  }
  const nullWanted = value.toLowerCase() === 'null' || value.toLowerCase() === 'none';
  const equal = r => {
    const values = get(r);
    if (nullWanted && (values.length === 0 || values.indexOf(null) >= 0)) return true;
    for (const v of values) {
      const n = filterNumber(v);
      if (n !== null && number !== null) {
        if (n === number || (Number.isNaN(n) && Number.isNaN(number))) return true;
      } else if (typeof v === 'boolean') {
        if (filterText(v) === value.toLowerCase()) return true;
      } else if (v !== null && filterText(v) === value) {
        return true;
      }
    }
    return false;
  };
  return term.op === '=' || term.op === '==' ? equal : r => !equal(r);
}
function showFilterError(parsed) {
  const box = $('#filter-error');
  box.hidden = !parsed.error;
  box.textContent = parsed.error ? 'Filter, column ' + parsed.pos + ': ' + parsed.error : '';
  $('#filter').classList.toggle('bad', !!parsed.error);
}
let filterProblem = '';   // paged: the server's word on a malformed filter
function computeView() {
  if (S.paged) {
    // the filter box's text goes to the server as where= (its parser, section 9.6, says what is wrong)
    showFilterError({ error: null });
    if (filterProblem) { $('#filter-error').hidden = false; $('#filter-error').textContent = 'Filter: ' + filterProblem; $('#filter').classList.add('bad'); }
    if (S.groupBy) { pagedGroupView(); return; }   // 13.20: the server's groups of every matching run
    if (S.win.sig !== querySig() && requerySig !== querySig()) requery();
    // the server sorted and counted; job folding needs every row (held whole)
    const w = S.win;
    S.view = w.rows; S.matched = w.matched; S.matchedRows = w.rows.filter(Boolean); jobMembers = new Set();
    S.best = new Map();   // over every matching run: the server's lowest and highest of each column
    for (const c of allColumns().metrics) { const e = w.extremes && w.extremes[c.id]; if (c.goal && e) S.best.set(c.id, c.goal === 'min' ? e[0] : e[1]); }
    return;
  }
  const parsed = parseFilter(S.filter);
  showFilterError(parsed);
  let rows = Array.from(S.rows.values());
  if (parsed.test) rows = rows.filter(parsed.test);
  const col = S.sort.col === 'name' ? { get: r => r.name } : allColumns().all.find(c => c.id === S.sort.col) || allColumns().base[1];
  const dir = S.sort.dir;
  const keyed = rows.map(r => [col.get(r), r]);
  keyed.sort((p, q) => {
    const a = p[0], b = q[0], na = isNull(a), nb = isNull(b);
    if (na || nb) return na === nb ? 0 : na ? 1 : -1;
    return dir * cmpValues(a, b) || natural(p[1].name, q[1].name);
  });
  S.matched = keyed.length; S.matchedRows = keyed.map(x => x[1]);
  S.best = new Map();
  for (const c of allColumns().metrics) {
    if (!c.goal) continue;
    let best = null;
    for (const r of S.matchedRows) { const v = c.get(r); if (v !== null && isFinite(v) && (best === null || (c.goal === 'min' ? v < best : v > best))) best = v; }
    if (best !== null) S.best.set(c.id, best);
  }
  S.view = S.groupBy ? groupedView(S.matchedRows) : jobView(keyed.map(x => x[1]));
}
const ROW_H = 30;
let tableFrame = 0;
function scheduleTable() { if (!tableFrame) tableFrame = requestAnimationFrame(() => { tableFrame = 0; renderTable(); }); }
let headCols = null;
function renderTable() {
  computeView();
  const cols = visibleColumns();
  headCols = cols;
  renderHead(cols);
  renderBody();
  const total = S.paged ? S.total : S.rows.size, shown = S.matched, sel = S.selected.length;
  const groups = S.groupBy && S.groupRows ? ' in ' + S.groupRows.length + (S.groupRows.length === 1 ? ' group' : ' groups') : '';   // 13.20
  $('#runs-count').textContent = (shown === total ? total + (total === 1 ? ' run' : ' runs') : shown + ' of ' + total + ' runs') + groups + (sel ? ' \u00b7 ' + sel + ' selected' : '');
  const empty = $('#runs-empty');
  if (total && !shown) { empty.hidden = false; empty.textContent = 'No runs match \u201c' + S.filter + '\u201d.'; }
  else if (!S.rows.size && S.exp && empty.textContent.indexOf('Loading') < 0) {
    empty.hidden = false;
    empty.textContent = 'No runs in this experiment yet. New runs appear here as soon as they start.';
  }
  else if (total) empty.hidden = true;
  renderLegend();
}
// Column widths: wide enough for the widest cell shown (numbers are never cut off), or what
// the user dragged a header's edge to (kept per experiment).
let measureCtx = null, measureFamily = '';
function textWidth(text, bold) {
  if (!measureCtx) { measureCtx = document.createElement('canvas').getContext('2d'); measureFamily = getComputedStyle(document.body).fontFamily; }
  const font = (bold ? '600 12px ' : '13px ') + measureFamily;
  if (measureCtx.font !== font) measureCtx.font = font;
  return measureCtx.measureText(text).width;
}
function cellText(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return v.map(x => x && x.textContent !== undefined ? x.textContent : String(x)).join('   ');
  return v.textContent !== undefined ? v.textContent : String(v);
}
function loadColWidths(exp) { try { return JSON.parse(store('expman.colw.' + exp) || '{}') || {}; } catch (e) { return {}; } }
function columnWidth(c) {
  const set = S.colWidths && S.colWidths[c.id];
  if (set) return set;
  let w = Math.max(c.w, Math.ceil(textWidth(c.label + (c.tag ? ' ' + c.tag : ''), true)) + 34);
  if (c.id === 'tags' || c.id === 'description' || c.id === 'status' || c.id === 'started') return w;
  const rows = S.view.length > 400 ? S.view.slice(0, 400) : S.view;
  for (const r of rows) {
    if (!r || r._more) continue;
    const text = cellText(r._grp !== undefined ? groupCell(c, r) : c.cell(r));
    if (text.length * 9 + 24 > w) w = Math.max(w, Math.ceil(textWidth(text)) + 24);   // no glyph is wider than 9 px
  }
  return Math.min(w, 420);
}
function renderHead(cols) {
  const table = $('#runs-table');
  const widths = [34, (S.colWidths && S.colWidths.name) || 230].concat(cols.map(columnWidth));
  $('#runs-cols').replaceChildren.apply($('#runs-cols'), widths.map(w => h('col', { style: 'width:' + w + 'px' })));
  table.style.width = widths.reduce((a, b) => a + b, 0) + 'px';
  const arrow = id => S.sort.col === id ? h('span', { class: 'arrow', text: S.sort.dir > 0 ? '\u25b2' : '\u25bc' }) : null;
  const shownRuns = viewRuns(), inView = shownRuns.filter(r => S.selectedSet.has(S.exp + '/' + r.name)).length;
  // paged: every run matches (a filter holds the table whole), so count this experiment's selected
  const ofExp = S.paged ? S.selected.filter(k => splitKey(k)[0] === S.exp).length : 0, want = Math.min(S.matched, SELECT_CAP);
  const all = h('input', { type: 'checkbox', class: 'select-all', title: 'Select all shown runs', 'aria-label': 'Select all shown runs',
    checked: S.paged ? ofExp > 0 && ofExp >= want : inView > 0 && inView === shownRuns.length,
    indeterminate: S.paged ? ofExp > 0 && ofExp < want : inView > 0 && inView < shownRuns.length });
  const tr = h('tr', null,
    h('th', { class: 'c-sel' }, all),
    h('th', { class: 'c-name', 'data-col': 'name' }, 'Name', arrow('name'), h('span', { class: 'col-resize', 'data-resize': 'name', title: 'Drag to resize' })),
    cols.map(c => h('th', { 'data-col': c.id, class: (c.num ? 'num ' : '') + (c.kind ? 'grp-' + c.kind + (c.first ? ' first' : '') : ''), title: (c.kind ? c.kind + ': ' : '') + c.label },
      c.tag ? h('span', { class: 'kind', text: c.tag }) : null, c.label,
      c.goal ? h('span', { class: 'goal', title: 'best = ' + (c.goal === 'min' ? 'lowest' : 'highest'), text: c.goal === 'min' ? '\u2193' : '\u2191' }) : null, arrow(c.id),
      h('span', { class: 'col-resize', 'data-resize': c.id, title: 'Drag to resize' }))));
  table.tHead.replaceChildren(tr);
}
function renderBody() {
  const sc = $('#runs-scroll'), tbody = $('#runs-table').tBodies[0], n = S.view.length, cols = headCols || visibleColumns();
  const top = Math.max(0, sc.scrollTop - 32), vh = sc.clientHeight || 400;
  const start = Math.max(0, Math.floor(top / ROW_H) - 8), end = Math.min(n, Math.ceil((top + vh) / ROW_H) + 8);
  const span = cols.length + 2, out = [];
  if (start > 0) out.push(h('tr', { class: 'spacer' }, h('td', { colspan: span, style: 'height:' + start * ROW_H + 'px' })));
  for (let i = start; i < end; i++) out.push(S.view[i] ? renderRow(S.view[i], cols) : h('tr', { class: 'pending', 'data-index': String(i) }, h('td', { colspan: span, text: '\u2026' })));
  if (S.paged && !S.groupBy) needRows(start, end);
  if (end < n) out.push(h('tr', { class: 'spacer' }, h('td', { colspan: span, style: 'height:' + (n - end) * ROW_H + 'px' })));
  tbody.replaceChildren.apply(tbody, out);
}
function renderRow(r, cols) {
  if (r._job) return renderJobRow(r, cols);
  if (r._grp !== undefined || r._more) return renderGroupRow(r, cols);
  const k = S.exp + '/' + r.name, sel = S.selectedSet.has(k);
  const tr = h('tr', { 'data-run': r.name, 'data-status': r.status, class: (sel ? 'selected' : '') + (flash.has(k) ? ' flash' : '') + (jobMembers.has(r) ? ' job-member' : '') + (cursorRun === r.name ? ' cursor' : '') });
  tr.append(h('td', { class: 'c-sel' }, h('input', { type: 'checkbox', class: 'run-select', checked: sel, 'aria-label': 'Select run ' + r.name })));
  tr.append(h('td', { class: 'c-name' }, h('span', { class: 'swatch', style: sel ? 'background:' + (S.groupBy ? groupColorOf(k) : colorOf(k)) : '' }),
    h('button', { type: 'button', class: 'run-link', text: r.name, title: r.description ? r.name + '\n' + r.description : r.name }),
    r.metrics_error ? h('span', { class: 'run-problem', 'data-testid': 'run-problem', title: r.metrics_error, text: '\u26a0 metrics unreadable' }) : null));
  for (const c of cols) {
    const v = c.cell(r);
    const best = c.goal && S.best && S.best.has(c.id) && c.get(r) === S.best.get(c.id);
    const td = h('td', { class: (c.num ? 'num ' : '') + (c.kind ? 'grp-' + c.kind + (c.first ? ' first' : '') : '') + (c.mono ? ' mono' : '') + (best ? ' best' : ''), 'data-col': c.id });
    if (v === null || v === undefined || v === '') td.append(h('span', { class: 'null', text: '\u2013' }));
    else add(td, v);
    const t = c.title ? c.title(r) : (typeof v === 'string' ? v : null);
    if (t) td.title = t;
    if (c.live && r.status === 'running') { td.setAttribute('data-live-base', String(r.duration_secs || 0)); td.setAttribute('data-live-recv', String(r._recv || Date.now())); }
    tr.append(td);
  }
  return tr;
}
let lastClicked = -1;
function bindTable() {
  const tbody = $('#runs-table').tBodies[0];
  tbody.addEventListener('click', e => {
    const tr = e.target.closest('tr[data-run]'); if (!tr) return;
    const k = S.exp + '/' + tr.getAttribute('data-run');
    if (e.target.closest('.run-link')) { openDetail(k, true); return; }
    if (e.target.classList.contains('run-select')) {
      const idx = S.view.findIndex(r => r && !r._job && r.name === tr.getAttribute('data-run'));
      if (e.shiftKey && lastClicked >= 0 && idx >= 0) {
        const on = e.target.checked, [a, b] = [Math.min(lastClicked, idx), Math.max(lastClicked, idx)];
        const set = new Set(S.selected);
        for (let i = a; i <= b; i++) { if (!S.view[i] || S.view[i]._job || S.view[i]._grp !== undefined || S.view[i]._more) continue; const kk = S.exp + '/' + S.view[i].name; if (on) set.add(kk); else set.delete(kk); }
        setSelection(S.selected.filter(x => set.has(x)).concat(Array.from(set).filter(x => S.selected.indexOf(x) < 0)), true);
      } else toggleRun(k, e.target.checked);
      lastClicked = idx;
    }
  });
  $('#runs-table').tHead.addEventListener('click', e => {
    if (e.target.classList.contains('select-all')) {
      if (S.paged) { selectAllPaged(e.target.checked); return; }
      const keys = viewRuns().map(r => S.exp + '/' + r.name);
      if (e.target.checked) {
        const addKeys = keys.filter(k => !S.selectedSet.has(k)).slice(0, Math.max(0, 100 - S.selected.length));
        if (addKeys.length < keys.filter(k => !S.selectedSet.has(k)).length) showBanner('Selected the first 100 runs; select more one by one.', true);
        setSelection(S.selected.concat(addKeys), true);
      } else { const drop = new Set(keys); setSelection(S.selected.filter(k => !drop.has(k)), true); }
      return;
    }
    if (e.target.closest('.col-resize')) return;
    const th = e.target.closest('th[data-col]'); if (!th) return;
    const id = th.getAttribute('data-col');
    if (S.sort.col === id) S.sort.dir = -S.sort.dir;
    else S.sort = { col: id, dir: id === 'name' || id === 'status' || id.slice(0, 2) === 'p:' ? 1 : -1 };
    if (S.paged) requery(); else renderTable();
  });
  // drag a header's right edge to resize its column
  $('#runs-table').tHead.addEventListener('mousedown', e => {
    const grip = e.target.closest('.col-resize'); if (!grip) return;
    e.preventDefault(); e.stopPropagation();
    const id = grip.getAttribute('data-resize'), th = grip.closest('th'), x0 = e.clientX, w0 = th.getBoundingClientRect().width;
    const move = ev => {
      S.colWidths = Object.assign({}, S.colWidths, { [id]: Math.max(48, Math.round(w0 + ev.clientX - x0)) });
      renderHead(headCols || visibleColumns());
    };
    const up = () => {
      window.removeEventListener('mousemove', move); window.removeEventListener('mouseup', up);
      store('expman.colw.' + S.exp, JSON.stringify(S.colWidths || {}));
    };
    window.addEventListener('mousemove', move); window.addEventListener('mouseup', up);
  });
  let scrollFrame = 0;
  $('#runs-scroll').addEventListener('scroll', () => { if (!scrollFrame) scrollFrame = requestAnimationFrame(() => { scrollFrame = 0; renderBody(); }); }, { passive: true });
  // drag the bottom edge of the runs panel to give the table more or less room
  const rs = $('#runs-resizer'), sc = $('#runs-scroll');
  const saved = parseInt(store('expman.tableHeight') || '', 10);
  if (saved > 60) sc.style.maxHeight = saved + 'px';
  rs.addEventListener('mousedown', e => {
    e.preventDefault();
    const y0 = e.clientY, h0 = sc.getBoundingClientRect().height;
    const move = ev => { sc.style.maxHeight = Math.max(90, h0 + ev.clientY - y0) + 'px'; scheduleTable(); };
    const up = () => { window.removeEventListener('mousemove', move); window.removeEventListener('mouseup', up); store('expman.tableHeight', String(parseInt(sc.style.maxHeight, 10))); };
    window.addEventListener('mousemove', move); window.addEventListener('mouseup', up);
  });
}
// running runs' durations tick without a request
setInterval(() => {
  const now = Date.now();
  for (const td of document.querySelectorAll('[data-live-base]')) {
    td.textContent = fmtDur(Number(td.getAttribute('data-live-base')) + (now - Number(td.getAttribute('data-live-recv'))) / 1000);
  }
}, 1000);

// --- 13.9 column chooser
function openColumns() {
  const pop = $('#columns-popover');
  if (!pop.hidden) { pop.hidden = true; return; }
  const c = allColumns();
  const current = () => S.colPrefs || defaultColumns();
  const search = h('input', { type: 'search', placeholder: 'Search columns', 'aria-label': 'Search columns' });
  const body = h('div');
  const draw = () => {
    const q = search.value.toLowerCase(), on = current();
    const group = (title, cols) => {
      cols = cols.filter(x => x.label.toLowerCase().indexOf(q) >= 0);
      if (!cols.length) return null;
      const setAll = v => { const s = new Set(current()); for (const x of cols) { if (v) s.add(x.id); else s.delete(x.id); } S.colPrefs = s; saveColPrefs(); renderTable(); draw(); };
      return [h('div', { class: 'pop-group' }, h('span', { text: title + ' (' + cols.length + ')' }),
        h('span', null, h('button', { type: 'button', text: 'all', onclick: () => setAll(true) }), ' \u00b7 ', h('button', { type: 'button', text: 'none', onclick: () => setAll(false) }))),
      cols.map(x => h('label', { class: 'pop-item', 'data-col': x.id }, h('input', { type: 'checkbox', checked: on.has(x.id), onchange: e => {
        const s = new Set(current()); if (e.target.checked) s.add(x.id); else s.delete(x.id);
        S.colPrefs = s; saveColPrefs(); renderTable();
      } }), h('span', { text: x.label, title: x.label })))];
    };
    body.replaceChildren.apply(body, [group('Run', c.base), group('Params', c.params), group('Metrics', c.metrics)].flat(2).filter(Boolean));
  };
  search.addEventListener('input', draw);
  draw();
  const reset = () => { S.colPrefs = null; saveColPrefs(); renderTable(); draw(); };
  pop.replaceChildren(search, body, h('div', { class: 'row-actions' },
    h('button', { type: 'button', class: 'btn small', text: 'Reset to defaults', onclick: reset })));
  const r = $('#columns-button').getBoundingClientRect();
  pop.style.top = (r.bottom + 6) + 'px';
  pop.style.left = Math.max(8, Math.min(innerWidth - 310, r.right - 300)) + 'px';
  pop.hidden = false;
  search.focus();
}

// --- 13.10 selection and metric data
function setSelection(keys, manual) {
  const seen = new Set();
  keys = keys.filter(k => k && k.indexOf('/') > 0 && !seen.has(k) && seen.add(k));
  if (manual) S.autoSelect = false;
  S.selected = keys; S.selectedSet = new Set(keys);
  assignColors(keys);
  for (const k of Array.from(data.keys())) if (!S.selectedSet.has(k)) data.delete(k);
  for (const k of keys) if (!data.has(k)) loadRun(k);
  $('#detail-select').checked = !!S.detail && S.selectedSet.has(S.detail);
  scheduleTable(); renderLegend(); scheduleCharts(); scheduleStream(); syncMediaRuns(); renderDiff(); writeHash();
}
// Config diff: the params (and provenance) that differ between the selected runs. A runs row
// has the git commit but not whether the tree was dirty: that is in run.yaml (/metadata),
// fetched once per run the diff shows.
const diffGit = new Map();      // run key -> 'loading' | 'done'
function diffProvenance(keys) {
  for (const k of keys) {
    if (diffGit.has(k)) continue;
    diffGit.set(k, 'loading');
    api(runPath(k) + '/metadata').then(m => {
      const git = m && m.git && typeof m.git === 'object' ? m.git : null;
      known.set(k, Object.assign({}, known.get(k) || {}, { git: git }));
    }, () => {}).then(() => { diffGit.set(k, 'done'); renderDiff(); });
  }
}
function renderDiff() {
  $('#diff-button').disabled = S.selected.length < 2;
  const panel = $('#diff-panel');
  if (panel.hidden) return;
  if (S.selected.length < 2) { panel.hidden = true; return; }
  const runs = legendOrder(), rows = runs.map(k => known.get(k) || {});
  diffProvenance(runs);
  panel.setAttribute('data-loading', runs.some(k => diffGit.get(k) !== 'done') ? 'true' : 'false');
  const keys = new Set();
  for (const r of rows) for (const key of Object.keys(r.params || {})) keys.add(key);
  const show = v => v === undefined ? '\u2013' : fmtValue(v);
  const lines = [], same = [];
  const line = (label, values, kind) => {
    const texts = values.map(show);
    if (texts.every(t => t === texts[0])) { same.push(label); return; }
    // mark the runs that stray from what most of them have (all, when no value is the most common)
    const count = new Map();
    for (const t of texts) count.set(t, (count.get(t) || 0) + 1);
    const most = Math.max.apply(null, Array.from(count.values()));
    const common = most > 1 && Array.from(count.values()).filter(n => n === most).length === 1 ? texts.find(t => count.get(t) === most) : null;
    lines.push(h('tr', { 'data-param': label, 'data-kind': kind }, h('th', { text: label }), texts.map(t => h('td', { class: t === common ? null : 'differs', text: t }))));
  };
  for (const key of Array.from(keys).sort(natural)) line(key, rows.map(r => (r.params || {})[key]), 'param');
  line('git commit', rows.map(r => r.git_commit ? String(r.git_commit).slice(0, 12) : undefined), 'provenance');
  line('git dirty', rows.map(r => r.git && typeof r.git === 'object' && typeof r.git.dirty === 'boolean' ? (r.git.dirty ? 'dirty' : 'clean') : undefined), 'provenance');
  line('host', rows.map(r => r.hostname || undefined), 'provenance');
  const head = h('tr', null, h('th', { text: 'param' }), runs.map(k => h('th', { title: k }, h('i', { style: 'background:' + colorOf(k) }), labelOf(k))));
  $('#diff-table').replaceChildren(h('thead', null, head), h('tbody', null, lines.length ? lines
    : h('tr', null, h('td', { colspan: runs.length + 1, class: 'muted', text: 'The selected runs have the same params.' }))));
  $('#diff-note').textContent = runs.length + ' runs \u00b7 ' + lines.length + ' differ' + (same.length ? ' \u00b7 ' + same.length + ' equal, hidden' : '');
}
function clearSelection() {
  S.selected = []; S.selectedSet = new Set();
  assignColors([]); data.clear();
  renderLegend(); scheduleCharts(); syncMediaRuns(); renderDiff();
}
function toggleRun(k, on) {
  if (on && !S.selectedSet.has(k)) setSelection(S.selected.concat([k]), true);
  else if (!on && S.selectedSet.has(k)) setSelection(S.selected.filter(x => x !== k), true);
}
// Points asked for per series. One run gets two per pixel of a chart's width (the server keeps
// first/min/max/last per bucket: spikes stay sharp). Runs that share a chart share a budget of
// POINTS_PER_PIXEL points per pixel, down to half a point per pixel each: 50 runs of 1M rows
// cost the server, the wire and the canvas ~8,000 points a chart instead of ~35,000.
const POINTS_PER_PIXEL = 16;
function maxPoints(runs) {
  const w = ($('#charts').clientWidth || 1000) - 24, cols = Math.max(1, Math.floor((w + 12) / 342)), colW = (w - (cols - 1) * 12) / cols;
  const px = colW * (window.devicePixelRatio || 1), one = Math.max(400, Math.min(2000, Math.round(2 * px)));
  if (!(runs > 1)) return one;
  return Math.max(100, Math.round(px / 2), Math.min(one, Math.round(px * POINTS_PER_PIXEL / runs)));
}
function convertSeries(ser) {
  const n = ser && ser.step ? ser.step.length : 0, st = new Array(n), tm = new Array(n), va = new Array(n);
  for (let i = 0; i < n; i++) {
    st[i] = Number(ser.step[i]);
    tm[i] = ser.time && ser.time[i] !== null && ser.time[i] !== undefined ? Number(ser.time[i]) : NaN;
    va[i] = num(ser.value ? ser.value[i] : null);
  }
  return { step: st, time: tm, value: va };
}
// Versions are unique page-wide, so a chart can tell a re-selected run's data from the old one.
let versionSeq = 0;
async function loadRun(k) {
  const rd = { key: k, since: 0, series: new Map(), ready: false, version: ++versionSeq, t0: null, downsampled: false, catching: false, again: false };
  data.set(k, rd);
  const row = known.get(k);
  let mp = maxPoints(S.selected.length);
  const nkeys = row && row.summary ? Object.keys(row.summary).length : 0;
  if (nkeys > 40) mp = Math.max(150, Math.min(mp, Math.floor(120000 / nkeys)));
  try {
    // queued behind at most a few others; a run deselected meanwhile is never asked for
    const j = await limited(() => data.get(k) === rd ? api(runPath(k) + '/metrics?since=0&max_points=' + mp) : Promise.resolve(null));
    if (data.get(k) !== rd) return;
    for (const key of Object.keys(j.series || {})) rd.series.set(key, convertSeries(j.series[key]));
    rd.since = j.next_since || 0; rd.downsampled = !!j.downsampled;
    rd.t0 = startTime(k, rd);
    rd.ready = true;
    if (!row && k.indexOf(S.exp + '/') !== 0) api(runPath(k) + '/metadata').then(m => { known.set(k, Object.assign({}, known.get(k) || {}, m)); renderLegend(); }).catch(() => {});
  } catch (e) {
    if (data.get(k) !== rd) return;
    if (e.status === 404) {   // a run named by a link that does not exist: no legend entry for it
      showBanner('Run not found: ' + k);
      setSelection(S.selected.filter(x => x !== k), !S.autoSelect);
      return;
    }
    rd.error = e.message; rd.ready = true;
    showError('Could not load metrics of ' + k, e);
  }
  scheduleLegend(); scheduleStream();
}
function startTime(k, rd) {
  const r = known.get(k), t = r ? parseTime(r.started_at) : null;
  if (t !== null) return t;
  let m = Infinity;
  for (const s of rd.series.values()) if (s.time.length && s.time[0] < m) m = s.time[0];
  return isFinite(m) ? m : 0;
}
function xsOf(rd, step, time) {
  if (S.xaxis === 'step') return step;
  if (xMetric()) return joinX(rd, step);
  if (S.xaxis === 'wall') return time;
  const t0 = rd.t0 || 0; return time.map(t => t - t0);
}
// new rows for a run: either from the stream or a catch-up fetch
function applyRows(rd, series, next) {
  let newKey = false;
  for (const key of Object.keys(series || {})) {
    const add = convertSeries(series[key]); if (!add.step.length) continue;
    let s = rd.series.get(key);
    if (!s) { s = { step: [], time: [], value: [] }; rd.series.set(key, s); newKey = true; }
    for (let i = 0; i < add.step.length; i++) { s.step.push(add.step[i]); s.time.push(add.time[i]); s.value.push(add.value[i]); }
    if (s.step.length > COMPACT_AT) { compactSeries(s); rd.version = ++versionSeq; newKey = true; continue; }
    if (inBand(rd.key) || xMetric()) { rd.version = ++versionSeq; newKey = true; continue; }
    const c = cards.get(key);
    if (c && c.loaded.get(rd.key) === rd.version) c.chart.appendPoints(rd.key, xsOf(rd, add.step, add.time), add.value);
  }
  rd.since = next;
  if (newKey) scheduleCharts();
  // the table's steps and last values follow the stream instead of waiting for a heartbeat
  const p = splitKey(rd.key), row = p[0] === S.exp ? S.rows.get(p[1]) : null;
  if (row) {
    row.summary = Object.assign({}, row.summary);
    for (const key of Object.keys(series || {})) {
      const ser = series[key], n = ser && ser.step ? ser.step.length : 0;
      if (!n) continue;
      row.summary[key] = ser.value[n - 1];
      if (isNull(row.last_step) || ser.step[n - 1] > row.last_step) row.last_step = ser.step[n - 1];
    }
    row.rows = next;
    scheduleTable();
  }
}
// A run streaming for hours would grow without bound; keep min and max per bucket (the server's
// own downsampling) and let a zoom fetch the detail back.
function compactSeries(s) {
  const n = s.step.length, buckets = 4000, per = n / buckets, out = { step: [], time: [], value: [] };
  const put = i => { out.step.push(s.step[i]); out.time.push(s.time[i]); out.value.push(s.value[i]); };
  for (let b = 0; b < buckets; b++) {
    const i0 = Math.floor(b * per), i1 = Math.min(n, Math.floor((b + 1) * per));
    let mn = -1, mx = -1, gap = -1;
    for (let i = i0; i < i1; i++) {
      const v = s.value[i];
      if (!(v > -Infinity && v < Infinity)) { if (gap < 0) gap = i; continue; }
      if (mn < 0 || v < s.value[mn]) mn = i;
      if (mx < 0 || v > s.value[mx]) mx = i;
    }
    const keep = [mn, mx, gap].filter(i => i >= 0).sort((a, b2) => a - b2);
    keep.forEach((i, j) => { if (j === 0 || i !== keep[j - 1]) put(i); });
  }
  s.step = out.step; s.time = out.time; s.value = out.value;
}
function onMetricsEvent(ev) {
  const rd = data.get(ev.run);
  if (!rd || !rd.ready || rd.error) return;
  if (ev.next_since <= rd.since) return;
  if (ev.since === rd.since && !rd.catching) { applyRows(rd, ev.series, ev.next_since); return; }
  catchUp(rd);
}
// The stream and the page disagree about which rows the page holds (a reconnect, a gap):
// fetch exactly the rows after the page's cursor.
async function catchUp(rd) {
  if (rd.catching) { rd.again = true; return; }
  rd.catching = true;
  try {
    do {
      rd.again = false;
      const since = rd.since;
      const j = await limited(() => data.get(rd.key) === rd ? api(runPath(rd.key) + '/metrics?since=' + since + '&max_points=' + Math.max(2000, maxPoints())) : Promise.resolve(null));
      if (data.get(rd.key) !== rd) return;
      if (rd.since === since && j.next_since > since) applyRows(rd, j.series, j.next_since);
    } while (rd.again);
  } catch (e) { showError('Could not update ' + rd.key, e); }
  finally { rd.catching = false; }
}

// --- 13.11 chart panel: one card per metric key, grouped by prefix (13.4 Charts draws them)
const cards = new Map();        // metric key -> card {key, el, chart, loaded: Map(run -> version), zoom}
const groups = new Map();       // prefix -> {el, grid, count}
// Arrivals (a run's metrics, a new key from the stream) are batched: one pass over the cards
// (and the legend) per timer tick, then each changed chart draws once in the next frame.
let chartsTimer = 0, legendDue = false;
function scheduleCharts() {
  if (!chartsTimer) chartsTimer = setTimeout(() => { chartsTimer = 0; if (legendDue) { legendDue = false; renderLegend(); } syncCharts(); }, 16);
}
function scheduleLegend() { legendDue = true; scheduleCharts(); }
function labelOf(k) { const p = splitKey(k); return p[0] === S.exp ? p[1] : k; }
function collapsedGroups() { try { return new Set(JSON.parse(store('expman.collapsed') || '[]')); } catch (e) { return new Set(); } }
function makeGroup(g) {
  const count = h('span', { class: 'count' });
  const grid = h('div', { class: 'chart-grid' });
  const el = h('details', { class: 'group', 'data-group': g, open: !collapsedGroups().has(g) },
    h('summary', null, icon('chev', 14), h('span', { text: g || 'Charts' }), count), grid);
  el.addEventListener('toggle', () => {
    const s = collapsedGroups(); if (el.open) s.delete(g); else s.add(g);
    store('expman.collapsed', JSON.stringify(Array.from(s)));
  });
  return { el: el, grid: grid, count: count };
}
function makeCard(k) {
  const i = k.indexOf('/');
  const canvas = h('canvas', { class: 'plot', 'data-testid': 'chart-canvas' });
  const reset = h('button', { type: 'button', class: 'icon-btn reset-zoom', title: 'Reset zoom (or double-click the chart); drag across the plot to zoom x, along the y axis to zoom y', 'aria-label': 'Reset zoom' }, icon('reset', 13));
  const goal = h('button', { type: 'button', class: 'goal-btn', 'data-testid': 'goal' });
  const el = h('div', { class: 'chart', 'data-key': k, 'data-testid': 'chart' },
    h('div', { class: 'chart-head' },
      h('span', { class: 'chart-title', title: k },
        i > 0 ? h('span', { class: 'chart-prefix', text: k.slice(0, i + 1) }) : null, i > 0 ? k.slice(i + 1) : k),
      h('span', { class: 'x-label', 'data-testid': 'x-label', text: xMetric() ? 'vs ' + xMetric() : '' }),
      goal,
      h('button', { type: 'button', class: 'chart-tool', 'data-tool': 'full', title: 'Full screen (f; Esc to leave)', text: '\u2922' }),
      h('button', { type: 'button', class: 'chart-tool', 'data-tool': 'png', title: 'Download the chart as PNG', text: 'PNG' }),
      h('button', { type: 'button', class: 'chart-tool', 'data-tool': 'csv', title: 'Download the shown series as CSV', text: 'CSV' }),
      reset),
    h('div', { class: 'plot-wrap' }, canvas));
  const chart = Charts.create(canvas);
  const c = { key: k, el: el, chart: chart, loaded: new Map(), zoom: null, zoomToken: 0, goalBtn: goal };
  el.addEventListener('mouseenter', () => { hoveredCard = c; });
  el.querySelector('[data-tool=full]').addEventListener('click', () => toggleFull(c));
  el.querySelector('[data-tool=png]').addEventListener('click', () => canvas.toBlob(b => { if (b) download(b, fileName(k) + '.png'); }));
  el.querySelector('[data-tool=csv]').addEventListener('click', () => download(new Blob([chart.toCsv(xMetric() || (S.xaxis === 'step' ? 'step' : S.xaxis === 'wall' ? 'unix_time' : 'seconds'))], { type: 'text/csv' }), fileName(k) + '.csv'));
  goal.addEventListener('click', () => {
    const next = { min: 'max', max: null }[goalOf(k)];   // min -> max -> none -> min
    S.goals.set(k, next === undefined ? 'min' : next);
    if (S.goals.get(k) === inferGoal(k)) S.goals.delete(k);
    applyGoals(); writeHash();
  });
  showGoal(c);
  chart.onZoom = (a, b) => zoomCard(c, a, b);
  chart.onYZoom = () => c.el.classList.add('zoomed');
  chart.onReset = () => resetZoom(c);
  reset.addEventListener('click', () => { chart.setXRange(null); chart.setYRange(null); resetZoom(c); });
  return c;
}
let hoveredCard = null;
function fileName(key) { return (S.exp ? S.exp + '_' : '') + key.replace(/[^A-Za-z0-9._-]+/g, '_'); }
function download(blob, name) {
  const a = h('a', { href: URL.createObjectURL(blob), download: name });
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
function toggleFull(c) {
  const on = !c.el.classList.contains('full');
  for (const other of document.querySelectorAll('.chart.full')) other.classList.remove('full');
  c.el.classList.toggle('full', on);
}
function showGoal(c) {
  const g = goalOf(c.key);
  c.goalBtn.textContent = g === 'min' ? '\u2193 min' : g === 'max' ? '\u2191 max' : 'no goal';
  c.goalBtn.title = (g ? 'Best = ' + (g === 'min' ? 'lowest' : 'highest') + ' value, marked on the chart' : 'No best value marked') +
    (S.goals.has(c.key) ? ' (set here)' : g ? ' (from the name)' : '') + '. Click to change.';
  c.goalBtn.setAttribute('data-goal', g || 'none');
  c.chart.setGoal(g);
}
function applyGoals() {
  for (const c of cards.values()) showGoal(c);
  colsCache = null; scheduleTable();
}
function place(parent, node, after) {
  const want = after ? after.nextSibling : parent.firstChild;
  if (node !== want) parent.insertBefore(node, want);
}
function syncCharts() {
  const root = $('#charts');
  const keys = new Set();
  let loading = 0, ready = 0;
  for (const k of S.selected) {
    const rd = data.get(k);
    if (!rd || !rd.ready) { loading++; continue; }
    ready++;
    for (const key of rd.series.keys()) keys.add(key);
  }
  const terms = S.chartFilter.toLowerCase().split(/\s+/).filter(Boolean);
  const list = Array.from(keys).filter(k => terms.every(t => k.toLowerCase().indexOf(t) >= 0)).sort(natural);
  const byGroup = new Map();
  for (const k of list) { const i = k.indexOf('/'), g = i > 0 ? k.slice(0, i) : ''; if (!byGroup.has(g)) byGroup.set(g, []); byGroup.get(g).push(k); }
  // training groups first; system metrics (system_metrics=True) and unprefixed keys last
  const rank = g => g === '' ? 2 : g === 'sys' ? 1 : 0;
  const order = Array.from(byGroup.keys()).sort((a, b) => rank(a) - rank(b) || natural(a, b));
  const want = new Set(list);
  for (const [k, c] of cards) if (!want.has(k)) { c.chart.destroy(); c.el.remove(); cards.delete(k); }
  for (const [g, ge] of groups) if (!byGroup.has(g)) { ge.el.remove(); groups.delete(g); }
  let prevGroup = null;
  for (const g of order) {
    let ge = groups.get(g);
    if (!ge) { ge = makeGroup(g); groups.set(g, ge); }
    ge.count.textContent = String(byGroup.get(g).length);
    place(root, ge.el, prevGroup); prevGroup = ge.el;
    let prev = null;
    for (const k of byGroup.get(g)) {
      let c = cards.get(k);
      if (!c) { c = makeCard(k); cards.set(k, c); }
      place(ge.grid, c.el, prev); prev = c.el;
    }
  }
  for (const c of cards.values()) syncCardSeries(c);
  syncXAxisOptions(keys); syncGroupPicker(); renderGroupLegend();
  const empty = $('#charts-empty');
  let msg = null;
  if (!S.selected.length) msg = ['No runs selected', 'Tick runs in the table above to compare their metrics here.'];
  else if (!list.length && loading) msg = ['Loading metrics\u2026', ''];
  else if (!list.length && keys.size) msg = ['No metric matches \u201c' + S.chartFilter + '\u201d', ''];
  else if (!list.length && ready) msg = ['No metrics yet', 'The selected runs have not logged any metrics. Charts appear as soon as they do.'];
  empty.hidden = !msg;
  if (msg) empty.replaceChildren(h('strong', { text: msg[0] }), msg[1]);
  const notes = $('#charts-notes'), bad = [];
  for (const k of S.selected) {
    const row = known.get(k), rd = data.get(k);
    if (row && row.metrics_error) bad.push(labelOf(k) + ': ' + row.metrics_error);
    else if (rd && rd.error) bad.push(labelOf(k) + ': ' + rd.error);
  }
  notes.hidden = !bad.length;
  notes.textContent = bad.length ? '\u26a0 Metrics unreadable, nothing drawn for ' + bad.join('; ') : '';
}
function syncCardSeries(c) {
  const present = new Set(), bands = groupBands() || bandJobs();
  syncBandSeries(c, bands, present);
  for (const k of S.selected) {
    if (bands.members.has(k)) continue;
    const rd = data.get(k); if (!rd || !rd.ready) continue;
    const s = rd.series.get(c.key); if (!s) continue;
    present.add(k);
    if (c.loaded.get(k) !== rd.version) { c.chart.setSeries(k, seriesFor(c, rd, s)); c.loaded.set(k, rd.version); }
  }
  for (const k of Array.from(c.loaded.keys())) if (!present.has(k)) { c.chart.removeSeries(k); c.loaded.delete(k); }
}
function seriesFor(c, rd, s) {
  let d = s;
  const z = c.zoom && c.zoom.fine.get(rd.key);
  if (z) {
    const i0 = lowerBound(s.step, z.s0); let i1 = i0;
    while (i1 < s.step.length && s.step[i1] <= z.s1) i1++;
    const splice = f => s[f].slice(0, i0).concat(z[f], s[f].slice(i1));
    d = { step: splice('step'), time: splice('time'), value: splice('value') };
  }
  return { x: xsOf(rd, d.step, d.time), y: d.value, color: colorOf(rd.key), label: labelOf(rd.key) };
}
// Zooming asks the server for the finer data of the range (x_min/x_max are steps).
async function zoomCard(c, x0, x1) {
  const token = ++c.zoomToken;
  c.el.classList.add('zoomed');
  c.zoom = { x0: x0, x1: x1, fine: new Map() };
  if (xMetric()) return;   // x is another metric: no step range to ask the server for
  // only the visible range, with as many points as the runs shown share; the coarse curves stay
  // drawn until each run's finer range arrives, and a newer zoom drops the queued older asks
  const mp = maxPoints(c.loaded.size), jobs = [];
  for (const k of Array.from(c.loaded.keys())) {
    const rd = data.get(k); if (!rd || !rd.downsampled) continue;
    const s = rd.series.get(c.key); if (!s || !s.step.length) continue;
    const r = stepRange(rd, s, x0, x1);
    const current = () => token === c.zoomToken && data.get(k) === rd;
    jobs.push(limited(() => current() ? api(runPath(k) + '/metrics?keys=' + enc(c.key) + '&since=0&max_points=' + mp + '&x_min=' + r[0] + '&x_max=' + r[1]) : Promise.resolve(null)).then(j => {
      if (!j || !current()) return;
      const f = convertSeries(j.series && j.series[c.key]); f.s0 = r[0]; f.s1 = r[1];
      c.zoom.fine.set(k, f);
      c.chart.setSeries(k, seriesFor(c, rd, s));
    }).catch(e => showError('Could not load the zoomed range', e)));
  }
  await Promise.all(jobs);
}
function stepRange(rd, s, x0, x1) {
  if (S.xaxis === 'step') return [Math.floor(x0), Math.ceil(x1)];
  const off = S.xaxis === 'relative' ? (rd.t0 || 0) : 0, n = s.time.length;
  const a = Math.max(0, lowerBound(s.time, x0 + off) - 1), b = Math.min(n - 1, lowerBound(s.time, x1 + off));
  return [s.step[a], s.step[b]];
}
function resetZoom(c) {
  c.zoomToken++; c.zoom = null; c.el.classList.remove('zoomed');
  c.loaded.clear(); syncCardSeries(c);
}
function resetAllZoom() { for (const c of cards.values()) { c.chart.setXRange(null); c.chart.setYRange(null); resetZoom(c); } }
// The legend lists the selected runs in the runs table's order (runs the table does not show
// follow in selection order); a job drawn as a band is one entry, as on the chart.
function legendOrder() {
  const pos = new Map();
  (S.matchedRows || []).forEach((r, i) => pos.set(S.exp + '/' + r.name, i));
  const at = k => pos.has(k) ? pos.get(k) : 1e9 + S.selected.indexOf(k);
  return S.selected.slice().sort((a, b) => at(a) - at(b));
}
let legendSig = '';
function renderLegend() {
  recolourRuns(); renderColorLegend();   // 13.20 colour by
  const box = $('#legend'), bands = bandJobs(true), jobOf = new Map();
  for (const [g, keys] of bands.jobs) for (const k of keys) jobOf.set(k, [g, keys]);
  const entries = [], done = new Set();
  for (const k of legendOrder()) {
    const job = jobOf.get(k);
    if (!job) { entries.push({ keys: [k], id: k, label: labelOf(k) }); continue; }
    if (done.has(job[0])) continue;
    done.add(job[0]);
    const first = known.get(job[1][0]) || {};
    entries.push({ keys: job[1], id: 'job:' + job[0], label: (first.group || job[0]) + ' (' + job[1].length + ' ranks)', job: true });
  }
  const state = e => e.keys.map(k => { const rd = data.get(k), row = known.get(k); return (rd && !rd.ready ? 'l' : '') + (row ? row.status + (row.metrics_error ? '!' : '') : '') + (S.hidden.has(k) ? 'h' : '') + colorOf(k); }).join(';');
  const sig = entries.map(e => e.id + '=' + state(e)).join('|');
  if (sig === legendSig && box.childNodes.length === entries.length) return;
  legendSig = sig;
  box.replaceChildren.apply(box, entries.map(e => {
    const k = e.keys[0], rd = data.get(k), row = known.get(k), off = e.keys.every(x => S.hidden.has(x));
    const problem = e.keys.map(x => known.get(x)).find(r => r && r.metrics_error);
    const flip = ev => { if (ev.altKey || ev.shiftKey) showOnly(e.keys); else toggleHidden(e.keys, !off); };
    const solo = shownAlone(e.keys), what = e.job ? 'job' : 'run';
    return h('span', { class: 'chip' + (off ? ' off' : '') + (problem ? ' problem' : '') + (solo ? ' solo' : ''), 'data-run-key': e.job ? null : k, 'data-job': e.job ? e.id.slice(4) : null,
      role: 'button', tabindex: '0', title: problem ? k + ': ' + problem.metrics_error : (off ? 'Show ' : 'Hide ') + (e.job ? e.label : k) + ' (Alt-click: ' + (solo ? 'show all runs)' : 'show only this ' + what + ')'),
      onclick: ev => { if (ev.target.closest('.x') || ev.target.closest('.only')) return; flip(ev); },
      onkeydown: ev => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); flip(ev); } },
      onmouseenter: () => Charts.configure({ highlight: off ? null : e.id }), onmouseleave: () => Charts.configure({ highlight: null }) },
    rd && !rd.ready ? h('span', { class: 'spin' }) : h('i', { style: 'background:' + colorOf(k) }),
    h('span', { class: 'chip-label', text: e.label + (problem ? ' \u00b7 metrics unreadable' : '') }),
    row && row.status === 'running' ? h('span', { class: 'status running', title: 'running' }, h('span', { class: 'dot' })) : null,
    S.selected.length > 1 ? h('button', { type: 'button', class: 'x only', 'data-testid': 'show-only', title: solo ? 'Show all runs' : 'Show only this ' + what,
      'aria-label': solo ? 'Show all runs' : 'Show only ' + (e.job ? e.label : k), 'aria-pressed': solo ? 'true' : 'false', onclick: () => showOnly(e.keys) }, icon('solo', 11)) : null,
    h('button', { type: 'button', class: 'x', title: 'Remove from comparison', 'aria-label': 'Remove ' + (e.job ? e.label : k),
      onclick: () => { Charts.configure({ highlight: null }); setSelection(S.selected.filter(x => e.keys.indexOf(x) < 0), true); } }, icon('close', 11)));
  }));
}
// "Show only this run": every other selected run hidden; on the run already shown alone, all
// shown again.
function shownAlone(keys) {
  return S.selected.length > keys.length && keys.every(k => !S.hidden.has(k)) && S.selected.every(k => keys.indexOf(k) >= 0 || S.hidden.has(k));
}
function showOnly(keys) {
  if (shownAlone(keys)) { toggleHidden(S.selected, false); return; }
  for (const k of S.selected) { if (keys.indexOf(k) >= 0) S.hidden.delete(k); else S.hidden.add(k); }
  toggleHidden([], false);
}
function toggleHidden(keys, hide) {
  for (const k of keys) { if (hide) S.hidden.add(k); else S.hidden.delete(k); }
  Charts.configure({ hidden: new Set(S.hidden), highlight: null });
  renderLegend(); writeHash();
  if (S.groupBy) scheduleCharts();   // a group's band is redrawn from the runs still shown
}

// --- 13.12 media panel
// Images, audio, video and text of the selected runs: one card per tag, a step slider, the runs
// side by side. The page holds each run's media index (fetched from its byte offset, then only
// what is new when the stream says the index grew). Logged text goes in with textContent.
const mediaRuns = new Map();    // "exp/run" -> {items: [], next, busy, again, hist: null|json, histBusy}
const mediaStep = new Map();    // tag -> chosen step (absent: follow the newest)
let mediaTimer = 0, histTimer = 0;
function scheduleMedia() { if (!mediaTimer) mediaTimer = setTimeout(() => { mediaTimer = 0; renderMedia(); }, 30); }
function scheduleHists() { if (!histTimer) histTimer = setTimeout(() => { histTimer = 0; renderHists(); }, 30); }
function syncMediaRuns() {
  for (const k of Array.from(mediaRuns.keys())) if (!S.selectedSet.has(k)) mediaRuns.delete(k);
  for (const k of S.selected) if (!mediaRuns.has(k)) {
    const m = { items: [], next: 0, busy: false, again: false, hist: null, histBusy: false, histAgain: false };
    mediaRuns.set(k, m); fetchMedia(k, m); fetchHists(k, m);
  }
  scheduleMedia(); scheduleHists();
}
async function fetchMedia(k, m) {
  if (m.busy) { m.again = true; return; }
  m.busy = true;
  try {
    do {
      m.again = false;
      const j = await limited(() => api(runPath(k) + '/media?since=' + m.next));
      if (mediaRuns.get(k) !== m) return;
      if (j.items && j.items.length) { for (const it of j.items) m.items.push(it); scheduleMedia(); }
      m.next = j.next || m.next;
    } while (m.again);
  } catch (e) { if (mediaRuns.get(k) === m) showError('Could not load media of ' + k, e); }
  finally { m.busy = false; }
}
async function fetchHists(k, m) {
  if (m.histBusy) { m.histAgain = true; return; }
  m.histBusy = true;
  try {
    do {
      m.histAgain = false;
      const j = await limited(() => api(runPath(k) + '/histograms?max_steps=80'));
      if (mediaRuns.get(k) !== m) return;
      m.hist = j; scheduleHists();
    } while (m.histAgain);
  } catch (e) { if (mediaRuns.get(k) === m) showError('Could not load histograms of ' + k, e); }
  finally { m.histBusy = false; }
}
function onMediaEvent(ev) { const m = mediaRuns.get(ev.run); if (m) fetchMedia(ev.run, m); }
function onHistEvent(ev) { const m = mediaRuns.get(ev.run); if (m) fetchHists(ev.run, m); }
const mediaCards = new Map();   // tag -> {el, slider, out, runs, steps, kind}
function renderMedia() {
  const tags = new Map();       // tag -> {kind, steps: Set}
  let total = 0;
  for (const k of S.selected) {
    const m = mediaRuns.get(k); if (!m) continue;
    for (const it of m.items) {
      let t = tags.get(it.tag);
      if (!t) { t = { kind: it.kind, steps: new Set() }; tags.set(it.tag, t); }
      t.steps.add(it.step); total++;
    }
  }
  $('#media-panel').hidden = !tags.size || $('#charts-panel').hidden;
  $('#media-count').textContent = tags.size ? total + (total === 1 ? ' item' : ' items') + ' \u00b7 ' + tags.size + (tags.size === 1 ? ' tag' : ' tags') : '';
  const root = $('#media');
  let grid = root.firstChild;
  if (!grid) { grid = h('div', { class: 'media-grid' }); root.appendChild(grid); }
  for (const [tag, c] of mediaCards) if (!tags.has(tag)) { c.el.remove(); mediaCards.delete(tag); }
  let prev = null;
  for (const tag of Array.from(tags.keys()).sort(natural)) {
    const t = tags.get(tag);
    let c = mediaCards.get(tag);
    if (!c) { c = makeMediaCard(tag, t.kind); mediaCards.set(tag, c); }
    c.steps = Array.from(t.steps).sort((a, b) => a - b);
    c.slider.max = String(Math.max(0, c.steps.length - 1));
    c.slider.disabled = c.steps.length < 2;
    const want = mediaStep.has(tag) ? mediaStep.get(tag) : c.steps[c.steps.length - 1];
    let i = c.steps.length - 1;
    while (i > 0 && c.steps[i] > want) i--;
    c.slider.value = String(i);
    place(grid, c.el, prev); prev = c.el;
    showMediaStep(c);
  }
}
function makeMediaCard(tag, kind) {
  const slider = h('input', { type: 'range', min: '0', max: '0', step: '1', value: '0', 'data-testid': 'media-slider', 'aria-label': 'Step of ' + tag });
  const out = h('output', { 'data-testid': 'media-step' });
  const runs = h('div', { class: 'media-runs' });
  const el = h('div', { class: 'media-card' + (kind === 'text' || kind === 'video' ? ' wide' : ''), 'data-tag': tag, 'data-kind': kind, 'data-testid': 'media-card' },
    h('div', { class: 'media-head' }, h('span', { class: 'chart-title', title: tag, text: tag }), h('span', { class: 'media-kind', text: kind })),
    h('div', { class: 'media-steps' }, h('span', { text: 'Step' }), slider, out), runs);
  const c = { tag: tag, kind: kind, el: el, slider: slider, out: out, runs: runs, steps: [], shown: new Map() };
  slider.addEventListener('input', () => {
    const s = c.steps[Number(slider.value)];
    if (Number(slider.value) >= c.steps.length - 1) mediaStep.delete(tag); else mediaStep.set(tag, s);
    showMediaStep(c);
  });
  return c;
}
// What each run logged under the card's tag at the chosen step (its latest at or before it).
function showMediaStep(c) {
  const step = c.steps[Number(c.slider.value)];
  c.out.textContent = step === undefined ? '' : String(step);
  const cols = [];
  for (const k of S.selected) {
    const m = mediaRuns.get(k); if (!m) continue;
    let best = null;
    for (const it of m.items) if (it.tag === c.tag && it.step <= step && (best === null || it.step > best)) best = it.step;
    const hasTag = m.items.some(it => it.tag === c.tag);
    if (!hasTag) continue;
    const items = best === null ? [] : m.items.filter(it => it.tag === c.tag && it.step === best).slice(-8);
    const sig = k + '@' + best + ':' + items.length;
    let col = c.shown.get(k);
    if (!col || col.sig !== sig) {
      const body = items.length ? items.map(it => mediaNode(k, it)) : [h('div', { class: 'media-none', text: 'nothing at or before this step' })];
      const node = h('div', { class: 'media-run', 'data-run-key': k, 'data-step': best === null ? '' : String(best), 'data-testid': 'media-run' },
        h('div', { class: 'media-run-label', title: k }, h('i', { style: 'background:' + colorOf(k) }),
          h('span', { text: labelOf(k) + (best !== null && best !== step ? ' \u00b7 step ' + best : '') })), body);
      col = { node: node, sig: sig };
      c.shown.set(k, col);
    }
    cols.push(col.node);
  }
  // more than two runs side by side take the whole row and wrap, instead of a sideways scroller
  c.el.classList.toggle('many', cols.length > 2);
  for (const k of Array.from(c.shown.keys())) if (!S.selectedSet.has(k)) c.shown.delete(k);
  c.runs.replaceChildren.apply(c.runs, cols);
}
function mediaNode(k, it) {
  const url = typeof it.url === 'string' && it.url.slice(0, 5) === '/api/' ? withToken(it.url) : null;
  const title = it.tag + ' \u00b7 step ' + it.step;
  if (it.kind === 'text') return h('pre', { 'data-testid': 'media-text', text: String(it.text === undefined ? '' : it.text) });
  if (!url) return h('div', { class: 'media-none', text: 'missing file' });
  if (it.kind === 'image') return h('img', { src: url, alt: title, title: title + (it.width ? ' \u00b7 ' + it.width + '\u00d7' + it.height : ''), loading: 'lazy', 'data-testid': 'media-img' });
  if (it.kind === 'audio') return h('audio', { src: url, controls: true, preload: 'metadata', title: title });
  if (it.kind === 'video') return it.mime === 'image/gif' ? h('img', { src: url, alt: title, 'data-testid': 'media-img' }) : h('video', { src: url, controls: true, preload: 'metadata', title: title });
  return h('div', { class: 'media-none', text: it.kind });
}

// --- 13.13 histogram panel
// One heat map per (tag, run), drawn by Charts.drawHeatmap; the maps of one tag share their
// value and step range so runs can be compared side by side.
const histCards = new Map();    // "tag\u0000run" -> {el, canvas, tip, data}
function renderHists() {
  const want = [];
  for (const k of S.selected) {
    const m = mediaRuns.get(k); if (!m || !m.hist) continue;
    for (const tag of m.hist.tags || []) want.push([tag, k, m.hist.histograms[tag]]);
  }
  want.sort((a, b) => natural(a[0], b[0]) || S.selected.indexOf(a[1]) - S.selected.indexOf(b[1]));
  $('#hist-panel').hidden = !want.length || $('#charts-panel').hidden;
  const root = $('#hists');
  let grid = root.firstChild;
  if (!grid) { grid = h('div', { class: 'media-grid' }); root.appendChild(grid); }
  const keep = new Set(want.map(w => w[0] + '\u0000' + w[1]));
  for (const [id, c] of histCards) if (!keep.has(id)) { c.el.remove(); histCards.delete(id); }
  let prev = null;
  for (const [tag, k, d] of want) {
    const id = tag + '\u0000' + k;
    let c = histCards.get(id);
    if (!c) {
      const canvas = h('canvas', { 'data-testid': 'hist-canvas' }), tip = h('div', { class: 'hist-tip' });
      const el = h('div', { class: 'media-card', 'data-tag': tag, 'data-run-key': k, 'data-testid': 'hist-card' },
        h('div', { class: 'media-head' }, h('span', { class: 'chart-title', title: tag, text: tag })),
        h('div', { class: 'media-run-label', title: k }, h('i', { style: 'background:' + colorOf(k) }), h('span', { text: labelOf(k) })),
        h('div', { class: 'hist-wrap' }, canvas), tip);
      c = { el: el, canvas: canvas, tip: tip, data: null, k: k, tag: tag, range: null };
      canvas.addEventListener('mousemove', e => histHover(c, e));
      canvas.addEventListener('mouseleave', () => { c.tip.textContent = ''; });
      histCards.set(id, c);
    }
    c.data = d;
    place(grid, c.el, prev); prev = c.el;
  }
  // every run's map of one tag shares the value and step range, so they can be compared
  const ranges = new Map();
  for (const [tag, , d] of want) {
    let range = ranges.get(tag);
    if (!range) { range = { low: Infinity, high: -Infinity, firstStep: Infinity, lastStep: -Infinity }; ranges.set(tag, range); }
    for (const edges of d.edges) if (edges.length) { range.low = Math.min(range.low, num(edges[0])); range.high = Math.max(range.high, num(edges[edges.length - 1])); }
    if (d.step.length) { range.firstStep = Math.min(range.firstStep, d.step[0]); range.lastStep = Math.max(range.lastStep, d.step[d.step.length - 1]); }
  }
  for (const c of histCards.values()) c.range = ranges.get(c.tag) || null;
  requestAnimationFrame(() => { for (const c of histCards.values()) drawHist(c); });
}
function drawHist(c) {
  if (!c.data || !c.canvas.isConnected || !c.data.step.length) return;
  const drawn = Charts.drawHeatmap(c.canvas, c.data, colorOf(c.k), c.range);
  c.drawn = drawn.columns;
  c.canvas.setAttribute('data-labels', drawn.labels.join('|'));
}
function histHover(c, e) {
  const d = c.data; if (!d || !d.step.length) return;
  const r = c.canvas.getBoundingClientRect();
  const cell = Charts.heatmapCell(c.canvas, d, c.range, e.clientX - r.left, e.clientY - r.top), i = cell.column, v = cell.value;
  if (i < 0) { c.tip.textContent = ''; return; }
  const ed = d.edges[i], cnt = d.counts[i];
  let b = -1; for (let j = 0; j < cnt.length; j++) if (v >= num(ed[j]) && v < num(ed[j + 1])) { b = j; break; }
  c.tip.textContent = 'step ' + d.step[i] + (b >= 0 ? ' \u00b7 [' + fmtNum(num(ed[b])) + ', ' + fmtNum(num(ed[b + 1])) + '): ' + fmtNum(num(cnt[b])) : '') +
    ' \u00b7 range ' + fmtNum(num(d.min[i])) + ' \u2026 ' + fmtNum(num(d.max[i]));
}

// --- 13.14 jobs and projects
// A distributed job writes one run per rank, all with the same `group`. The runs table folds
// them into one row per job (click the arrow to see the ranks); the charts draw a job's
// selected ranks overlaid, or as their mean with a min/max band (S.jobMode). The sidebar's
// project filter narrows the experiment list. Hooks elsewhere: computeView -> jobView,
// renderRow -> renderJobRow, syncCardSeries -> syncBandSeries, renderExperiments -> inProject.
let jobMembers = new Set();          // rows shown indented under their job's row
function jobId(r) { return r && r.group ? r.experiment + '/' + r.group : null; }
function viewRuns() { return S.matchedRows || []; }   // every run the filter matched, folded or not
function jobView(rows) {
  const byJob = new Map();
  jobMembers = new Set();
  for (const r of rows) { const g = jobId(r); if (g) { if (!byJob.has(g)) byJob.set(g, []); byJob.get(g).push(r); } }
  const out = [], done = new Set();
  for (const r of rows) {
    const g = jobId(r), members = g ? byJob.get(g) : null;
    if (!members || members.length < 2) { out.push(r); continue; }
    if (done.has(g)) continue;
    done.add(g);
    members.sort((a, b) => (isNull(a.rank) ? 1e9 : a.rank) - (isNull(b.rank) ? 1e9 : b.rank) || natural(a.name, b.name));
    out.push(jobRow(g, members));
    if (S.openJobs.has(g)) for (const m of members) { jobMembers.add(m); out.push(m); }
  }
  return out;
}
// One synthetic row for the job: the columns' cell functions read it like a run's row.
function jobRow(g, members) {
  const order = m => STATUS_ORDER[m.status] === undefined ? 9 : STATUS_ORDER[m.status];
  const status = members.reduce((a, m) => order(m) < order(a) ? m : a, members[0]).status;
  const sums = {}, counts = {};
  for (const m of members) for (const k of Object.keys(m.summary || {})) {
    const v = num(m.summary[k]); if (!isFinite(v)) continue;
    sums[k] = (sums[k] || 0) + v; counts[k] = (counts[k] || 0) + 1;
  }
  const summary = {}; for (const k of Object.keys(sums)) summary[k] = sums[k] / counts[k];
  const starts = members.map(m => parseTime(m.started_at)).filter(t => t !== null);
  const steps = members.map(m => m.last_step).filter(v => !isNull(v));
  const durs = members.map(m => m.duration_secs).filter(v => !isNull(v));
  const tags = Array.from(new Set([].concat.apply([], members.map(m => m.tags || []))));
  return { _job: g, name: members[0].group, group: members[0].group, experiment: members[0].experiment, members: members, status: status,
    started_at: starts.length ? new Date(Math.min.apply(null, starts) * 1000).toISOString() : null,
    duration_secs: durs.length ? Math.max.apply(null, durs) : null, _recv: Math.max.apply(null, members.map(m => m._recv || 0)) || Date.now(),
    last_step: steps.length ? Math.max.apply(null, steps) : null, rows: members.reduce((a, m) => a + (m.rows || 0), 0),
    tags: tags, params: members[0].params, summary: summary, description: '',
    hostname: Array.from(new Set(members.map(m => m.hostname).filter(Boolean))).join(', ') };
}
function renderJobRow(j, cols) {
  const keys = j.members.map(m => S.exp + '/' + m.name), on = keys.filter(k => S.selectedSet.has(k)).length, open = S.openJobs.has(j._job);
  const tr = h('tr', { class: 'job-row' + (open ? ' open' : '') + (on ? ' selected' : ''), 'data-job': j._job, 'data-status': j.status });
  tr.append(h('td', { class: 'c-sel' }, h('input', { type: 'checkbox', class: 'job-select', checked: on > 0 && on === keys.length,
    indeterminate: on > 0 && on < keys.length, 'aria-label': 'Select every rank of ' + j.name })));
  tr.append(h('td', { class: 'c-name', title: 'job ' + j.name + ': ' + keys.length + ' ranks (mean of their last values)' },
    h('button', { type: 'button', class: 'job-toggle', 'aria-expanded': open ? 'true' : 'false', 'aria-label': (open ? 'Hide' : 'Show') + ' the ranks of ' + j.name }, icon('chev', 12)),
    h('span', { text: j.name }), h('span', { class: 'job-count', text: keys.length + ' ranks' })));
  for (const c of cols) {
    const v = c.cell(j);
    const td = h('td', { class: (c.num ? 'num ' : '') + (c.kind ? 'grp-' + c.kind + (c.first ? ' first' : '') : '') + (c.mono ? ' mono' : ''), 'data-col': c.id });
    if (v === null || v === undefined || v === '') td.append(h('span', { class: 'null', text: '\u2013' })); else add(td, v);
    tr.append(td);
  }
  return tr;
}
function bindJobs() {
  $('#runs-table').tBodies[0].addEventListener('click', e => {
    const tr = e.target.closest('tr[data-job]'); if (!tr) return;
    const g = tr.getAttribute('data-job'), j = S.view.find(r => r._job === g); if (!j) return;
    if (e.target.classList.contains('job-select')) {
      const keys = j.members.map(m => S.exp + '/' + m.name), drop = new Set(keys);
      setSelection(e.target.checked ? S.selected.concat(keys.filter(k => !S.selectedSet.has(k))) : S.selected.filter(k => !drop.has(k)), true);
      return;
    }
    if (S.openJobs.has(g)) S.openJobs.delete(g); else S.openJobs.add(g);
    renderTable();
  });
  $('#job-mode').addEventListener('change', e => { setJobMode(e.target.value); writeHash(); });
  $('#project-filter').addEventListener('change', e => { S.project = e.target.value; renderExperiments(); writeHash(true); });
}
function setJobMode(mode) {
  S.jobMode = mode === 'band' ? 'band' : 'overlay';
  $('#job-mode').value = S.jobMode;
  // every card redraws from scratch: ranks' own lines give way to their band, or back
  for (const c of cards.values()) { c.chart.setXRange(null); c.zoomToken++; c.zoom = null; c.el.classList.remove('zoomed'); for (const id of c.loaded.keys()) c.chart.removeSeries(id); c.loaded.clear(); }
  scheduleCharts();
}
function applyJobSettings(hs) {
  if (S.jobMode !== hs.jobs) setJobMode(hs.jobs);
  if (S.project !== hs.project) { S.project = hs.project; renderExperiments(); }
}
// Jobs drawn as a band: those with two or more selected, loaded ranks.
function bandJobs(withHidden) {
  const jobs = new Map(), members = new Set();
  if (S.jobMode === 'band') {
    for (const k of S.selected) {
      const g = jobId(known.get(k)), rd = data.get(k);
      if (!g || !rd || !rd.ready || rd.error || (S.hidden.has(k) && !withHidden)) continue;
      if (!jobs.has(g)) jobs.set(g, []);
      jobs.get(g).push(k);
    }
    const rank = k => { const r = known.get(k); return r && !isNull(r.rank) ? r.rank : 1e9; };
    for (const ks of jobs.values()) ks.sort((a, b) => rank(a) - rank(b));   // rank 0 gives the colour
    for (const [g, ks] of Array.from(jobs)) { if (ks.length < 2) jobs.delete(g); else ks.forEach(k => members.add(k)); }
  }
  $('#job-mode-label').hidden = !S.selected.some(k => jobId(known.get(k)));
  return { jobs: jobs, members: members };
}
function inBand(k) { return (!!S.groupBy && S.selectedSet.has(k)) || (S.jobMode === 'band' && bandJobs().members.has(k)); }
// Ranks log the same steps: aggregate by step (x is the mean x of the ranks at that step).
// Groups of runs (13.20 group by) come through here too: bands.prefix/colorFor/labelFor name
// and colour their series, bands.std draws mean +- one standard deviation instead of min/max.
function syncBandSeries(c, bands, present) {
  for (const [g, keys] of bands.jobs) {
    const id = (bands.prefix || 'job:') + g, version = (bands.std ? 'std:' : '') + (bands.colorFor ? bands.colorFor(g) : '') + keys.map(k => k + '@' + data.get(k).version).join(',');
    const acc = new Map();
    for (const k of keys) {
      const rd = data.get(k), s = rd.series.get(c.key); if (!s) continue;
      const xs = xsOf(rd, s.step, s.time);
      for (let i = 0; i < s.step.length; i++) {
        const v = s.value[i]; let a = acc.get(s.step[i]);
        if (!a) { a = { x: 0, n: 0, sum: 0, sq: 0, k: 0, lo: Infinity, hi: -Infinity }; acc.set(s.step[i], a); }
        a.x += xs[i]; a.n++;
        if (v > -Infinity && v < Infinity) { a.sum += v; a.sq += v * v; a.k++; if (v < a.lo) a.lo = v; if (v > a.hi) a.hi = v; }
      }
    }
    if (!acc.size) continue;
    present.add(id);
    if (c.loaded.get(id) === version) continue;
    const steps = Array.from(acc.keys()).sort((a, b) => a - b), d = { x: [], y: [], lo: [], hi: [] };
    for (const st of steps) {
      const a = acc.get(st), mean = a.k ? a.sum / a.k : NaN, sd = a.k ? Math.sqrt(Math.max(0, a.sq / a.k - mean * mean)) : NaN;
      d.x.push(a.x / a.n); d.y.push(mean); d.lo.push(!a.k ? NaN : bands.std ? mean - sd : a.lo); d.hi.push(!a.k ? NaN : bands.std ? mean + sd : a.hi);
    }
    const first = known.get(keys[0]) || {};
    c.chart.setSeries(id, { x: d.x, y: d.y, lo: d.lo, hi: d.hi, color: bands.colorFor ? bands.colorFor(g) : colorOf(keys[0]),
      label: bands.labelFor ? bands.labelFor(g, keys) : (first.group || g) + ' (mean of ' + keys.length + ' ranks)' });
    c.loaded.set(id, version);
  }
}
function inProject(e) { return !S.project || (e.projects || []).indexOf(S.project) >= 0; }
function renderProjectFilter() {
  const sel = $('#project-filter'), names = new Set();
  for (const e of S.experiments) for (const p of e.projects || []) names.add(p);
  if (S.project) names.add(S.project);
  const list = Array.from(names).sort(natural);
  sel.hidden = !list.length;
  const sig = list.join('\n');
  if (sel.getAttribute('data-sig') !== sig) {
    sel.replaceChildren.apply(sel, [h('option', { value: '', text: 'All projects' })].concat(list.map(p => h('option', { value: p, text: p }))));
    sel.setAttribute('data-sig', sig);
  }
  sel.value = S.project;
}
// Run details: where a run came from (git, packages, scheduler ids, its job).
function provenanceItems(m, item) {
  const out = [], git = m.git && typeof m.git === 'object' ? m.git : null;
  if (git) {
    const bits = [git.branch, git.dirty ? 'dirty' : 'clean'].filter(Boolean).join(', ');
    out.push(item('Git', (git.commit ? String(git.commit).slice(0, 12) : '') + (bits ? ' (' + bits + ')' : ''), { field: 'git-info', title: git.commit || '' }));
    if (git.remote) out.push(item('Git remote', git.remote, { wide: true, field: 'git-remote' }));
    if (git.diff_artifact) out.push(item('Git diff', 'artifacts/' + git.diff_artifact, { field: 'git-diff' }));
  }
  const pairs = o => o && typeof o === 'object' ? Object.keys(o).map(k => k + (/^[a-z]/.test(k) ? ' ' : '=') + o[k]).join(', ') : '';
  if (pairs(m.packages)) out.push(item('Packages', pairs(m.packages), { wide: true, field: 'packages' }));
  if (pairs(m.scheduler)) out.push(item('Scheduler', pairs(m.scheduler), { wide: true, field: 'scheduler' }));
  return out;
}

// --- 13.15 live stream
// One EventSource per page. Its URL names the selected runs with the row cursor the page holds
// ("exp/run:since"), so a reopen neither repeats nor skips rows; it is reopened when the set of
// runs changes, and the old one is closed only once the new one has said hello.
const live = { es: null, sig: null, timer: 0, backoff: 1000, hadError: false, state: 'connecting' };
function setLive(state, text) {
  live.state = state;
  const el = $('#live-indicator'); el.setAttribute('data-state', state);
  $('#live-text').textContent = text;
}
function scheduleStream() { clearTimeout(live.timer); live.timer = setTimeout(() => openStream(false), 150); }
function subscriptions() {
  const out = [];
  for (const k of S.selected) { const rd = data.get(k); if (rd && rd.ready && !rd.error) out.push(k + ':' + rd.since); }
  // the open run's log, once the run is known to exist (an unknown one would fail the stream)
  if (S.detail && !S.selectedSet.has(S.detail) && known.has(S.detail)) out.push(S.detail);
  return out;
}
function openStream(force) {
  if (S.health && S.health.live === false) { setLive('static', 'Live updates off'); return; }
  if (!window.EventSource) { setLive('static', 'No live updates'); return; }
  const subs = subscriptions(), sig = subs.map(s => s.replace(/:\d+$/, '')).sort().join(',');
  if (!force && live.es && live.sig === sig && live.es.readyState !== 2) return;
  const es = new EventSource(withToken('/api/stream' + (subs.length ? '?runs=' + enc(subs.join(',')) : '')));
  const old = live.es;
  live.es = es; live.sig = sig;
  let said = false;
  const retire = () => { if (old && old !== live.es) old.close(); };
  setTimeout(retire, 5000);
  const json = f => ev => { let d; try { d = JSON.parse(ev.data); } catch (e) { return; } try { f(d); } catch (err) { console.warn('expman: bad event', err); } };
  es.addEventListener('hello', json(() => {
    said = true; retire();
    if (live.es !== es) return;
    setLive('live', 'Live');
    setOffline(false);
    live.backoff = 1000;
    if (live.hadError) { live.hadError = false; resync(); }
    // the new stream tells of media written from now on: fetch what came before it
    else for (const [k, m] of mediaRuns) { fetchMedia(k, m); fetchHists(k, m); }
  }));
  es.addEventListener('metrics', json(onMetricsEvent));
  es.addEventListener('log', json(onLogEvent));
  es.addEventListener('media', json(onMediaEvent));
  es.addEventListener('histograms', json(onHistEvent));
  es.addEventListener('status', json(d => upsertRow(d, false)));
  es.addEventListener('runs', json(d => { const r = d.run || d; if (!r.experiment && d.experiment) r.experiment = d.experiment; upsertRow(r, true); }));
  es.addEventListener('removed', json(d => dropRow(d.experiment, d.run)));
  es.onerror = () => {
    es.close();
    if (live.es !== es) return;
    live.es = null; live.hadError = true;
    setLive('reconnecting', said ? 'Reconnecting\u2026' : 'Offline');
    api('/api/health').catch(() => {});   // marks the page offline when the server is gone
    clearTimeout(live.timer);
    live.timer = setTimeout(() => openStream(true), live.backoff);
    live.backoff = Math.min(live.backoff * 2, 15000);
  };
}
// after a broken connection: fetch what the stream could not tell us
function resync() {
  loadExperiments();
  if (S.exp && S.paged) requery();
  else if (S.exp) api(runsUrl(S.exp)).then(j => { for (const r of decodeRuns(j)) upsertRow(r, false); }).catch(() => {});
  if (S.detail && logS.next !== null) logCatchUp();
  for (const k of S.selected) { const rd = data.get(k); if (rd && rd.error) { data.delete(k); loadRun(k); } }
  for (const [k, m] of mediaRuns) { fetchMedia(k, m); fetchHists(k, m); }
}
function upsertRow(row, isNew) {
  if (!row || !row.name) return;
  const exp = row.experiment, k = exp + '/' + row.name, prev = known.get(k);
  if (exp === S.exp) {
    const had = S.rows.has(row.name);
    row._sse = true;   // newer than any window answer asked for before now (fillWindow)
    addRow(row);
    if (S.paged && S.win) {
      const i = S.win.index.get(row.name);
      if (i !== undefined && S.win.rows[i] && S.win.rows[i].name === row.name) S.win.rows[i] = S.rows.get(row.name);
      if (isNew && !had) { S.total++; refreshWindowSoon(); }
    }
    if (isNew && !had) {
      flash.add(k); setTimeout(() => { flash.delete(k); scheduleTable(); }, 2500);
      if (S.autoSelect && S.selected.length < AUTO_SELECT) setSelection(S.selected.concat([k]), false);
    }
    scheduleTable();
  } else known.set(k, Object.assign({}, prev || {}, row));
  if (isNew || !prev || prev.status !== row.status) refreshExperimentsSoon();
  if (S.detail === k) renderDetailMeta(known.get(k));
  if (S.selectedSet.has(k) && (!prev || prev.status !== row.status)) renderLegend();
}

// a run folder deleted (expman clean, rm -r): out of the table and the experiment counts
function dropRow(exp, name) {
  if (typeof exp !== 'string' || typeof name !== 'string') return;
  const k = exp + '/' + name;
  known.delete(k);
  if (exp === S.exp && S.rows.delete(name)) scheduleTable();
  if (exp === S.exp && S.paged) refreshWindowSoon();   // the server's window and counts without it
  // a stream naming a run that is gone is refused: reopen it without the run
  if (S.selectedSet.has(k)) setSelection(S.selected.filter(x => x !== k), false);
  refreshExperimentsSoon();
}

// --- 13.16 run detail
const logS = { key: null, next: null, busy: false, chars: 0 };
function openDetail(k, push) {
  if (!k || k.indexOf('/') < 1) return;
  const token = ++S.detailToken;
  S.detail = k; S.editingDesc = false;
  const p = splitKey(k), base = runPath(k);
  $('#run-detail').hidden = false;
  $('#detail-name').textContent = p[1]; $('#detail-name').title = p[1];
  $('#detail-exp').textContent = p[0];
  $('#detail-select').checked = S.selectedSet.has(k);
  $('#detail-desc').removeAttribute('data-shown'); $('#detail-tags').removeAttribute('data-shown');
  const row = known.get(k);
  if (row) renderDetailMeta(row);
  else {
    $('#detail-meta').replaceChildren(h('div', { class: 'muted', text: 'Loading\u2026' }));
    for (const id of ['#detail-status', '#detail-desc', '#detail-tags', '#detail-summary']) $(id).replaceChildren();
  }
  $('#detail-params').replaceChildren(h('div', { class: 'muted', text: 'Loading\u2026' }));
  $('#artifacts').replaceChildren(h('div', { class: 'af-empty', text: 'Loading\u2026' }));
  $('#artifact-preview').replaceChildren(); $('#artifacts-note').textContent = '';
  writeHash(!!push); scheduleStream();
  const missing = () => S.detailMissing === token;
  api(base + '/metadata').then(m => {
    if (token !== S.detailToken) return;
    const fresh = !known.has(k);
    known.set(k, Object.assign({}, known.get(k) || {}, m, { _recv: Date.now() }));
    renderDetailMeta(known.get(k));
    if (fresh) scheduleStream();
  }).catch(e => {
    if (token !== S.detailToken) return;
    if (e.status !== 404) { $('#detail-meta').replaceChildren(h('div', { class: 'muted', text: 'Could not load this run: ' + e.message })); return; }
    // an unknown run (a stale link): one clear "not found", not "no parameters / no log"
    S.detailMissing = token;
    const text = 'Run \u201c' + p[1] + '\u201d not found in experiment \u201c' + p[0] + '\u201d.';
    $('#detail-meta').replaceChildren(h('div', { class: 'detail-missing', 'data-testid': 'detail-missing', text: text }));
    $('#detail-status').replaceChildren(h('span', { class: 'status crashed', text: 'not found' }));
    for (const id of ['#detail-desc', '#detail-tags', '#detail-summary', '#detail-params', '#log', '#artifacts', '#artifact-preview']) $(id).replaceChildren();
    $('#detail-select').disabled = true;
    $('#run-detail').classList.add('missing');
  });
  $('#detail-select').disabled = false;
  $('#run-detail').classList.remove('missing');
  api(base + '/config').then(j => {
    if (token !== S.detailToken || missing()) return;
    const cfg = (j && j.config) || {};
    $('#detail-params').replaceChildren(Object.keys(cfg).length ? paramTree(cfg, 0) : h('div', { class: 'muted', text: 'No parameters logged.' }));
  }).catch(e => {
    if (token !== S.detailToken || missing()) return;
    const msg = e.status === 404 ? 'No parameters logged.' : 'Could not load parameters: ' + e.message;
    $('#detail-params').replaceChildren(h('div', { class: 'muted', text: msg }));
  });
  loadLog(k, token);
  loadArtifacts(k, token);
}
function closeDetail() {
  if (!S.detail) return;
  S.detail = null; S.detailToken++; logS.key = null; logS.next = null;
  $('#run-detail').hidden = true;
  writeHash(); scheduleStream();
}
const META_SKIP = new Set(['name', 'experiment', 'description', 'tags', 'summary', 'params', 'status', '_recv', 'started_at', 'finished_at',
  'duration_secs', 'hostname', 'pid', 'command', 'git_commit', 'rows', 'last_step', 'heartbeat_at', 'python_version', 'python']);
function renderDetailMeta(m) {
  if (!m) return;
  $('#detail-status').replaceChildren(statusEl(m.status));
  const cmd = Array.isArray(m.command) ? m.command.join(' ') : m.command;
  const item = (label, value, opts) => {
    opts = opts || {};
    const dd = h('dd', { title: opts.title || (typeof value === 'string' ? value : null) });
    if (value === null || value === undefined || value === '') dd.append(h('span', { class: 'null', text: '\u2013' })); else add(dd, value);
    if (opts.live) { dd.setAttribute('data-live-base', String(m.duration_secs || 0)); dd.setAttribute('data-live-recv', String(m._recv || Date.now())); }
    return h('div', { class: opts.wide ? 'wide' : null, 'data-field': opts.field || label.toLowerCase() }, h('dt', { text: label }), dd);
  };
  const started = parseTime(m.started_at), fin = parseTime(m.finished_at), hb = parseTime(m.heartbeat_at);
  const items = [
    item('Status', statusEl(m.status), { field: 'status' }),
    item('Started', fmtFull(started), { field: 'started' }),
    item('Finished', m.status === 'running' ? 'still running' : fmtFull(fin), { field: 'finished' }),
    item('Duration', fmtDur(liveDuration(m)), { field: 'duration', live: m.status === 'running' }),
    item('Last step', isNull(m.last_step) ? null : Number(m.last_step).toLocaleString('en-US'), { field: 'steps' }),
    item('Rows', isNull(m.rows) ? null : Number(m.rows).toLocaleString('en-US'), { field: 'rows' }),
    item('Host', m.hostname, { field: 'host' }),
    item('PID', isNull(m.pid) ? null : String(m.pid), { field: 'pid' }),
    item('Python', m.python_version || m.python || null, { field: 'python' }),
    item('Git commit', m.git_commit ? String(m.git_commit).slice(0, 12) : null, { field: 'git', title: m.git_commit || '' }),
    item('Heartbeat', hb ? fmtAgo(hb) : null, { field: 'heartbeat', title: fmtFull(hb) })
  ];
  for (const key of Object.keys(m)) {
    const v = m[key];
    if (META_SKIP.has(key) || v === null || typeof v === 'object') continue;
    if (key === 'recorded_status' && v === m.status) continue;
    const label = key.replace(/_/g, ' ');
    items.push(item(label.charAt(0).toUpperCase() + label.slice(1), fmtValue(v), { field: key }));
  }
  items.push.apply(items, provenanceItems(m, item));
  items.push(item('Command', cmd || null, { wide: true, field: 'command' }));
  $('#detail-meta').replaceChildren.apply($('#detail-meta'), items);
  const box = $('#detail-desc');
  if (!S.editingDesc && box.getAttribute('data-shown') !== (m.description || '')) renderDescription(m);
  const tagsKey = JSON.stringify(m.tags || []);
  if ($('#detail-tags').getAttribute('data-shown') !== tagsKey) renderTags(m);
  const sum = m.summary || {}, keys = Object.keys(sum).sort(natural);
  $('#detail-summary-sec').hidden = !keys.length;
  $('#detail-summary').replaceChildren.apply($('#detail-summary'), keys.map(key => h('tr', null, h('td', { text: key }), h('td', { text: fmtNum(sum[key]) }))));
}
function renderDescription(m) {
  const box = $('#detail-desc'), k = S.detail;
  if (S.editingDesc) {
    box.removeAttribute('data-shown');
    const ta = h('textarea', { rows: 3, value: m.description || '', 'aria-label': 'Description', 'data-testid': 'description-input' });
    const save = async () => {
      try { await patchRun(k, { description: ta.value }); S.editingDesc = false; renderDescription(known.get(k)); }
      catch (e) { showError('Could not save the description', e); }
    };
    const cancel = () => { S.editingDesc = false; renderDescription(known.get(k)); };
    ta.addEventListener('keydown', e => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) save();
      if (e.key === 'Escape') { e.stopPropagation(); cancel(); }
    });
    box.replaceChildren(ta, h('div', { class: 'row-actions' },
      h('button', { type: 'button', class: 'btn small primary', text: 'Save', 'data-testid': 'description-save', onclick: save }),
      h('button', { type: 'button', class: 'btn small', text: 'Cancel', onclick: cancel })));
    ta.focus();
    return;
  }
  box.setAttribute('data-shown', m.description || '');
  box.replaceChildren(
    m.description ? h('p', { class: 'desc-text', text: m.description }) : h('p', { class: 'desc-text muted', text: 'No description.' }),
    h('button', { type: 'button', class: 'btn small', text: m.description ? 'Edit' : 'Add description', 'data-testid': 'description-edit',
      onclick: () => { S.editingDesc = true; renderDescription(known.get(k) || m); } }));
}
function renderTags(m) {
  const box = $('#detail-tags'), k = S.detail, tags = (m.tags || []).slice();
  const typing = box.querySelector('input'), draft = typing ? typing.value : '', focused = typing && document.activeElement === typing;
  box.setAttribute('data-shown', JSON.stringify(m.tags || []));
  const save = async next => { try { await patchRun(k, { tags: next }); } catch (e) { showError('Could not save the tags', e); } };
  const input = h('input', { type: 'text', placeholder: 'Add tag\u2026', 'aria-label': 'Add tag', 'data-testid': 'tag-input' });
  input.addEventListener('keydown', e => {
    if (e.key !== 'Enter') return;
    const t = input.value.trim(); if (!t) return;
    if (tags.indexOf(t) < 0) save(tags.concat([t]));
    input.value = '';
  });
  box.replaceChildren.apply(box, tags.map(t => h('span', { class: 'tag', title: t }, h('span', { text: t }),
    h('button', { type: 'button', title: 'Remove tag', 'aria-label': 'Remove tag ' + t, onclick: () => save(tags.filter(x => x !== t)) }, icon('close', 10)))).concat([input]));
  if (draft && draft.trim() !== '' && tags.indexOf(draft.trim()) < 0) input.value = draft;
  if (focused) input.focus();
}
async function patchRun(k, body) {
  const row = await api(runPath(k) + '/metadata', { method: 'PATCH', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (row && row.name) {
    row.experiment = row.experiment || splitKey(k)[0];
    known.set(k, Object.assign({}, known.get(k) || {}, row, { _recv: Date.now() }));
    if (row.experiment === S.exp) { addRow(row); scheduleTable(); }
    if (S.detail === k) renderDetailMeta(known.get(k));
  }
  return row;
}
function paramTree(obj, depth) {
  const box = h('div', { class: 'tree' });
  for (const k of Object.keys(obj)) {
    const v = obj[k];
    const nested = v && typeof v === 'object' && Object.keys(v).length &&
      !(Array.isArray(v) && v.length <= 8 && v.every(x => x === null || typeof x !== 'object'));
    if (nested) {
      box.append(h('details', { open: depth < 2 },
        h('summary', null, h('span', { class: 'tree-key', text: k }), h('span', { class: 'tree-count', text: Array.isArray(v) ? '[' + v.length + ']' : '{' + Object.keys(v).length + '}' })),
        paramTree(v, depth + 1)));
    } else {
      box.append(h('div', { class: 'tree-leaf', 'data-param': k }, h('span', { class: 'tree-key', text: k }),
        h('span', { class: 'tree-val ' + (v === null ? 'null' : typeof v), text: typeof v === 'string' ? v : v === null ? 'null' : fmtValue(v) })));
    }
  }
  return box;
}
async function loadLog(k, token) {
  const pre = $('#log');
  pre.replaceChildren(); logS.key = k; logS.next = null; logS.chars = 0; $('#log-note').textContent = '';
  try {
    const j = await api(runPath(k) + '/log?tail=131072');
    if (token !== S.detailToken || S.detailMissing === token) return;
    const start = j.next - utf8len(j.text || '');
    logS.next = j.next;
    if (start > 0) $('#log-note').textContent = 'last ' + fmtBytes(j.next - start) + ' of ' + fmtBytes(j.size);
    if (j.text) appendLog(j.text, true); else pre.append(h('span', { class: 'log-empty', text: 'Nothing logged yet.' }));
  } catch (e) {
    if (token !== S.detailToken || S.detailMissing === token) return;
    pre.append(h('span', { class: 'log-empty', text: e.status === 404 ? 'This run has no run.log.' : 'Could not load the log: ' + e.message }));
    if (e.status === 404) logS.next = 0;
  }
}
function appendLog(text, first) {
  if (!text) return;
  const pre = $('#log');
  const empty = pre.querySelector('.log-empty'); if (empty) empty.remove();
  const follow = $('#log-follow').checked && (first || pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40);
  const frag = document.createDocumentFragment();
  let plain = '';
  for (const line of text.split(/(?<=\n)/)) {
    const cls = /\b(ERROR|CRITICAL|FATAL|Traceback)\b/.test(line) ? 'log-err' : /\bWARN(ING)?\b/.test(line) ? 'log-warn' : '';
    if (!cls) { plain += line; continue; }
    if (plain) { frag.append(plain); plain = ''; }
    frag.append(h('span', { class: cls, text: line }));
  }
  if (plain) frag.append(plain);
  pre.append(frag);
  logS.chars += text.length;
  while (logS.chars > 2000000 && pre.firstChild) { logS.chars -= pre.firstChild.textContent.length; pre.firstChild.remove(); }
  if (follow) pre.scrollTop = pre.scrollHeight;
}
function onLogEvent(ev) {
  if (ev.run !== S.detail || logS.next === null || logS.key !== ev.run) return;
  const text = ev.text || '', b = utf8len(text), start = ev.next - b;
  if (ev.next <= logS.next) return;
  if (start === logS.next) { logS.next = ev.next; appendLog(text); }
  else if (start < logS.next) { const rest = new TextEncoder().encode(text).subarray(logS.next - start); logS.next = ev.next; appendLog(new TextDecoder().decode(rest)); }
  else logCatchUp();
}
async function logCatchUp() {
  if (logS.busy) return;
  logS.busy = true;
  const k = S.detail;
  try {
    for (let i = 0; i < 16; i++) {
      const j = await api(runPath(k) + '/log?since=' + logS.next);
      if (S.detail !== k || logS.key !== k) return;
      if (j.next > logS.next) { logS.next = j.next; appendLog(j.text); }
      if (j.next >= j.size || !j.text) break;
    }
  } catch (e) { /* the stream will try again */ }
  finally { logS.busy = false; }
}
const KIND_ICON = { image: 'image', table: 'table', text: 'text', binary: 'file' };
async function loadArtifacts(k, token) {
  const box = $('#artifacts');
  let list;
  try { list = ((await api(runPath(k) + '/artifacts')).artifacts) || []; }
  catch (e) {
    if (token !== S.detailToken || S.detailMissing === token) return;
    box.replaceChildren(h('div', { class: 'af-empty', text: e.status === 404 ? 'No artifacts.' : 'Could not list artifacts: ' + e.message })); return;
  }
  if (token !== S.detailToken || S.detailMissing === token) return;
  if (!list.length) { box.replaceChildren(h('div', { class: 'af-empty', text: 'No artifacts saved by this run.' })); return; }
  $('#artifacts-note').textContent = list.length + (list.length === 1 ? ' file' : ' files') + ' \u00b7 ' + fmtBytes(list.reduce((s, a) => s + (a.size || 0), 0));
  const root = { dirs: new Map(), files: [], size: 0 };
  for (const a of list) {
    const parts = String(a.path).split('/');
    let node = root; node.size += a.size || 0;
    for (let i = 0; i < parts.length - 1; i++) {
      if (!node.dirs.has(parts[i])) node.dirs.set(parts[i], { dirs: new Map(), files: [], size: 0 });
      node = node.dirs.get(parts[i]); node.size += a.size || 0;
    }
    node.files.push({ name: parts[parts.length - 1], a: a });
  }
  const rows = [];
  const walk = (node, depth, path) => {
    for (const name of Array.from(node.dirs.keys()).sort(natural)) {
      const d = node.dirs.get(name), p = path + name + '/';
      const kids = [];
      const row = h('div', { class: 'af-row af-dir open', 'data-dir': p, style: 'padding-left:' + (10 + depth * 16) + 'px' },
        icon('chev', 12, 'chev'), icon('folder'), h('span', { class: 'name', text: name }), h('span', { class: 'size', text: fmtBytes(d.size) }));
      row.addEventListener('click', () => { const open = row.classList.toggle('open'); for (const x of kids) x.hidden = !open || x.__closedBy; });
      rows.push(row);
      const before = rows.length;
      walk(d, depth + 1, p);
      for (let i = before; i < rows.length; i++) kids.push(rows[i]);
    }
    for (const f of node.files.sort((x, y) => natural(x.name, y.name))) {
      const a = f.a;
      const link = h('a', { href: rawUrl(k, a.path), download: f.name, title: 'Download', 'aria-label': 'Download ' + a.path }, icon('download', 13));
      link.addEventListener('click', e => e.stopPropagation());
      const row = h('div', { class: 'af-row af-file', 'data-path': a.path, 'data-kind': a.kind, title: a.path, style: 'padding-left:' + (10 + depth * 16 + 18) + 'px' },
        icon(KIND_ICON[a.kind] || 'file'), h('span', { class: 'name', text: f.name }), h('span', { class: 'size', text: fmtBytes(a.size) }), link);
      row.addEventListener('click', () => { for (const x of box.querySelectorAll('.af-row.active')) x.classList.remove('active'); row.classList.add('active'); previewArtifact(k, a); });
      rows.push(row);
    }
  };
  walk(root, 0, '');
  box.replaceChildren.apply(box, rows);
}
async function previewArtifact(k, a) {
  const box = $('#artifact-preview'), token = S.detailToken;
  const head = h('div', { class: 'preview-head' }, h('span', { class: 'name', text: a.path }), h('span', { text: fmtBytes(a.size) }), h('span', { class: 'spacer' }),
    h('a', { href: rawUrl(k, a.path), download: String(a.path).split('/').pop(), text: 'Download' }));
  box.replaceChildren(head, h('div', { class: 'muted', text: 'Loading preview\u2026' }));
  let j;
  try { j = await api(runPath(k) + '/artifacts/content?path=' + enc(a.path)); }
  catch (e) { if (token === S.detailToken) box.replaceChildren(head, h('div', { class: 'preview-binary', text: 'No preview: ' + e.message })); return; }
  if (token !== S.detailToken) return;
  let body, foot = null;
  if (j.kind === 'table') {
    const rows = j.rows || [];
    // a CSV arrives as text columns: a column whose every value reads as a number is one
    const cols = (j.columns || []).map((c, i) => {
      if (!/^(string|utf8|large_string|str)$/i.test(String(c.type))) return c;
      const vals = rows.map(r => r[i]).filter(v => v !== null && v !== '');
      if (!vals.length || !vals.every(v => /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/.test(String(v)))) return c;
      return { name: c.name, type: vals.every(v => /^\s*[-+]?\d+\s*$/.test(String(v))) ? 'int64' : 'float64', parsed: true };
    });
    const numeric = cols.map(c => /int|float|double|decimal/i.test(String(c.type)));
    body = h('div', { class: 'preview-box' }, h('table', { class: 'data', 'data-testid': 'preview-table' },
      h('thead', null, h('tr', null, cols.map(c => h('th', { title: c.name + ' (' + c.type + ')' }, h('span', { text: c.name }), h('small', { text: String(c.type) }))))),
      h('tbody', null, rows.map(r => h('tr', null, r.map((v, i) => h('td', {
        class: numeric[i] ? 'num' : null, text: v === null ? '' : cols[i] && cols[i].parsed && v !== '' ? fmtNum(Number(v)) : fmtValue(v), title: v === null ? 'null' : fmtValue(v) })))))));
    const total = isNull(j.total_rows) ? null : Number(j.total_rows), n = rows.length.toLocaleString('en-US');
    const shown = total === null ? 'First ' + n + ' rows' : 'Showing ' + n + ' of ' + total.toLocaleString('en-US') + ' rows';
    foot = h('div', { class: 'preview-foot', text: shown + ' \u00b7 ' + cols.length + ' columns' });
  } else if (j.kind === 'image') {
    const img = h('img', { src: safeUrl(j.url, k, a.path), alt: a.path, 'data-testid': 'preview-image' });
    img.addEventListener('error', () => { img.replaceWith(h('div', { class: 'preview-binary', text: 'The image could not be displayed.' })); });
    body = h('div', { class: 'preview-box' }, img);
  } else if (j.kind === 'text') {
    let text = j.text || '';
    if (/\.json$/i.test(a.path) && !j.truncated) { try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* keep as written */ } }
    body = h('div', { class: 'preview-box' }, h('pre', { 'data-testid': 'preview-text', text: text }));
    if (j.truncated) foot = h('div', { class: 'preview-foot', text: 'Truncated; download the file to see all of it.' });
  } else {
    body = h('div', { class: 'preview-box preview-binary' }, h('div', { text: 'No preview for this file type.' }),
      h('a', { class: 'btn small', style: 'margin-top:10px', href: safeUrl(j.url, k, a.path), download: String(a.path).split('/').pop(),
        'data-testid': 'preview-download' }, icon('download', 13), 'Download ' + fmtBytes(j.size === undefined ? a.size : j.size)));
  }
  box.replaceChildren.apply(box, [head, body, foot].filter(Boolean));
  box.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
}

// --- 13.19 params vs results
// A scatter (a param or a metric's last value on x, a metric on y) and parallel coordinates
// (the params that vary, then the y metric) over the experiment's runs, drawn on one canvas
// by hand. Runs the runs filter matches are drawn in colour (a selected run in its own
// colour), the others faint, so brushing does not move the axes under the pointer. Dragging
// along an axis (or a box on the scatter) brushes a range; the brushes become terms of the runs
// filter, e.g. "lr>=0.001 lr<=0.01" (side by side: AND), which the table applies.
const PVR_MAX_AXES = 8;
const pvr = { brushes: new Map(), base: null, expr: '', layout: null, drag: null, frame: 0, fields: [] };
let pvrShown = [];              // [{run, x, y}] of the points as last drawn (CSS px; tests read it)
function readPvr(text) {
  const out = { open: false, mode: 'scatter', x: '', y: '' };
  if (!text) return out;
  const parts = text.split(',');
  out.open = true; out.mode = parts[0] === 'parallel' ? 'parallel' : 'scatter';
  out.x = parts[1] ? decodeURIComponent(parts[1]) : ''; out.y = parts[2] ? decodeURIComponent(parts[2]) : '';
  return out;
}
function writePvr() { return [S.pvr.mode, enc(S.pvr.x), enc(S.pvr.y)].join(','); }
function applyPvrSettings(p) {
  if (p.open === S.pvr.open && p.mode === S.pvr.mode && p.x === S.pvr.x && p.y === S.pvr.y) return;
  S.pvr = { open: p.open, mode: p.mode, x: p.x, y: p.y };
  showPvr();
}
// A paged table (more than PAGE_ALL runs) holds a few pages of rows: the view then asks the
// server for the fields it draws of every run (columns=, ~40 bytes a run) and, under a filter,
// for the names of the runs it matches (where=); again when the fields, the filter or the runs
// change. A row the stream changed since is taken from S.rows (it is newer).
const pvrData = { sig: '', exp: null, rows: null, cols: new Set(), byName: new Map(), varying: null, at: 0,
  matchSig: '', matched: null, busy: false, failed: '' };
function pvrRows() {
  if (!S.paged) return Array.from(S.rows.values());
  if (!pvrData.rows || pvrData.exp !== S.exp) return [];
  return pvrData.rows.map(r => { const cur = S.rows.get(r.name); return cur && cur._sse && cur._recv > pvrData.at ? cur : r; });
}
function pvrMatched(rows) {
  if (S.paged) return pvrData.matched && S.filter ? pvrData.matched : new Set(rows.map(r => r.name));
  return new Set((S.matchedRows || rows).map(r => r.name));
}
function pvrRow(name) { return S.rows.get(name) || pvrData.byName.get(name); }
// Fetch what the view draws when it is not what the page holds; schedulePvr again once in.
function pvrFetch(ids) {
  if (!S.paged || pvrData.busy) return;
  const exp = S.exp, cols = ids.filter(Boolean), gen = S.total + '|' + exp;
  const sig = gen + '|' + cols.join(',');
  const matchSig = gen + '|' + (S.filter || '');
  const wantRows = pvrData.sig !== sig, wantMatch = !!S.filter && pvrData.matchSig !== matchSig;
  if (!wantRows && !wantMatch) return;
  const base = expPath(exp) + '/runs?format=columns&sort=name&order=asc';
  // a key with a comma in it cannot be named in columns=: then every param and metric comes
  const pick = cols.some(id => id.indexOf(',') >= 0) ? 'params,summary' : cols.join(',');
  const at = Date.now();
  pvrData.busy = true;
  Promise.all([
    wantRows ? api(base + '&columns=' + enc(pick || 'name')) : null,
    wantMatch ? api(base + '&columns=name&where=' + enc(S.filter)).catch(e => { if (e.status === 400) return { bad: e.message }; throw e; }) : null
  ]).then(got => {
    pvrData.busy = false;
    if (exp !== S.exp) { schedulePvr(); return; }
    if (got[0]) {
      const rows = decodeRuns(got[0]);
      pvrData.rows = rows; pvrData.exp = exp; pvrData.cols = new Set(pick === 'params,summary' ? ['*'] : cols); pvrData.byName = new Map(rows.map(r => [r.name, r]));
      pvrData.varying = new Set(got[0].varying || []); pvrData.sig = sig; pvrData.at = at;
    }
    if (got[1]) { pvrData.matched = got[1].bad ? null : new Set(decodeRuns(got[1]).map(r => r.name)); pvrData.matchSig = matchSig; }
    pvrData.failed = '';
    schedulePvr();
  }, e => {
    pvrData.busy = false; pvrData.failed = e.message || String(e);
    schedulePvr();
    // no retry storm while the server is away: the next change of runs or filter asks again
    pvrData.sig = sig; pvrData.matchSig = matchSig;
  });
}
// The fields a run can be placed by: 'p:<param>' (numbers; strings and bools as categories)
// and 'm:<metric>' (its last value).
function pvrFields(rows) {
  const params = [], metrics = [];
  for (const k of Array.from(S.paramKeys).sort(natural)) {
    // paged: the server says which params vary (the rows hold only the drawn fields)
    if (S.paged) { params.push({ id: 'p:' + k, key: k, kind: 'param', varies: !!pvrData.varying && pvrData.varying.has(k) }); continue; }
    const seen = new Set();
    for (const r of rows) { const v = r.params ? r.params[k] : undefined; if (!isNull(v) && typeof v !== 'object') seen.add(fmtValue(v)); }
    if (seen.size) params.push({ id: 'p:' + k, key: k, kind: 'param', varies: seen.size > 1 });
  }
  for (const k of Array.from(S.metricKeys).sort(natural)) metrics.push({ id: 'm:' + k, key: k, kind: 'metric', varies: true });
  return { params: params, metrics: metrics };
}
function pvrValue(r, id) {
  const v = id.slice(0, 2) === 'p:' ? (r.params ? r.params[id.slice(2)] : undefined) : (r.summary ? r.summary[id.slice(2)] : undefined);
  if (isNull(v) || typeof v === 'object') return null;
  if (typeof v === 'number' || (id.slice(0, 2) === 'm:' && isFinite(num(v)))) return num(v);
  return fmtValue(v);
}
// The name the runs filter knows a field by: the bare key, or p:/m: when a param and a metric share it.
const OWN_KEYS = new Set(['name', 'status', 'tag', 'tags', 'project', 'group', 'host', 'description', 'rank', 'step', 'rows', 'duration']);
function pvrFilterKey(id) {
  const key = id.slice(2), prefix = (S.paramKeys.has(key) && S.metricKeys.has(key)) || OWN_KEYS.has(key.toLowerCase()) ? id.slice(0, 2) : '';
  return prefix + (/^[\w./-]+$/.test(key) ? key : '"' + key.replace(/"/g, '\\"') + '"');
}
// One axis: numbers on a linear scale padded 5 %, or categories spread evenly.
function pvrAxis(id, rows) {
  const values = rows.map(r => pvrValue(r, id)), nums = values.filter(v => typeof v === 'number' && isFinite(v));
  const cats = Array.from(new Set(values.filter(v => typeof v === 'string'))).sort(natural);
  if (cats.length && cats.length >= nums.length) {
    return { id: id, cats: cats, toUnit: v => cats.length < 2 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1), label: id.slice(2) };
  }
  let lo = Math.min.apply(null, nums), hi = Math.max.apply(null, nums);
  if (nums.length > 1 && lo > 0 && hi / lo >= 50) {   // learning rates and the like: a log axis
    const l0 = Math.log10(lo) - 0.05 * Math.log10(hi / lo), l1 = Math.log10(hi) + 0.05 * Math.log10(hi / lo);
    return { id: id, log: true, lo: l0, hi: l1, toUnit: v => typeof v === 'number' && v > 0 ? (Math.log10(v) - l0) / (l1 - l0) : NaN,
      fromUnit: u => Math.pow(10, l0 + u * (l1 - l0)), label: id.slice(2) + ' (log)' };
  }
  if (!nums.length) { lo = 0; hi = 1; }
  if (hi === lo) { lo -= Math.abs(lo) * 0.1 || 1; hi += Math.abs(hi) * 0.1 || 1; }
  const pad = (hi - lo) * 0.05;
  lo -= pad; hi += pad;
  return { id: id, lo: lo, hi: hi, toUnit: v => typeof v === 'number' && isFinite(v) ? (v - lo) / (hi - lo) : NaN,
    fromUnit: u => lo + u * (hi - lo), label: id.slice(2) };
}
function pvrTicks(axis, count) {
  if (axis.cats) return axis.cats.map(c => ({ u: axis.toUnit(c), text: c }));
  if (axis.log) {
    const out = [], every = Math.max(1, Math.ceil((axis.hi - axis.lo) / Math.max(1, count)));
    for (let d = Math.ceil(axis.lo); d <= axis.hi; d++) {
      for (const m of (axis.hi - axis.lo) * 3 <= count ? [1, 2, 5] : [1]) {
        const v = m * Math.pow(10, d), u = axis.toUnit(v);
        if (u >= 0 && u <= 1 && (m > 1 || d % every === 0)) out.push({ u: u, text: fmtNum(v) });
      }
    }
    return out;
  }
  const span = axis.hi - axis.lo, raw = span / Math.max(1, count), p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
  const step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p, out = [];
  const decimals = Math.max(0, Math.min(10, -Math.floor(Math.log10(step) + 1e-9)));
  for (let v = Math.ceil(axis.lo / step) * step; v <= axis.hi + 1e-9 * span && out.length < 30; v += step) {
    const a = Math.abs(v);
    out.push({ u: axis.toUnit(v), text: a && (a >= 1e5 || a < 1e-4) ? Number(v.toPrecision(3)).toExponential().replace('e+', 'e') : v.toFixed(decimals) });
  }
  return out;
}
function showPvr() {
  const panel = $('#pvr-panel');
  panel.classList.toggle('open', S.pvr.open);
  $('#pvr-body').hidden = !S.pvr.open;
  $('#pvr-toggle').setAttribute('aria-expanded', S.pvr.open ? 'true' : 'false');
  for (const b of document.querySelectorAll('[data-pvr-mode]')) b.classList.toggle('on', b.getAttribute('data-pvr-mode') === S.pvr.mode);
  $('#pvr-x-label').hidden = S.pvr.mode !== 'scatter';
  schedulePvr();
}
function schedulePvr() {
  if (pvr.frame || !S.pvr.open || $('#pvr-panel').hidden) return;
  pvr.frame = requestAnimationFrame(() => { pvr.frame = 0; drawPvr(); });
}
function syncPvrPickers(fields) {
  const all = fields.params.concat(fields.metrics), ids = new Set(all.map(f => f.id));
  const fill = (sel, list, want) => {
    const sig = list.map(f => f.id).join('\n');
    if (sel.getAttribute('data-sig') !== sig) {
      const group = (label, items) => items.length ? h('optgroup', { label: label }, items.map(f => h('option', { value: f.id, text: f.key }))) : null;
      sel.replaceChildren.apply(sel, [group('Params', list.filter(f => f.kind === 'param')), group('Metrics (last value)', list.filter(f => f.kind === 'metric'))].filter(Boolean));
      sel.setAttribute('data-sig', sig);
    }
    sel.value = want;
  };
  // defaults: the first param that varies against the first metric with a goal
  // (S.pvr keeps what the URL or the user asked for, even while the runs are still loading)
  const x = ids.has(S.pvr.x) ? S.pvr.x : (fields.params.find(f => f.varies) || all[0] || { id: '' }).id;
  const y = ids.has(S.pvr.y) && S.pvr.y.slice(0, 2) === 'm:' ? S.pvr.y : (fields.metrics.find(f => goalOf(f.key)) || fields.metrics[0] || { id: '' }).id;
  fill($('#pvr-x'), all, x);
  fill($('#pvr-y'), fields.metrics, y);
  return [x, y];
}
function drawPvr() {
  const canvas = $('#pvr-canvas');
  const rows = pvrRows(), fields = pvrFields(rows);
  const xy = syncPvrPickers(fields);
  const ids = S.pvr.mode === 'scatter' ? xy
    : fields.params.filter(f => f.varies).slice(0, PVR_MAX_AXES - 1).map(f => f.id).concat(xy[1] ? [xy[1]] : []);
  pvrFetch(ids);
  // paged: rows fetched for other fields have none of these (an axis of nothing): wait for them
  const covered = !S.paged || pvrData.cols.has('*') || ids.every(id => !id || pvrData.cols.has(id));
  const matched = pvrMatched(rows), loading = S.paged && (!rows.length || !covered || pvrData.busy) && !pvrData.failed;
  $('#pvr-note').textContent = pvrData.failed && S.paged ? 'Could not load the runs: ' + pvrData.failed
    : rows.length ? matched.size + ' of ' + rows.length + ' runs match the filter' + (loading ? ' \u00b7 loading\u2026' : '') : '';
  $('#pvr-note').setAttribute('data-loading', loading ? 'true' : 'false');
  $('#pvr-clear').hidden = !pvr.brushes.size;
  const ok = rows.length && covered && ids.length >= 2 && ids.every(Boolean);
  $('#pvr-empty').hidden = !!ok;
  $('#pvr-empty').textContent = rows.length && covered ? 'Params vs results needs a param that varies between the runs and a metric.'
    : loading ? 'Loading the runs\u2026' : 'No runs.';
  canvas.hidden = !ok;
  pvrShown = [];
  if (!ok) { pvr.layout = null; return; }
  const axes = ids.map(id => pvrAxis(id, rows)), accent = getComputedStyle(document.documentElement).getPropertyValue('--accent').trim();
  const points = rows.map(r => ({ id: r.name, units: axes.map(a => a.toUnit(pvrValue(r, a.id))), color: pvrColor(r, matched, accent) }))
    .filter(p => S.pvr.mode !== 'scatter' || (isFinite(p.units[0]) && isFinite(p.units[1])))
    .sort((a, b) => (a.color ? 1 : 0) - (b.color ? 1 : 0));   // the runs the filter matches on top
  // a run without a value on an axis (a diverged run's NaN) is left off the scatter: say so
  // (short, so the panel's title keeps its line; the names and why in the note's tooltip)
  const drawn = new Set(points.map(p => p.id)), left = S.pvr.mode === 'scatter' ? rows.filter(r => !drawn.has(r.name)).map(r => r.name) : [];
  if (left.length) $('#pvr-note').textContent += ' \u00b7 ' + left.length + ' not drawn';
  $('#pvr-note').title = left.length ? 'No value for ' + axes.map(a => a.id.slice(2)).join(' or ') + ': ' + left.slice(0, 20).join(', ') + (left.length > 20 ? ', \u2026' : '') : '';
  const spec = { axes: axes.map(a => ({ label: a.label, ticks: pvrTicks(a, S.pvr.mode === 'scatter' ? 8 : 7) })), points: points, boxes: pvrBoxes(axes) };
  const layout = S.pvr.mode === 'scatter' ? Charts.drawScatter(canvas, spec) : Charts.drawParallel(canvas, spec);
  pvr.layout = Object.assign({ mode: S.pvr.mode, axes: axes }, layout);
  pvrShown = layout.marks.map(m => Object.assign({ run: m.id }, m));
}
// a run the filter matches: its own colour when selected, else the accent; the others faint (null)
function pvrColor(r, matched, accent) {
  const k = S.exp + '/' + r.name;
  return !matched.has(r.name) ? null : S.selectedSet.has(k) ? colorOf(k) : accent;
}
// The brushes (and a drag in progress) in unit coordinates, for the drawing.
function pvrBoxes(axes) {
  const boxes = [], d = pvr.drag;
  if (S.pvr.mode === 'scatter') {
    const span = (a, b) => b ? [a.toUnit(b[0]), a.toUnit(b[1])] : [0, 1];
    if (pvr.brushes.has(axes[0].id) || pvr.brushes.has(axes[1].id)) {
      const sx = span(axes[0], pvr.brushes.get(axes[0].id)), sy = span(axes[1], pvr.brushes.get(axes[1].id));
      boxes.push({ x0: sx[0], x1: sx[1], y0: sy[0], y1: sy[1] });
    }
    if (d) boxes.push({ x0: Math.min(d.from[0], d.to[0]), x1: Math.max(d.from[0], d.to[0]), y0: Math.min(d.from[1], d.to[1]), y1: Math.max(d.from[1], d.to[1]) });
  } else {
    axes.forEach((a, i) => { const b = pvr.brushes.get(a.id); if (b) boxes.push({ axis: i, from: a.toUnit(b[0]), to: a.toUnit(b[1]) }); });
    if (d) boxes.push({ axis: d.axis, from: Math.min(d.from[1], d.to[1]), to: Math.max(d.from[1], d.to[1]) });
  }
  return boxes;
}
// Ends of a brushed range, rounded outwards to 4 significant digits so the filter text stays short.
function roundOut(value, up) {
  if (!value || !isFinite(value)) return value;
  const p = Math.pow(10, Math.floor(Math.log10(Math.abs(value))) - 3);
  return Number(((up ? Math.ceil(value / p) : Math.floor(value / p)) * p).toPrecision(4));
}
function setBrush(axis, u0, u1) {
  if (axis.cats || Math.abs(u1 - u0) < 0.01) { pvr.brushes.delete(axis.id); return; }
  const lo = axis.fromUnit(Math.max(0, Math.min(u0, u1))), hi = axis.fromUnit(Math.min(1, Math.max(u0, u1)));
  pvr.brushes.set(axis.id, [roundOut(lo, false), roundOut(hi, true)]);
}
// The brushes as runs-filter terms, ANDed onto whatever the filter held before brushing began.
function applyBrushes() {
  if (pvr.base === null || S.filter !== pvr.expr) pvr.base = S.filter === pvr.expr ? '' : S.filter;
  const terms = [];
  for (const [id, b] of pvr.brushes) { const k = pvrFilterKey(id); terms.push(k + '>=' + fmtNum(b[0]), k + '<=' + fmtNum(b[1])); }
  // Terms side by side: the page's own filter (13.8) and the server's where= language (9.4)
  // both read them as AND; the latter also reads an explicit AND, which the former does not.
  const brush = terms.join(' ');
  const base = / OR |\|\|/i.test(pvr.base || '') ? '(' + pvr.base + ')' : pvr.base;
  const text = [base, brush].filter(Boolean).join(' ');
  pvr.expr = text;
  if (!pvr.brushes.size) pvr.base = null;
  S.filter = text; $('#filter').value = text;
  renderTable(); writeHash();
  schedulePvr();
}
function bindPvr() {
  const canvas = $('#pvr-canvas');
  $('#pvr-toggle').addEventListener('click', () => { S.pvr.open = !S.pvr.open; showPvr(); writeHash(); });
  for (const b of document.querySelectorAll('[data-pvr-mode]')) {
    b.addEventListener('click', () => { S.pvr.mode = b.getAttribute('data-pvr-mode'); showPvr(); writeHash(); });
  }
  $('#pvr-x').addEventListener('change', e => { S.pvr.x = e.target.value; schedulePvr(); writeHash(); });
  $('#pvr-y').addEventListener('change', e => { S.pvr.y = e.target.value; schedulePvr(); writeHash(); });
  $('#pvr-clear').addEventListener('click', () => { pvr.brushes.clear(); applyBrushes(); });
  const local = e => { const b = canvas.getBoundingClientRect(); return [e.clientX - b.left, e.clientY - b.top]; };
  // pixel -> units of the plot's axes (x along the scatter's x, y along every vertical axis)
  const units = (L, at) => [L.mode === 'scatter' ? (at[0] - L.left) / L.plotWidth : 0, 1 - (at[1] - L.top) / L.plotHeight];
  canvas.addEventListener('mousedown', e => {
    const L = pvr.layout; if (!L || e.button !== 0) return;
    e.preventDefault();
    const start = local(e);
    let axis = -1;
    if (L.mode === 'parallel') {
      L.axes.forEach((a, i) => { if (Math.abs(L.axisX(i) - start[0]) < 16) axis = i; });
      if (axis < 0) return;
    }
    const clamp = u => [Math.max(0, Math.min(1, u[0])), Math.max(0, Math.min(1, u[1]))];
    const d = { axis: axis, start: start, end: start, from: clamp(units(L, start)), to: clamp(units(L, start)) };
    pvr.drag = d;
    const move = ev => { d.end = local(ev); d.to = clamp(units(L, d.end)); drawPvr(); };
    const up = () => {
      window.removeEventListener('mousemove', move); window.removeEventListener('mouseup', up);
      pvr.drag = null;
      const dx = Math.abs(d.end[0] - d.start[0]), dy = Math.abs(d.end[1] - d.start[1]);
      if (dx < 4 && dy < 4) { pvrClick(L, d.start); drawPvr(); return; }
      if (L.mode === 'scatter') {
        if (dx >= 4) setBrush(L.axes[0], d.from[0], d.to[0]); else pvr.brushes.delete(L.axes[0].id);
        if (dy >= 4) setBrush(L.axes[1], d.from[1], d.to[1]); else pvr.brushes.delete(L.axes[1].id);
      } else setBrush(L.axes[axis], d.from[1], d.to[1]);
      applyBrushes();
    };
    window.addEventListener('mousemove', move); window.addEventListener('mouseup', up);
  });
  canvas.addEventListener('mousemove', e => {
    if (pvr.drag || !pvr.layout) return;
    const hit = pvrHit(pvr.layout, local(e));
    canvas.title = hit ? hit.name + ' \u00b7 ' + pvr.layout.axes.map(a => a.label + ' ' + fmtValue(pvrValue(hit, a.id))).join(', ') : '';
  });
  // the table's filter or rows changed: redraw (the table re-renders its body then)
  if (window.MutationObserver) new window.MutationObserver(schedulePvr).observe($('#runs-table'), { childList: true, subtree: true });
  window.addEventListener('resize', schedulePvr);
}
function pvrHit(L, at) {
  let best = null, bestD = 64;
  if (L.mode === 'scatter') {
    for (const p of pvrShown) { const d = (p.x - at[0]) ** 2 + (p.y - at[1]) ** 2; if (d < bestD) { bestD = d; best = pvrRow(p.run); } }
  } else {
    const i = Math.round((at[0] - L.axisX(0)) / L.gap);
    if (i < 0 || i >= L.axes.length || Math.abs(L.axisX(i) - at[0]) > 12) return null;
    for (const s of pvrShown) { const d = (s.ys[i] - at[1]) ** 2; if (d < bestD) { bestD = d; best = pvrRow(s.run); } }
  }
  return best;
}
function pvrClick(L, at) {
  const r = pvrHit(L, at);
  if (r) { const k = S.exp + '/' + r.name; toggleRun(k, !S.selectedSet.has(k)); }
}

// --- 13.20 group by
// Runs of the selection with the same value of a param (or the same tags) are drawn as one
// series per group: their mean by step with a min/max or +-1 std band, through the ranks' band
// code (syncBandSeries). A group legend lists the value, the runs in it and its colour.
let groupList = [];             // [{value, keys, color}] as last drawn
function groupValue(k) {
  const r = known.get(k) || {};
  if (S.groupBy === 'tags') return (r.tags || []).slice().sort(natural).join(', ') || '(no tags)';
  const v = r.params ? r.params[S.groupBy.slice(2)] : undefined;
  return isNull(v) ? '(not set)' : fmtValue(v);
}
function groupBands(withHidden) {
  if (!S.groupBy) return null;
  const jobs = new Map(), members = new Set(), raw = new Map();
  for (const k of S.selected) {
    const rd = data.get(k);
    if (!rd || !rd.ready || rd.error) continue;
    const g = groupValue(k);
    const params = S.groupBy !== 'tags' && known.get(k) ? known.get(k).params : null;   // numbers sort as numbers
    if (!raw.has(g)) raw.set(g, params && !isNull(params[S.groupBy.slice(2)]) ? params[S.groupBy.slice(2)] : g);
    members.add(k);
    if (S.hidden.has(k) && !withHidden) continue;
    if (!jobs.has(g)) jobs.set(g, []);
    jobs.get(g).push(k);
  }
  const order = Array.from(raw.keys()).sort((a, b) => cmpValues(raw.get(a), raw.get(b)));
  const colour = new Map(order.map((g, i) => [g, PALETTE[i % PALETTE.length]]));
  const sorted = new Map(order.filter(g => jobs.has(g)).map(g => [g, jobs.get(g)]));
  groupList = order.map(g => ({ value: g, keys: S.selected.filter(k => members.has(k) && groupValue(k) === g), color: colour.get(g) }));
  const name = S.groupBy === 'tags' ? 'tags' : S.groupBy.slice(2);
  return { jobs: sorted, members: members, prefix: 'grp:', std: S.groupBand === 'std', colorFor: g => colour.get(g),
    labelFor: (g, keys) => name + ' = ' + g + ' (mean of ' + keys.length + (keys.length === 1 ? ' run)' : ' runs)') };
}
function resetSeries() {
  for (const c of cards.values()) { c.chart.setXRange(null); c.zoomToken++; c.zoom = null; c.el.classList.remove('zoomed'); for (const id of c.loaded.keys()) c.chart.removeSeries(id); c.loaded.clear(); }
  scheduleCharts();
}
function setGroupBy(by, band) {
  if (S.groupBy === by && S.groupBand === band) return;
  S.groupBy = by; S.groupBand = band;
  $('#group-by').value = by; $('#group-band').value = band; $('#group-band-label').hidden = !by;
  resetSeries(); renderLegend(); renderGroupLegend(); scheduleTable();
}
function applyGroupSettings(hs) { syncGroupPicker(hs.group); setGroupBy(hs.group, hs.gband); setColorBy(hs.cby); }
function syncGroupPicker(extra) {
  const sel = $('#group-by'), keys = Array.from(S.paramKeys).sort(natural);
  const want = extra !== undefined ? extra : S.groupBy;
  if (want && want.slice(0, 2) === 'p:' && keys.indexOf(want.slice(2)) < 0) keys.push(want.slice(2));
  const sig = keys.join('\n');
  if (sel.getAttribute('data-sig') !== sig) {
    sel.replaceChildren(h('option', { value: '', text: 'None' }), h('option', { value: 'tags', text: 'Tags' }),
      keys.length ? h('optgroup', { label: 'Params' }, keys.map(k => h('option', { value: 'p:' + k, text: k }))) : null);
    sel.setAttribute('data-sig', sig);
  }
  sel.value = want;
  syncColorPicker();
}
let groupSig = '';
function renderGroupLegend() {
  const box = $('#group-legend'), on = !!S.groupBy;
  $('#legend').hidden = on; box.hidden = !on;
  if (!on) { groupSig = ''; return; }
  groupBands(true);
  const sig = S.groupBy + '|' + groupList.map(g => g.value + ':' + g.keys.length + ':' + g.color + ':' + g.keys.every(k => S.hidden.has(k))).join('|');
  if (sig === groupSig) return;
  groupSig = sig;
  scheduleTable();   // the group rows' swatches take the legend's colours
  const name = S.groupBy === 'tags' ? 'tags' : S.groupBy.slice(2);
  box.replaceChildren.apply(box, [h('span', { class: 'group-by-name', text: 'Grouped by ' + name + ':' }),
    groupList.length ? '' : h('span', { class: 'muted', text: 'no loaded runs yet' })].concat(groupList.map(g => {
      const off = g.keys.every(k => S.hidden.has(k));
      return h('span', { class: 'chip' + (off ? ' off' : ''), 'data-group-value': g.value, role: 'button', tabindex: '0',
        title: g.keys.map(labelOf).join(', ') + '\n(Alt-click: show only this group)',
        onclick: ev => { if (ev.altKey || ev.shiftKey) showOnly(g.keys); else toggleHidden(g.keys, !off); },
        onmouseenter: () => Charts.configure({ highlight: off ? null : 'grp:' + g.value }), onmouseleave: () => Charts.configure({ highlight: null }) },
      h('i', { style: 'background:' + g.color }), h('span', { class: 'chip-label', text: g.value }),
      h('span', { class: 'count', text: g.keys.length + (g.keys.length === 1 ? ' run' : ' runs') }));
    })));
}
function bindGroups() {
  $('#group-by').addEventListener('change', e => { setGroupBy(e.target.value, S.groupBand); writeHash(); });
  $('#group-band').addEventListener('change', e => { setGroupBy(S.groupBy, e.target.value === 'std' ? 'std' : 'minmax'); writeHash(); });
  bindGroupRows(); bindColorBy();
}

// Group rows in the runs table: with a group-by set the table shows one row per group (its
// value, its number of runs, and per column the mean of its runs' values with their lowest and
// highest in small text; params its runs share), sorted by the table's sort, each unfolding
// (the triangle) into its runs; its checkbox selects them. A table held whole folds its rows
// here; a paged one asks the server (runs query group=, section 11) so the groups cover every
// matching run, and fetches an open group's runs by name. Hooks: computeView -> groupedView /
// pagedGroupView, renderRow -> renderGroupRow, requery -> grpAnswer refresh.
const openGroups = new Set();            // exp + '\n' + value key of the unfolded groups
const grpMembers = new Map();            // paged: exp\nkey -> rows of an open group, or null while asked
let grpAnswer = null, grpAsked = '', grpToken = 0;   // paged: the server's groups for a query
function groupKey(v) { return JSON.stringify(isNull(v) ? null : v); }
// a run's raw group value, as the server's _run_group_value: a param, or its sorted tags
function rowGroupValue(r) {
  if (S.groupBy === 'tags') { const t = (r.tags || []).map(String).sort(natural); return t.length ? t.join(', ') : null; }
  const v = r.params ? r.params[S.groupBy.slice(2)] : undefined;
  return isNull(v) ? null : v;
}
// a selected run's colour while grouped: its group's in the group legend (the charts draw that)
function groupColorOf(k) { const g = groupList.find(x => x.keys.indexOf(k) >= 0); return g ? g.color : colorOf(k); }
function groupLabel(v) { return isNull(v) ? (S.groupBy === 'tags' ? '(no tags)' : '(not set)') : S.groupBy === 'tags' ? String(v) : fmtValue(v); }
// One row for a group of runs, the shape of the server's _run_group_row.
function groupRowOf(value, members) {
  const order = m => STATUS_ORDER[m.status] === undefined ? 9 : STATUS_ORDER[m.status];
  const nums = f => members.map(m => num(m[f])).filter(v => isFinite(v));
  const starts = members.map(m => [parseTime(m.started_at), m.started_at]).filter(p => p[0] !== null).sort((a, b) => a[0] - b[0]);
  const durs = nums('duration_secs'), steps = nums('last_step'), first = members[0].params || {}, shared = {};
  for (const k of Object.keys(first)) if (members.every(m => m.params && k in m.params && pyJson(m.params[k]) === pyJson(first[k]))) shared[k] = first[k];
  const g = { _grp: groupKey(value), value: value, name: groupLabel(value), count: members.length, names: members.map(m => m.name), members: members,
    experiment: members[0].experiment, status: members.reduce((a, m) => order(m) < order(a) ? m : a, members[0]).status,
    started_at: starts.length ? starts[0][1] : null, duration_secs: durs.length ? Math.max.apply(null, durs) : null,
    last_step: steps.length ? Math.max.apply(null, steps) : null, rows: members.reduce((a, m) => a + (m.rows || 0), 0),
    tags: Array.from(new Set([].concat.apply([], members.map(m => (m.tags || []).map(String))))), params: shared, spread: {} };
  for (const [prefix, field] of [['m:', 'summary'], ['min:', 'summary_min'], ['max:', 'summary_max']]) {
    const vals = new Map();
    for (const m of members) {
      const o = m[field] && typeof m[field] === 'object' ? m[field] : {};
      for (const k of Object.keys(o)) { const v = num(o[k]); if (isFinite(v)) { if (!vals.has(k)) vals.set(k, []); vals.get(k).push(v); } }
    }
    g[field] = {};
    for (const [k, vs] of vals) { g[field][k] = vs.reduce((a, b) => a + b, 0) / vs.length; g.spread[prefix + k] = [Math.min.apply(null, vs), Math.max.apply(null, vs), vs.length]; }
  }
  return g;
}
// Groups in the table's order: by the sort column's value of each group row (its mean for a
// metric), by group value for the name column; empty last, ties by group value.
function sortGroups(groups) {
  const id = S.sort.col, col = id === 'name' ? null : allColumns().all.find(c => c.id === id) || allColumns().base[1];
  const get = g => col ? col.get(g) : g.value, dir = S.sort.dir;
  const byValue = (a, b) => isNull(a.value) || isNull(b.value) ? (isNull(a.value) ? 1 : 0) - (isNull(b.value) ? 1 : 0) : cmpValues(a.value, b.value);
  return groups.map(g => [get(g), g]).sort((p, q) => {
    const a = p[0], b = q[0], na = isNull(a), nb = isNull(b);
    if (na || nb) return na === nb ? byValue(p[1], q[1]) : na ? 1 : -1;
    return dir * cmpValues(a, b) || byValue(p[1], q[1]);
  }).map(x => x[1]);
}
// The best group of each metric column with a goal: its mean is the best mean.
function groupBest(groups) {
  const best = new Map();
  for (const c of allColumns().metrics) {
    if (!c.goal) continue;
    for (const g of groups) { const v = c.get(g); if (v !== null && isFinite(v) && (!best.has(c.id) || (c.goal === 'min' ? v < best.get(c.id) : v > best.get(c.id)))) best.set(c.id, v); }
  }
  return best;
}
// The view: each group's row, then its runs when it is open (their rows indented, as a job's).
function unfoldGroups(groups, membersOf) {
  const out = [];
  jobMembers = new Set();
  for (const g of groups) {
    out.push(g);
    if (!openGroups.has(S.exp + '\n' + g._grp)) continue;
    const ms = membersOf(g);
    for (const m of ms) { jobMembers.add(m); out.push(m); }
    if (g.count > ms.length && S.paged) out.push({ _more: g.count - ms.length, name: '' });
  }
  S.groupRows = groups; S.groupBest = groupBest(groups);
  return out;
}
function groupedView(rows) {
  const by = new Map();
  for (const r of rows) { const v = rowGroupValue(r), id = groupKey(v); if (!by.has(id)) by.set(id, [v, []]); by.get(id)[1].push(r); }
  return unfoldGroups(sortGroups(Array.from(by.values()).map(p => groupRowOf(p[0], p[1]))), g => g.members);
}
// Paged: the server's groups for this query (asked once per query; the last answer stays on
// screen while a new one is on its way).
function pagedGroupView() {
  const sig = S.exp + '|' + S.groupBy + '|' + querySig();
  if ((!grpAnswer || grpAnswer.sig !== sig) && grpAsked !== sig) fetchGroups(sig);
  const a = grpAnswer && grpAnswer.exp === S.exp && grpAnswer.by === S.groupBy ? grpAnswer : null;
  S.matched = a ? a.matched : 0; S.matchedRows = [];
  S.best = new Map();
  for (const c of allColumns().metrics) { const e = a && a.extremes && a.extremes[c.id]; if (c.goal && e) S.best.set(c.id, c.goal === 'min' ? e[0] : e[1]); }
  S.view = unfoldGroups(a ? a.groups : [], pagedMembers);
}
async function fetchGroups(sig) {
  grpAsked = sig;
  const token = ++grpToken, exp = S.exp, by = S.groupBy;
  let j;
  try { j = await api(runsUrl(exp, { group: by })); }
  catch (e) {
    if (token !== grpToken) return;   // grpAsked stays: the same query is not asked again at once
    if (e.status === 400 && S.filter) { filterProblem = e.message; renderTable(); } else showError('Could not load runs', e);
    return;
  }
  if (token !== grpToken || exp !== S.exp) return;
  grpAsked = ''; filterProblem = '';
  takeKeys(j); S.total = j.total;
  for (const g of j.groups) { g._grp = groupKey(g.value); g.name = groupLabel(g.value); }
  grpAnswer = { sig: sig, exp: exp, by: by, groups: j.groups, matched: j.matched, extremes: j.extremes || null };
  grpMembers.clear();
  renderTable();
}
function refreshGroups() { if (grpAnswer) grpAnswer.sig = ''; grpAsked = ''; scheduleTable(); }
// An open group's runs in a paged table: its first PAGE runs, by name, in the table's order.
function pagedMembers(g) {
  const id = S.exp + '\n' + g._grp;
  if (grpMembers.has(id)) return grpMembers.get(id) || [];
  grpMembers.set(id, null);
  const answer = grpAnswer, exp = S.exp;
  api(runsUrl(exp, { names: g.names.slice(0, PAGE).join(',') })).then(j => {
    if (grpAnswer !== answer || exp !== S.exp) return;
    const rows = decodeRuns(j);
    for (const r of rows) addRow(r);
    grpMembers.set(id, rows.map(r => S.rows.get(r.name)));
    scheduleTable();
  }, e => { grpMembers.delete(id); showError('Could not load the runs of ' + g.name, e); });
  return [];
}
// A group row's cell: the column's value of the group row (a metric's mean), and for a metric
// the lowest and highest of its runs' values in small text; a param its runs do not share
// says so.
function groupCell(c, g) {
  const sp = g.spread && g.spread[c.id];
  if (c.kind === 'param' && !(c.id.slice(2) in (g.params || {}))) return h('span', { class: 'varies', text: 'varies' });
  const v = c.cell(g);
  if (c.kind !== 'metric' || !sp || sp[2] < 2 || isNull(v)) return v;
  return [v, h('span', { class: 'spread', text: fmtNum(sp[0]) + '\u2013' + fmtNum(sp[1]) })];
}
function groupCellTitle(c, g) {
  const sp = g.spread && g.spread[c.id];
  if (c.kind === 'param' && !(c.id.slice(2) in (g.params || {}))) return 'the ' + g.count + ' runs of this group have different values';
  if (c.kind !== 'metric' || !sp) return null;
  return 'mean of ' + sp[2] + (sp[2] === 1 ? ' run: ' : ' runs: ') + fmtNum(c.get(g)) + '\nlowest ' + fmtNum(sp[0]) + ', highest ' + fmtNum(sp[1]) +
    (c.goal ? '\nbest run: ' + fmtNum(c.goal === 'min' ? sp[0] : sp[1]) : '');
}
function renderGroupRow(g, cols) {
  if (g._more) return h('tr', { class: 'group-more' }, h('td', { colspan: cols.length + 2, class: 'muted', text: '\u2026 and ' + g._more + ' more runs in this group (filter to see them)' }));
  const keys = g.names.map(n => S.exp + '/' + n), on = keys.filter(k => S.selectedSet.has(k)).length, open = openGroups.has(S.exp + '\n' + g._grp);
  const chip = on ? groupList.find(x => x.value === g.name) : null;
  const tr = h('tr', { class: 'group-row' + (open ? ' open' : '') + (on ? ' selected' : ''), 'data-group': g.name, 'data-group-key': g._grp, 'data-status': g.status });
  tr.append(h('td', { class: 'c-sel' }, h('input', { type: 'checkbox', class: 'group-select', checked: on > 0 && on === keys.length,
    indeterminate: on > 0 && on < keys.length, 'aria-label': 'Select the runs of ' + g.name })));
  tr.append(h('td', { class: 'c-name', title: (S.groupBy === 'tags' ? 'tags' : S.groupBy.slice(2)) + ' = ' + g.name + ': ' + g.count + (g.count === 1 ? ' run' : ' runs') + ' (means of their values)' },
    h('button', { type: 'button', class: 'job-toggle group-toggle', 'aria-expanded': open ? 'true' : 'false', 'aria-label': (open ? 'Hide' : 'Show') + ' the runs of ' + g.name }, icon('chev', 12)),
    h('span', { class: 'swatch', style: chip ? 'background:' + chip.color : '' }),
    h('span', { class: 'group-name', text: g.name }), h('span', { class: 'job-count', text: g.count + (g.count === 1 ? ' run' : ' runs') })));
  for (const c of cols) {
    const v = groupCell(c, g);
    const best = c.goal && S.groupBest && S.groupBest.has(c.id) && c.get(g) === S.groupBest.get(c.id) && S.groupRows.length > 1;
    const td = h('td', { class: (c.num ? 'num ' : '') + (c.kind ? 'grp-' + c.kind + (c.first ? ' first' : '') : '') + (c.mono ? ' mono' : '') + (best ? ' best' : ''), 'data-col': c.id });
    if (v === null || v === undefined || v === '') td.append(h('span', { class: 'null', text: '\u2013' })); else add(td, v);
    const t = groupCellTitle(c, g);
    if (t) td.title = t;
    tr.append(td);
  }
  return tr;
}
function bindGroupRows() {
  $('#runs-table').tBodies[0].addEventListener('click', e => {
    const tr = e.target.closest('tr[data-group-key]'); if (!tr) return;
    const id = tr.getAttribute('data-group-key'), g = S.view.find(r => r && r._grp === id); if (!g) return;
    if (e.target.classList.contains('group-select')) {
      const keys = g.names.map(n => S.exp + '/' + n), drop = new Set(keys);
      if (!e.target.checked) { setSelection(S.selected.filter(k => !drop.has(k)), true); return; }
      const add = keys.filter(k => !S.selectedSet.has(k)), room = Math.max(0, SELECT_CAP - S.selected.length);
      if (add.length > room) showBanner('Selected ' + room + ' of the ' + add.length + ' runs of ' + g.name + ': at most ' + SELECT_CAP + ' are charted at once.', true);
      setSelection(S.selected.concat(add.slice(0, room)), true);
      return;
    }
    const open = S.exp + '\n' + id;
    if (openGroups.has(open)) openGroups.delete(open); else openGroups.add(open);
    renderTable();
  });
}

// Colour by param: each selected run's line (its legend chip, its table swatch) takes the colour
// of its value of a param: a ramp from cool to warm for numbers (log-spaced when they are all
// positive and span 20x or more), the categorical palette in value order for anything else,
// grey for a run without the param. A colour bar (numbers) or a key (values) says which is
// which. Group by, when set, colours the groups instead. URL: cby=p:<param>.
const RAMP = ['#3b4cc0', '#2f7fd8', '#17a2a0', '#5fb43c', '#e0a413', '#e0562a'];
const NO_VALUE = '#8c939d';
let cbyCache = null;
function rampAt(t) {
  t = Math.max(0, Math.min(1, isFinite(t) ? t : 0.5));
  const x = t * (RAMP.length - 1), i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i;
  const a = RAMP[i], b = RAMP[i + 1], hex = (c, o) => parseInt(c.slice(o, o + 2), 16);
  return '#' + [1, 3, 5].map(o => Math.round(hex(a, o) + (hex(b, o) - hex(a, o)) * f).toString(16).padStart(2, '0')).join('');
}
// The scale of the selected runs' values, remade when the selection or the runs known change.
function colorScale() {
  if (!S.colorBy || S.groupBy) return null;
  const c = cbyCache;
  if (c && c.by === S.colorBy && c.sel === S.selected && c.size === known.size && c.rows === S.rows.size) return c.scale;
  const name = S.colorBy.slice(2), of = new Map();
  for (const k of S.selected) { const r = known.get(k), v = r && r.params ? r.params[name] : undefined; of.set(k, isNull(v) ? null : v); }
  const present = Array.from(of.values()).filter(v => v !== null);
  let scale;
  if (present.length && present.every(v => typeof v === 'number' && isFinite(v))) {
    const lo = Math.min.apply(null, present), hi = Math.max.apply(null, present), log = lo > 0 && hi / lo >= 20;
    const f = v => log ? Math.log10(v) : v;
    scale = { kind: 'num', lo: lo, hi: hi, log: log, at: v => v === null ? NO_VALUE : rampAt(hi === lo ? 0.5 : (f(v) - f(lo)) / (f(hi) - f(lo))) };
  } else {
    const distinct = Array.from(new Map(present.map(v => [pyJson(v), v])).values()).sort(cmpValues);
    const slot = new Map(distinct.map((v, i) => [pyJson(v), i]));
    scale = { kind: 'cat', values: distinct, at: v => v === null ? NO_VALUE : PALETTE[slot.get(pyJson(v)) % PALETTE.length] };
  }
  scale.name = name; scale.of = of; scale.missing = present.length < of.size;
  cbyCache = { by: S.colorBy, sel: S.selected, size: known.size, rows: S.rows.size, scale: scale };
  return scale;
}
// colorOf's answer for a selected run while colouring by a param, else null
function paramColor(k) { const sc = colorScale(); return sc && sc.of.has(k) ? sc.at(sc.of.get(k)) : null; }
// Lines already drawn in another colour are drawn again (the charts cache series by data version).
const drawnColours = new Map();
function recolourRuns() {
  let changed = false;
  for (const k of Array.from(drawnColours.keys())) if (!S.selectedSet.has(k)) drawnColours.delete(k);
  for (const k of S.selected) {
    const col = colorOf(k), was = drawnColours.get(k);
    drawnColours.set(k, col);
    if (was === undefined || was === col) continue;
    for (const c of cards.values()) c.loaded.delete(k);
    changed = true;
  }
  if (changed) scheduleCharts();
}
function syncColorPicker(extra) {
  const sel = $('#color-by'), keys = Array.from(S.paramKeys).sort(natural);
  const want = extra !== undefined ? extra : S.colorBy;
  if (want && keys.indexOf(want.slice(2)) < 0) keys.push(want.slice(2));
  const sig = keys.join('\n');
  if (sel.getAttribute('data-sig') !== sig) {
    sel.replaceChildren(h('option', { value: '', text: 'Run' }), keys.length ? h('optgroup', { label: 'Params' }, keys.map(k => h('option', { value: 'p:' + k, text: k }))) : null);
    sel.setAttribute('data-sig', sig);
  }
  sel.value = want;
}
function setColorBy(by) {
  by = /^p:./.test(by || '') ? by : '';
  syncColorPicker(by);
  if (S.colorBy === by) return;
  S.colorBy = by; cbyCache = null;
  renderLegend(); scheduleTable();
}
let colorLegendSig = '';
function renderColorLegend() {
  const box = $('#color-legend'), sc = colorScale();
  box.hidden = !sc;
  if (!sc) { colorLegendSig = ''; return; }
  const sig = sc.name + '|' + sc.kind + '|' + (sc.kind === 'num' ? sc.lo + ':' + sc.hi + ':' + sc.log : sc.values.map(pyJson).join(',')) + '|' + sc.missing;
  if (sig === colorLegendSig) return;
  colorLegendSig = sig;
  const parts = [h('span', { class: 'group-by-name', text: 'Colour by ' + sc.name + ':' })];
  if (sc.kind === 'num') {
    const stops = [0, 0.2, 0.4, 0.6, 0.8, 1].map(t => rampAt(t) + ' ' + Math.round(t * 100) + '%').join(', ');
    parts.push(h('span', { class: 'cbar-lo', 'data-testid': 'color-lo', text: fmtValue(sc.lo) }),
      h('span', { class: 'cbar', 'data-testid': 'color-bar', title: sc.name + (sc.log ? ', log scale' : ''), style: 'background:linear-gradient(to right, ' + stops + ')' }),
      h('span', { class: 'cbar-hi', 'data-testid': 'color-hi', text: fmtValue(sc.hi) }),
      sc.log ? h('span', { class: 'muted', text: '(log)' }) : null);
  } else {
    for (const v of sc.values) parts.push(h('span', { class: 'ckey', 'data-value': fmtValue(v) }, h('i', { style: 'background:' + sc.at(v) }), h('span', { text: fmtValue(v) })));
  }
  if (sc.missing) parts.push(h('span', { class: 'ckey', 'data-value': '' }, h('i', { style: 'background:' + NO_VALUE }), h('span', { text: '(not set)' })));
  box.replaceChildren.apply(box, parts);
}
function bindColorBy() {
  $('#color-by').addEventListener('change', e => { setColorBy(e.target.value); writeHash(); });
}

// --- 13.21 saved views
// Named views saved into the experiment (<exp>/.views/<name>.json through the API): a view is
// the page's URL hash, so opening one is navigating to it, and a teammate's page opens the same
// runs, filter and chart settings.
let viewsList = [], viewsToken = 0;
async function loadViews(exp) {
  const token = ++viewsToken;
  $('#views').hidden = false;
  try {
    const j = await api(expPath(exp) + '/views');
    if (token !== viewsToken) return;
    viewsList = j.views || [];
  } catch (e) { if (token === viewsToken) viewsList = []; }
  renderViews();
}
function renderViews(chosen) {
  const sel = $('#view-picker');
  const current = chosen !== undefined ? chosen : sel.value;
  sel.replaceChildren.apply(sel, [h('option', { value: '', text: viewsList.length ? 'Saved views (' + viewsList.length + ')' : 'No saved views' })]
    .concat(viewsList.map(v => h('option', { value: v.name, text: v.name, title: v.hash }))));
  sel.value = viewsList.some(v => v.name === current) ? current : '';
  $('#view-delete').hidden = !sel.value;
}
function openView(name) {
  const v = viewsList.find(x => x.name === name);
  $('#view-delete').hidden = !v;
  if (!v) return;
  if (v.hash !== location.hash) { history.pushState(null, '', v.hash || location.pathname + location.search); applyHash(); }
}
// the server's rule (_view_name_ok), checked here first so a typo costs no request
const VIEW_NAME = /^[\p{L}\p{N}][\p{L}\p{N}_ .,+=@()-]{0,79}$/u;
async function saveView(name) {
  const err = $('#view-error');
  err.textContent = '';
  if (!S.exp) return;
  if (!VIEW_NAME.test(name) || /[ .]$/.test(name)) {
    err.textContent = 'A view name is 1 to 80 letters, digits, spaces and _ . , - + = @ ( ), starts with a letter or digit and does not end with a space or a dot.';
    return;
  }
  clearTimeout(hashTimer); writeHash(true);
  try {
    const v = await api(expPath(S.exp) + '/views/' + enc(name), { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ hash: location.hash }) });
    viewsList = viewsList.filter(x => x.name !== v.name).concat([v]).sort((a, b) => natural(a.name, b.name));
    renderViews(v.name);
    $('#view-form').hidden = true;
    showBanner('Saved the view \u201c' + v.name + '\u201d into ' + S.exp, true);
  } catch (e) { err.textContent = e.message; }
}
async function deleteView(name) {
  try {
    await api(expPath(S.exp) + '/views/' + enc(name), { method: 'DELETE' });
    viewsList = viewsList.filter(x => x.name !== name);
    renderViews('');
  } catch (e) { showError('Could not delete the view', e); }
}
function bindViews() {
  $('#view-picker').addEventListener('change', e => openView(e.target.value));
  $('#view-save').addEventListener('click', e => {
    e.stopPropagation();
    const form = $('#view-form'), box = e.currentTarget.getBoundingClientRect();
    form.hidden = !form.hidden;
    if (form.hidden) return;
    form.style.left = Math.max(8, Math.min(innerWidth - 290, box.left)) + 'px'; form.style.top = (box.bottom + 6) + 'px';
    $('#view-error').textContent = '';
    $('#view-name').value = $('#view-picker').value || '';
    $('#view-name').focus();
  });
  $('#view-cancel').addEventListener('click', () => { $('#view-form').hidden = true; });
  $('#view-form').addEventListener('submit', e => { e.preventDefault(); const n = $('#view-name').value.trim(); if (n) saveView(n); });
  $('#view-delete').addEventListener('click', () => { const n = $('#view-picker').value; if (n) deleteView(n); });
  document.addEventListener('mousedown', e => { const f = $('#view-form'); if (!f.hidden && !f.contains(e.target) && !e.target.closest('#view-save')) f.hidden = true; });
}

// --- 13.22 x = another metric
// The x-axis chooser also lists the metrics: each point's x is then the value the run logged
// for that metric at the same step (or the last one before it: a token counter logged less
// often still lines up), e.g. loss against tokens seen.
function xMetric() { return S.xaxis.slice(0, 2) === 'm:' ? S.xaxis.slice(2) : ''; }
function xFormat() { return xMetric() ? 'metric' : S.xaxis; }
function joinX(rd, step) {
  const key = xMetric(), s = rd.series.get(key), out = new Array(step.length);
  if (!s || !s.step.length) return out.fill(NaN);
  for (let i = 0; i < step.length; i++) {
    let j = lowerBound(s.step, step[i]);
    if (j >= s.step.length || s.step[j] !== step[i]) j--;
    out[i] = j >= 0 ? s.value[j] : NaN;
  }
  return out;
}
function showXAxis() {
  const sel = $('#xaxis');
  if (xMetric() && !sel.querySelector('option[value="' + window.CSS.escape(S.xaxis) + '"]')) {
    $('#xaxis-metrics').append(h('option', { value: S.xaxis, text: xMetric() }));
  }
  sel.value = S.xaxis;
  for (const c of cards.values()) { const l = c.el.querySelector('.x-label'); if (l) l.textContent = xMetric() ? 'vs ' + xMetric() : ''; }
}
function syncXAxisOptions(keys) {
  const box = $('#xaxis-metrics'), list = Array.from(new Set(Array.from(keys).concat(Array.from(S.metricKeys)))).sort(natural);
  if (xMetric() && list.indexOf(xMetric()) < 0) list.push(xMetric());
  const sig = list.join('\n');
  if (box.getAttribute('data-sig') === sig) return;
  box.setAttribute('data-sig', sig);
  box.replaceChildren.apply(box, list.map(k => h('option', { value: 'm:' + k, text: k })));
  $('#xaxis').value = S.xaxis;
}

// --- 13.17 theme
function currentTheme() { return document.documentElement.getAttribute('data-theme') || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'); }
function applyTheme(t) {
  document.documentElement.setAttribute('data-theme', t);
  const b = $('#theme-toggle');
  b.replaceChildren(icon(t === 'dark' ? 'sun' : 'moon', 16));
  b.title = t === 'dark' ? 'Switch to light mode' : 'Switch to dark mode';
  Charts.refreshTheme();
  scheduleHists();
}
function initTheme() {
  const mq = matchMedia('(prefers-color-scheme: dark)');
  applyTheme(store('expman.theme') || (mq.matches ? 'dark' : 'light'));
  mq.addEventListener('change', e => { if (!store('expman.theme')) applyTheme(e.matches ? 'dark' : 'light'); });
  $('#theme-toggle').addEventListener('click', () => { const t = currentTheme() === 'dark' ? 'light' : 'dark'; store('expman.theme', t); applyTheme(t); });
}

// --- 13.18 boot
function bindControls() {
  bindTable();
  bindJobs();
  $('#banner-close').addEventListener('click', () => { $('#banner').hidden = true; });
  // the first key after a pause filters at once (a paged table asks the server: ~20 ms at
  // 10,000 runs); keys typed in a burst wait for a pause of 80 ms, so a word is one query
  let ft = 0, fAt = -1e9;
  $('#filter').addEventListener('input', e => {
    clearTimeout(ft); ft = 0;
    const apply = () => { ft = 0; fAt = Date.now(); S.filter = e.target.value.trim(); $('#runs-scroll').scrollTop = 0; renderTable(); writeHash(); };
    if (Date.now() - fAt > 300) apply(); else ft = setTimeout(apply, 80);
  });
  let cft = 0;
  $('#chart-filter').addEventListener('input', e => { clearTimeout(cft); cft = setTimeout(() => { S.chartFilter = e.target.value.trim(); syncCharts(); writeHash(); }, 120); });
  $('#smoothing').addEventListener('input', e => {
    S.smoothing = Number(e.target.value) || 0;
    $('#smoothing-value').textContent = S.smoothing.toFixed(2);
    Charts.configure({ smoothing: S.smoothing }); writeHash();
  });
  $('#logy').addEventListener('change', e => { S.logy = e.target.checked; Charts.configure({ logy: S.logy }); writeHash(); });
  $('#clip-outliers').addEventListener('change', e => { S.clipOutliers = e.target.checked; Charts.configure({ clipOutliers: S.clipOutliers }); writeHash(); });
  $('#xaxis').addEventListener('change', e => {
    S.xaxis = e.target.value;
    showXAxis();
    resetAllZoom();   // also re-sends every series with the new x values
    Charts.configure({ xFormat: xFormat(), xLabel: xMetric() }); writeHash();
  });
  bindGroups(); bindPvr(); bindViews();
  $('#columns-button').addEventListener('click', e => { e.stopPropagation(); openColumns(); });
  $('#diff-button').addEventListener('click', () => { const p = $('#diff-panel'); p.hidden = !p.hidden; renderDiff(); });
  $('#diff-close').addEventListener('click', () => { $('#diff-panel').hidden = true; });
  document.addEventListener('mousedown', e => { const p = $('#columns-popover'); if (!p.hidden && !p.contains(e.target) && !e.target.closest('#columns-button')) p.hidden = true; });
  $('#detail-close').addEventListener('click', () => closeDetail());
  $('#detail-select').addEventListener('change', e => { if (S.detail) toggleRun(S.detail, e.target.checked); });
  $('#log-follow').addEventListener('change', e => { if (e.target.checked) $('#log').scrollTop = $('#log').scrollHeight; });
  document.addEventListener('keydown', e => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName);
    if (e.key === 'Escape') {
      if (!$('#shortcuts').hidden) { $('#shortcuts').hidden = true; return; }
      const full = document.querySelector('.chart.full');
      if (full) { full.classList.remove('full'); return; }
      if (!$('#columns-popover').hidden) { $('#columns-popover').hidden = true; return; }
      if (typing) { e.target.blur(); return; }
      if (S.detail) closeDetail();
    } else if (e.key === '/' && !typing && !$('#runs-panel').hidden) { e.preventDefault(); $('#filter').focus(); }
    else if (!typing && !e.ctrlKey && !e.metaKey && !e.altKey) onShortcut(e);
  });
  window.addEventListener('popstate', () => applyHash());
  window.addEventListener('hashchange', () => applyHash());
  window.addEventListener('resize', () => { scheduleTable(); scheduleHists(); });
}
// j/k move a cursor through the table's runs, space selects, Enter opens, f full-screens a chart
let cursorRun = null;
function onShortcut(e) {
  if (e.key === '?') { $('#shortcuts').hidden = !$('#shortcuts').hidden; return; }
  if (e.key === 'f') {
    const c = hoveredCard && cards.get(hoveredCard.key) === hoveredCard ? hoveredCard : cards.values().next().value;
    if (c) toggleFull(c);
    return;
  }
  const runs = S.view.filter(r => r && !r._job && r._grp === undefined && !r._more);
  if (!runs.length) return;
  const at = runs.findIndex(r => r.name === cursorRun);
  if (e.key === 'j' || e.key === 'k') {
    const next = at < 0 ? 0 : Math.max(0, Math.min(runs.length - 1, at + (e.key === 'j' ? 1 : -1)));
    cursorRun = runs[next].name;
    const sc = $('#runs-scroll'), i = S.view.indexOf(runs[next]), top = i * ROW_H;
    if (top < sc.scrollTop) sc.scrollTop = top;
    else if (top + ROW_H * 2 > sc.scrollTop + sc.clientHeight) sc.scrollTop = top + ROW_H * 2 - sc.clientHeight;
    renderBody();
  } else if (e.key === ' ' && at >= 0) {
    e.preventDefault();
    const k = S.exp + '/' + cursorRun;
    toggleRun(k, !S.selectedSet.has(k));
  } else if (e.key === 'Enter' && at >= 0) openDetail(S.exp + '/' + cursorRun, true);
}
async function start() {
  const hs = readHash();
  if (!S.experiments.length) { showWelcome(); return; }
  const exp = hs.exp && S.experiments.some(e => e.name === hs.exp) ? hs.exp
    : S.experiments.slice().sort((a, b) => (parseTime(b.last_activity) || 0) - (parseTime(a.last_activity) || 0))[0].name;
  if (hs.exp && exp !== hs.exp) showBanner('No experiment named \u201c' + hs.exp + '\u201d here.');
  await selectExperiment(exp, { runs: exp === hs.exp ? hs.runs : null, hide: hs.hide });
}
async function boot() {
  initTheme();
  bindControls();
  const hs = readHash();
  applyChartSettings(hs);
  S.filter = hs.q; $('#filter').value = hs.q;
  S.chartFilter = hs.metrics; $('#chart-filter').value = hs.metrics;
  S.hidden = new Set(hs.hide); Charts.configure({ hidden: new Set(S.hidden) });
  // the three first requests go out together; the runs of a linked experiment need not wait
  if (hs.exp) { S.prefetch = { exp: hs.exp, promise: api(firstRunsUrl(hs.exp)) }; S.prefetch.promise.catch(() => {}); }
  const health = api('/api/health');
  const exps = loadExperiments();
  // a linked experiment's table fills as soon as its first page is in, not after the list of
  // experiments (which may be slower: it counts every experiment's runs)
  const early = hs.exp ? selectExperiment(hs.exp, { runs: hs.runs, hide: hs.hide }) : null;
  try { S.health = await health; }
  catch (e) { showError('Cannot reach the expman server', e); setLive('reconnecting', 'Offline'); }
  $('#version').textContent = 'v' + ((S.health && S.health.version) || VERSION);
  await exps;
  if (early) await early;
  const linked = early && S.experiments.find(e => e.name === hs.exp);
  if (linked) { if (S.exp === hs.exp && !$('#exp-desc').textContent) $('#exp-desc').textContent = linked.description || ''; }
  else await start();
  if (hs.run) openDetail(hs.run);
  openStream(true);
}

// Read-only hooks for tests and the console.
window.expman = Object.freeze({
  version: VERSION,
  chartKeys: () => Array.from(cards.keys()),
  chartPoints: key => { const c = cards.get(key); return c ? c.chart.points() : {}; },
  chartHover: (key, x) => { const c = cards.get(key); return c ? c.chart.hover(x) : []; },
  chartYLabels: key => { const c = cards.get(key); return c ? c.chart.yLabels() : []; },
  chartXLabels: key => { const c = cards.get(key); return c ? c.chart.xLabels() : []; },
  pvrPoints: () => pvrShown.slice(),
  pvrAxes: () => (pvr.layout ? pvr.layout.axes.map(a => a.label) : []),
  chartBest: key => { const c = cards.get(key); return c ? c.chart.bestPoints() : []; },
  metricGoal: key => inferGoal(key),
  selected: () => S.selected.slice(),
  experiment: () => S.exp,
  liveState: () => live.state,
  settings: () => ({ smoothing: S.smoothing, logy: S.logy, xaxis: S.xaxis, filter: S.filter }),
  // the names of the loaded runs a filter keeps, or its error and column (as under the box)
  filterRuns: text => {
    const parsed = parseFilter(text);
    if (parsed.error) return { names: null, error: parsed.error, pos: parsed.pos };
    const rows = Array.from(S.rows.values());
    return { names: rows.filter(parsed.test || (() => true)).map(r => r.name).sort(), error: null, pos: 0 };
  }
});
boot();
})();
</script>
</body>
</html>
"""


if __name__ == "__main__":
    sys.exit(main())
