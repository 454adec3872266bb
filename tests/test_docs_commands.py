"""Every `invoke ...` command a user is shown (the README, docs/, the recipes' header comments, k8s/
and images/ notes) parses with the tasks tasks.py really declares: a renamed flag (`--recipe` became
`--config`) or a task that does not exist fails here, not in a newcomer's terminal.

Commands are taken from fenced code blocks (lines starting `invoke ` or `$ invoke `), from inline
code spans that start with `invoke `, and from YAML/shell comment lines (`#   invoke ...`). Placeholders
are filled before parsing: `[--x]` (optional) keeps `--x`, `<...>`, `{...}` and `...` become a value.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from invoke import Collection
from invoke.exceptions import ParseError
from invoke.parser import Parser

import tasks
from tunebox.cli import job_parser

REPO = Path(__file__).resolve().parents[1]
SOURCES = [
    REPO / "README.md",
    REPO / "docker-compose.yml",
    REPO / "Dockerfile",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "recipes").glob("*.yaml")),
    *sorted((REPO / "k8s").rglob("*.yaml")),
    *sorted((REPO / "k8s").rglob("*.md")),
    *sorted((REPO / "images").rglob("*.md")),
    *sorted((REPO / "images").rglob("*.sh")),
]

_INLINE = re.compile(r"`(invoke [^`]+)`")
_COMMENT = re.compile(r"^\s*#\s*(invoke\s.*)$")
# an invoke command inside a comment's prose: the task, then flags each with at most one value
_IN_PROSE = re.compile(r"\binvoke [a-z][\w.-]*(?:\s+--?[\w-]+(?:\s+(?!-)(?:<[^>]*>|[^\s,;]+))?)*")


def shown_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) for every invoke command shown in `path`."""
    found, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        stripped = line.strip()
        if fenced and re.match(r"^(\$ )?invoke\s", stripped):
            found.append((number, stripped.removeprefix("$ ")))
        found += [(number, m.group(1)) for m in _INLINE.finditer(line)]
        comment = _COMMENT.match(line)
        if comment and not fenced:
            found.append((number, comment.group(1)))
        elif stripped.startswith("#") and not fenced and "`" not in line:
            found += [(number, m.group(0)) for m in _IN_PROSE.finditer(line)]
    return found


def to_argv(command: str) -> list[str]:
    """The command as argv without `invoke`: chained commands (&&, ;, |) cut, comments dropped,
    placeholders filled (see the module docstring)."""
    command = re.split(r"\s+(?:&&|;|\|\|)\s+|\s+#|\s{2,}\(", command)[0]
    command = re.sub(r"\[(--?[^\]]+)\]", r"\1", command)  # [--rerun] -> --rerun
    command = re.sub(r"<[^>]*>|\{[^}]*\}|\.\.\.", "X", command)  # <dir>, {stack}, ... -> a value
    return shlex.split(command)[1:]


def _parser() -> Parser:

    return Parser(contexts=Collection.from_module(tasks).to_contexts())


def _names_a_task(command: str) -> bool:
    """`invoke --list`, `invoke bench.<name>` or `invoke bench.*` show invoke itself or a family of tasks,
    not one command."""
    argv = to_argv(command)
    return bool(argv) and not argv[0].startswith("-") and not re.search(r"X|\*", argv[0])


CASES = [(f"{p.relative_to(REPO)}:{n}", c) for p in SOURCES for n, c in shown_commands(p) if _names_a_task(c)]


def test_the_commands_are_found():
    """The extractor finds the README's own quick-start commands (a broken extractor would pass every
    file vacuously)."""
    readme = [c for where, c in CASES if where.startswith("README.md:")]
    assert "invoke pipeline" in " ".join(readme)
    assert any(c.startswith("invoke k8s.render") for c in readme)
    assert len(CASES) > 30


