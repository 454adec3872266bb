"""Planning figures, before any training: what a LoRA configuration costs in the contest's score,
and how long a run takes on Ascend.

Score side. For each candidate (rank, target set) we compute the trainable parameters from the
registry's exact shapes, the ratio two ways (exact total; the contest's nominal total, which is
what its tables used), and the *break-even accuracy*: the accuracy at which the candidate scores
exactly what the contest's baseline scores. With k the ratio weight (1 in stage 1, 10 in stage 2):

    score = 0.3 * (1 - k * ratio) + 0.7 * accuracy
    0.3 (1 - k r) + 0.7 a  =  0.3 (1 - k r_b) + 0.7 a_b   =>   a = a_b + (0.3 k / 0.7) (r - r_b)

so every 1e-4 of ratio above the baseline's costs 0.3k/0.7 * 1e-4 of accuracy (0.0043% in stage 1,
0.043% in stage 2). When the baseline accuracy is unknown the same formula gives the margin a - a_b.

Time side. Training FLOPs per token of a LoRA run (N = weights used in matmuls: every projection
plus the LM head, not the embedding lookup; N_lora = trainable LoRA weights; L layers, S padded
sequence length, h = heads * head_dim):

    forward     F = 2 N + 2 N_lora + 4 L S h          (2 FLOPs per weight; q.k and p.v products)
    backward    B = 2 N + 4 N_lora + 8 L S h          (input gradients through every layer; weight
                                                       gradients only for LoRA: frozen W needs none)
    recompute   R = F when activations are recomputed (MindFormers `recompute: True`, what the
                                                       contest configs use), else 0
    per token   F + B + R  ~ 6 N with recompute, 4 N without (full fine-tuning would be 6 N / 8 N)

Tokens are padded tokens (MindFormers pads every sample to seq_length), steps drop the last partial
batch of each epoch (drop_remainder: True). A step takes
step_flops / (cards * peak * MFU); MFU is calibrated on the one published timing, the contest's
reference run (Llama3-8B LoRA, 90k rows, 4 cards, seq 256, batch 64, 5 epochs: about 6 hours).
The calibrated MFU absorbs everything the FLOP count leaves out (compile, checkpoint saving,
communication, padding); predictions for other settings assume that mix stays similar. Because
the MFU is solved from a wall time, the peak figure cancels out of every prediction made with it.
When a real step time is known (`measured_step_s`), it replaces the model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Iterable, Optional

from tunebox.contest.rules import CONTEST_NOMINAL_TOTAL_PARAMS, param_ratio, stage1_score, stage2_score
from tunebox.io import InputError
from tunebox.model.registry import ModelShape, get_model_shape, lora_targets

CANDIDATE_RANKS = (1, 2, 4, 8, 16, 32)
TARGET_SETS = {"wq|wv": "wq|wv", "wq|wk|wv|wo": "wq|wk|wv|wo", "all linear": "wq|wk|wv|wo|w1|w2|w3"}

RATIO_WEIGHT = {1: 1.0, 2: 10.0}  # k in the score formula of each stage
SCORE_FUNCTIONS = {1: stage1_score, 2: stage2_score}

# Ascend 910B (the Atlas 800T A2 cards the contest ran on), dense FP16, per card. Huawei publishes
# 256 TFLOPS for the original 910; for the 910B, figures of about 320 TFLOPS FP16 are quoted
# (e.g. https://boardor.com/blog/huawei-ascend-910b-outperforms-h20-910c-approaches-h100). Only the
# product MFU * peak enters a calibrated prediction, so a different figure changes the reported
# MFU, not the predicted time.
ASCEND_910B_PEAK_FP16_TFLOPS = 320.0


@dataclass(frozen=True)
class Baseline:
    """The contest configuration a candidate has to beat, and where we read it."""

    stage: int
    model: str
    rank: int
    target_modules: str
    accuracy: Optional[float]
    source: str


BASELINES = {
    1: Baseline(
        1,
        "llama3-8b",
        8,
        "wq|wv",
        0.20,
        "LoRA r=8 on .*wq|.*wv: the guide's run_llama3_8b_8k_800T_A2_64G_lora_dis_256.yaml; accuracy 20%: "
        "'baseline的数学运算准确率为20%' "
        "(zhouyifeng888/competition, topic2-finetune/first-phase/_阿巴阿巴/README.md)",
    ),
    2: Baseline(
        2,
        "internlm-7b",
        8,
        "wq|wk|wv|wo",
        0.40,
        "LoRA r=8 on .*wq|.*wk|.*wv|.*wo: research/internlm/finetune_internlm_7b_lora.yaml in the contest's "
        "MindFormers copy (topic2-finetune/mindformers); accuracy 40%: 'baseline的准确率为40%' "
        "(topic2-finetune/README.md, 第二阶段). The targets are our reading: see docs/STAGE2.md",
    ),
}

# The contest's own setting per stage, used for whatever the command line and the recipe leave
# open (jobs/plan.py). Stage 1 is the reference run (90k rows). Stage 2: 27,604 rows offered
# (nju-websoft's README counts them) and the phase-2 config finetune_internlm_7b_lora_mmlu_64G.yaml
# as teams copied it: seq_length 2048, batch_size 4 x data_parallel 4 = 16 per step, 4 cards, 10 epochs.
STAGE_DEFAULTS = {
    1: {"model": "llama3-8b", "rows": 90_000, "seq": 256, "epochs": 5.0, "batch": 64, "cards": 4},
    2: {"model": "internlm-7b", "rows": 27_604, "seq": 2048, "epochs": 10.0, "batch": 16, "cards": 4},
}
MODEL_STAGE = {"llama3-8b": 1, "internlm-7b": 2}


def stage_baseline(
    stage: int, accuracy: Optional[float] = None, rank: Optional[int] = None, targets: Optional[str] = None
) -> Baseline:
    """The stage's contest baseline, with the accuracy or the LoRA layout given on the command line."""
    baseline = BASELINES[stage]
    if accuracy is not None:
        if not 0 <= accuracy <= 1:
            raise InputError(f"--baseline-accuracy must be a fraction in [0, 1], got {accuracy}")
        baseline = replace(baseline, accuracy=accuracy, source="--baseline-accuracy")
    if rank is not None or targets:
        baseline = replace(
            baseline,
            rank=rank or baseline.rank,
            target_modules=targets or baseline.target_modules,
            source=baseline.source + "; layout overridden on the command line",
        )
    lora_targets(baseline.target_modules)  # fail early on a bad regex
    return baseline


