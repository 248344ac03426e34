#!/usr/bin/env bash
# Build dist/expman (one file: launcher.c + PyInstaller's one-folder build) and dist/expman.pyz
# (zipapp).
#
#   ./build_binary.sh            from a fresh clone; needs python3 (>= 3.10) with venv, PyPI, a C
#                                compiler and liblzma's static library (Debian: liblzma-dev)
#   PYTHON=python3.12 ./build_binary.sh
#   EXPMAN_BINARY_S3=1 ./build_binary.sh      keep s3:// support in the binary (bigger: the AWS SDK)
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

check_version() {  # every form prints the __version__ of expman.py (first line)
    local got
    got=$("$@" --version | head -1)
    if [ "$got" != "expman $version" ]; then
        echo "build_binary: '$* --version' said '$got', not 'expman $version'" >&2
        exit 1
    fi
}

# 2. dist/expman ----------------------------------------------------------------------------
# PyInstaller builds a one-folder program (build/onedir/expman); launcher.c, compiled here,
# goes in front of that folder packed as one xz stream. The first start unpacks the folder
# into ~/.cache/expman/<version>-<hash>/ and every start execs the program there (launcher.c
# says why and how it is checked). PyInstaller's one-file mode unpacked ~100 MB on each start.
mkdir -p "$DIST" build
if [ "$zipapp_only" = 0 ]; then
    # what the binary was built from, for `expman --version` (expman.spec bundles this file)
    commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        commit="$commit+changes"
    fi
    pyi=$("$PY" -c 'import PyInstaller; print(PyInstaller.__version__)')
    printf 'built from git %s on %s with PyInstaller %s, Python %s\n' \
        "$commit" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$pyi" "$pyver" > build/BUILD_INFO
    "${CC:-cc}" -O2 -s -static -o build/launcher launcher.c -llzma
    "$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
        --workpath build/pyinstaller --distpath build/onedir expman.spec
    "$PY" - build/onedir/expman build/launcher "$DIST/expman" "$version" <<'EOF'
# Pack the folder: entries (D dir, F file, L symlink, E end; see launcher.c), sorted so the
# same folder gives the same bytes, in one xz stream with a SHA-256 check. The x86 filter
# and a 64 MiB window matter (the folder is ~100 MB of shared libraries): 26.8 MB, where
# PyInstaller's per-file zlib gave 38 MB; a higher preset saves <2% and costs 3x the CPU.
import hashlib, lzma, os, stat, struct, sys
src, launcher, out, version = sys.argv[1:]
raw = bytearray()
def walk(rel):
    for name in sorted(os.listdir(os.path.join(src, rel) if rel else src)):
        path = os.path.join(rel, name) if rel else name
        full = os.path.join(src, path)
        data = path.encode()
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full).encode()
            raw.extend(b"L" + struct.pack("<HH", len(data), len(target)) + data + target)
        elif stat.S_ISDIR(st.st_mode):
            raw.extend(b"D" + struct.pack("<IH", st.st_mode & 0o777, len(data)) + data)
            walk(path)
        else:
            with open(full, "rb") as f:
                body = f.read()
            raw.extend(b"F" + struct.pack("<IHQ", st.st_mode & 0o777, len(data), len(body))
                       + data + body)
walk("")
raw.extend(b"E")
ident = ("%s-%s" % (version, hashlib.sha256(raw).hexdigest()[:16])).encode()
assert len(ident) <= 64 and b"/" not in ident, ident
packed = lzma.compress(bytes(raw), format=lzma.FORMAT_XZ, check=lzma.CHECK_SHA256, filters=[
    {"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 1, "dict_size": 64 << 20}])
with open(launcher, "rb") as f:
    front = f.read()
tmp = out + ".tmp"
with open(tmp, "wb") as f:
    f.write(front)
    f.write(packed)
    f.write(b"EXPMANPK" + struct.pack("<QQ", len(front), len(packed)) + ident.ljust(64, b"\0"))
os.chmod(tmp, 0o755)
os.replace(tmp, out)
print("build_binary: packed %.1f MB into %.1f MB (cache folder %s)"
      % (len(raw) / 1e6, len(packed) / 1e6, ident.decode()))
EOF
    check_version "$DIST/expman"
    # the newest glibc symbol any part of the binary needs: the oldest glibc it runs on
    floor=$(find build/onedir/expman -type f \( -name '*.so*' -o -name expman \) -print0 \
        | xargs -0 objdump -T 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
    echo "build_binary: needs glibc >= ${floor#GLIBC_}"
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
