"""Resume under model parallel (issue 22, 1.4): a Job retry of the 4-card stage-1 run restarts train
with MindFormers' resume_training from the per-rank full checkpoints CheckpointMonitor wrote
(train/checkpoint/rank_0..3/). Under model_parallel 4 those are slices, not complete checkpoints.

MindFormers 1.9 refuses sliced checkpoints without a source strategy when auto_trans_ckpt is on
(mindformers/tools/ckpt_transform/transform_checkpoint.py, TransformCkpt.check_src_checkpoint_and_strategy:
"`src_strategy` should not be None when `src_checkpoint` is sliced."), and with auto_trans_ckpt off it
loads rank_N/'s own slice (mindformers/trainer/utils.py, get_load_checkpoint_result ->
load_distributed_checkpoint). The test runs tunebox.model.mf.run_mindformers on the rendered stage-1 YAML with
MindFormers' Trainer stood in for (no Ascend card, no model parallel on CPU), and hands the config it
built to those MindFormers functions, on a fake rank_0..3 folder.
"""

from __future__ import annotations

import os

import pytest

from conftest import rendered
from tunebox.model.mf import run_mindformers
from tunebox.model.mf_config import dump

RANKS = 4


@pytest.fixture
def mf_cwd(tmp_path, monkeypatch):
    """MindFormers writes ./output/log at import: run it in a scratch folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _resumed_config(tmp_path, monkeypatch, *overrides: str) -> dict:
    """What run_mindformers(yaml, resume=True) hands MindFormers' Trainer for the stage-1 recipe."""
    import mindformers.core.context
    import mindformers.trainer

    spec, _, cfg = rendered("stage1-llama3-8b.yaml", tmp_path, *overrides)
    out = tmp_path / "train"
    out.mkdir(parents=True)
    (out / "mindformers.yaml").write_text(dump(cfg), encoding="utf-8")
    # What a 4-card run leaves: one slice per rank (CheckpointMonitor's names) and MindFormers'
    # per-rank strategy files (mindformers/utils/file_utils.py, set_strategy_save_path).
    for rank in range(RANKS):
        folder = out / "checkpoint" / f"rank_{rank}"
        folder.mkdir(parents=True)
        (folder / f"tunebox_rank_{rank}-1_20.ckpt").write_bytes(b"slice")
        (folder / "meta.json").write_text("{}", encoding="utf-8")
        (out / "strategy").mkdir(exist_ok=True)
        (out / "strategy" / f"ckpt_strategy_rank_{rank}.ckpt").write_bytes(b"strategy")

    seen = {}

    class Trainer:  # stands in for MindFormers' Trainer: keeps the config it gets
        def __init__(self, args):
            seen["cfg"] = args

        def train(self):
            pass

    monkeypatch.setattr(mindformers.trainer, "Trainer", Trainer)
    monkeypatch.setattr(mindformers.core.context, "build_context", lambda cfg: None)
    monkeypatch.setenv("OM_MODULES_CACHE", str(tmp_path / "modules"))
    run_mindformers(out / "mindformers.yaml", resume=True)
    return seen["cfg"]


@pytest.mark.parametrize(
    "overrides",
    [(), ("train.parallel.model_parallel=2", "train.parallel.pipeline_stage=2", "train.parallel.micro_batch_num=2")],
)
def test_resume_under_model_parallel_passes_mindformers_checks(mf_cwd, monkeypatch, overrides):
    from mindformers.tools.ckpt_transform.transform_checkpoint import TransformCkpt
    from mindformers.tools.ckpt_transform.utils import check_rank_folders
    from mindformers.trainer.utils import check_path_include_total_ckpt, get_distribute_checkpoint_path

    cfg = _resumed_config(mf_cwd, monkeypatch, *overrides)
    load = cfg["load_checkpoint"]
    assert cfg["resume_training"] is True and cfg["parallel"]["parallel_mode"] == 1
    assert sorted(os.listdir(load)) == [f"rank_{r}" for r in range(RANKS)]
    # MindFormers' check before a transform (auto_trans_ckpt on): sliced needs a strategy. With the
    # strategy handed over, a user may also turn auto_trans_ckpt on (another card count) and pass.
    strategy = cfg["src_strategy_path_or_dir"] or None
    TransformCkpt.check_src_checkpoint_and_strategy(load, strategy)
    if "train.parallel.pipeline_stage=2" in overrides:
        assert os.path.isdir(strategy)  # pipeline: the folder, merged by MindFormers
    else:
        assert os.path.basename(strategy) == "ckpt_strategy_rank_0.ckpt"  # any rank's file
    # Same topology (train_hash refuses another): no transform, each rank loads its own slice,
    # the way get_load_checkpoint_result chooses it with auto_trans_ckpt off.
    assert cfg["auto_trans_ckpt"] is False
    assert not check_path_include_total_ckpt(load)
    for rank in range(RANKS):
        assert check_rank_folders(load, rank)
        assert get_distribute_checkpoint_path(load, rank) == os.path.join(
            load, f"rank_{rank}", f"tunebox_rank_{rank}-1_20.ckpt"
        )


def test_a_fresh_model_parallel_run_still_slices_the_complete_base(mf_cwd, monkeypatch):
    """Not resuming: the base is one complete checkpoint, which MindFormers slices for the topology
    (auto_trans_ckpt on; a complete checkpoint needs no source strategy)."""
    _, _, cfg = rendered("stage1-llama3-8b.yaml", mf_cwd)
    assert cfg["auto_trans_ckpt"] is True and cfg["load_checkpoint"].endswith("base.ckpt")
    assert cfg["resume_training"] is False  # the resume settings apply to resumed runs only
