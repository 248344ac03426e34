#!/usr/bin/env bash
# Build dist/expman (PyInstaller one-file binary) and dist/expman.pyz (zipapp).
#
#   ./build_binary.sh            from a fresh clone; needs python3 (>= 3.10) with venv, and PyPI
#   PYTHON=python3.12 ./build_binary.sh
#   EXPMAN_BINARY_S3=1 ./build_binary.sh      keep s3:// support in the binary (~43 MB, not 38)
#   ./build_binary.sh --zipapp-only           only dist/expman.pyz, vendoring bottle, waitress
#                                             and PyYAML from $PYTHON (no venv; under a second)
#   DIST=/some/dir ./build_binary.sh ...      write there instead of dist/
#
# Everything it installs goes into .venv-build/ (git-ignored), reused while the pins below are
# unchanged. What the binary leaves out, and why, is written in expman.spec.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
DIST="${DIST:-dist}"
VENV=.venv-build
zipapp_only=0
case "${1:-}" in
    "") ;;
    --zipapp-only) zipapp_only=1 ;;
    *) echo "usage: $0 [--zipapp-only]" >&2; exit 2 ;;
esac
# Pinned so that the size and start-time figures in the README stay reproducible. NumPy is
# deliberately absent: pyarrow does not need it for anything expman does.
PINS=(
    "pyinstaller==6.22.3"
    "pyinstaller-hooks-contrib==2026.9"
    "pyarrow==26.0.1"
    "pyyaml==6.0.3"
    "bottle==0.13.4"
    "waitress==3.0.2"
    "tzdata==2026.6"
)

start=$(date +%s.%N)
export PIP_DISABLE_PIP_VERSION_CHECK=1

# 1. build environment ----------------------------------------------------------------------
if [ "$zipapp_only" = 1 ]; then
    PY="$PYTHON"
else
    stamp="$VENV/.expman-pins"
    if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${PINS[*]}" ]; then
        echo "build_binary: creating $VENV"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q "${PINS[@]}"
        echo "${PINS[*]}" > "$stamp"
    fi
    PY="$VENV/bin/python"
fi
version=$("$PY" -c 'import ast, sys
for node in ast.parse(open("expman.py").read()).body:
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__version__":
        print(node.value.value); sys.exit(0)
sys.exit("build_binary: no __version__ in expman.py")')
pyver=$("$PY" -c 'import sys; print(sys.version.split()[0])')
echo "build_binary: expman $version, Python $pyver"

check_version() {  # every form prints the __version__ of expman.py
    local got
    got=$("$@" --version)
    if [ "$got" != "expman $version" ]; then
        echo "build_binary: '$* --version' said '$got', not 'expman $version'" >&2
        exit 1
    fi
}

# 2. dist/expman ----------------------------------------------------------------------------
mkdir -p "$DIST"
if [ "$zipapp_only" = 0 ]; then
    "$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
        --workpath build/pyinstaller --distpath "$DIST" expman.spec
    check_version "$DIST/expman"
fi

# 3. dist/expman.pyz ------------------------------------------------------------------------
# expman.py stays a module named expman (warnings filters and loggers use that name); a
# two-line __main__.py runs it. The pure-Python dependencies go in _vendor/, appended to the
# END of sys.path: an installed bottle/waitress/PyYAML wins (PyYAML's C loader is ~10x
# faster), the vendored copy fills the gap. PyYAML's C extension is left out: its pure-Python
# part works alone. pyarrow cannot be vendored at all (extension modules cannot load from a
# zip), so it must be installed.
stage=$(mktemp -d "${TMPDIR:-/tmp}/expman-zipapp.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/_vendor"
cp expman.py "$stage/expman.py"
cat > "$stage/__main__.py" <<'EOF'
import os, sys
sys.path.append(os.path.join(os.path.dirname(__file__), "_vendor"))
import expman
sys.exit(expman.main())
EOF
"$PY" - "$stage/_vendor" <<'EOF'
import glob, os, shutil, sys
import bottle, waitress, yaml
dest = sys.argv[1]
ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "RECORD", "INSTALLER", "REQUESTED")
shutil.copy2(bottle.__file__, dest)
for module, dist in ((bottle, "bottle"), (waitress, "waitress"), (yaml, "[Pp]y[Yy][Aa][Mm][Ll]")):
    site = os.path.dirname(module.__file__)
    if module is not bottle:  # a package: copy its directory
        shutil.copytree(site, os.path.join(dest, os.path.basename(site)), ignore=ignore)
        site = os.path.dirname(site)
    infos = glob.glob(os.path.join(site, dist + "-*.dist-info"))
    if not infos:
        sys.exit("build_binary: no dist-info (licence) for %s in %s" % (module.__name__, site))
    for info in infos:  # the licence travels with the code
        shutil.copytree(info, os.path.join(dest, os.path.basename(info)), ignore=ignore)
EOF
# Byte-compile into the zip: zipimport can read a module.pyc that sits next to module.py but can
# never write one, so without this every start compiles expman.py (~10k lines) again: --help
# took 0.22 s, 0.085 s with it. A Python of another version sees a foreign magic number in the
# .pyc and quietly compiles the source instead.
"$PY" -m compileall -q -b "$stage"
"$PY" -m zipapp "$stage" -o "$DIST/expman.pyz" -p "/usr/bin/env python3" -c
check_version "$PY" "$DIST/expman.pyz"

# 4. report ---------------------------------------------------------------------------------
end=$(date +%s.%N)
"$PY" - "$start" "$end" "$DIST" "$zipapp_only" <<'EOF'
import os, sys
start, end, dist, zipapp_only = sys.argv[1:]
for name in ("expman.pyz",) if zipapp_only == "1" else ("expman", "expman.pyz"):
    path = os.path.join(dist, name)
    print("build_binary: %-20s %6.1f MB" % (path, os.path.getsize(path) / 1e6))
print("build_binary: built in %.1f s" % (float(end) - float(start)))
EOF
