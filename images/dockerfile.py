"""A Dockerfile read the way the engine reads it: stages, their bases, and each stage's ARG/ENV scope
resolved against one stack's build args (the lint checks its rules on this).

dockerfile-parse reads the file: instructions with continuation lines joined and comments dropped
(structure), FROM's image and stage name (image_from), each stage's base resolved with the global
ARGs and the build args (parent_images), quoting, key=value pairs and $VAR / ${VAR} (WordSplitter,
extract_key_values). What it does not do the engine's way stays here, in parse_dockerfile: a stage
sees a global ARG only if it declares it again and its own default beats the global one (its
context_structure takes the global), a stage built on an earlier stage inherits that stage's ENV
(it resets ENV at every FROM), and ${VAR:-word} / ${VAR:+word} (it expands only $VAR and ${VAR}).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Optional

from dockerfile_parse.constants import COMMENT_INSTRUCTION
from dockerfile_parse.parser import DockerfileParser, image_from
from dockerfile_parse.util import WordSplitter, extract_key_values


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the rest, continuation lines joined
    line: int  # where it starts (1-based)
    resolved: str = ""  # value with the stage's ARG/ENV values substituted
    pairs: list[tuple[str, str]] = field(default_factory=list)  # ENV and LABEL: (key, resolved value)


@dataclass
class Stage:
    index: int
    name: Optional[str]
    base_raw: str  # as written: ${BASE_IMAGE}, runtime, ...
    base: str  # resolved with the build args
    from_line: int
    parent: Optional["Stage"]
    instructions: list[Instruction] = field(default_factory=list)
    scope: dict[str, str] = field(default_factory=dict)  # ARG and ENV values visible at the end
    env: dict[str, str] = field(default_factory=dict)  # ENV only: what a child stage inherits

    def lineage(self) -> list["Stage"]:
        chain, stage = [], self
        while stage is not None:
            chain.append(stage)
            stage = stage.parent
        return chain


@dataclass
class Problem:
    line: Optional[int]
    message: str

    def __str__(self) -> str:
        return f"Dockerfile:{self.line}: {self.message}" if self.line else f"Dockerfile: {self.message}"


@dataclass
class ParsedDockerfile:
    directives: dict[str, tuple[str, int]]
    global_args: dict[str, Optional[str]]
    stages: list[Stage]
    declared_args: set[str]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def labels(self, stage: Optional[Stage] = None) -> dict[str, str]:
        """LABELs of a stage and the stages it is built on, resolved."""
        stage = stage or self.final
        labels: dict[str, str] = {}
        for st in reversed(stage.lineage()):
            for ins in st.instructions:
                if ins.keyword == "LABEL":
                    labels.update(ins.pairs)
        return labels


_MODIFIER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):([-+])([^}]*)\}")
_DIRECTIVE = re.compile(r"([a-zA-Z]+)\s*=\s*(\S.*?)\s*")
_VAR_NAME = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def _expand_modifiers(value: str, scope: dict[str, str]) -> str:
    """${VAR:-word} -> ${VAR} or word, ${VAR:+word} -> word or nothing; WordSplitter does the rest."""

    def repl(match: re.Match) -> str:
        name, op, word = match.groups()
        if op == "-":
            return f"${{{name}}}" if scope.get(name) else word
        return word if scope.get(name) else ""

    return _MODIFIER.sub(repl, value)


def substitute(value: str, scope: dict[str, str]) -> str:
    """The value with the scope's variables expanded, quotes kept (nothing expands inside '...')."""
    return "".join(WordSplitter(_expand_modifiers(value, scope), envs=scope).split(maxsplit=0, dequote=False))


def _arg_declarations(value: str) -> list[tuple[str, Optional[str]]]:
    """ARG NAME[=default] ...: (name, default as written, or None when there is none)."""
    declarations = []
    for word in WordSplitter(value).split(dequote=False):
        name, eq, default = word.partition("=")
        declarations.append((name, default if eq else None))
    return declarations


def parse_dockerfile(text: str, build_args: dict[str, str]) -> tuple[ParsedDockerfile, list[Problem]]:
    """Stages with their bases and ARG/ENV scopes resolved against `build_args`."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8")), build_args=dict(build_args))
    structure = parser.structure
    bases = iter(parser.parent_images)
    problems: list[Problem] = []
    directives: dict[str, tuple[str, int]] = {}
    for number, item in enumerate(structure):  # directives: comment lines from line 1, no gap
        match = _DIRECTIVE.fullmatch(item["value"]) if item["instruction"] == COMMENT_INSTRUCTION else None
        if not match or item["startline"] != number:
            break
        directives[match.group(1).lower()] = (match.group(2), number + 1)
    global_args: dict[str, Optional[str]] = {}
    declared: set[str] = set()
    stages: list[Stage] = []
    by_name: dict[str, Stage] = {}

    def key_values(ins: Instruction, scope: dict[str, str]) -> list[tuple[str, str]]:
        try:
            return extract_key_values(
                env_replace=True, args={}, envs=scope, instruction_value=_expand_modifiers(ins.value, scope)
            )
        except (ValueError, IndexError) as exc:
            problems.append(Problem(ins.line, f"{ins.keyword} {ins.value}: {exc or 'no key=value'}"))
            return []

    for item in structure:
        if item["instruction"] == COMMENT_INSTRUCTION:
            continue
        ins = Instruction(item["instruction"], item["value"].strip(), item["startline"] + 1)
        if ins.keyword == "FROM":
            base_raw, name = image_from(ins.value)
            if base_raw is None:  # parent_images skips it too
                problems.append(Problem(ins.line, "FROM names no image"))
                continue
            for var in sorted({v for v in _VAR_NAME.findall(base_raw) if v not in global_args}):
                problems.append(
                    Problem(ins.line, f"FROM uses ${{{var}}}, which is not an ARG declared before the first FROM")
                )
            base = next(bases)
            parent = by_name.get(base.lower())
            stage = Stage(len(stages), name.lower() if name else None, base_raw, base, ins.line, parent)
            # A stage built on an earlier one inherits its ENV (not its ARGs).
            if parent is not None:
                stage.scope.update(parent.env)
                stage.env.update(parent.env)
            stages.append(stage)
            if stage.name:
                by_name[stage.name] = stage
            continue
        if not stages:
            if ins.keyword == "ARG":
                for key, default in _arg_declarations(ins.value):
                    global_args[key] = None if default is None else WordSplitter(default).dequote()
                    declared.add(key)
            else:
                problems.append(Problem(ins.line, f"{ins.keyword} before the first FROM"))
            continue
        stage = stages[-1]
        if ins.keyword == "ARG":
            for key, default in _arg_declarations(ins.value):
                declared.add(key)
                if key in build_args:
                    stage.scope[key] = build_args[key]
                elif default is not None:
                    stage.scope[key] = WordSplitter(_expand_modifiers(default, stage.scope), envs=stage.scope).dequote()
                else:
                    stage.scope[key] = global_args.get(key) or ""
        ins.resolved = substitute(ins.value, stage.scope)
        if ins.keyword in ("ENV", "LABEL"):
            ins.pairs = key_values(ins, stage.scope)  # every pair sees the scope before this line
        if ins.keyword == "ENV":
            stage.scope.update(ins.pairs)
            stage.env.update(ins.pairs)
        stage.instructions.append(ins)
    if not stages:
        problems.append(Problem(None, "no FROM instruction"))
    return ParsedDockerfile(directives, global_args, stages, declared), problems
