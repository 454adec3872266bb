"""fetch: download one file (URL --out) or every file of a list (--list), resumably and sha256-verified.

    python -m jobs.fetch URL --out PATH [--sha256 HEX]
    python -m jobs.fetch --list files.yaml [--root DIR]

Exit codes: 0 done, 2 bad input (arguments, list file, malformed hash), 1 the download failed
(network, HTTP error, checksum mismatch). An interrupted download leaves PATH.part behind;
running the same command again resumes it.
"""

from __future__ import annotations

import argparse
import sys

from tunebox.cli import guarded, setup_logging, tool_parser
from tunebox.fetch import FetchError, fetch_file, fetch_manifest
from tunebox.model.registry import cache_dir

LIST_FORMAT = """\
list file format (YAML or JSON), relative paths land under --root:
  - url: https://huggingface.co/HuggingFaceTB/SmolLM2-135M/resolve/main/model.safetensors
    path: hf/SmolLM2-135M/model.safetensors
    sha256: <64 hex digits>          # optional, but without it nothing is verified
"""


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(
        "fetch",
        "Resumable, sha256-verified downloads (HTTP Range resume, retries with "
        "exponential backoff; the final name appears only once the file is complete).",
        LIST_FORMAT + "\nexit codes: 0 ok, 2 bad input, 1 download failed",
    )
    parser.add_argument("url", nargs="?", help="the file to download (http:// or https://)")
    parser.add_argument("--out", help="where to put it (required with URL)")
    parser.add_argument("--sha256", help="expected sha256 (64 hex digits); checked before the rename")
    parser.add_argument(
        "--list",
        "--files",
        dest="list_file",
        metavar="FILE",
        help="a YAML/JSON list of {url, path, sha256} to fetch instead of one URL",
    )
    parser.add_argument(
        "--root", default=None, help=f"folder for the list's relative paths (default: $TUNEBOX_CACHE or {cache_dir()})"
    )
    parser.add_argument(
        "--retries", type=int, default=5, help="retries after a dropped connection, timeout or 5xx (default: 5)"
    )
    parser.add_argument(
        "--backoff", type=float, default=1.0, help="seconds before the first retry, doubled each time (default: 1.0)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30, help="seconds to wait for the server to connect or send data (default: 30)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    if bool(args.url) == bool(args.list_file):
        parser.print_usage(sys.stderr)
        print("error: give either URL --out PATH, or --list FILE", file=sys.stderr)
        return 2
    if args.url and not args.out:
        parser.print_usage(sys.stderr)
        print("error: URL needs --out PATH (where to write the file)", file=sys.stderr)
        return 2
    if args.list_file and (args.out or args.sha256):
        print("error: --out and --sha256 go with a single URL; a list gives them per entry", file=sys.stderr)
        return 2
    if args.retries < 0 or args.timeout <= 0 or args.backoff < 0:
        print("error: --retries must be >= 0, --timeout > 0 and --backoff >= 0", file=sys.stderr)
        return 2
    options = dict(retries=args.retries, backoff=args.backoff, timeout=args.timeout, progress=not args.no_progress)

    def body() -> None:
        if args.url:
            print(fetch_file(args.url, args.out, args.sha256, **options))
        else:
            for path in fetch_manifest(args.list_file, root=args.root, **options):
                print(path)

    # OSError: disk full, permission denied on --out
    return guarded(
        "fetch",
        body,
        known=(FetchError, OSError),
        on_interrupt="the .part file is kept; run the same command again to resume",
    )


if __name__ == "__main__":
    sys.exit(main())