# ---- the score side ---------------------------------------------------------------------------


def score_ratio(trainable: int, shape: ModelShape) -> float:
    """The ratio the contest would compute: over its nominal total when it published one for this
    model, else over the exact total."""
    if shape.name in CONTEST_NOMINAL_TOTAL_PARAMS:
        return param_ratio(trainable, CONTEST_NOMINAL_TOTAL_PARAMS[shape.name])
    return param_ratio(trainable, shape.total_params())


def break_even_accuracy(stage: int, ratio: float, baseline_ratio: float, baseline_accuracy: float) -> float:
    """The accuracy at which a configuration with `ratio` scores what the baseline scores:
    a = a_b + (0.3 k / 0.7)(r - r_b). May exceed 1 (then no accuracy is enough) or fall below 0."""
    k = RATIO_WEIGHT[stage]
    return baseline_accuracy + (0.3 * k / 0.7) * (ratio - baseline_ratio)


class Record:
    """to_dict for the dataclasses below: their fields (dataclasses.asdict) and then the derived properties
    DERIVED names, in that order, as plan.json and the reports read them."""

    DERIVED: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {**asdict(self), **{name: getattr(self, name) for name in self.DERIVED}}


@dataclass(frozen=True)
class LoraOption(Record):
    rank: int
    targets: str  # the set's name ("wq|wv", "all linear", ...)
    target_modules: str  # the regex alternatives
    trainable: int
    ratio_exact: float  # over the exact total from the architecture
    ratio_contest: Optional[float]  # over the contest's nominal total (None: no contest total)
    ratio_penalty: float  # what the ratio costs in score: 0.3 * k * ratio (contest ratio when known)
    break_even: float  # accuracy needed to match the baseline's score (or the margin, see
    # LoraPlan.baseline_accuracy)
    is_baseline: bool