@pytest.mark.parametrize("where,command", CASES, ids=[w for w, _ in CASES])
def test_shown_command_parses(where, command):
    try:
        _parser().parse_argv(to_argv(command))
    except ParseError as exc:
        pytest.fail(f"{where}: `{command}` does not parse: {exc}", pytrace=False)


def test_a_renamed_flag_fails():
    """The check itself: the old spelling the recipes used must not parse."""
    with pytest.raises(ParseError):
        _parser().parse_argv(to_argv("invoke plan --recipe recipes/stage1-llama3-8b.yaml --rows 90000"))


def _job_parser(name: str):
    import importlib

    module = importlib.import_module(f"jobs.{name}")
    parser = job_parser(name, module.__doc__)
    getattr(module, "_args", lambda p: None)(parser)
    return parser


def test_every_job_task_takes_its_jobs_options_with_their_help():
    """tasks.py declares no job flag by hand: each job's task has exactly the job's options (less -h), each
    with the job's help, so `invoke <job> --help` explains what `python -m jobs.<job> --help` does. Tried
    with tasks._job_task skipping store_true options (train --render-only, weights --refresh): this fails."""

    by_name = {t.name: t for t in tasks.ns.tasks.values()}
    for name in tasks.JOB_TASKS:
        parser = _job_parser(name)
        wanted = {
            max(a.option_strings, key=len).lstrip("-").replace("-", "_"): a.help
            for a in parser._actions
            if a.option_strings and a.dest != "help"
        }
        task = by_name[name]
        assert set(task.argspec(task.body).parameters) == set(wanted), name
        for param, text in wanted.items():
            if param != "config":  # invoke's --config adds its default, the SmolLM2 recipe
                assert task.help[param].startswith(text.replace("%(default)s", "")[:40]), (name, param)


def test_a_job_task_passes_what_it_is_given_through(monkeypatch):
    """`invoke export --format peft --step 0 --set a=1 --set b=2` runs the job with the same words; flags
    left out are left out (the job's own defaults apply). Tried with the body passing values that are
    empty strings (--out ''): this fails."""

    ran = []
    monkeypatch.setattr(tasks, "_run_job", lambda name, argv, echo=None: ran.append((name, argv)))
    parser = Parser(contexts=Collection.from_module(tasks).to_contexts())
    for argv in (
        ["export", "--format", "peft", "--step", "0", "--set", "a=1", "--set", "b=2"],
        ["train", "--render-only"],
        ["weights", "--config", "recipes/tiny.yaml"],
    ):
        (ctx,) = parser.parse_argv(argv)
        task = tasks.ns.tasks[ctx.name]
        task.body(None, **{k.replace("-", "_"): v.value for k, v in ctx.args.items()})
    assert ran == [
        (
            "export",
            ["--config", tasks.DEFAULT_CONFIG, "--set", "a=1", "--set", "b=2", "--format", "peft", "--step", "0"],
        ),
        ("train", ["--config", tasks.DEFAULT_CONFIG, "--render-only"]),
        ("weights", ["--config", "recipes/tiny.yaml"]),
    ]


def _tool_parser(name: str):
    import importlib

    return importlib.import_module(f"jobs.{name}").build_parser()


def test_every_tool_task_takes_its_tools_arguments_with_their_help():
    """The tools (convert, env, fetch, generate, plan, profile, verify) declare their arguments once, in their
    build_parser(): each tool's task has exactly those (positional ones by name: verify's submission, profile's
    file, fetch's url), each with the tool's help. Tried with tasks._program_task skipping positional
    arguments, as the job tasks' first version did: this fails (verify has no submission)."""

    by_name = {t.name: t for t in tasks.ns.tasks.values()}
    assert set(tasks.TOOL_TASKS) == {"convert", "env", "fetch", "generate", "plan", "profile", "verify"}
    for name in tasks.TOOL_TASKS:
        wanted = {
            (max(a.option_strings, key=len).lstrip("-").replace("-", "_") if a.option_strings else a.dest): a.help
            for a in _tool_parser(name)._actions
            if a.dest != "help"
        }
        task = by_name[name]
        assert set(task.argspec(task.body).parameters) == set(wanted), name
        for param, text in wanted.items():
            assert task.help[param].startswith(text.replace("%(default)s", "")[:40]), (name, param)


