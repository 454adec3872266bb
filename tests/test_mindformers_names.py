"""tunebox/contest/mindformers_names.py on a small MindFormers-shaped git repository written here: what it
reads from a release's source (registered classes, __init__ parameters, the kwargs configs pop, the special
tokens, auto_register), each expected value read off the files below by hand. In process, no network, no
MindFormers: the mutation group `contest` runs it (docs/TESTING.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tunebox.contest import mindformers_names

REGISTER_IMPORT = "from mindformers.tools.register import MindFormerModuleType, MindFormerRegister\n\n\n"

FILES = {
    # a CONFIG with positional-only, ordinary and keyword-only parameters (self left out), a MODELS class
    # registered by keyword (MODELS keep no parameters), a CONFIG without __init__ (no parameters recorded)
    "mindformers/models/llama/llama_config.py": REGISTER_IMPORT
    + "@MindFormerRegister.register(MindFormerModuleType.CONFIG)\n"
    "class LlamaConfig:\n"
    "    def __init__(self, head_dim, /, batch_size=1, *, seq_length=8, **kwargs):\n"
    "        pass\n\n\n"
    "@MindFormerRegister.register(module_type=MindFormerModuleType.MODELS)\n"
    "class LlamaForCausalLM:\n"
    "    def __init__(self, config):\n"
    "        pass\n\n\n"
    "@MindFormerRegister.register(MindFormerModuleType.CONFIG)\n"
    "class BareConfig:\n"
    "    def build(self, size):\n"
    "        pass\n",
    # decorators that are not a registration: a bare attribute, a call of a plain name, another enum, a
    # keyword other than module_type, a registration call whose type is not an attribute of a name
    "mindformers/models/llama/llama_tokenizer.py": REGISTER_IMPORT
    + "@MindFormerRegister.register(MindFormerModuleType.TOKENIZER)\n"
    "class LlamaTokenizer:\n"
    "    def __init__(self, vocab_file, unk_token='<unk>'):\n"
    "        pass\n\n\n"
    "@MindFormerRegister.register\n"
    "class NotCalled:\n"
    "    def __init__(self, a):\n"
    "        pass\n\n\n"
    "@register(MindFormerModuleType.TOKENIZER)\n"
    "class PlainName:\n"
    "    def __init__(self, b):\n"
    "        pass\n\n\n"
    "@MindFormerRegister.register(OtherType.TOKENIZER)\n"
    "class OtherEnum:\n"
    "    def __init__(self, c):\n"
    "        pass\n\n\n"
    "@MindFormerRegister.register(alias=MindFormerModuleType.TOKENIZER)\n"
    "class OtherKeyword:\n"
    "    def __init__(self, d):\n"
    "        pass\n\n\n"
    "@MindFormerRegister.register(types.MindFormerModuleType.TOKENIZER)\n"
    "class Qualified:\n"
    "    def __init__(self, e):\n"
    "        pass\n\n\n"
    "@MindFormerRegister.add(MindFormerModuleType.TOKENIZER)\n"
    "class NotRegister:\n"
    "    def __init__(self, f):\n"
    "        pass\n",
    # research/ classes count; the second decorator of a class registers it too
    "research/qwen/qwen_trainer.py": REGISTER_IMPORT + "@dataclass\n"
    "@MindFormerRegister.register(MindFormerModuleType.TRAINER)\n"
    "class QwenTrainer:\n"
    "    def __init__(self, task):\n"
    "        pass\n",
    # never parsed: no registration in it (it would not parse), not a .py file, not under mindformers/ or research/
    "mindformers/broken.py": "def (:\n",
    "mindformers/README.md": "@MindFormerRegister.register(MindFormerModuleType.MODELS)\nclass Doc:\n",
    "tests/registered.py": REGISTER_IMPORT
    + "@MindFormerRegister.register(MindFormerModuleType.MODELS)\nclass TestOnly:\n    pass\n",
    # the kwargs __init__ pops: constant keys only, in __init__ only, from `kwargs` only
    "mindformers/models/configuration_utils.py": "class PretrainedConfig:\n"
    "    def __init__(self, **kwargs):\n"
    "        self.return_dict = kwargs.pop('return_dict', True)\n"
    "        key = 'dynamic'\n"
    "        kwargs.pop(key, None)\n"
    "        kwargs.get('looked_at')\n"
    "        other = {}\n"
    "        other.pop('other_dict')\n"
    "        self.kwargs.pop('attribute')\n"
    "        kwargs.pop()\n\n"
    "    def to_dict(self, **kwargs):\n"
    "        return kwargs.pop('not_init')\n",
    "mindformers/generation/generation_config.py": "class GenerationConfig:\n"
    "    def __init__(self, **kwargs):\n"
    "        self.max_length = kwargs.pop('max_length', 20)\n"
    "        self.do_sample = kwargs.pop('do_sample', False)\n",
    "mindformers/models/tokenization_utils_base.py": "class PreTrainedTokenizerBase:\n"
    "    OTHER = ['not_special']\n"
    "    SPECIAL_TOKENS_ATTRIBUTES = ['bos_token', 'eos_token', 'pad_token']\n"
    "    self.SPECIAL_TOKENS_ATTRIBUTES = ['attribute']\n",
    "mindformers/tools/register/register.py": "class MindFormerRegister:\n    def auto_register(cls):\n        pass\n",
}


def git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


@pytest.fixture(scope="module")
def mindformers_git(tmp_path_factory) -> dict:
    """A repository with the files above tagged v1.1.0, then a commit dropping auto_register and the special
    tokens (HEAD)."""
    repo = tmp_path_factory.mktemp("mindformers")
    git(repo, "init", "-q", "-b", "master")
    for rel, text in FILES.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "r1.1")
    git(repo, "tag", "v1.1.0")
    tagged = git(repo, "rev-parse", "HEAD").strip()
    (repo / "mindformers/tools/register/register.py").write_text("class MindFormerRegister:\n    pass\n")
    (repo / "mindformers/models/tokenization_utils_base.py").write_text("class PreTrainedTokenizerBase:\n    pass\n")
    git(repo, "commit", "-q", "-am", "no auto_register, no special tokens")
    return {"git_dir": str(repo / ".git"), "tagged": tagged, "head": git(repo, "rev-parse", "HEAD").strip()}


def expected(ref: str, commit: str, tagged: bool) -> dict:
    return {
        "ref": ref,
        "commit": commit,
        "read_from": "github.com/mindspore-lab/mindformers, mindformers/ and research/ at that commit",
        "registered": {
            "CONFIG": {
                "BareConfig": "mindformers/models/llama/llama_config.py",
                "LlamaConfig": "mindformers/models/llama/llama_config.py",
            },
            "MODELS": {"LlamaForCausalLM": "mindformers/models/llama/llama_config.py"},
            "TOKENIZER": {"LlamaTokenizer": "mindformers/models/llama/llama_tokenizer.py"},
            "TRAINER": {"QwenTrainer": "research/qwen/qwen_trainer.py"},
        },
        "init_params": {
            "LlamaConfig": ["head_dim", "batch_size", "seq_length"],
            "LlamaTokenizer": ["vocab_file", "unk_token"],
        },
        "config_kwargs": ["do_sample", "max_length", "return_dict"],
        "special_tokens": ["bos_token", "eos_token", "pad_token"] if tagged else [],
        "has_auto_register": tagged,
    }


def test_read_names_at_a_tag_and_at_head(mindformers_git):
    """Mutants: tunebox.contest.mindformers_names.x_read_names__mutmut_* (the file filter, the registration
    skip, the CONFIG/TOKENIZER parameter rule, the keys, auto_register), x__module_type__mutmut_* (each
    clause of the decorator test, the module_type keyword), x__init_params__mutmut_* (posonly + args +
    kwonly, self dropped), x__kwargs_pops__mutmut_* (each clause of the pop test), x__git__mutmut_*;
    x_read_names__mutmut_88 (no SPECIAL_TOKENS_ATTRIBUTES: None instead of [])."""
    g = mindformers_git
    assert mindformers_names.read_names(g["git_dir"], "v1.1.0") == expected("v1.1.0", g["tagged"], True)
    assert mindformers_names.read_names(g["git_dir"], "HEAD") == expected("HEAD", g["head"], False)


def test_main_writes_the_json_at_the_default_ref(mindformers_git, tmp_path):
    """Mutants: x_main__mutmut_* (the default ref v1.1.0, --out, indent=1, the trailing newline, exit 0)."""
    out = tmp_path / "r11.json"
    assert mindformers_names.main(["--git-dir", mindformers_git["git_dir"], "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert json.loads(text) == expected("v1.1.0", mindformers_git["tagged"], True)
    assert text.startswith('{\n "ref": "v1.1.0",\n "commit": "') and text.endswith("\n}\n")
    with pytest.raises(SystemExit) as exc:
        mindformers_names.main(["--out", str(out)])  # --git-dir is required
    assert exc.value.code == 2


def test_a_failing_git_call_raises(tmp_path):
    """Mutants: tunebox.contest.mindformers_names.x__git__mutmut_2, _6, _13 (check=None, omitted, False: a bad
    git directory would read as an empty commit)."""
    with pytest.raises(subprocess.CalledProcessError):
        mindformers_names.read_names(str(tmp_path / "no.git"), "v1.1.0")


def test_main_help_and_required_out(mindformers_git, monkeypatch, capsys):
    """--help shows the module's first paragraph and what --git-dir wants; --out is required. Mutants:
    x_main__mutmut_2-_5 (the description), _8, _11, _15, _16 (--git-dir's help), _26, _28, _31 (--out not
    required). The write's encoding (_35, _37, _51) is equivalent: json.dumps writes ASCII only."""
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        mindformers_names.main(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "What a MindFormers release registers and accepts, read from its source: the facts a contest-flavoured "
        "YAML is checked against where that MindFormers cannot be installed (r1.1 needs MindSpore 2.3.0, which "
        "PyPI does not serve)." in out
    )
    assert "--git-dir GIT_DIR a clone (bare is fine) of mindspore-lab/mindformers" in out
    assert "Read from the source" not in out  # the first paragraph only
    with pytest.raises(SystemExit) as exc:
        mindformers_names.main(["--git-dir", mindformers_git["git_dir"]])
    assert exc.value.code == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err
