"""Container tooling: the pinned stacks in images/<stack>/, the image builder and the compose runner.

Run from the repository root: `python -m images.build ...`, `python -m images.compose_up ...`
(or through invoke: `invoke image.base`, `invoke image.build`, `invoke compose.up`).
"""
