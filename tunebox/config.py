"""Typed run specs: YAML in, validated dataclasses out, errors that name the file and the line.

A run spec (recipes/*.yaml) is the single source for a run: invoke, docker compose and k8s all
read the same file. Every default is visible in the dataclasses below; `describe()` turns them
into the `--help` text of each job.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from tunebox.io import InputError
from tunebox.layout import REPO_ROOT

RECIPES_DIR = REPO_ROOT / "recipes"


@dataclass
class ModelSection:
    name: str = "smollm2-135m"
    """Registry name (tunebox/model/registry.py): smollm2-135m, tiny, llama3-8b, internlm-7b."""
    checkpoint: Optional[str] = None
    """A MindFormers .ckpt to start from; default: the registry's converted checkpoint in the cache."""
    tokenizer: Optional[str] = None
    """A tokenizer.json; default: the one converted with the model."""
    source: Optional[str] = None
    """Where the weights job gets the base model when the cache lacks it: a YAML/JSON list of {url, path,
    sha256} (the Hugging Face checkpoint's files; paths relative to the cache's hf/<model>/; relative to the
    spec), or a hub repository at a pinned revision, hf:<org>/<name>@<revision> ($HF_ENDPOINT for a mirror)
    or modelers:<org>/<name>@<revision> (needs openmind_hub); fetched and converted once. Never put a
    credential here: the job sends the bearer token in $TUNEBOX_WEIGHTS_TOKEN, or in the file
    $TUNEBOX_WEIGHTS_TOKEN_FILE names (a mounted Secret)."""


@dataclass
class DataSection:
    train_file: str = "../shared/data/math/contest-sample.jsonl"
    """Contest JSONL ({"problem","solution"} per line): a file, a directory (its *.jsonl, e.g. the
    generator's part-*.jsonl) or a glob ("data/part-*.jsonl"). Relative paths resolve from the spec's folder."""
    format: Literal["math", "mcq"] = "math"
    heldout_rows: int = 60
    """Rows kept out of training for evaluation (deterministic, by seed)."""
    seq_length: int = 128
    """Tokens per training sample; the model sees seq_length + 1 ids (inputs and shifted labels)."""
    seed: int = 0
    on_bad_row: Literal["error", "skip"] = "error"
    """error: stop at the first bad row (file and line in the message); skip: write it to rejects.jsonl."""
    on_too_long: Literal["truncate", "skip"] = "skip"
    """What to do with a sample longer than seq_length + 1 tokens; either way it is counted."""
    max_rows: Optional[int] = None
    """Read only the first N rows of train_file (quick runs)."""
    system_prompt: Optional[str] = None
    """System message for the chat template; default: the model's own template default."""
    dedupe: bool = False
    """Drop rows whose problem (the prompt, stripped) repeats an earlier row's; the first is kept."""
    bad_labels: Literal["keep", "drop", "fix"] = "keep"
    """Math rows of a computable family get their label recomputed (tunebox.contest.mathgen.solve): drop a row
    whose label differs or is wrong though formula-true (a "discount" to a higher price); fix: replace a
    differing label with the recomputed one (formula-true wrong labels cannot be fixed and are dropped)."""
    sample_rows: Optional[int] = None
    """Train on this many rows, sampled per family (tunebox.contest.scoring.math_family) in proportion, with data.seed.
    Applied after the held-out split, so the held-out rows do not depend on it; null: every row."""
    workers: int = 2
    """Processes that parse and tokenize (1: all in the job's own process; small inputs never start a pool)."""
    template: str = "chat"
    """The prompt around a problem, the same in prep, evaluate and verify (tunebox/data/prompts.py): chat (the
    model's chat template, with data.system_prompt), alpaca ("{problem}\n\n### Response:", the 2024 winner's),
    or any text holding {problem}."""
    answer_format: Union[str, dict] = "direct"
    """What the model learns to write (tunebox/data/answers.py): direct (the row's solution), cot (Goat-style steps
    for mul, div, average; other families direct), rounded:N (final value rounded to N decimals); or per family,
    e.g. {mul: cot, div: cot, "*": direct}. Every cot/rounded number is recomputed from the operands."""
    families: Optional[list[str]] = None
    """Math families to keep (scoring.math_family names, e.g. [add, sub, mul, div]); null: all. Applied when
    rows are read, before the held-out split, so held-out rows are of these families too."""
    drop_families: list[str] = field(default_factory=list)
    """Math families to leave out (e.g. [power, sqrt, function_value]), counted in stats.json."""
    balance: Optional[dict] = None
    """Per-family training rows, after the held-out split and data.sample_rows: {family: N} keeps at most N
    rows of it (a seeded choice), {family: "x10"} repeats each of its rows 10 times (oversampling); "*"
    stands for the families not named. stats.json lists rows per family before and after."""
    generate: Optional[str] = None
    """Train on generated rows instead of data.train_file: the arguments of jobs.generate (e.g. "--rows 8000
    --mix add=1,sub=1,mul=1,div=1 --seed 14"). prep writes them once to runs/<run_id>/generated/ (jobs.generate
    is deterministic; its generate.json marks a finished set, rows and arguments) and reads them from there."""
    heldout_file: Optional[str] = None
    """A second held-out set: rows of this JSONL (data.families applied; none of its problems is trained on),
    evaluated next to the split's held-out rows and reported separately (e.g. the real contest rows when
    training on generated ones). Relative paths resolve from the spec's folder."""
    heldout_file_rows: Optional[int] = None
    """Use this many rows of data.heldout_file (a seeded choice, in file order); null: all."""


