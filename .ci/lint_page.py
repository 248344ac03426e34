#!/usr/bin/env python3
"""Lint the dashboard's inline script: extract it from expman.py exactly as the server hashes it
(between the page's one <script> and </script>), then run `node --check` and eslint on it.

    python3 .ci/lint_page.py            # exit 0 when both pass, 1 otherwise
    python3 .ci/lint_page.py PAGE.html  # the same checks on another copy of the page (tests)

eslint comes from the npm registry into .ci/node (installed by .ci/run); the config is
.ci/eslint.config.mjs. The page itself has no build step: this only reads it.
"""
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
ESLINT = HERE / "node" / "node_modules" / ".bin" / "eslint"


def page_script(page=None):
    """The script exactly as _page_csp hashes it: between the first <script> and the last
    </script>."""
    if page is None:
        sys.path.insert(0, str(REPO))
        import expman
        page = expman.DASHBOARD_HTML
    return page.split("<script>", 1)[1].rsplit("</script>", 1)[0]


def charts_section(script):
    """The text of the `// --- 13.N charts` section: the only code that draws."""
    out, inside = [], False
    for line in script.split("\n"):
        if line.startswith("// --- 13."):
            inside = line.split(None, 3)[-1] == "charts"
        if inside:
            out.append(line)
    if not out:
        raise SystemExit("no '// --- 13.N charts' section in the dashboard script")
    return "\n".join(out) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    page = pathlib.Path(argv[0]).read_text(encoding="utf-8") if argv else None
    node = os.environ.get("NODE", "node")
    with tempfile.TemporaryDirectory() as tmp:
        script = pathlib.Path(tmp) / "dashboard.js"
        text = page_script(page)
        script.write_text(text, encoding="utf-8")
        charts = pathlib.Path(tmp) / "charts.js"
        charts.write_text(charts_section(text), encoding="utf-8")
        check = subprocess.run([node, "--check", str(script)], capture_output=True, text=True)
        if check.returncode:
            sys.stderr.write("node --check failed:\n" + check.stdout + check.stderr)
            return 1
        if not ESLINT.exists():
            sys.stderr.write(f"eslint is not installed at {ESLINT}: npm install --prefix .ci/node eslint@9\n")
            return 1
        lint = subprocess.run([str(ESLINT), "--no-config-lookup", "-c", str(HERE / "eslint.config.mjs"),
                               "--max-warnings", "0", str(script), str(charts)],
                              capture_output=True, text=True, cwd=tmp)
        if lint.returncode:
            sys.stderr.write("eslint failed on the dashboard script (line numbers are the "
                             "script's; add the <script> line of expman.py):\n"
                             + lint.stdout + lint.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
