"""CI=true has no way to skip: every test that cannot run here goes through conftest.cannot_run,
which fails under CI. A plain pytest skip (a skip mark, a skip call, an import-or-skip) would pass
CI silently."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# split so this file does not match itself
PLAIN_SKIP = re.compile(
    "|".join([r"pytest\.sk" + r"ip\(", r"mark\.sk" + r"ip(if)?\b", "import" + "orskip", r"unittest\.sk" + r"ip"])
)


def test_no_test_skips_without_cannot_run():
    found = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name == "conftest.py":  # cannot_run itself
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if PLAIN_SKIP.search(line):
                found.append(f"{path.name}:{lineno}: {line.strip()}")
    assert not found, "skips that bypass conftest.cannot_run (use it instead):\n" + "\n".join(found)