class Alternation(str):
    """A regex of alternatives such as 'wq|wv', which YAML may also give as a list ([wq, wv]):
    the list is joined with '|' when the spec is read."""


@dataclass
class LoraSection:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: Alternation = "wq|wv"
    """MindFormers layer names to adapt (wq wk wv wo w1 w2 w3): a regex of alternatives as the contest's
    `.*wq|.*wv`, or a list ([wq, wv]). Every alternative must name a layer (checked at load; PEFT names such
    as q_proj are refused with their MindFormers names)."""


@dataclass
class ParallelSection:
    """How train.workers split the model and the data, in MindFormers' parallel_config terms."""

    data_parallel: Optional[int] = None
    """Replicas that each see a share of every batch; default: train.workers / (model_parallel x pipeline_stage)."""
    model_parallel: int = 1
    """Tensor (operator) parallel ways: each layer's weights split over this many cards. Ascend only
    (MindSpore's CPU backend runs data parallel only). The 2024 contest baseline used 4."""
    pipeline_stage: int = 1
    """Pipeline stages (Ascend only)."""
    micro_batch_num: int = 1
    """Micro-batches per step when pipeline_stage > 1."""
    recompute: bool = False
    """Recompute activations in the backward pass (less device memory, more compute)."""
    select_recompute: bool = False
    """Recompute only the attention's cheap, memory-heavy parts."""


