"""The dashboard's inline script passes `node --check` and eslint (.ci/lint_page.py with
.ci/eslint.config.mjs), and the check fails on a broken script. CI installs eslint into
.ci/node and sets EXPMAN_REQUIRE_LINT=1, so there a missing eslint fails instead of skipping."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import expman

REPO = pathlib.Path(__file__).resolve().parent.parent
LINT = REPO / ".ci" / "lint_page.py"
ESLINT = REPO / ".ci" / "node" / "node_modules" / ".bin" / "eslint"

if not shutil.which("node") or not ESLINT.exists():
    if os.environ.get("EXPMAN_REQUIRE_LINT"):
        raise RuntimeError(f"node or eslint ({ESLINT}) is missing: .ci/run installs eslint")
    pytest.skip("node or eslint not installed (npm install --prefix .ci/node eslint@9)",
                allow_module_level=True)


def _lint(*args):
    return subprocess.run([sys.executable, str(LINT), *args], capture_output=True, text=True,
                          timeout=120)


def test_the_inline_script_passes_node_check_and_eslint():
    result = _lint()
    assert result.returncode == 0, result.stderr


def test_the_check_fails_on_a_syntax_error(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(expman.DASHBOARD_HTML.replace("// --- 13.1 util", "// --- 13.1 util\nconst = ;", 1))
    result = _lint(str(page))
    assert result.returncode == 1
    assert "node --check failed" in result.stderr


def test_eslint_fails_on_an_undefined_name_and_on_dense_chart_code(tmp_path):
    page = tmp_path / "page.html"
    broken = expman.DASHBOARD_HTML.replace(
        "// --- 13.1 util", "// --- 13.1 util\nundefinedThing();", 1)
    broken = broken.replace("  function flush() {\n    frameRequest = 0;",
                            "  function flush() {\n    frameRequest = 0; const q = 1; void q;", 1)
    assert broken.count("undefinedThing") == 1 and "const q = 1" in broken
    page.write_text(broken)
    result = _lint(str(page))
    assert result.returncode == 1
    assert "no-undef" in result.stdout + result.stderr
    assert "max-statements-per-line" in result.stderr
    assert "id-length" in result.stderr


def test_the_charts_section_is_the_only_code_that_draws():
    script = expman.DASHBOARD_HTML.split("<script>", 1)[1].rsplit("</script>", 1)[0]
    sections = {}
    name = None
    for line in script.split("\n"):
        if line.startswith("// --- 13."):
            name = line.split(None, 3)[-1]
        sections.setdefault(name, []).append(line)
    for section, lines in sections.items():
        text = "\n".join(lines)
        if section == "charts":
            assert "getContext('2d')" in text
        else:
            assert "getContext('2d')" not in text.replace("createElement('canvas').getContext('2d')", ""), section
