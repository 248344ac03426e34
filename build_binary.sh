#!/usr/bin/env bash
# Build dist/expman (PyInstaller one-file binary) and dist/expman.pyz (zipapp).
#
#   ./build_binary.sh            from a fresh clone; needs python3 (>= 3.10) with venv, and PyPI
#   PYTHON=python3.12 ./build_binary.sh
#   EXPMAN_BINARY_S3=1 ./build_binary.sh      keep s3:// support in the binary (~43 MB, not 36)
#
# Everything it installs goes into .venv-build/ (git-ignored), reused while the pins below are
# unchanged. What the binary leaves out, and why, is written in expman.spec.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV=.venv-build
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
stamp="$VENV/.expman-pins"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${PINS[*]}" ]; then
    echo "build_binary: creating $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "${PINS[@]}"
    echo "${PINS[*]}" > "$stamp"
fi
PY="$VENV/bin/python"
version=$("$PY" -c 'import ast, sys
for node in ast.parse(open("expman.py").read()).body:
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__version__":
        print(node.value.value); sys.exit(0)
sys.exit("build_binary: no __version__ in expman.py")')
echo "build_binary: expman $version, $("$PY" -c 'import sys; print("Python", sys.version.split()[0])')"

# 2. dist/expman ----------------------------------------------------------------------------
mkdir -p dist
"$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
    --workpath build/pyinstaller --distpath dist expman.spec
got=$(./dist/expman --version)
[ "$got" = "expman $version" ] || { echo "build_binary: dist/expman --version said '$got'" >&2; exit 1; }

# 3. dist/expman.pyz ------------------------------------------------------------------------
# expman.py stays a module named expman (warnings filters and loggers use that name); a
# two-line __main__.py runs it. The pure-Python dependencies go in _vendor/, appended to the
# END of sys.path: an installed bottle/waitress/PyYAML wins (PyYAML's C loader is ~10x
# faster), the vendored copy fills the gap. PyYAML's C extension is left out: its pure-Python
# part works alone. pyarrow cannot be vendored at all (extension modules cannot load from a
# zip), so it must be installed.
stage=build/zipapp
rm -rf "$stage"
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
site = os.path.dirname(bottle.__file__)
ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "RECORD", "INSTALLER", "REQUESTED")
shutil.copy2(bottle.__file__, dest)
for package in (waitress, yaml):
    src = os.path.dirname(package.__file__)
    shutil.copytree(src, os.path.join(dest, os.path.basename(src)), ignore=ignore)
for pattern in ("bottle-*.dist-info", "waitress-*.dist-info", "[Pp]y[Yy][Aa][Mm][Ll]-*.dist-info"):
    for info in glob.glob(os.path.join(site, pattern)):  # licences travel with the code
        shutil.copytree(info, os.path.join(dest, os.path.basename(info)), ignore=ignore)
EOF
"$PY" -m zipapp "$stage" -o dist/expman.pyz -p "/usr/bin/env python3" -c

# 4. report ---------------------------------------------------------------------------------
end=$(date +%s.%N)
"$PY" - "$start" "$end" <<'EOF'
import os, sys
for path in ("dist/expman", "dist/expman.pyz"):
    print("build_binary: %-16s %6.1f MB" % (path, os.path.getsize(path) / 1e6))
print("build_binary: built in %.0f s" % (float(sys.argv[2]) - float(sys.argv[1])))
EOF