@dataclass
class TrainSection:
    epochs: float = 1.0
    batch_size: int = 8
    """Samples per optimizer micro-step (all workers together)."""
    grad_accum: int = 1
    """Micro-batches summed into one optimizer step (MindFormers' gradient_accumulation_steps); MindFormers
    applies it with model or pipeline parallel only, so with data parallel it must stay 1."""
    packing: bool = False
    """Pack several samples into each seq_length + 1 row (tunebox/data/packing.py), each attending only to
    itself: exact (rotary positions are relative), and no compute is spent on padding. batch_size then
    counts packed rows. Pays off when samples are much shorter than seq_length (contest math at 256)."""
    lm_head_on_answers: bool = True
    """Run the LM head and the loss only at the positions the loss counts (TuneboxLlamaForCausalLM in
    tunebox/model/mf_extensions.py): the same loss and gradients as MindFormers' forward, without the logits
    of every prompt and pad position. false: MindFormers' own forward."""
    lr: float = 2e-4
    """Peak learning rate of MindSpore's AdamWeightDecay (no bias correction: the rule of the contest's
    FP32StateAdamWeightDecay, so the contest's and the winners' rates carry over as they are)."""
    beta2: float = 0.999
    """AdamWeightDecay's second-moment decay: MindSpore's default, the contest's stage 2 and the local recipes'
    (docs/ACCURACY.md); the contest's stage-1 configs used 0.95."""
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    num_checkpoints: int = 5
    """Evenly spaced LoRA checkpoints over the run (the contest asks for 5)."""
    max_steps: Optional[int] = None
    """Stop after this many optimizer steps (overrides epochs)."""
    seed: int = 0
    shuffle: bool = True
    """Shuffle the rows each epoch (MindFormers' MindDataset shuffle, seeded by train.seed); false reads them
    in prep's order, which makes a data-parallel run comparable step by step with a single process."""
    device: Literal["CPU", "Ascend"] = "CPU"
    mode: Literal["graph", "pynative"] = "graph"
    workers: int = 1
    """Data-parallel processes; > 1 launches msrun (4 per Ascend node)."""
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Compute dtype; CPU needs float32."""
    save_state_every: Optional[int] = None
    """Optimizer steps between full resume snapshots (weights + optimizer state); a kill loses at most this
    many. null: a tenth of the run's steps (budget.resume_every), so a run writes about ten (`invoke plan`
    shows the checkpoint I/O; a Llama3-8B snapshot is about 16 GB)."""
    master_port: int = 8118
    """msrun scheduler port when workers > 1."""
    parallel: ParallelSection = field(default_factory=ParallelSection)
    """data_parallel x model_parallel x pipeline_stage must equal workers."""


@dataclass
class MergeSection:
    dtype: Optional[Literal["float32", "float16", "bfloat16"]] = None
    """dtype of the merged checkpoints' weights, and so the predicting network's param_init_type (evaluate
    on Ascend, the bundle's predict.yaml); RMSNorm weights stay float32, as the network declares them. null:
    train.dtype. A Llama3-8B merged checkpoint is 16 GB in bfloat16 and 32 GB in float32, and the submission
    holds five."""
    scale: float = field(default=1.0, metadata={"hashed_when_set": True})
    """Multiply the LoRA update by this factor: W' = W + scale * (alpha/r) * B A (1.0: as trained)."""


@dataclass
class EvalSection:
    max_new_tokens: int = 48
    batch_size: int = 16
    backend: Literal["auto", "numpy", "mindformers"] = "auto"
    """auto: the numpy KV-cache decoder on CPU, MindFormers generate() on Ascend."""
    limit: Optional[int] = None
    """Evaluate only the first N held-out rows."""
    checkpoints: Literal["all", "last", "none"] = "all"
    """Which merged checkpoints to evaluate: all, the last, or none (the base model alone: a baseline
    before any training, or timing the evaluation; merge need not have run)."""
    base: bool = True
    """Also evaluate the base model, for the before/after comparison."""
    squad_file: Optional[str] = None
    """SQuAD v1.1 JSONL ({context, question, answers}) for the contest's retention check (tuned F1 and EM
    >= 90% of the base model's); relative paths resolve from the spec's folder; null: not measured."""
    squad_rows: int = 100
    """Use the first N questions of squad_file (0: skip SQuAD)."""
    squad_min_new_tokens: int = 1
    """SQuAD answers are at least this many tokens: the end-of-turn token is not allowed before (the 2024
    winner's `min_new_tokens: 1`; without it a tuned model may answer nothing)."""
    scales: Optional[Union[str, list[float]]] = None
    """LoRA scale dial, e.g. [0.25, 0.5, 0.75, 1.0] (or '0.25,0.5,0.75,1.0'): evaluate the chosen checkpoint at
    W + s*(alpha/r)*BA."""


@dataclass
class ClusterSection:
    """Where an Ascend run is placed and how its nodes talk (k8s render, compose); none of it changes
    what the run computes, so it is left out of the spec hash. Sources: tunebox/deploy/ascend.py."""

    card: Literal["910", "910b"] = "910b"
    """Card generation: pod label ring-controller.atlas ascend-910 / ascend-910b (Huawei's scheduler
    and device plugin select on it) and the default accelerator-type node selector."""
    host_arch: Literal["huawei-arm", "huawei-x86"] = "huawei-arm"
    """Node label host-arch of the Ascend nodes (Atlas 800 training servers are arm)."""
    accelerator_type: Optional[str] = None
    """Node label accelerator-type; null: module (910) or module-910b-8 (910b); module-910b-16 for 16-card nodes."""
    cards_per_node: int = 8
    """NPUs per pod of the ascend-job overlay (ascend-4card and multi-node use 4)."""
    gang_scheduler: Literal["volcano", "none"] = "volcano"
    """ascend-4card and multi-node overlays: volcano places the pods through a PodGroup (all start or none; the
    Volcano build of Huawei's device plugin takes a partial node's cards only from a pod Volcano placed);
    none: the default scheduler, no PodGroup (a device plugin without -volcanoType)."""
    hccl_connect_timeout: int = 1200
    """HCCL_CONNECT_TIMEOUT seconds, [120, 7200] (CANN's default 120 is short when nodes start
    minutes apart: image pull, prep on node 0)."""
    prep_timeout: int = 10800
    """Seconds every rank of a multi-node run waits for prep's manifest (the first node runs weights
    and prep while the others have started) before train reads prep's output; TUNEBOX_PREP_TIMEOUT
    overrides it. Its own timeout, longer than hccl_connect_timeout and the cluster's
    (TUNEBOX_CLUSTER_TIMEOUT): those only start counting once prep is there."""
    hccl_exec_timeout: Optional[int] = None
    """HCCL_EXEC_TIMEOUT seconds; null: CANN's default."""
    hccl_buffsize: int = 200
    """HCCL_BUFFSIZE, MB per communicator buffer (CANN's default 200)."""
    hccl_socket_ifname: Optional[str] = None
    """HCCL_SOCKET_IFNAME, e.g. eth0 or 'enp' (prefix): the NIC HCCL's host sockets use; null: HCCL chooses."""
    disk_gib: Optional[int] = None
    """Size of the runs claim (tunebox-runs); null: what `invoke plan` computes for this spec."""


@dataclass
class RunSpec:
    run_id: str = "local-smollm2"
    runs_dir: str = "runs"
    """Where runs/<run_id>/<job>/ go; relative to the current directory."""
    stage: Literal[1, 2] = 1
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    merge: MergeSection = field(default_factory=MergeSection)
    eval: EvalSection = field(default_factory=EvalSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)

    # Not part of the YAML: where the spec came from, for resolving relative paths.
    source_path: Optional[str] = field(default=None, metadata={"internal": True})

    # ---- derived paths -------------------------------------------------------------------
    def resolve(self, p: str | None) -> Path | None:
        """Resolve a data path: absolute as is, else relative to the spec file's folder."""
        if p is None:
            return None
        path = Path(p).expanduser()
        if path.is_absolute():
            return path
        base = Path(self.source_path).parent if self.source_path else Path.cwd()
        return (base / path).resolve()

    def training_source(self) -> Path:
        """Where prep reads its rows: the generated folder when data.generate is set, else data.train_file."""
        return self.run_dir / "generated" if self.data.generate else self.resolve(self.data.train_file)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir).expanduser().resolve() / self.run_id

    def job_dir(self, job: str) -> Path:
        return self.run_dir / job

    def to_dict(self) -> dict:
        return _to_plain(self)

    def spec_hash(self) -> str:
        """What the run computes, not where it writes: runs_dir, cluster (placement, HCCL) and
        model.source (where the weights were downloaded from) are left out, so the same spec hashes the same
        on the host, in a container (/runs) and in a pod."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("runs_dir", "cluster")}
        d["model"] = {k: v for k, v in d["model"].items() if k != "source"}  # where from, not what
        # a key added after runs were recorded counts only when set, so their hashes stay what they were
        for name in d:
            section = getattr(self, name)
            for f in dataclasses.fields(section) if dataclasses.is_dataclass(section) else ():
                if f.metadata.get("hashed_when_set") and getattr(section, f.name) == f.default:
                    del d[name][f.name]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---- loading with line numbers -------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False):
    mapping = {}
    lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        mapping[key] = loader.construct_object(value_node, deep=deep)
        lines[key] = key_node.start_mark.line + 1
    return _LinedDict(mapping, lines, node.start_mark.line + 1)


class _LinedDict(dict):
    def __init__(self, data, lines, line):
        super().__init__(data)
        self.lines = lines
        self.line = line


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check (and gently coerce) a YAML value against a dataclass field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return True, None
        for a in args:
            if a is type(None):
                continue
            ok, v = _type_ok(value, a)
            if ok:
                return True, v
        return False, value
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices and isinstance(value, int) and str(value) in choices:
            return True, str(value)  # `card: 910` in YAML is an int; the choice is the string "910"
        return value in choices, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads 2e-4 as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is Alternation:
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return True, "|".join(value)
        return isinstance(value, str), value
    if tp is str:
        return isinstance(value, str), value
    if tp is list or origin is list:
        item = (typing.get_args(tp) or (Any,))[0]
        return isinstance(value, list) and all(_type_ok(v, item)[0] for v in value), value
    if tp is dict or origin is dict:
        return isinstance(value, dict), value
    return True, value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " (or null)" if type(None) in args else ""
        )
    if tp is Alternation:
        return "str or list of str"
    return getattr(tp, "__name__", str(tp))


def _build(cls, data: dict, path: str, prefix: str):
    if not isinstance(data, dict):
        line = getattr(data, "line", None)
        raise InputError(f"'{prefix or 'top level'}' must be a mapping", path, line)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    lines = getattr(data, "lines", {})
    kwargs = {}
    for key, value in data.items():
        line = lines.get(key)
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            raise InputError(f"unknown key '{dotted}'{hint}", path, line)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, path, dotted)
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            raise InputError(f"'{dotted}' must be {_type_name(tp)}, got {value!r}", path, line)
        kwargs[key] = coerced
    return cls(**kwargs)


def _validate(spec: RunSpec, where: SpecLines) -> None:
    """Each section's own checks: what a key may hold, read against the spec alone. Checks against
    other subjects (the model's layers, the data rules, the contest's families) are tunebox/spec_checks.py's."""

    def bad(msg: str, dotted: str):
        raise where.error(msg, dotted)

    if spec.lora.rank <= 0:
        bad("lora.rank must be > 0", "lora.rank")
    if not 0.0 <= spec.lora.dropout < 1.0:
        bad("lora.dropout must be in [0, 1)", "lora.dropout")
    if spec.data.seq_length < 8:
        bad("data.seq_length must be at least 8", "data.seq_length")
    if spec.data.sample_rows is not None and spec.data.sample_rows < 1:
        bad("data.sample_rows must be >= 1 (or null for every row)", "data.sample_rows")
    if spec.data.workers < 1:
        bad("data.workers must be >= 1", "data.workers")
    if spec.train.batch_size <= 0 or spec.train.grad_accum <= 0:
        bad("train.batch_size and train.grad_accum must be > 0", "train.batch_size")
    if spec.train.workers < 1:
        bad("train.workers must be >= 1", "train.workers")
    par = spec.train.parallel
    if par.model_parallel < 1 or par.pipeline_stage < 1 or par.micro_batch_num < 1:
        bad("train.parallel.model_parallel, pipeline_stage and micro_batch_num must be >= 1", "train.parallel")
    split = par.model_parallel * par.pipeline_stage
    dp = par.data_parallel if par.data_parallel is not None else spec.train.workers // split
    if dp < 1 or dp * split != spec.train.workers:
        bad(
            f"train.parallel: data_parallel ({dp}) x model_parallel ({par.model_parallel}) x pipeline_stage "
            f"({par.pipeline_stage}) must equal train.workers ({spec.train.workers})",
            "train.parallel",
        )
    if spec.train.batch_size % dp:
        bad(
            f"train.batch_size ({spec.train.batch_size}) must be a multiple of data_parallel ({dp})", "train.batch_size"
        )
    if spec.train.grad_accum > 1 and split == 1:
        bad(
            "train.grad_accum > 1: MindFormers accumulates gradients only in semi_auto_parallel (model_parallel or "
            "pipeline_stage > 1) and silently resets it to 1 otherwise; raise train.batch_size instead",
            "train.grad_accum",
        )
    if spec.train.device == "CPU" and split > 1:
        bad(
            "train.parallel: MindSpore's CPU backend runs data parallel only; model_parallel and pipeline_stage "
            "need train.device: Ascend",
            "train.parallel",
        )
    if spec.train.num_checkpoints < 1:
        bad("train.num_checkpoints must be >= 1", "train.num_checkpoints")
    if spec.train.device == "CPU" and spec.train.dtype != "float32":
        bad("train.dtype must be float32 on CPU (MindSpore's CPU kernels need it)", "train.dtype")
    if not 120 <= spec.cluster.hccl_connect_timeout <= 7200:
        bad(
            "cluster.hccl_connect_timeout must be in [120, 7200] seconds (CANN's range)", "cluster.hccl_connect_timeout"
        )
    if spec.cluster.prep_timeout <= spec.cluster.hccl_connect_timeout:
        bad(
            f"cluster.prep_timeout ({spec.cluster.prep_timeout} s) must be longer than cluster.hccl_connect_timeout "
            f"({spec.cluster.hccl_connect_timeout} s): the ranks wait for prep before HCCL starts counting",
            "cluster.prep_timeout",
        )
    if spec.cluster.cards_per_node < 1:
        bad("cluster.cards_per_node must be >= 1", "cluster.cards_per_node")
    if spec.cluster.disk_gib is not None and spec.cluster.disk_gib < 1:
        bad("cluster.disk_gib must be >= 1 (or null: computed from the spec)", "cluster.disk_gib")
    _validate_data(spec.data, bad)
    if spec.eval.squad_min_new_tokens < 0:
        bad("eval.squad_min_new_tokens must be >= 0", "eval.squad_min_new_tokens")
    if not all(c.isalnum() or c in "-_." for c in spec.run_id):
        bad("run_id may use letters, digits, '-', '_' and '.' only", "run_id")