@dataclass(frozen=True)
class LoraPlan(Record):
    model: str
    stage: int
    total_exact: int
    total_contest: Optional[int]
    baseline: Baseline
    baseline_trainable: int
    baseline_ratio: float  # as the score uses it
    baseline_score: Optional[float]
    options: list[LoraOption]
    DERIVED = ("break_even_is_margin",)

    @property
    def break_even_is_margin(self) -> bool:
        """True when the baseline accuracy is unknown: break_even is then a - a_b, not a."""
        return self.baseline.accuracy is None


def plan_lora(
    shape: ModelShape,
    stage: int,
    baseline: Baseline,
    ranks: Iterable[int] = CANDIDATE_RANKS,
    target_sets: Optional[dict[str, str]] = None,
) -> LoraPlan:
    """Every (rank, target set) candidate with its trainable count, ratios and break-even accuracy
    against `baseline` (the baseline's LoRA layout is applied to `spec`, so a plan for another
    model compares like with like)."""
    if stage not in RATIO_WEIGHT:
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    target_sets = target_sets or TARGET_SETS
    total = shape.total_params()
    contest_total = CONTEST_NOMINAL_TOTAL_PARAMS.get(shape.name)
    base_trainable = shape.lora_params(baseline.rank, baseline.target_modules)
    base_ratio = score_ratio(base_trainable, shape)
    a_b = baseline.accuracy if baseline.accuracy is not None else 0.0
    base_targets = lora_targets(baseline.target_modules)
    options = []
    for targets, regex in target_sets.items():
        chosen = lora_targets(regex)
        for rank in ranks:
            if rank <= 0:
                raise ValueError(f"LoRA rank must be positive, got {rank}")
            trainable = shape.lora_params(rank, regex)
            ratio = score_ratio(trainable, shape)
            options.append(
                LoraOption(
                    rank=rank,
                    targets=targets,
                    target_modules=regex,
                    trainable=trainable,
                    ratio_exact=param_ratio(trainable, total),
                    ratio_contest=param_ratio(trainable, contest_total) if contest_total else None,
                    ratio_penalty=0.3 * RATIO_WEIGHT[stage] * ratio,
                    break_even=break_even_accuracy(stage, ratio, base_ratio, a_b),
                    is_baseline=rank == baseline.rank and chosen == base_targets,
                )
            )
    score = SCORE_FUNCTIONS[stage](baseline.accuracy, base_ratio) if baseline.accuracy is not None else None
    return LoraPlan(
        model=shape.name,
        stage=stage,
        total_exact=total,
        total_contest=contest_total,
        baseline=baseline,
        baseline_trainable=base_trainable,
        baseline_ratio=base_ratio,
        baseline_score=score,
        options=options,
    )


# ---- the time side ----------------------------------------------------------------------------


def matmul_weights(shape: ModelShape) -> int:
    """Weights that take part in a matmul for every token: all projections of every layer plus the
    LM head (also when it shares the embedding). Not the embedding lookup, norms or biases."""
    per_layer = sum(o * i for o, i in shape.linear_shapes().values())
    return per_layer * shape.num_layers + shape.vocab_size * shape.hidden_size


@dataclass(frozen=True)
class FlopsPerToken:
    forward: float
    backward: float
    recompute: float

    @property
    def total(self) -> float:
        return self.forward + self.backward + self.recompute


def lora_flops_per_token(
    shape: ModelShape, seq_length: int, lora_trainable: int, recompute: bool = True
) -> FlopsPerToken:
    """Training FLOPs per (padded) token of a LoRA run; the formula is in the module docstring."""
    n = matmul_weights(shape)
    attention = 4 * shape.num_layers * seq_length * shape.num_heads * shape.head_dim
    forward = 2 * n + 2 * lora_trainable + attention
    backward = 2 * n + 4 * lora_trainable + 2 * attention
    return FlopsPerToken(float(forward), float(backward), float(forward) if recompute else 0.0)


