"""verify: check a submission folder written by `python -m jobs.bundle`, and list every problem.

    python -m jobs.verify SUBMISSION [--rerun] [--image IMAGE] [--tolerance T]

Checks, all of them every time (a problem does not stop the others):
  files        every expected file is there (the fixed set plus, per checkpoint, weights, predictions, scores)
  checksums    every file listed in SHA256SUMS matches it; nothing on disk is missing from the list (no strays)
  checkpoints  exactly five, at the evenly spaced steps train planned (logs/train/checkpoints/index.json),
               each the file merge wrote and evaluate scored (sha256 in logs/merge/index.json and scores.json)
  spec         hyperparams.yaml loads as a run spec and is the spec every job's manifest recorded
  logs         the training log has one line per step, 1..total, with the losses loss.csv and the checkpoint
               indexes (train's, merge's) record; a run of N workers left N msrun logs
  results      results.json agrees with the logs: accuracies re-scored from the bundled predictions (which
               answer prep's held-out rows: same lines, prompts and references),
               SQuAD F1/EM re-scored from the bundled SQuAD predictions (when evaluate measured them) and
               the retention verdict re-derived, ratio and score recomputed from hyperparams.yaml, the
               chosen checkpoint by the same rule
  environment  environment.json and ENVIRONMENT.md are what the bundled manifests (and code.tar.gz's
               pyproject.toml, for the dependencies on top of the contest's base) give
  code         code.tar.gz is a readable archive of tunebox's sources
  selfcheck    selfcheck.png is the picture bundle drew of this run (run id, commit, results.json's sha256)
With --rerun, each checkpoint is evaluated again from the folder alone (bundled tokenizer, held-out
rows and weights; greedy decoding with tunebox.evaluation.decode as evaluate does on CPU) and the accuracies
must match results.json; and, where MindFormers is installed, the `predict` check runs
mindformers/predict.yaml as a judge would: MindFormers' build_tokenizer and build_network on the file,
its checkpoint loader (checked strictly), a few greedy tokens for the first held-out prompt from the
network's forward pass, which must be tunebox's decoder's answer. With --image, the same check (with --rerun)
runs inside that Docker image, this checkout's jobs/ and tunebox/ mounted read-only, no network; skipped
with a message when Docker is not reachable.

Exit codes: 0 every check holds, 1 a check failed, 2 bad input (no such folder, unknown image).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import tunebox
from tunebox import images
from tunebox.cli import guarded, setup_logging, tool_parser
from tunebox.io import InputError
from tunebox.submission import contents
from tunebox.submission.checks import (
    Findings,
    Submission,
    check_checkpoints,
    check_checksums,
    check_code,
    check_environment,
    check_files,
    check_logs,
    check_mindformers,
    check_predict,
    check_results,
    check_selfcheck,
    check_worker_logs,
    load_bundled_spec,
    planned_steps,
    rerun_evaluation,
)

log = logging.getLogger("tunebox.verify")


def docker_client():
    """A Docker client, or (None, why not)."""
    try:
        return images.docker_client(timeout=60), None
    except Exception as exc:  # no SDK, no socket, permission denied, engine down: all mean "not available here"
        return None, str(exc)[:300]


def run_in_image(sub: Submission, f: Findings, client, image: str, tolerance: float, timeout: float) -> None:
    """The same verification, --rerun included, inside IMAGE: the image's Python, MindSpore and
    numpy run this tunebox's `jobs` and `tunebox` packages, mounted read-only and first on PYTHONPATH (the image's
    own copy may predate verify; the contest-2024 image carries none). No network: the folder must be
    enough. Runs as the calling user, so files only that user can read are readable."""
    jobs_dir = Path(__file__).resolve().parent
    package_dir = Path(tunebox.__file__).resolve().parent
    cmd = ["python", "-m", "jobs.verify", "/submission", "--rerun", "--tolerance", str(tolerance)]
    log.info("running %s in %s", " ".join(cmd), image)
    container = client.containers.run(
        image,
        cmd,
        detach=True,
        network_disabled=True,
        working_dir="/tmp",
        user=f"{os.getuid()}:{os.getgid()}" if hasattr(os, "getuid") else None,
        environment={
            "PYTHONPATH": "/opt/tunebox-verify",
            "HOME": "/tmp",
            "TUNEBOX_CACHE": "/tmp/tunebox-cache",
            "TUNEBOX_LOG": "WARNING",
        },
        volumes={
            str(sub.root.resolve()): {"bind": "/submission", "mode": "ro"},
            str(jobs_dir): {"bind": "/opt/tunebox-verify/jobs", "mode": "ro"},
            str(package_dir): {"bind": "/opt/tunebox-verify/tunebox", "mode": "ro"},
        },
    )
    try:
        try:
            status = container.wait(timeout=timeout).get("StatusCode")
        except Exception as exc:  # requests' ReadTimeout and friends
            f.fail("image", f"{image}: verification did not finish within {timeout:.0f} s ({type(exc).__name__})")
            return
        output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    finally:
        container.remove(force=True)
    inner = [l for l in output.splitlines() if l.strip().startswith(("FAIL", "ok", "note", "verify:", "|"))]
    where = f"{image} ({client.images.get(image).short_id})"
    if status == 0:
        f.ok("image", f"inside {where}: every check holds, re-run included")
    else:
        tail = "" if inner else ": " + " | ".join(output.strip().splitlines()[-5:])[-600:]
        f.fail("image", f"inside {where}: verify exited {status}{tail}")
    for line in inner:
        f.detail("image", line.strip())


# ---- the command -----------------------------------------------------------------------------


def verify(
    root: Path, rerun: bool = False, image: Optional[str] = None, tolerance: float = 0.0, image_timeout: float = 3600.0
) -> Findings:
    root = Path(root)
    if not root.is_dir():
        raise InputError("no such submission folder (make one with: python -m jobs.bundle --config SPEC)", root)
    client = None
    f = Findings()
    if image:
        client, why_not = docker_client()
        if client is None:
            f.note("image", f"skipped the check in {image}: {why_not}")
        else:
            import docker

            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                raise InputError(
                    f"no image {image!r} in the local Docker engine; build it (invoke image.build) or pull it first"
                ) from None
    sub = Submission(root, f)
    actual = check_checksums(sub, f)
    planned = planned_steps(sub)
    if planned is None:  # no plan to go by: expect the files of whatever checkpoint folders there are
        folders = sub.path("checkpoints").glob("*") if sub.path("checkpoints").is_dir() else []
        check_files(sub, f, sorted(s for s in (contents.step_of_dir(p.name) for p in folders) if s is not None))
    else:
        check_files(sub, f, planned)
    found = check_checkpoints(sub, f, planned, actual)
    spec = load_bundled_spec(sub, f)
    check_logs(sub, f)
    check_mindformers(sub, f)
    check_worker_logs(sub, f, spec)
    results = check_results(sub, f, spec, found, actual)
    check_selfcheck(sub, f, sub.json("results.json") if sub.path("results.json").is_file() else None)
    check_environment(sub, f)
    check_code(sub, f, results)
    if rerun:
        rerun_evaluation(sub, f, spec, found, results, tolerance)
        check_predict(sub, f, spec)
    if client is not None:
        run_in_image(sub, f, client, image, tolerance, image_timeout)
    return f


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser("verify", __doc__.split("\n\n")[0], __doc__.split("\n\n", 1)[1])
    parser.add_argument("submission", help="the folder jobs.bundle wrote (runs/<run_id>/submission)")
    parser.add_argument("--rerun", action="store_true", help="evaluate every checkpoint again from the folder alone")
    parser.add_argument("--image", metavar="IMAGE", help="also run the check (with --rerun) inside this Docker image")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="allowed absolute accuracy difference in the re-run (default 0: identical)",
    )
    parser.add_argument("--image-timeout", type=float, default=3600.0, help="seconds allowed for the run in the image")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    found = []
    code = guarded(
        "verify",
        lambda: found.append(verify(Path(args.submission), args.rerun, args.image, args.tolerance, args.image_timeout)),
    )
    if code:
        return code
    findings = found[0]
    print(f"verify: {args.submission}")
    findings.print()
    problems = findings.failed()
    if problems:
        print(f"verify: {len(problems)} problem(s); the submission does not check out")
        return 1
    print("verify: every check holds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
