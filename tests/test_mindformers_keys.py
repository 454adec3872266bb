"""The finetune YAML tunebox renders, through MindFormers 1.9's own config handling (its template in
MindFormerConfig, build_context's parallel context, the Trainer's config rules, its checkpoint section rules
and its train-dataset preprocessing): none of the deprecation warnings that have a current key in 1.9 is
logged, and the parallel context the Trainer trains with is the one the deprecated keys gave.

Left out, because no key avoids them in 1.9: "Since the checkpoint has been set, the use_legacy_format is
automatically set to False" (trainer/utils.py convert_checkpoint_config logs it for every `checkpoint:`
section) and "setting `resume_training` to a weight filename will be deprecated" (trainer/trainer.py
_warn_if_resume_training_is_string logs it for every config)."""

from __future__ import annotations

import logging

import pytest

from conftest import rendered
from tunebox.model.mf_config import checkpoint_section_loads, dump, legacy_checkpoint_config

# MindFormers 1.9's warnings for keys that have a current spelling tunebox renders instead
DEPRECATED = (
    "`full_batch` will be deprecated",  # trainer/base_trainer.py _set_full_batch_with_strategy
    "`check_for_global_norm` and `global_norm_spike_threshold` is deprecated",  # trainer/trainer.py
)
# trainer/utils.py convert_checkpoint_config: one a legacy checkpoint key, unless a `checkpoint:` section sets
# it; data-parallel workers keep the legacy keys (mf_config.checkpoint_section_loads), so they warn
CHECKPOINT_DEPRECATED = "is deprecated. Please use config"
# what convert_checkpoint_config makes of either spelling (save_path aside: the legacy CheckpointMonitor adds
# checkpoint/ to its directory itself): how often, how many, what the files hold
SAVES = ("save_interleaved_steps", "save_max", "prefix", "no_save_optim", "async_save")
CASES = [
    ("tiny.yaml", ()),  # one CPU worker
    ("tiny.yaml", ("train.workers=2",)),  # data parallel
    ("stage1-llama3-8b.yaml", ()),  # model parallel 4: semi_auto_parallel
]


def legacy_keys(cfg: dict) -> dict:
    """The rendered config with the keys tunebox rendered before (full_batch, no monitor_config, the legacy
    checkpoint keys): the reference the current keys must behave like."""
    old = legacy_checkpoint_config(cfg)
    old.pop("monitor_config", None)
    old["parallel"].pop("dataset_strategy", None)
    old["parallel"]["full_batch"] = old["parallel"]["parallel_mode"] != 0
    return old


def through_mindformers(cfg: dict, path) -> tuple[list[str], dict]:
    """MindFormers' warnings while it takes `cfg` (written to `path`) to the point where training starts,
    and the parallel context it leaves: MindFormerConfig, build_context's validators and ParallelOperator
    (without initialising communication), Trainer._check_config_rules, the trainer's _train_dataset_preprocess."""
    import mindspore as ms
    from mindformers import MindFormerConfig
    from mindformers.core.context.parallel import ParallelOperator
    from mindformers.core.context.validators import execute_validator
    from mindformers.tools.logger import get_logger
    from mindformers.trainer import Trainer
    from mindformers.trainer.causal_language_modeling import CausalLanguageModelingTrainer
    from mindformers.trainer.utils import convert_checkpoint_config

    path.write_text(dump(cfg), encoding="utf-8")
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    mf_logger = get_logger()
    mf_logger.addHandler(handler)
    ms.reset_auto_parallel_context()
    try:
        config = MindFormerConfig(str(path))
        # the rules' auto_trans_ckpt check asks for a shared output folder; it reads no key looked at here
        config.auto_trans_ckpt = False
        execute_validator(config)  # build_context's first step (parallel_mode 0/1 -> MindSpore's names)
        operator = ParallelOperator(config)
        operator._set_ms_auto_parallel_context(**operator.parallel_ctx)
        trainer = Trainer.__new__(Trainer)
        trainer.config = config
        trainer._check_config_rules()
        convert_checkpoint_config(config)  # what Trainer.train does first (trainer/trainer.py)
        CausalLanguageModelingTrainer.__new__(CausalLanguageModelingTrainer)._train_dataset_preprocess(config)
        context = {k: ms.get_auto_parallel_context(k) for k in ("parallel_mode", "full_batch", "dataset_strategy")}
        context["health_checkpoint"] = config.monitor_config.health_checkpoint
        context["saves"] = {k: config.checkpoint[k] for k in SAVES}
    finally:
        mf_logger.removeHandler(handler)
        ms.reset_auto_parallel_context()
    return [r.getMessage() for r in records], context


@pytest.mark.parametrize("recipe, overrides", CASES)
def test_rendered_keys_are_mindformers_current_ones_and_train_the_same(recipe, overrides, tmp_path, mf_cwd):
    """Mutants: a key of the checkpoint section left out (its legacy key's warning); parallel.full_batch
    rendered as True/False again (the full_batch warning is logged);
    monitor_config left out (the template's global_norm_spike_threshold 3.0 brings its warning back);
    parallel.dataset_strategy rendered as MindFormers' shipped configs spell it, [[dp, 1], [dp, 1]] (model
    parallel trains with full_batch False: the context differs from the legacy keys')."""
    spec, _, cfg = rendered(recipe, tmp_path, *overrides)
    current_warnings, current = through_mindformers(cfg, tmp_path / "current.yaml")
    legacy_warnings, legacy = through_mindformers(legacy_keys(cfg), tmp_path / "legacy.yaml")
    # the reference shows the warnings, so the capture sees MindFormers' logger
    assert all(any(d in w for w in legacy_warnings) for d in (*DEPRECATED, CHECKPOINT_DEPRECATED)), legacy_warnings
    assert [w for w in current_warnings if any(d in w for d in DEPRECATED)] == []
    legacy_checkpoint_keys = [w for w in current_warnings if CHECKPOINT_DEPRECATED in w]
    assert bool(legacy_checkpoint_keys) is (not checkpoint_section_loads(spec.train)), legacy_checkpoint_keys
    assert current == legacy
    assert current["full_batch"] is True and current["dataset_strategy"] == "full_batch"


@pytest.mark.parametrize(
    "recipe, overrides, loads",
    [
        ("tiny.yaml", (), True),  # one worker
        ("tiny.yaml", ("train.workers=2",), False),  # data parallel: MindFormers' loader gets no sharding
        ("stage1-llama3-8b.yaml", (), True),  # model parallel 4
        ("stage1-llama3-8b.yaml", ("train.parallel.model_parallel=1", "train.parallel.pipeline_stage=2"), True),
    ],
)
def test_the_checkpoint_section_is_rendered_where_mindformers_loads_it(recipe, overrides, loads, tmp_path):
    """Data-parallel workers keep the legacy keys (tests/test_msrun.py trains and resumes them under msrun);
    every other topology gets the section. Mutants: `and` for `or` in checkpoint_section_loads; the
    section rendered for every topology."""
    spec, _, cfg = rendered(recipe, tmp_path, *overrides)
    assert checkpoint_section_loads(spec.train) is loads
    assert ("checkpoint" in cfg) is loads and ("load_checkpoint" in cfg) is (not loads)
