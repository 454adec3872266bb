#!/usr/bin/env python3
"""Check a tunebox submission with whatever MindSpore this Python has: in the contest-2024 image,
the contest's versions (Python 3.9, MindSpore 2.3.0rc2, MindFormers 1.1.0), which cannot run
tunebox's jobs (they need Python 3.11) but can tell whether the contest's stack reads what we submit.

    python check_submission.py SUBMISSION_DIR [--no-load]

1. SHA256SUMS: every listed file is there with its sha256, and no file is left out of it.
2. Every checkpoint (checkpoints/step-N/model.ckpt) loads with this MindSpore's
   load_checkpoint, all with the same parameter names and shapes, and none is a LoRA parameter
   (the submission holds merged full checkpoints). --no-load skips this (no MindSpore here).

Standard library plus MindSpore only, and Python 3.9 syntax (tests/test_images.py runs it
under 3.9). Exit codes: 0 ok, 2 problems found or bad input, 1 crash.
"""

import argparse
import hashlib
import sys
from pathlib import Path

SUMS = "SHA256SUMS"
LORA_MARKERS = ("lora_a", "lora_b", "mindpet_delta")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sums(folder):
    problems = []
    listed = {}
    for lineno, line in enumerate((folder / SUMS).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        listed[name] = (digest, lineno)
    for name, (digest, lineno) in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            problems.append("{}:{}: {} is missing".format(SUMS, lineno, name))
        elif sha256(path) != digest:
            problems.append("{}:{}: {} does not match its sha256".format(SUMS, lineno, name))
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {SUMS}
    for name in sorted(on_disk - set(listed)):
        problems.append("{} is not listed in {}".format(name, SUMS))
    return problems


def check_checkpoints(folder, files):
    import mindspore as ms

    problems, layout = [], None
    for name in files:
        params = ms.load_checkpoint(str(folder / name))
        shapes = {k: tuple(v.shape) for k, v in params.items()}
        lora = sorted(k for k in shapes if any(m in k.lower() for m in LORA_MARKERS))
        if lora:
            problems.append("{}: LoRA parameters left in a merged checkpoint: {}".format(name, ", ".join(lora[:3])))
        if layout is None:
            layout = shapes
        elif shapes != layout:
            problems.append("{}: parameter names or shapes differ from {}".format(name, files[0]))
        print(
            "loaded {}: {} parameters, {:,} values".format(name, len(shapes), sum(int(v.size) for v in params.values()))
        )
    return problems, ms.__version__


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submission")
    parser.add_argument("--no-load", action="store_true", help="checksums only (no MindSpore needed)")
    args = parser.parse_args(argv)
    folder = Path(args.submission)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("checkpoints/*/model.ckpt"))
    if not (folder / SUMS).is_file() or not files:
        print(
            "error: {} is not a submission folder (no {} or no checkpoints/*/model.ckpt)".format(folder, SUMS),
            file=sys.stderr,
        )
        return 2
    problems = check_sums(folder)
    print("python {}".format(sys.version.split()[0]))
    if not args.no_load:
        found, version = check_checkpoints(folder, files)
        problems += found
        print("mindspore {} read {} checkpoint(s)".format(version, len(files)))
    for p in problems:
        print("PROBLEM  " + p)
    print("ok" if not problems else "{} problem(s)".format(len(problems)))
    return 2 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # noqa: BLE001 - a crash is exit 1, with what happened
        print("failed: {}: {}".format(type(exc).__name__, exc), file=sys.stderr)
        sys.exit(1)
