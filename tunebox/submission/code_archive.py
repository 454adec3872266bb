"""code.tar.gz: the code a run ran, from git (the commit, plus the uncommitted changes) or the working tree."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Optional

from tunebox.config import REPO_ROOT

log = logging.getLogger("tunebox.bundle")

MAX_WORKTREE_FILE_BYTES = 20 << 20  # a working-tree archive skips bigger files (a stray checkpoint is not code)
_WALK_SKIP_DIRS = {
    ".git",
    "__pycache__",
    ".pytest_cache",
    "runs",
    "output",
    "build",
    ".cache",
    "kernel_meta",
    "node_modules",
    ".venv",
    "venv",
}


def _git(root: Path, *args: str) -> Optional[subprocess.CompletedProcess]:
    if shutil.which("git") is None:
        return None
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True)


def working_tree_files(root: Path, exclude: tuple[Path, ...] = ()) -> tuple[list[str], list[str]]:
    """(files to archive, files skipped as too big): git's tracked and untracked-but-not-ignored
    files when root is a repository (an untracked source file is part of what ran), else a walk that
    leaves out caches, runs and outputs."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed is not None and listed.returncode == 0:
        names = sorted({n for n in listed.stdout.decode("utf-8", "replace").split("\0") if n})
    else:
        names = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d
                for d in dirnames
                if d not in _WALK_SKIP_DIRS and not d.endswith(".egg-info") and not d.startswith("rank_")
            )
            for f in filenames:
                if not f.endswith(".pyc"):
                    names.append((Path(dirpath) / f).relative_to(root).as_posix())
        names.sort()
    keep, too_big = [], []
    excluded = [e.resolve() for e in exclude]
    for rel in names:
        path = root / rel
        if not path.is_file() or any(path.resolve().is_relative_to(e) for e in excluded):
            continue
        (too_big if path.stat().st_size > MAX_WORKTREE_FILE_BYTES else keep).append(rel)
    return keep, too_big


def write_worktree_archive(root: Path, files: list[str], dest: Path, prefix: str = "tunebox/") -> None:
    # gzip with mtime 0 and sorted names: the same files give the same archive bytes.
    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel in files:
            info = tar.gettarinfo(str(root / rel), arcname=prefix + rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(root / rel, "rb") as fh:
                tar.addfile(info, fh)


def make_code_archive(git: Optional[dict], dest: Path, root: Path = REPO_ROOT, exclude: tuple[Path, ...] = ()) -> dict:
    """code.tar.gz: `git archive` of the commit train recorded when its tree was clean; otherwise
    the working tree's files now, with the reason (results.json and ALGORITHM.md repeat it)."""
    commit = (git or {}).get("commit")
    from_image = str((git or {}).get("source", "")).startswith("image label")
    if from_image and commit and git.get("dirty") is False and not (root / ".git").exists():
        # Inside the image: its code was built from that clean commit (the revision label), so its
        # files are what ran, though there is no .git to `git archive` from.
        files, too_big = working_tree_files(root, exclude)
        if not files:
            raise RuntimeError(f"no source files found under {root} for code.tar.gz")
        write_worktree_archive(root, files, dest)
        return {
            "source": "image",
            "commit": commit,
            "dirty": False,
            "note": f"the image's copy of the code ({len(files)} files under {root.name or root}/), built from "
            f"commit {commit} with a clean tree (the image's {git['source'].split()[-1]} label)",
        }
    if git and commit and git.get("dirty") is False:
        proc = _git(root, "archive", "--format=tar.gz", "--prefix=tunebox/", "-o", str(dest), commit)
        if proc is not None and proc.returncode == 0:
            return {
                "source": "git archive",
                "commit": commit,
                "dirty": False,
                "note": f"`git archive` of commit {commit}, the commit the train job recorded (clean tree)",
            }
        reason = (
            "git is not installed where bundle runs"
            if proc is None
            else f"`git archive {commit}` failed ({proc.stderr.decode(errors='replace').strip()[:200]})"
        )
    elif not git:
        reason = "git was not available when train ran, so no commit was recorded"
    elif not commit:
        reason = "the repository had no commit when train ran"
    else:
        reason = f"the work tree had uncommitted changes against commit {commit} when train ran"
    files, too_big = working_tree_files(root, exclude)
    if not files:
        raise RuntimeError(f"no source files found under {root} for code.tar.gz")
    write_worktree_archive(root, files, dest)
    for rel in too_big:
        log.warning(
            "code.tar.gz: left out %s (%.0f MB, over %d MB)",
            rel,
            (root / rel).stat().st_size / 1e6,
            MAX_WORKTREE_FILE_BYTES >> 20,
        )
    note = (
        f"{reason}: code.tar.gz holds the working tree's files as they were when bundle ran "
        f"({len(files)} files: git's tracked and untracked-but-not-ignored files), which may differ from "
        f"what ran" + (f"; left out as too big: {', '.join(too_big)}" if too_big else "")
    )
    log.warning("code.tar.gz: %s", note)
    return {"source": "working tree", "commit": commit, "dirty": (git or {}).get("dirty"), "note": note}
