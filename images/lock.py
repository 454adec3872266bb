"""The stack's lock: `pip freeze` of its built image becomes images/<stack>/constraints.txt.

python -m images.build lock --stack S [--image T]
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

from images.stacks import load_stack
from tunebox.images import docker_client, image_tags
from tunebox.layout import REPO_ROOT


def write_lock(stack_name: str, image: Optional[str] = None) -> Path:
    """`pip freeze` of a built image becomes the stack's constraints.txt (the lock)."""
    stack = load_stack(stack_name)
    image = image or image_tags(stack.name)[0]
    client = docker_client()
    out = client.containers.run(
        image, ["python", "-m", "pip", "freeze", "--exclude", "tunebox"], remove=True, stdout=True, stderr=False
    )
    pins = sorted((ln for ln in out.decode().splitlines() if ln.strip() and not ln.startswith("#")), key=str.lower)
    header = (
        f"# Lock of the {stack.name} stack: `pip freeze` of {image} ({stack.build_args['PYTHON']}, "
        f"{dt.date.today().isoformat()}).\n"
        f"# Regenerate: invoke image.build --stack {stack.name} && "
        f"python -m images.build lock --stack {stack.name}\n"
    )
    target = stack.folder / "constraints.txt"
    target.write_text(header + "\n".join(pins) + "\n", encoding="utf-8")
    print(f"image.lock: {len(pins)} pins -> {target.relative_to(REPO_ROOT)}")
    return target