def _validate_data(d: DataSection, bad) -> None:
    """data.families / drop_families / balance / heldout_file_rows: the data section's own consistency."""
    if d.families is not None and not set(d.families) - set(d.drop_families):
        bad("data.families and data.drop_families leave no family to train on", "data.families")
    for family, rule in (d.balance or {}).items():
        try:
            balance_rule(rule)
        except ValueError as exc:
            bad(f"data.balance.{family}: {exc}", "data.balance")
    if d.heldout_file_rows is not None and d.heldout_file_rows < 1:
        bad("data.heldout_file_rows must be >= 1 (or null for every row)", "data.heldout_file_rows")


def balance_rule(rule) -> tuple[str, int]:
    """A data.balance value: an int N -> ("cap", N); "xK" -> ("repeat", K)."""
    if isinstance(rule, int) and not isinstance(rule, bool) and rule >= 0:
        return "cap", rule
    if isinstance(rule, str) and rule.startswith("x") and rule[1:].isdigit() and int(rule[1:]) >= 1:
        return "repeat", int(rule[1:])
    raise ValueError(f'{rule!r} is neither a row cap (an integer >= 0) nor a repeat factor like "x10"')


@dataclass(frozen=True)
class SpecLines:
    """Where each key of a loaded run spec was written, so a check made after loading (tunebox/spec_checks.py)
    can still name the file and the line of the key it refuses."""

    path: str
    data: dict

    def line_of(self, dotted: str) -> Optional[int]:
        """The line of `dotted` (e.g. lora.target_modules), or of its nearest written parent; None if unwritten."""
        node, line = self.data, None
        for k in dotted.split("."):
            if not isinstance(node, dict) or k not in node:
                return line
            line = getattr(node, "lines", {}).get(k, line)
            node = node[k]
        return line

    def error(self, message: str, dotted: str) -> InputError:
        return InputError(message, self.path, self.line_of(dotted))


