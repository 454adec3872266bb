"""A local Debian base image, for where no registry is reachable (this machine, air-gapped sites: the
cpu and contest stacks, the Ascend stack's `--offline`), made from the host's own Debian mirror with
debootstrap and `docker import`.

    python -m images.build base [--suite bookworm] [--tag T] [--mirror URL]
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from images.stacks import BuildFailed
from tunebox.images import docker_client
from tunebox.io import InputError


def host_apt_sources() -> tuple[str, Optional[str]]:
    """(Debian mirror, security mirror or None) from the host's apt configuration."""
    uris: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for match in re.finditer(r"^URIs:\s*(\S+)", path.read_text(encoding="utf-8"), re.M):
            uris.append(match.group(1))
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.exists():
        for match in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", sources_list.read_text(encoding="utf-8"), re.M):
            uris.append(match.group(1))
    main = next((u for u in uris if "security" not in u), None)
    if main is None:
        raise InputError(
            "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; "
            "pass --mirror http://deb.debian.org/debian"
        )
    security = next((u for u in uris if "security" in u), None)
    return main.rstrip("/"), security.rstrip("/") if security else None


def make_base_image(suite: str = "bookworm", tag: Optional[str] = None, mirror: Optional[str] = None) -> str:
    """debootstrap --variant=minbase SUITE from the host's mirror, then import it as an image."""
    if os.geteuid() != 0:
        raise InputError("debootstrap needs root: run `invoke image.base` as root")
    if not Path("/usr/sbin/debootstrap").exists():
        raise InputError("debootstrap is not installed: apt-get install -y debootstrap")
    client = docker_client()
    tag = tag or f"tunebox/debian-{suite}:base"
    repository, _, version = tag.rpartition(":")
    main, security = host_apt_sources()
    mirror = (mirror or main).rstrip("/")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix=f"tunebox-{suite}-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        print(f"image.base: debootstrap --variant=minbase {suite} from {mirror} (about a minute)", flush=True)
        code = subprocess.call(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror])
        if code != 0:
            raise BuildFailed(f"debootstrap exited with {code}; its log is {rootfs}/debootstrap/debootstrap.log")
        lines = [f"deb {mirror} {suite} main", f"deb {mirror} {suite}-updates main"]
        if security:
            lines.append(f"deb {security} {suite}-security main")
        (rootfs / "etc/apt/sources.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
        # apt lists and .debs are ~80 MB the image does not need: every Dockerfile runs apt-get update.
        for pattern in (
            "var/lib/apt/lists/*",
            "var/cache/apt/*.bin",
            "var/cache/apt/archives/*.deb",
            "var/log/*.log",
            "var/log/apt/*",
        ):
            for p in rootfs.glob(pattern):
                if p.is_file() or p.is_symlink():
                    p.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.check_call(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tarball), "."])
        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        changes = [
            "ENV LANG=C.UTF-8",
            'CMD ["/bin/bash"]',
            f"LABEL tunebox.base.suite={suite} tunebox.base.mirror={mirror} tunebox.base.created={created}",
        ]
        client.api.import_image_from_file(str(tarball), repository=repository, tag=version or "base", changes=changes)
    image = client.images.get(tag)
    print(f"image.base: {tag} {image.short_id} {image.attrs['Size'] / 1e6:.0f} MB in {time.time() - started:.0f} s")
    return image.id