@dataclass(frozen=True)
class Workload:
    rows: int
    seq_length: int
    epochs: float
    global_batch: int
    cards: int

    def __post_init__(self):
        for name in ("rows", "seq_length", "global_batch", "cards"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.rows < self.global_batch:
            raise ValueError(f"{self.rows} rows is fewer than one global batch of {self.global_batch}")

    @property
    def steps(self) -> int:
        """Optimizer steps: whole batches per epoch (the last partial batch is dropped) x epochs."""
        return int((self.rows // self.global_batch) * self.epochs)

    @property
    def tokens(self) -> int:
        return self.steps * self.global_batch * self.seq_length


@dataclass(frozen=True)
class TimeModel:
    """How a run's Ascend time is modelled: the card's peak, the model FLOPs utilisation (None: the one
    calibrated on the contest's reference run, calibrated_mfu()), and whether activations are recomputed."""

    mfu: Optional[float] = None
    peak_tflops: float = ASCEND_910B_PEAK_FP16_TFLOPS
    recompute: bool = True


@dataclass(frozen=True)
class TimeEstimate(Record):
    model: str
    workload: Workload
    lora_trainable: int
    recompute: bool
    flops_per_token: float
    step_flops: float
    total_flops: float
    peak_tflops: float
    mfu: float  # assumed (model) or implied by the measured step time
    step_seconds: float
    wall_seconds: float
    source: str  # "model" or "measured"
    DERIVED = ("steps", "tokens", "wall_hours")

    @property
    def steps(self) -> int:
        return self.workload.steps

    @property
    def tokens(self) -> int:
        return self.workload.tokens

    @property
    def wall_hours(self) -> float:
        return self.wall_seconds / 3600.0


def estimate_time(
    shape: ModelShape,
    workload: Workload,
    lora_trainable: int,
    time_model: TimeModel = TimeModel(),
    *,
    measured_step_s: Optional[float] = None,
) -> TimeEstimate:
    """Step and wall time of a LoRA run. With measured_step_s the wall time is steps x that, and
    the MFU reported is the one it implies; otherwise step time comes from FLOPs / (cards x peak x
    MFU), MFU defaulting to the calibrated one (calibrated_mfu())."""
    mfu, peak_tflops, recompute = time_model.mfu, time_model.peak_tflops, time_model.recompute
    if peak_tflops <= 0:
        raise ValueError(f"peak TFLOPS must be positive, got {peak_tflops}")
    per_token = lora_flops_per_token(shape, workload.seq_length, lora_trainable, recompute).total
    step_flops = per_token * workload.global_batch * workload.seq_length
    capacity = workload.cards * peak_tflops * 1e12
    if measured_step_s is not None:
        if measured_step_s <= 0:
            raise ValueError(f"measured step time must be positive, got {measured_step_s}")
        step_s, source = float(measured_step_s), "measured"
        mfu = step_flops / (capacity * step_s)
    else:
        mfu = calibrated_mfu(peak_tflops) if mfu is None else mfu
        if not 0 < mfu <= 1:
            raise ValueError(f"MFU must be in (0, 1], got {mfu} (pass 0.2, not 20)")
        step_s, source = step_flops / (capacity * mfu), "model"
    return TimeEstimate(
        model=shape.name,
        workload=workload,
        lora_trainable=lora_trainable,
        recompute=recompute,
        flops_per_token=per_token,
        step_flops=step_flops,
        total_flops=step_flops * workload.steps,
        peak_tflops=peak_tflops,
        mfu=mfu,
        step_seconds=step_s,
        wall_seconds=step_s * workload.steps,
        source=source,
    )


@dataclass(frozen=True)
class ReferenceRun:
    """A published wall time for a known setting: what the MFU is calibrated on."""

    model: str
    rank: int
    target_modules: str
    workload: Workload
    hours: float
    recompute: bool
    source: str


# The contest's timing is of the stage-1 baseline's configuration (BASELINES[1], the guide's yaml): its model
# and LoRA are read from there, so the two cannot drift apart.
CONTEST_REFERENCE = ReferenceRun(
    model=BASELINES[1].model,
    rank=BASELINES[1].rank,
    target_modules=BASELINES[1].target_modules,
    workload=Workload(rows=90_000, seq_length=256, epochs=5, global_batch=64, cards=4),
    hours=6.0,
    recompute=True,
    source="'9万条数据集在4卡的LoRA微调下的运行时长为6个小时（seq_len为256，batch_size为64，微调5个epochs）' "
    "(zhouyifeng888/competition, 2024-ascend-innovation-contest/topic2-finetune/README.md); the stage-1 "
    "config it ran (run_llama3_8b_8k_800T_A2_64G_lora_dis_256.yaml): model_parallel 4, recompute True, bf16",
)


# A second published timing, for stage 2: team 重生之我在大海摸鲸鱼 reports "epoch 为10，batch_size 为2，
# 8卡训练，时长约为9小时左右" (second-phase/重生之我在大海摸鲸鱼/README.md), with seq_length 2048 and
# data_parallel 8 in its finetune_internlm_7b_lora_mmlu_64G.yaml. It also added zero-shot rows of
# unknown number to the 27,604 offered, so the MFU this implies is a lower bound.
STAGE2_TEAM_REFERENCE = ReferenceRun(
    model="internlm-7b",
    rank=8,
    target_modules="wk|wo",
    workload=Workload(rows=27_604, seq_length=2048, epochs=10, global_batch=16, cards=8),
    hours=9.0,
    recompute=True,
    source="second-phase/重生之我在大海摸鲸鱼/README.md ('时长约为9小时左右') and its "
    "finetune_internlm_7b_lora_mmlu_64G.yaml (seq_length 2048, batch_size 2 x data_parallel 8, 10 epochs)",
)


def calibrated_mfu(
    peak_tflops: float = ASCEND_910B_PEAK_FP16_TFLOPS, reference: ReferenceRun = CONTEST_REFERENCE
) -> float:
    """The MFU at which the reference run takes its published time."""
    shape = get_model_shape(reference.model)
    per_token = lora_flops_per_token(
        shape,
        reference.workload.seq_length,
        shape.lora_params(reference.rank, reference.target_modules),
        reference.recompute,
    ).total
    flops = per_token * reference.workload.tokens
    return flops / (reference.hours * 3600.0 * reference.workload.cards * peak_tflops * 1e12)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def compare_with_baseline(
    shape: ModelShape,
    stage: int,
    baseline: Baseline,
    recipe_lora: tuple[int, str],
    recipe_time: TimeEstimate,
    time_model: TimeModel,
) -> dict:
    """The recipe next to the contest baseline: LoRA layout, trainable parameters, the ratio the contest
    computes, its cost in score, and each one's Ascend time (the baseline on the stage's reference workload,
    the recipe on its own, `recipe_time`), both from the same time model."""
    defaults = STAGE_DEFAULTS[stage]
    base_trainable = shape.lora_params(baseline.rank, baseline.target_modules)
    base_workload = Workload(
        rows=defaults["rows"],
        seq_length=defaults["seq"],
        epochs=defaults["epochs"],
        global_batch=defaults["batch"],
        cards=defaults["cards"],
    )
    base_time = estimate_time(shape, base_workload, base_trainable, time_model)
    rank, targets = recipe_lora
    rows = []
    for name, r, t, trainable, e in (
        ("baseline", baseline.rank, baseline.target_modules, base_trainable, base_time),
        ("recipe", rank, targets, recipe_time.lora_trainable, recipe_time),
    ):
        ratio = score_ratio(trainable, shape)
        rows.append(
            {
                "name": name,
                "rank": r,
                "target_modules": t,
                "trainable": trainable,
                "ratio": ratio,
                "ratio_cost": 0.3 * RATIO_WEIGHT[stage] * ratio,
                "rows": e.workload.rows,
                "seq_length": e.workload.seq_length,
                "epochs": e.workload.epochs,
                "global_batch": e.workload.global_batch,
                "cards": e.workload.cards,
                "wall_hours": e.wall_hours,
                "time_source": e.source,
            }
        )
    return {"stage": stage, "model": shape.name, "rows": rows}


# ---- device memory per card ---------------------------------------------------------------------

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class CardMemory(Record):
    """An estimate of one card's training memory (bytes), by part."""

    weights: float  # the frozen base, split over model_parallel x pipeline_stage
    lora_state: float  # LoRA weights, their gradients and AdamW's two float32 moments
    activations: float  # what the backward keeps (the layer inputs with recompute) + one layer's full set
    logits: float  # the LM head's float32 output and its gradient, per micro-batch
    micro_batch: int
    layers_here: int

    @property
    def total(self) -> float:
        return self.weights + self.lora_state + self.activations + self.logits


def card_memory(
    shape: ModelShape,
    *,
    seq_length: int,
    global_batch: int,
    data_parallel: int,
    model_parallel: int,
    pipeline_stage: int,
    micro_batch_num: int,
    dtype: str,
    lora_trainable: int,
    recompute: bool,
) -> CardMemory:
    """Per-card memory of a LoRA step. Activations per layer follow Korthikanti et al. 2022, "Reducing
    Activation Recomputation in Large Transformer Models" (arXiv 2205.05198), eq. 2 with tensor parallel t
    and no sequence parallel: s b h (10 + 24/t + 5 a s / (h t)) bytes (16-bit activations); with full
    recompute a layer keeps only its input, 2 s b h bytes, plus one layer's full set while it is recomputed.
    The LM head's logits are float32 and, as MindFormers' vocab_emb_dp keeps them, not split by t. Framework
    workspace, communication buffers and fragmentation come on top."""
    h, a, v = shape.hidden_size, shape.num_heads, shape.vocab_size
    t, pp = model_parallel, pipeline_stage
    b = max(1, global_batch // (data_parallel * (micro_batch_num if pp > 1 else 1)))
    s = seq_length
    layers = -(-shape.num_layers // pp)
    per_layer_full = s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    kept = 2 * s * b * h if recompute else per_layer_full
    in_flight = min(pp, micro_batch_num) if pp > 1 else 1  # 1F1B: up to pp micro-batches in flight
    activations = (layers * kept * in_flight) + (per_layer_full if recompute else 0)
    logits = 2 * 4 * s * b * v  # the last stage holds them (the worst card)
    weights = shape.total_params() * BYTES[dtype] / (t * pp)
    lora_state = lora_trainable / (t * pp) * (BYTES[dtype] * 2 + 8)
    return CardMemory(
        weights=weights,
        lora_state=lora_state,
        activations=activations,
        logits=logits,
        micro_batch=b,
        layers_here=layers,
    )


def topology_card_memory(
    shape: ModelShape, topo, train, *, seq_length: int, global_batch: int, lora_trainable: int
) -> CardMemory:
    """card_memory on a run's topology (mf_config.topology) in its train section's dtype and recompute."""
    split = {k: getattr(topo, k) for k in ("data_parallel", "model_parallel", "pipeline_stage", "micro_batch_num")}
    train_side = {"dtype": train.dtype, "recompute": train.parallel.recompute}
    return card_memory(
        shape, seq_length=seq_length, global_batch=global_batch, lora_trainable=lora_trainable, **split, **train_side
    )


# ---- disk -------------------------------------------------------------------------------------


@dataclass
class DiskEstimate:
    """What a run keeps on the runs volume (runs/ and the model cache), in bytes."""

    items: dict[str, int]
    headroom: float = 0.2

    @property
    def total_bytes(self) -> int:
        return int(sum(self.items.values()) * (1 + self.headroom))

    @property
    def gib(self) -> int:
        """Whole GiB, rounded up, at least 1: the claim's size."""
        return max(1, -(-self.total_bytes // 2**30))

    def to_dict(self) -> dict:
        return {"items_bytes": self.items, "headroom": self.headroom, "total_bytes": self.total_bytes, "gib": self.gib}


# ---- checkpoint I/O --------------------------------------------------------------------------

RESUME_SNAPSHOTS = 10  # full resume snapshots a run saves when train.save_state_every is not set
RESUME_KEPT = 2  # the newest ones MindFormers' CheckpointMonitor keeps (keep_checkpoint_max)


def resume_every(total_steps: int, configured: Optional[int] = None) -> int:
    """Steps between MindFormers' full resume snapshots (weights + optimizer state): train.save_state_every,
    else total_steps / RESUME_SNAPSHOTS rounded up. A kill then loses at most a tenth of the run, and a
    Llama3-8B run writes ten ~16 GB snapshots instead of one every few steps (the contest's stage-1
    config saved every 1,400 of its ~7,030 steps)."""
    return configured or max(1, -(-total_steps // RESUME_SNAPSHOTS))


def resume_snapshot_bytes(run) -> int:
    """One full resume snapshot: every weight in the training dtype, and the LoRA parameters with
    AdamWeightDecay's two moments in float32 (pet_config.param_init_type float32)."""
    shape = get_model_shape(run.model.name)
    train_dtype = run.train.dtype if run.train.device != "CPU" else "float32"
    return BYTES[train_dtype] * shape.total_params() + 3 * 4 * shape.lora_params(run.lora.rank, run.lora.target_modules)


@dataclass
class CheckpointIO:
    """What a run writes as checkpoints, in bytes."""

    total_steps: int
    resume_every_steps: int
    resume_snapshots: int
    resume_snapshot_bytes: int
    resume_kept: int
    lora_checkpoints: int
    lora_checkpoint_bytes: int
    merged_checkpoints: int
    merged_checkpoint_bytes: int
    merged_dtype: str

    @property
    def written_bytes(self) -> int:
        return (
            self.resume_snapshots * self.resume_snapshot_bytes
            + self.lora_checkpoints * self.lora_checkpoint_bytes
            + self.merged_checkpoints * self.merged_checkpoint_bytes
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "written_bytes": self.written_bytes}


def merged_weight_dtype(merge, train) -> str:
    """The dtype of the merged checkpoints' weights, which is the predicting network's param_init_type:
    merge.dtype, else the training dtype (float32 on CPU). merge, train: the run spec's sections."""
    return merge.dtype or train.dtype


def checkpoint_io(run, total_steps: int) -> CheckpointIO:
    shape = get_model_shape(run.model.name)
    every = resume_every(total_steps, run.train.save_state_every)
    merged = merged_weight_dtype(run.merge, run.train)
    return CheckpointIO(
        total_steps=total_steps,
        resume_every_steps=every,
        resume_snapshots=total_steps // every,
        resume_snapshot_bytes=resume_snapshot_bytes(run),
        resume_kept=RESUME_KEPT,
        lora_checkpoints=run.train.num_checkpoints,
        lora_checkpoint_bytes=4 * shape.lora_params(run.lora.rank, run.lora.target_modules),
        merged_checkpoints=run.train.num_checkpoints,
        merged_checkpoint_bytes=BYTES[merged] * shape.total_params(),
        merged_dtype=merged,
    )


def estimate_disk(run) -> DiskEstimate:
    """The disk a run spec needs: the converted base (float32, tunebox/model/weights.py) and its safetensors
    copy for MindFormers 1.9's checkpoint.load_path, the Hugging Face
    source it was converted from (bf16 safetensors, kept in the cache so a rebuild needs no download),
    one full merged checkpoint per saved step (merge.dtype, default the training dtype), MindFormers'
    full resume checkpoints (weights in the training dtype + LoRA state; the train job keeps the last
    2), the LoRA checkpoints, and 20% headroom for data, logs and a checkpoint being written."""
    shape = get_model_shape(run.model.name)
    params = shape.total_params()
    lora = shape.lora_params(run.lora.rank, run.lora.target_modules)
    n = run.train.num_checkpoints
    merged = merged_weight_dtype(run.merge, run.train)
    train_dtype = run.train.dtype if run.train.device != "CPU" else "float32"
    return DiskEstimate(
        {
            "base_checkpoint_fp32": 4 * params,
            "base_safetensors_fp32": 4 * params,  # the copy MindFormers 1.9 loads (weights.ensure_safetensors_base)
            "hf_source_bf16": 2 * params,
            f"merged_checkpoints_{merged}": n * BYTES[merged] * params,
            f"resume_checkpoints_{train_dtype}": RESUME_KEPT * resume_snapshot_bytes(run),
            "lora_checkpoints": n * 4 * lora,
        }
    )
