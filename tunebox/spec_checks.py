"""The run spec's checks across subjects, after loading: LoRA targets against the model's layers, the
data rules (answer formats, prompt templates) and the contest's math families. tunebox/config.py holds
the schema and each section's own checks and imports none of these subjects; this module stands above
both, so the spec stays a leaf that everything may read.

Jobs load their spec through `load_checked_spec` (tunebox/cli.py run_job); an error still names the
YAML file and the line of the offending key.
"""

from __future__ import annotations

from pathlib import Path

from tunebox.config import DataSection, LoraSection, RunSpec, SpecLines, read_spec
from tunebox.contest.scoring import MATH_FAMILIES
from tunebox.data import answers, prompts
from tunebox.model.registry import lora_targets


def check_lora_targets(lora: LoraSection, where: SpecLines) -> None:
    """lora.target_modules: every alternative must select a layer of the model."""
    try:
        lora_targets(lora.target_modules)
    except ValueError as exc:
        raise where.error(f"lora.target_modules: {exc}", "lora.target_modules") from None


def check_data_rules(d: DataSection, where: SpecLines) -> None:
    """data.answer_format and data.template name real formats; data.families, drop_families and
    balance name real math families."""
    try:
        answers.check_setting(d.answer_format)
    except ValueError as exc:
        raise where.error(f"data.answer_format: {exc}", "data.answer_format") from None
    try:
        prompts.check_template(d.template)
    except ValueError as exc:
        raise where.error(f"data.template: {exc}", "data.template") from None
    if d.format != "math":
        return
    for key, names in (
        ("families", d.families or []),
        ("drop_families", d.drop_families),
        ("balance", [k for k in (d.balance or {}) if k != "*"]),
    ):
        unknown = [n for n in names if n not in MATH_FAMILIES]
        if unknown:
            raise where.error(
                f"data.{key}: unknown famil{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(map(repr, unknown))}; known: {', '.join(MATH_FAMILIES)}",
                f"data.{key}",
            )


def check_across(spec: RunSpec, where: SpecLines) -> None:
    """Every check that reads the spec against another subject."""
    check_lora_targets(spec.lora, where)
    check_data_rules(spec.data, where)


def load_checked_spec(path: str | Path, overrides: list[str] | None = None) -> RunSpec:
    """The run spec as jobs read it: loaded, each section checked (tunebox.config.read_spec), then checked
    across subjects. Bad input raises InputError naming the file and the line."""
    spec, where = read_spec(path, overrides)
    check_across(spec, where)
    return spec
