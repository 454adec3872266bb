"""Resume under model parallel (issue 22, 1.4; MindFormers 1.9's checkpoint format since issue 26): a Job
retry of the 4-card stage-1 run restarts train from the newest full checkpoint CheckpointMonitor wrote:
train/checkpoint/iteration_%08d/, each rank's shard of the weights and optimizer state, common.json, and
latest_checkpointed_iteration.txt naming the folder (mindformers/checkpoint/checkpoint.py save_checkpoint).

On resume MindFormers 1.9 loads `checkpoint.load_path` through get_checkpoint_path (the tracker's iteration
folder) and reshards it from the shards' own metadata (load_checkpoint -> ReshardLoader), with the optimizer
unless `no_load_optim`; no strategy file and no auto_trans_ckpt. The test runs tunebox.model.mf.run_mindformers
on the rendered stage-1 YAML with MindFormers' Trainer stood in for (no Ascend card, no model parallel on CPU),
and hands the config it built to MindFormers' own checkpoint rules (convert_checkpoint_config, which the Trainer
calls first) and loader path functions, on a fake 4-rank save.
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import rendered
from tunebox.model.mf import run_mindformers
from tunebox.model.mf_config import dump

RANKS = 4
ITERATION = 20  # the save a retry resumes from


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
    # What a 4-card save leaves (mindformers/checkpoint/utils.py get_checkpoint_name, get_checkpoint_iter_dir)
    folder = out / "checkpoint" / f"iteration_{ITERATION:08d}"
    folder.mkdir(parents=True)
    for rank in range(RANKS):
        for kind in ("model", "opt"):
            (folder / f"tunebox-{kind}-{rank:07d}-{RANKS:07d}.safetensors").write_bytes(b"shard")
    (folder / "common.json").write_text(json.dumps({"global_step": ITERATION, "global_batch_size": 64}))
    (out / "checkpoint" / "latest_checkpointed_iteration.txt").write_text(str(ITERATION))

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
    """Mutants: apply_resume_settings not called by run_mindformers; no_load_optim left true (weights back, the
    optimizer state and step lost); load_path the base folder, or a save_path subfolder."""
    from mindformers.checkpoint.checkpoint import CommonInfo, get_checkpoint_path
    from mindformers.trainer.utils import convert_checkpoint_config

    cfg = _resumed_config(mf_cwd, monkeypatch, *overrides)
    assert cfg.parallel.parallel_mode == 1
    convert_checkpoint_config(cfg)  # MindFormers' rules for the section; raises on a legacy conflict
    assert cfg.use_legacy_format is False
    assert cfg.checkpoint.no_load_optim is False  # the optimizer state and the step come back
    loaded = get_checkpoint_path(cfg.checkpoint.load_path)  # what load_checkpoint reads, as MindFormers finds it
    assert loaded == str(mf_cwd / "train" / "checkpoint" / f"iteration_{ITERATION:08d}")
    assert CommonInfo.load_common(os.path.join(loaded, "common.json")).global_step == ITERATION
    assert cfg.checkpoint.save_path == cfg.checkpoint.load_path  # the run goes on saving where it resumed from
    assert not cfg.get("auto_trans_ckpt") and not cfg.get("src_strategy_path_or_dir")


def test_a_fresh_model_parallel_run_loads_the_base_without_its_optimizer(mf_cwd, monkeypatch):
    """Not resuming: the base is the safetensors folder, weights only (MindFormers reshards the complete
    tensors for the topology on load); the resume settings apply to resumed runs only."""
    from mindformers.tools.register import MindFormerConfig
    from mindformers.trainer.utils import convert_checkpoint_config

    _, _, rendered_cfg = rendered("stage1-llama3-8b.yaml", mf_cwd)
    cfg = MindFormerConfig(**rendered_cfg)
    convert_checkpoint_config(cfg)
    assert cfg.checkpoint.load_path == str(mf_cwd / "base") and cfg.checkpoint.no_load_optim is True
    assert cfg.checkpoint.save_path == str(mf_cwd / "train" / "checkpoint")


def test_data_parallel_workers_resume_in_the_legacy_keys(mf_cwd):
    """Data-parallel workers keep the legacy keys (checkpoint_section_loads): the resume is resume_training from
    output_dir/checkpoint, which MindFormers' own convert_checkpoint_config turns into loading the optimizer
    too (no_load_optim = not resume_training) and leaves in the legacy format. Mutants: resume_training left
    False; load_checkpoint left the base; the section's branch taken for a legacy config."""
    from mindformers.tools.register import MindFormerConfig
    from mindformers.trainer.utils import convert_checkpoint_config

    from tunebox.model.mf_config import apply_resume_settings

    _, _, rendered_cfg = rendered("tiny.yaml", mf_cwd, "train.workers=2")
    saves = mf_cwd / "train" / "checkpoint" / "rank_0"  # what CheckpointMonitor leaves in the legacy keys
    saves.mkdir(parents=True)
    (saves / "meta.json").write_text("{}", encoding="utf-8")
    (mf_cwd / "train" / "mindformers.yaml").write_text(dump(rendered_cfg), encoding="utf-8")
    cfg = MindFormerConfig(str(mf_cwd / "train" / "mindformers.yaml"))  # with 1.9's template, as run_mindformers
    apply_resume_settings(cfg)
    assert cfg.resume_training is True and cfg.load_checkpoint == str(mf_cwd / "train" / "checkpoint")
    convert_checkpoint_config(cfg)
    assert cfg.use_legacy_format is True and cfg.checkpoint.no_load_optim is False
    assert cfg.checkpoint.load_path == str(mf_cwd / "train" / "checkpoint")
