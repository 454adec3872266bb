"""What a MindFormers release registers and accepts, read from its source: the facts a contest-flavoured
YAML is checked against where that MindFormers cannot be installed (r1.1 needs MindSpore 2.3.0, which
PyPI does not serve).

    python -m tunebox.contest.mindformers_names --git-dir MINDFORMERS.git --ref v1.1.0 \\
        --out tunebox/contest/mindformers_r1.1.json

Read from the source at that commit (never imported):
  registered   class names per MindFormerModuleType, with the file that registers each: every class
               decorated `@MindFormerRegister.register(MindFormerModuleType.X)` under mindformers/ and
               research/ (research/ classes are registered when their run_*.py imports them)
  init_params  the __init__ parameter names of each registered CONFIG and TOKENIZER class
  config_kwargs  keys PretrainedConfig.__init__ and GenerationConfig.__init__ take from **kwargs
               (models/configuration_utils.py, generation/generation_config.py): a config key that is
               neither a parameter nor one of these is set as an attribute and read by no one
  special_tokens  PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES (models/tokenization_utils_base.py)
  has_auto_register  whether MindFormerRegister has an auto_register method (tools/register/register.py)
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

CONFIG_KWARGS_FILES = ("mindformers/models/configuration_utils.py", "mindformers/generation/generation_config.py")
TOKENIZER_BASE = "mindformers/models/tokenization_utils_base.py"
REGISTER_FILE = "mindformers/tools/register/register.py"


def _git(git_dir: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, *args], check=True, capture_output=True, text=True).stdout


def _module_type(decorator: ast.expr) -> str | None:
    """'TOKENIZER' for @MindFormerRegister.register(MindFormerModuleType.TOKENIZER, ...)."""
    if not (
        isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr == "register"
    ):
        return None
    args = list(decorator.args) + [k.value for k in decorator.keywords if k.arg == "module_type"]
    for a in args:
        if isinstance(a, ast.Attribute) and isinstance(a.value, ast.Name) and a.value.id == "MindFormerModuleType":
            return a.attr
    return None


def _init_params(cls: ast.ClassDef) -> list[str] | None:
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            a = node.args
            return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg != "self"]
    return None


def _kwargs_pops(tree: ast.AST, function: str = "__init__") -> set[str]:
    """Keys an __init__ takes with kwargs.pop("key", ...)."""
    out = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and fn.name == function:
            for n in ast.walk(fn):
                if (
                    isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Attribute)
                    and n.func.attr == "pop"
                    and isinstance(n.func.value, ast.Name)
                    and n.func.value.id == "kwargs"
                    and n.args
                    and isinstance(n.args[0], ast.Constant)
                ):
                    out.add(n.args[0].value)
    return out


def read_names(git_dir: str, ref: str) -> dict:
    commit = _git(git_dir, "rev-parse", f"{ref}^{{commit}}").strip()
    files = [
        f
        for f in _git(git_dir, "ls-tree", "-r", "--name-only", commit).splitlines()
        if f.endswith(".py") and f.split("/")[0] in ("mindformers", "research")
    ]
    registered: dict[str, dict[str, str]] = {}
    init_params: dict[str, list[str]] = {}
    for path in files:
        source = _git(git_dir, "show", f"{commit}:{path}")
        if "MindFormerRegister.register" not in source:
            continue
        tree = ast.parse(source)
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for dec in cls.decorator_list:
                kind = _module_type(dec)
                if kind:
                    registered.setdefault(kind, {})[cls.name] = path
                    params = _init_params(cls)
                    if kind in ("CONFIG", "TOKENIZER") and params is not None:
                        init_params[cls.name] = params
    config_kwargs = set()
    for path in CONFIG_KWARGS_FILES:
        config_kwargs |= _kwargs_pops(ast.parse(_git(git_dir, "show", f"{commit}:{path}")))
    special = []
    for n in ast.walk(ast.parse(_git(git_dir, "show", f"{commit}:{TOKENIZER_BASE}"))):
        if isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "SPECIAL_TOKENS_ATTRIBUTES" for t in n.targets
        ):
            special = [e.value for e in n.value.elts]
    register_src = _git(git_dir, "show", f"{commit}:{REGISTER_FILE}")
    return {
        "ref": ref,
        "commit": commit,
        "read_from": "github.com/mindspore-lab/mindformers, mindformers/ and research/ at that commit",
        "registered": {k: dict(sorted(v.items())) for k, v in sorted(registered.items())},
        "init_params": dict(sorted(init_params.items())),
        "config_kwargs": sorted(config_kwargs),
        "special_tokens": special,
        "has_auto_register": "def auto_register" in register_src,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--git-dir", required=True, help="a clone (bare is fine) of mindspore-lab/mindformers")
    parser.add_argument("--ref", default="v1.1.0")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    Path(args.out).write_text(json.dumps(read_names(args.git_dir, args.ref), indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
