"""The README and docs/ as a clone has them: every link and image resolves inside the repository (a
file git would ship, a heading that exists), and none points outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def shipped() -> set[str]:
    """Paths a clone has: tracked files and those not yet committed that git does not ignore."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: nothing to tell what a clone holds")
    return set(out.splitlines())


def prose(text: str) -> str:
    """The page without its fenced code blocks, where brackets are code, not links."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page.read_text()), flags=re.M):
        base = slug(heading)
        out.add(base if base not in seen else f"{base}-{seen[base]}")  # GitHub numbers repeats
        seen[base] = seen.get(base, 0) + 1
    return out


def links() -> list[tuple[Path, str]]:
    return [(page, target) for page in PAGES for target in LINK.findall(prose(page.read_text()))]


def test_the_slug_is_githubs():
    assert (
        slug("Watch a sweep live: TensorBoard and Weights & Biases")
        == "watch-a-sweep-live-tensorboard-and-weights--biases"
    )
    assert (
        slug("On a GPU: the whole step as a CUDA graph (`hardware.cuda_graph`)")
        == "on-a-gpu-the-whole-step-as-a-cuda-graph-hardwarecuda_graph"
    )


def test_the_pages_link_to_something():
    assert len(links()) > 40 and {p.name for p, _ in links()} >= {"README.md", "method.md", "experiment.md"}


@pytest.mark.parametrize("page, target", links(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_every_link_resolves_in_a_clone(page, target):
    if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: outside the repository by intent
        return
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    rel = file.relative_to(REPO).as_posix() if file.is_relative_to(REPO) else None
    assert rel is not None, f"{page.name}: {target} points outside the repository"
    files = shipped()
    assert rel in files or any(f.startswith(rel.rstrip("/") + "/") for f in files) or rel == ".", (
        f"{page.name}: {target} is not in a clone of the repository"
    )
    if anchor:
        assert file.suffix == ".md" and anchor in anchors(file), f"{page.name}: {target}: no such heading"
