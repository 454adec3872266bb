"""Is the build's CA anywhere in the image? Every layer (`docker save`) is scanned for a copy of the
bundle or one of the certificates it adds to the stock trust store.

    python -m images.build verify --stack S [--image T] [--ca-bundle FILE]
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path
from typing import Iterable

from images.stacks import CA_DIR

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)


def pem_bodies(data: bytes) -> list[bytes]:
    """The base64 bodies of the certificates in a PEM bundle, whitespace removed."""
    return [re.sub(rb"\s+", b"", m.group(1)) for m in _PEM.finditer(data)]


STOCK_CA_DIRS = (Path("/usr/share/ca-certificates"),)  # Debian's packaged (Mozilla) roots


def extra_certificates(ca_bundle: Path) -> list[bytes]:
    """Certificates in the bundle that no public trust store has: what a site adds locally, such
    as an intercepting proxy's CA. Their presence anywhere in an image is the leak we look for.
    Public = Debian's packaged roots plus certifi's (pip and requests vendor copies of those)."""
    stock: set[bytes] = set()
    for folder in STOCK_CA_DIRS:
        for cert in folder.rglob("*.crt") if folder.is_dir() else ():
            stock.update(pem_bodies(cert.read_bytes()))
    try:
        import certifi

        stock.update(pem_bodies(Path(certifi.where()).read_bytes()))
    except ImportError:
        pass
    return [body for body in pem_bodies(ca_bundle.read_bytes()) if body not in stock]


class _StreamReader(io.RawIOBase):
    """A file-like view of the engine's export stream, for tarfile's stream mode."""

    def __init__(self, chunks: Iterable[bytes], progress=None):
        self._chunks = iter(chunks)
        self._buffer = b""
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
            if self._progress is not None:
                self._progress.update(len(self._buffer))
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def scan_tar_for_ca(tar_stream, ca_bundle: Path) -> list[str]:
    """Files in a tar stream that hold the CA bundle (same bytes) or one of its extra certificates
    (checked in certificate-like files: *.crt *.pem *.cer, and anything under a ssl/ or certs/ folder)."""
    bundle = ca_bundle.read_bytes()
    bundle_hash = hashlib.sha256(bundle).hexdigest()
    extras = extra_certificates(ca_bundle)
    # Match on a 64-character piece of each body: robust to line wrapping differences.
    needles = [body[:64] for body in extras]
    findings = []
    with tarfile.open(fileobj=tar_stream, mode="r|") as tar:
        for member in tar:
            name = "/" + member.name.lstrip("./")
            if name.startswith(CA_DIR):
                findings.append(f"{name}: a path of the builder's CA folder")
            if not member.isfile():
                continue
            certish = name.endswith((".crt", ".pem", ".cer")) or "/ssl/" in name or "/certs/" in name
            if member.size != len(bundle) and not (certish and needles and member.size < 8 << 20):
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if member.size == len(bundle) and hashlib.sha256(data).hexdigest() == bundle_hash:
                findings.append(f"{name}: a byte-for-byte copy of {ca_bundle}")
            elif certish and needles:
                flat = re.sub(rb"\s+", b"", data)
                hits = sum(1 for needle in needles if needle in flat)
                if hits:
                    findings.append(
                        f"{name}: holds {hits} of the {len(needles)} certificate(s) that "
                        f"{ca_bundle} adds to the stock trust store"
                    )
    return findings


def find_ca_in_image(client, image: str, ca_bundle: Path) -> list[str]:
    """Scan every layer of the image (`docker save`), so a file that a later layer deletes is found too."""
    from tqdm import tqdm

    findings = []
    saved = client.images.get(image)
    with tqdm(
        total=saved.attrs.get("Size") or None,
        unit="B",
        unit_scale=True,
        desc="verify: scanning the layers",
        leave=False,
    ) as bar:
        reader = io.BufferedReader(_StreamReader(saved.save(chunk_size=1 << 20), bar), buffer_size=1 << 20)
        with tarfile.open(fileobj=reader, mode="r|") as archive:
            for member in archive:
                if member.isfile() and member.name.endswith("layer.tar"):
                    layer = member.name.split("/")[0][:12]
                    findings += [
                        f"{finding} (layer {layer})"
                        for finding in scan_tar_for_ca(archive.extractfile(member), ca_bundle)
                    ]
    return findings
