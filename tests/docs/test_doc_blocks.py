"""Docs that run: every fenced ```python block of README.md and docs/**/*.md runs as printed, each in a fresh
interpreter in an empty temporary folder (the repository root on PYTHONPATH), and exits 0.

A block is marked by an HTML comment on the line directly before its fence (docs/development.md, "Code blocks in
the docs"): `<!-- doctest: slow -->` runs it in the slow tier only; `<!-- doctest: skip REASON -->` never runs it
here (a GPU, downloaded weights), and the reason is required.  Blocks are self-contained: no block sees another's
variables or files."""

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```python\s*$")
MARKER = re.compile(r"^<!--\s*doctest:\s*(?P<kind>\S+)(?P<reason>.*?)\s*-->\s*$")
BLOCK_TIMEOUT_S = 900  # a slow block may train for minutes; a quick one takes seconds


@dataclass(frozen=True)
class Block:
    """One ```python block: where it starts (file, 1-based line of the fence), its code and its marker."""

    path: Path
    line: int
    code: str
    kind: str = ""  # "", "slow" or "skip"
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every markdown file under docs/, in a fixed order."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def extract_blocks(path: Path) -> list[Block]:
    """The ```python blocks of one markdown file with their doctest markers.

    Raises:
        ValueError: an unknown marker, a skip without a reason, or a block that is never closed.
    """
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if not FENCE.match(lines[i]):
            i += 1
            continue
        start = i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{path}:{start + 1}: a ```python block that is never closed")
        kind, reason = _marker(path, start, lines[start - 1] if start else "")
        blocks.append(Block(path, start + 1, "\n".join(lines[start + 1 : end]) + "\n", kind, reason))
        i = end + 1
    return blocks


def _marker(path: Path, fence: int, before: str) -> tuple[str, str]:
    found = MARKER.match(before.strip())
    if found is None:
        return "", ""
    kind, reason = found["kind"], found["reason"].strip()
    if kind not in ("slow", "skip"):
        raise ValueError(f"{path}:{fence}: unknown doctest marker {kind!r} (slow or skip REASON)")
    if kind == "skip" and not reason:
        raise ValueError(f"{path}:{fence}: `doctest: skip` needs a reason")
    return kind, reason


def _params() -> list:
    params = []
    for path in doc_files():
        for block in extract_blocks(path):
            marks = []
            if block.kind == "slow":
                marks.append(pytest.mark.slow)
            elif block.kind == "skip":
                marks.append(pytest.mark.skip(reason=block.reason))
            params.append(pytest.param(block, id=block.name, marks=marks))
    return params


@pytest.mark.parametrize("block", _params())
def test_doc_block_runs(block: Block, tmp_path, digits_teacher, zsq_cache_dir):
    """The block exits 0 in a fresh interpreter with the session's digits teacher cache (trained once)."""
    script = tmp_path / "block.py"
    script.write_text(block.code)
    work = tmp_path / "work"
    work.mkdir()
    threads = os.environ.get("ZSQ_TEST_THREADS", "1")
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        ZSQ_PROBE_CACHE=str(zsq_cache_dir),
        MPLBACKEND="Agg",
        OMP_NUM_THREADS=threads,  # torch's intra-op threads in the child, as in the test process
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
    )
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


@pytest.mark.teacher_free
def test_markers_are_read_from_the_line_before_the_fence(tmp_path):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "text\n```python\nprint(1)\n```\n<!-- doctest: slow -->\n```python\nprint(2)\n```\n"
        "<!-- doctest: skip needs a GPU -->\n```python\nprint(3)\n```\n```bash\nls\n```\n"
    )
    blocks = extract_blocks(page)
    assert [(b.line, b.code, b.kind, b.reason) for b in blocks] == [
        (2, "print(1)\n", "", ""),
        (6, "print(2)\n", "slow", ""),
        (10, "print(3)\n", "skip", "needs a GPU"),
    ]


@pytest.mark.teacher_free
@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- doctest: later -->\n```python\nx = 1\n```\n", "unknown doctest marker"),
        ("<!-- doctest: skip -->\n```python\nx = 1\n```\n", "needs a reason"),
        ("```python\nx = 1\n", "never closed"),
    ],
)
def test_bad_markers_and_open_blocks_are_refused(tmp_path, text, message):
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(ValueError, match=message):
        extract_blocks(page)


@pytest.mark.teacher_free
def test_the_docs_hold_python_blocks():
    """The collection above found the blocks the docs are known to hold (a moved page would otherwise pass
    silently with nothing to run)."""
    names = {block.path.relative_to(ROOT).as_posix() for path in doc_files() for block in extract_blocks(path)}
    assert {"README.md", "docs/python-api.md", "docs/run-directory.md"} <= names


@pytest.mark.teacher_free
def test_every_zp_name_in_the_docs_exists():
    """A `zp.<name>` written in README.md or docs/ is a public name of the package (`zsq_probe.__all__`) that
    resolves, so the docs cannot name an API that is not there."""
    import zsq_probe as zp

    named = {m for path in doc_files() for m in re.findall(r"\bzp\.([A-Za-z_]\w*)", path.read_text())}
    assert named, "the docs name no zp.* at all: the pattern or the docs changed"
    missing = sorted(n for n in named if n not in zp.__all__ or not hasattr(zp, n))
    assert not missing, f"docs name zp.{', zp.'.join(missing)}, which zsq_probe does not export"