def test_a_tool_task_passes_what_it_is_given_through_and_the_tool_accepts_it(monkeypatch):
    """`invoke verify DIR --rerun`, `invoke fetch --url U --out P`, `invoke fetch --files L`, `invoke env --input
    a=b --input c=d`, `invoke generate --rows N`, `invoke plan` run the tool with words its own parser accepts:
    positional arguments in place, flags left out when not given (the tool's defaults apply). Tried with the
    body passing a positional argument as a flag (--submission DIR): this fails."""

    ran = []
    monkeypatch.setattr(tasks, "_run_job", lambda name, argv, echo=None: ran.append((name, argv)))
    parser = Parser(contexts=Collection.from_module(tasks).to_contexts())
    cases = {
        ("verify", "runs/x/submission", "--rerun", "--tolerance", "0.01"): [
            "runs/x/submission",
            "--rerun",
            "--tolerance",
            "0.01",
        ],
        ("fetch", "--url", "https://h/f", "--out", "f"): ["https://h/f", "--out", "f"],
        ("fetch", "--files", "list.yaml"): ["--files", "list.yaml"],
        ("env", "--input", "a=b", "--input", "c=d"): ["--input", "a=b", "--input", "c=d"],
        ("generate", "--rows", "800000"): ["--rows", "800000"],
        ("convert", "--model", "tiny"): ["--model", "tiny"],
        ("profile", "data.jsonl", "--tokenizer", "none"): ["data.jsonl", "--tokenizer", "none"],
        ("plan",): [],
    }
    for argv, expected in cases.items():
        ran.clear()
        (ctx,) = parser.parse_argv(list(argv))
        task = tasks.ns.tasks[ctx.name]
        task.body(None, **{k.replace("-", "_"): v.value for k, v in ctx.args.items()})
        assert ran == [(argv[0], expected)], argv
        _tool_parser(argv[0]).parse_args(expected)  # the tool takes them (argparse exits 2 if not)


def test_a_tool_task_echoes_its_command_to_stderr(monkeypatch, capsys):
    """`invoke env > env.json` and `invoke plan --json | jq` keep stdout for the tool's own output: the command
    line invoke prints goes to stderr. Tried with the echo on stdout for every task: this fails."""

    class Done:
        def __init__(self, cmd):
            self.cmd = cmd

        def wait(self):
            return 0

    monkeypatch.setattr(tasks.subprocess, "Popen", Done)
    tasks.ns.tasks["env"].body(None, config="", input=None, no_freeze=True, out="")
    captured = capsys.readouterr()
    assert captured.out == "" and "-m jobs.env --no-freeze" in captured.err


def test_invoke_test_mutants_has_every_option_of_the_tool():
    """`invoke test.mutants` hands its options to tests/mutants.py: each option of the tool is a parameter of the
    task (with help) and reaches the command. Mutant: the task without --fresh."""
    import inspect
    import re
    import subprocess
    import sys

    from invoke import MockContext

    help_text = subprocess.run(
        [sys.executable, str(REPO / "tests" / "mutants.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    tool = set(re.findall(r"^  --([a-z][a-z-]*)", help_text, flags=re.M)) - {"help"}  # the options' own lines
    task = tasks.test_mutants
    params = set(inspect.signature(task.body).parameters) - {"c"}
    assert tool == {p.replace("_", "-") for p in params} and tool <= set(task.help)
    ctx = MockContext(run={re.compile(".*"): ""})
    task(ctx, fresh=True, names="tunebox.contest.mathgen.x_make__mutmut_1")
    assert "--fresh" in ctx.run.call_args[0][0].split()
