"""Which code ran: the commit of a git checkout (dirty when tracked files changed), or the one an
image was built with."""

from __future__ import annotations

import subprocess
from pathlib import Path

from intelligence_assets.config.code_revision import COMMIT_VARIABLE, DIRTY_VARIABLE, CodeRevision, read_code_revision


def git(root: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *arguments],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_a_checkout_gives_its_commit_and_whether_tracked_files_changed(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert read_code_revision(tmp_path, {}) == CodeRevision(head, dirty=False)

    (tmp_path / "results.csv").write_text("untracked output\n")
    assert read_code_revision(tmp_path, {}) == CodeRevision(head, dirty=False)
    (tmp_path / "code.py").write_text("x = 2\n")
    revision = read_code_revision(tmp_path, {})
    assert revision == CodeRevision(head, dirty=True)
    assert revision.describe() == f"{head} (uncommitted changes)"


def test_an_image_gives_the_commit_it_was_built_from_and_no_git_gives_unknown(tmp_path: Path) -> None:
    baked = {COMMIT_VARIABLE: "0123abc", DIRTY_VARIABLE: "true"}
    assert read_code_revision(tmp_path, baked) == CodeRevision("0123abc", dirty=True)
    assert read_code_revision(tmp_path, {COMMIT_VARIABLE: "0123abc"}) == CodeRevision("0123abc", dirty=False)
    assert read_code_revision(tmp_path, {}) == CodeRevision(None)  # not a checkout
    assert CodeRevision(None).describe() == "unknown"
