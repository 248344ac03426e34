"""The README's code blocks run, so they cannot drift from the code (a doc test).

Every fenced ```bash, ```console and ```python block of README.md runs, unless the line
before its fence is an HTML comment `<!-- not run: REASON -->` (installing packages, building
the binary, a bucket we do not have). Those are listed in NOT_RUN below and compared with the
README, so a block cannot quietly stop being run.

- python blocks: each in its own interpreter (PYTHONPATH = the repository), in a scratch
  directory holding a copy of the demo data in ./experiments (EXPMAN_DIR points there too).
- shell blocks: one command a line (comments stripped, `$ ` prompts allowed in console
  blocks); a command must start with `expman` or `python3 expman.py`, and runs as
  `python3 <repo>/expman.py ...` against the same scratch data. `serve` and `demo` (unless
  --no-serve) are started with --port 0 and stopped once /api/health answers.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
EXPMAN = os.path.join(REPO, "expman.py")
LANGS = ("bash", "console", "python")
TIMEOUT = 120            # one command or one python block, on a busy machine
SERVE_TIMEOUT = 60       # a server printing its URL and answering /api/health

# The blocks that cannot run in a test: (reason, first line of the block). Changing the
# README's not-run blocks means changing this list too.
NOT_RUN = [
    ("installs packages and serves until Ctrl-C", "# set up, then open the dashboard on demo data at http://127.0.0.1:8000"),
    ("needs an S3 bucket", "expman list    s3://my-bucket/team/experiments"),
    ("builds the binary (needs PyPI access, about a minute)", "./build_binary.sh                    # → dist/expman and dist/expman.pyz"),
    ("installs packages and runs the whole suite", "python3 -m pip install -r requirements-dev.txt"),
    ("installs packages", 'python3 -m pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu'),
]


def readme_blocks(path=README):
    """[(lang, code, line number of the fence, not-run reason or None)] in README order."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        prev = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        note = re.match(r"^<!--\s*not run:\s*(.+?)\s*-->$", prev)
        if lang in LANGS:
            blocks.append((lang, "\n".join(lines[start + 1:j]), start + 1,
                           note.group(1) if note else None))
        i = j + 1
    return blocks


BLOCKS = readme_blocks()
RUN = [b for b in BLOCKS if b[3] is None]


def test_blocks_are_found_and_not_run_ones_are_listed():
    not_run = [(reason, code.splitlines()[0]) for _lang, code, _line, reason in BLOCKS
               if reason is not None]
    assert not_run == NOT_RUN, "README's not-run blocks changed: update NOT_RUN"
    # most of the README runs: the two-command block, installs and a bucket are the exceptions
    assert len(RUN) >= 10 and len(RUN) > 2 * len(not_run), (len(RUN), len(not_run))
    assert {lang for lang, *_ in RUN} >= {"bash", "python"}
    print(f"\nREADME: {len(RUN)} blocks run, {len(not_run)} marked not run:")
    for reason, first in not_run:
        print(f"  not run ({reason}): {first}")


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory):
    """The demo data, written once (no live run); each block gets a copy."""
    root = tmp_path_factory.mktemp("readme-demo") / "experiments"
    subprocess.run([sys.executable, EXPMAN, "demo", "--no-serve", str(root)], check=True,
                   capture_output=True, timeout=TIMEOUT, env=_env(root))
    return root


def _env(root):
    env = dict(os.environ)
    env["EXPMAN_DIR"] = str(root)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("EXPMAN_DEBUG", None)
    return env


def _commands(code, lang):
    """Shell lines of a block as argument lists (continuations joined, comments dropped)."""
    text = code.replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if lang == "console":
            if not line.startswith("$ "):
                continue  # output shown in the README, not a command
            line = line[2:]
        argv = shlex.split(line, comments=True)
        if argv:
            yield line, argv


def _expman_argv(argv):
    if argv[0] in ("expman", "exp"):
        return [sys.executable, EXPMAN] + argv[1:]
    if argv[0] in ("python3", "python") and argv[1:2] == ["expman.py"]:
        return [sys.executable, EXPMAN] + argv[2:]
    return None