def _apply_override(data: dict, override: str) -> None:
    """One `--set section.key=value`: the value is read as YAML, as it would be in the spec."""
    if "=" not in override:
        raise InputError(f"override {override!r} must look like section.key=value")
    dotted, raw = override.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise InputError(
            f"--set {override}: {raw!r} is not a YAML value ({getattr(exc, 'problem', exc)}); "
            f"quote it to pass text, e.g. --set '{dotted}=\"{raw}\"'"
        ) from None
    node = data
    keys = dotted.split(".")
    for depth, k in enumerate(keys[:-1]):
        if node.get(k) is None:  # absent, or written empty (`eval:` with nothing under it)
            node[k] = _LinedDict({}, {}, None)
        node = node[k]
        if not isinstance(node, dict):
            raise InputError(f"--set {override}: '{'.'.join(keys[: depth + 1])}' is a value, not a section")
    node[keys[-1]] = value


def read_spec(path: str | Path, overrides: list[str] | None = None) -> tuple[RunSpec, SpecLines]:
    """Load a run spec and run each section's own checks; also return where each key was written.
    `overrides` are `section.key=value` strings (YAML values). Jobs load through
    tunebox.spec_checks.load_checked_spec, which adds the checks across subjects."""
    path = Path(path)
    if not path.exists():
        candidate = RECIPES_DIR / (path.name if path.suffix else f"{path.name}.yaml")
        if candidate.exists():
            path = candidate
        else:
            raise InputError(f"no such run spec (also looked in {RECIPES_DIR})", path)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.load(text, Loader=_LineLoader) or _LinedDict({}, {}, 1)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}", path, mark.line + 1 if mark else None
        ) from None
    for ov in overrides or []:
        _apply_override(data, ov)
    spec = _build(RunSpec, data, str(path), "")
    spec.source_path = str(path.resolve())
    where = SpecLines(str(path), data)
    _validate(spec, where)
    return spec, where


def load_spec(path: str | Path, overrides: list[str] | None = None) -> RunSpec:
    """Load a run spec with each section's own checks (read_spec, without the line map)."""
    return read_spec(path, overrides)[0]


def _to_plain(obj):
    if dataclasses.is_dataclass(obj):
        return {
            f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.metadata.get("internal")
        }
    return obj


def dump_spec(spec: RunSpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True)


def field_docs(cls) -> dict[str, str]:
    """The docstring under each field of a spec dataclass (the string literal right after it), by name."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe(cls=RunSpec, prefix: str = "") -> str:
    """Every key with its type, default and docstring, for --help."""
    import textwrap

    out = []
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        dotted = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out.append(describe(tp, dotted + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append(f"  {dotted:<28} {_type_name(tp):<32} default: {default!r}")
        if f.name in docs:
            out.append(textwrap.fill(docs[f.name], width=110, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(out)
