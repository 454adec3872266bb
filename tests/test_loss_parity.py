"""Step-1 loss parity of bench.train's two sides (issue 28): before any update LoRA's B is zero, so the tunebox
train job and the PyTorch + PEFT reference both run the base model on the same batch and must report the same
loss. A third computation written here in numpy (tunebox.evaluation.decode's Llama forward for the logits, the
cross-entropy by hand) holds both to 1e-4 on the bench's own batches.

The gap the issue saw (1.4111 vs 1.3452 on SmolLM2) was the bench's tunebox side packing: recipes/local-smollm2.yaml
turns train.packing on, bench_overrides did not turn it off, so that side trained on packed rows (about three samples
each) while the reference got prep's rows one sample each. Here the tiny recipe is told to pack the same way.

Mutants tried (each fails a test here):
  - bench_overrides without "train.packing=false": run_tunebox refuses the packed run ("the train job packed
    its rows"); with that check removed too, test_tunebox_side_loss_is_the_numpy_loss fails
    (5.96045 packed vs 5.96297 on the reference's batch).
  - bench_ref_torch.batch_loss as the mean of per-row means (the mean "over the batch", not over the counted
    tokens): test_reference_side_loss_is_the_numpy_loss fails (5.96414 vs 5.96297).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benches.bench_ref_torch import batch_loss, batch_tensors, build_model
from benches.bench_train import bench_overrides, export_reference_inputs, run_tunebox
from conftest import TINY_RECIPE, cannot_run, run_job
from tunebox.config import load_spec
from tunebox.data.samples import read_mindrecord
from tunebox.evaluation.decode import NumpyLlama
from tunebox.model.registry import get_model_shape
from tunebox.model.weights import load_tokenizer
from tunebox.run_checkpoints import base_checkpoint

TOTAL_STEPS = 2  # bench.train's warm-up step + one measured step (run_tunebox needs both)
TOLERANCE = 1e-4  # the bar; float32 on both sides agrees to about 1e-5
IGNORE = -100  # the labels' "not counted" value, as prep writes it
# local-smollm2 packs; the bench's padded side must still read prep's rows as the reference does
RECIPE_PACKS = ["train.packing=true"]


def numpy_step_loss(model: NumpyLlama, ids: np.ndarray, labels: np.ndarray, pad_id: int) -> tuple[float, int]:
    """The mean next-token cross-entropy over the counted positions of one [B, S+1] batch, in float64: position
    i of ids[:, :-1] predicts labels[:, i + 1] and counts when that label is not IGNORE and its input is not
    padding. Returns (loss, counted positions)."""
    inputs, targets = ids[:, :-1].astype(np.int64), labels[:, 1:].astype(np.int64)
    counted = (inputs != pad_id) & (targets != IGNORE)
    logits = model.logits(inputs).astype(np.float64)  # causal attention over the whole row
    top = logits.max(axis=-1, keepdims=True)
    log_z = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))
    picked = np.take_along_axis(logits, np.where(counted, targets, 0)[..., None], axis=-1)[..., 0]
    return float((log_z - picked)[counted].mean()), int(counted.sum())


@pytest.fixture(scope="module")
def bench_step_one(tmp_path_factory, tiny_cache) -> dict:
    """bench.train's padded tunebox side on the tiny recipe told to pack: prep, the reference's inputs
    (export_reference_inputs: batches.npz, weights.safetensors), the train job through run_tunebox."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEBOX_CACHE", str(tiny_cache))  # the train job (a child) and base_checkpoint here
        work = tmp_path_factory.mktemp("parity")
        base = load_spec(TINY_RECIPE, RECIPE_PACKS)
        overrides = RECIPE_PACKS + bench_overrides(base, work / "runs", TOTAL_STEPS)
        spec = load_spec(TINY_RECIPE, overrides)
        run_job("prep", TINY_RECIPE, tiny_cache, work, *overrides)
        ids, labels = read_mindrecord(spec.job_dir("prep") / "train.mindrecord")
        pad_id = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer)).pad_id
        checkpoint = base_checkpoint(spec)
        reference = work / "reference"
        tokens, _ = export_reference_inputs(
            reference, spec, get_model_shape(spec.model.name), ids, labels, TOTAL_STEPS, pad_id, checkpoint
        )
        run = run_tunebox(str(TINY_RECIPE), overrides, spec, work / "train.log", tokens)
    batches = np.load(reference / "batches.npz")
    model = NumpyLlama.from_checkpoint(checkpoint, get_model_shape(spec.model.name))
    loss, counted = numpy_step_loss(model, batches["ids"][0], batches["labels"][0], pad_id)
    return {
        "reference": reference,
        "pad_id": pad_id,
        "batches": batches,
        "tunebox": run["steps"][0]["loss"],
        "numpy": loss,
        "counted": counted,
    }


def test_tunebox_side_loss_is_the_numpy_loss(bench_step_one):
    s = bench_step_one
    assert s["counted"] > 0
    assert abs(s["tunebox"] - s["numpy"]) < TOLERANCE, (s["tunebox"], s["numpy"])


def test_reference_side_loss_is_the_numpy_loss(bench_step_one):
    try:
        import peft  # noqa: F401  (build_model's PEFT and transformers: fail here, not inside it)
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        cannot_run(f"{exc}: pip install -e '.[test]' brings torch (CPU), transformers and peft")
    s = bench_step_one
    work = s["reference"]
    plan = json.loads((work / "plan.json").read_text())
    model, _ = build_model(work, plan, json.loads((work / "model.json").read_text()))
    model.train()  # as the reference's first step: LoRA dropout on, B = 0
    with torch.no_grad():
        loss = float(batch_loss(model, *batch_tensors(s["batches"]["ids"][0], s["batches"]["labels"][0], s["pad_id"])))
    assert abs(loss - s["numpy"]) < TOLERANCE, (loss, s["numpy"])
    assert abs(loss - s["tunebox"]) < TOLERANCE, (loss, s["tunebox"])