def _serve_until_healthy(argv, cwd, env):
    """Start a serving command with --port 0, wait for its URL and /api/health, stop it."""
    if "--port" not in argv and "-p" not in argv:
        argv = argv + ["--port", "0"]
    assert argv[argv.index("--port" if "--port" in argv else "-p") + 1] == "0", argv
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, seen = time.monotonic() + SERVE_TIMEOUT, []
        url = None
        while url is None:
            assert time.monotonic() < deadline, f"no URL printed: {seen}"
            line = proc.stdout.readline()
            assert line or proc.poll() is None, f"exited {proc.returncode}: {seen}"
            seen.append(line)
            m = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            url = m and m.group(1)
        while True:
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=5) as resp:
                    assert resp.status == 200
                    assert json.loads(resp.read())
                    return
            except OSError:
                assert time.monotonic() < deadline, f"{url}/api/health never answered"
                assert proc.poll() is None, f"server exited {proc.returncode}: {seen}"
                time.sleep(0.1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _serves(argv):
    sub = argv[2] if len(argv) > 2 else ""
    return sub == "serve" or (sub == "demo" and "--no-serve" not in argv)


def run_block(lang, code, line, cwd, root):
    """Run one README block in cwd against the data in root; AssertionError when it fails."""
    env = _env(root)
    if lang == "python":
        script = os.path.join(cwd, f"readme_block_{line}.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(code + "\n")
        done = subprocess.run([sys.executable, script], cwd=cwd, env=env, text=True,
                              capture_output=True, timeout=TIMEOUT)
        assert done.returncode == 0, f"README line {line}:\n{code}\n--\n{done.stderr[-3000:]}"
        return
    commands = list(_commands(code, lang))
    assert commands, f"README line {line}: a runnable {lang} block with no command"
    for text, argv in commands:
        full = _expman_argv(argv)
        assert full is not None, (f"README line {line}: {text!r} is not an expman command; "
                                  "mark the block <!-- not run: why -->")
        if _serves(full):
            _serve_until_healthy(full, cwd, env)
            continue
        done = subprocess.run(full, cwd=cwd, env=env, text=True, capture_output=True,
                              timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, (f"README line {line}: {text}\n"
                                      f"exit {done.returncode}\n{done.stderr[-3000:]}")
        assert done.stdout.strip() or done.stderr.strip() or "-o" in argv, \
            f"README line {line}: {text} printed nothing"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, demo_template):
    """Every runnable block, run a few at a time (each in its own copy of the demo data): the
    blocks are independent, and one after the other they took minutes on a busy machine.
    {fence line: None, or the exception the block raised}."""
    import concurrent.futures

    def one(block):
        lang, code, line, _reason = block
        cwd = tmp_path_factory.mktemp(f"readme-line{line}")
        root = cwd / "experiments"
        shutil.copytree(demo_template, root)
        try:
            run_block(lang, code, line, str(cwd), root)
        except BaseException as exc:  # noqa: BLE001 - reported by that block's test
            return line, exc
        return line, None

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, RUN))


@pytest.mark.parametrize("lang,line", [(b[0], b[2]) for b in RUN],
                         ids=[f"{b[0]}-line{b[2]}" for b in RUN])
def test_readme_block_runs(lang, line, outcomes):
    error = outcomes[line]
    if error is not None:
        raise error

def _anchors(path):
    """GitHub's heading anchors of a Markdown file."""
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    found = set()
    for heading in re.findall(r"^#+ +(.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_links_and_picture_exist():
    """Every relative link of the README (the screenshot, docs/, examples/, #sections) exists."""
    with open(README, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert "docs/dashboard.png" in links
    checked = 0
    for link in links:
        if re.match(r"^[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        path = os.path.join(REPO, target) if target else README
        assert os.path.exists(path), f"README links to a missing {target}"
        if anchor and path.endswith(".md"):
            assert anchor in _anchors(path), f"README links to a missing #{anchor} in {target}"
        checked += 1
    assert checked >= 20
    png = os.path.join(REPO, "docs", "dashboard.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) <= 150 * 1024


def test_cli_table_says_which_commands_take_json():
    """The README's CLI table has a row per command, and its --json column matches each
    command's --help (it once said every read command takes --json; tail does not)."""
    import contextlib
    import io

    import expman

    with open(README, encoding="utf-8") as f:
        rows = re.findall(r"^\| `(\w+)[^`]*` \| [^|]+ \| (yes|no)\b", f.read(), flags=re.M)
    table = dict(rows)
    parser = expman._build_parser()
    commands = next(a for a in parser._actions if a.choices and "list" in a.choices).choices
    listed = {name for name, sub in commands.items() if name != "help"}
    assert set(table) == listed, "the README's CLI table and the commands differ"
    for name, says in table.items():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                code = expman.main([name, "--help"])
            except SystemExit as exc:
                code = exc.code
        assert code in (0, None), (name, code)
        assert ("--json" in out.getvalue()) == (says == "yes"), name
