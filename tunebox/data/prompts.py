"""The prompt around a problem (data.template): one function that prep, evaluate, verify and bundle
call, so training and judging cannot disagree on what the model sees.

  chat     the model's own chat template (tokenizer_config.json), with data.system_prompt
  alpaca   "{problem}\\n\\n### Response:", the prompt of the 2024 stage-1 winner (docs/RECIPES.md)
  text     any string holding {problem}: the problem is put there verbatim (str.replace, not
           str.format, so braces in a LaTeX problem stay as they are)
"""

from __future__ import annotations

from typing import Optional

from tunebox.data.tokenizer import TextTokenizer

PLACEHOLDER = "{problem}"
SENTINEL = "\u0000tunebox-user-message\u0000"  # stands for the problem where the prompt is split around it
TEMPLATES = {"alpaca": "{problem}\n\n### Response:"}


def check_template(template: str) -> None:
    if template == "chat" or template in TEMPLATES:
        return
    if PLACEHOLDER not in template:
        raise ValueError(f"{template!r} is not chat, {', '.join(TEMPLATES)}, or a text holding {PLACEHOLDER}")


def render_prompt(tok: TextTokenizer, problem: str, template: str = "chat", system: Optional[str] = None) -> str:
    """The text the model sees before its answer."""
    if template == "chat":
        return tok.chat_prompt(problem, system)
    check_template(template)
    return TEMPLATES.get(template, template).replace(PLACEHOLDER, problem)


def spec_prompt(tok: TextTokenizer, problem: str, data) -> str:
    """render_prompt with a run spec's data section (template and system prompt)."""
    return render_prompt(tok, problem, data.template, data.system_prompt)


def prompt_parts(tok: TextTokenizer, template: str = "chat", system: Optional[str] = None) -> tuple[str, bool, str]:
    """The prompt's text before the problem, whether the problem was found in it (a chat template could
    change it), and the text after: render_prompt around a sentinel, split there."""
    before, found, after = render_prompt(tok, SENTINEL, template, system).partition(SENTINEL)
    return before, bool(found), after
