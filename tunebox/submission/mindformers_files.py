"""The submission's mindformers/ folder: what a judge with MindFormers needs to fine-tune and predict
from the folder alone (finetune.yaml as run with its paths made relative, predict.yaml for MindFormers 1.9,
predict_r1.1.yaml for the contest's r1.1, the registered extension classes and a README of commands)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tunebox import layout
from tunebox.config import RunSpec
from tunebox.data.prompts import spec_prompt
from tunebox.io import atomic_write_text, read_jsonl
from tunebox.model.mf_config import (
    EXTENSIONS_FILE,
    MF19_HEADER,
    R11_FILE,
    R11_MODELS,
    PredictRequest,
    dump,
    r11_header,
    render_contest_predict_config,
    render_predict_config,
    topology,
)
from tunebox.submission import contents

MF_README = """# Running this submission with MindFormers

Which MindFormers each file is for (each file says so on its first line):

| file | MindFormers | MindSpore |
|---|---|---|
| finetune.yaml | 1.9.0 (the run's own stack) | 2.9.0 |
| predict.yaml | 1.9.0 | 2.9.0 |
| predict_r1.1.yaml | r1.1 (v1.1.0), the contest's | 2.3.0rc2 |

finetune.yaml is the MindFormers config the training ran (runs/<id>/train/mindformers.yaml), with
its machine paths made relative to this folder's parent: point `checkpoint.load_path` at a folder holding
the base model as safetensors (MindFormers 1.9's checkpoint format; a .ckpt becomes one with
`mindspore.ckpt_to_safetensors`, which names model.ckpt's copy model.safetensors: rename it, since MindFormers
takes a folder holding model.safetensors for Hugging Face weights; a run trained on data-parallel workers has
the legacy `load_checkpoint` instead, the .ckpt itself) and `train_dataset.data_loader.dataset_dir` at the
MindRecord before running it.
The classes it names with `auto_register` are in mf_extensions.py, found through REGISTER_PATH
(MindFormers 1.9; r1.1 has no auto_register).

Below, MF is a MindFormers checkout (run_mindformer.py and scripts/ are there; the wheel does not ship
them). The YAMLs' relative paths (../checkpoints, ../tokenizer, ../base, ../data) are relative to this
folder, and MindFormers reads them from its working directory: run from here. One card:

    cd <submission>/mindformers
    REGISTER_PATH=$PWD python $MF/run_mindformer.py --config finetune.yaml --run_mode finetune

Four cards, model parallel (the contest's layout): in finetune.yaml set `use_parallel: True`,
`parallel.parallel_mode: 1` and `parallel_config: {{data_parallel: 1, model_parallel: 4, pipeline_stage: 1}}`
(the Ascend recipes render it so: {topology}), then launch with MindFormers' msrun launcher:

    REGISTER_PATH=$PWD bash $MF/scripts/msrun_launcher.sh \\
        "$MF/run_mindformer.py --config finetune.yaml --run_mode finetune" 4

Predict with the prompt the model was trained on (the training template, here the first held-out
problem; $'...' keeps the newlines):

    python $MF/run_mindformer.py --config predict.yaml --run_mode predict \\
        --predict_data {prompt}

predict.yaml loads {checkpoint} (the chosen checkpoint) with ../tokenizer/tokenizer.json; set
`load_checkpoint` to another checkpoints/step-N/model.ckpt to try the others. On the contest's r1.1 use
predict_r1.1.yaml the same way, through {r11_runner}.
"""


def ansi_c_quoted(text: str) -> str:
    """text as a bash $'...' word: the prompt's newlines survive a copy into a shell."""
    return "$'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def portable_finetune_config(config: dict, run_dir: Path) -> dict:
    """The as-run MindFormers config with every path under the run folder made relative to the
    submission's mindformers/ folder (../run/...), the base checkpoint and data named by role."""
    cfg = json.loads(json.dumps(config))
    cfg["output_dir"] = "./output"
    if "checkpoint" in cfg:  # MindFormers 1.9's checkpoint format: the base as a safetensors folder
        cfg["checkpoint"].update({"load_path": "../base", "save_path": "./output/checkpoint"})
    else:  # the legacy keys (a run on data-parallel workers: mf_config.checkpoint_section_loads)
        cfg["load_checkpoint"] = "../base/model.ckpt"
    loader = cfg["train_dataset"]["data_loader"]
    loader.pop("dataset_files", None)
    loader["dataset_dir"] = "../data/train.mindrecord"
    cfg["train_dataset_task"]["dataset_config"] = cfg["train_dataset"]
    for cb in cfg.get("callbacks", []):
        if "directory" in cb:
            cb["directory"] = "./output"
        if "path" in cb:
            cb["path"] = "./output/loss.jsonl"
    if cfg.get("tensorboard", {}).get("tensorboard_dir"):
        cfg["tensorboard"]["tensorboard_dir"] = "./output/tensorboard"
    strategy = cfg.get("parallel", {}).get("strategy_ckpt_save_file")
    if strategy:
        cfg["parallel"]["strategy_ckpt_save_file"] = "./output/strategy/ckpt_strategy.ckpt"
    text = json.dumps(cfg)
    if str(run_dir) in text:
        raise RuntimeError(f"the portable MindFormers config still names {run_dir}: update portable_finetune_config")
    return cfg


def write_mindformers_files(spec: RunSpec, folder: Path, chosen_step: int, tok) -> None:
    folder.mkdir()
    as_run = yaml.safe_load((spec.job_dir("train") / "mindformers.yaml").read_text(encoding="utf-8"))
    atomic_write_text(folder / "finetune.yaml", dump(portable_finetune_config(as_run, spec.run_dir), MF19_HEADER))
    request = PredictRequest(
        checkpoint=f"../{contents.checkpoint_file(chosen_step)}",
        tokenizer_dir="../tokenizer",
        max_new_tokens=spec.eval.max_new_tokens,
        special_tokens=tok.config,
        stop_ids=tok.stop_ids,
    )
    atomic_write_text(folder / "predict.yaml", dump(render_predict_config(spec, request), MF19_HEADER))
    atomic_write_text(
        folder / R11_FILE, dump(render_contest_predict_config(spec, request), r11_header(spec.model.name))
    )
    shutil.copy2(EXTENSIONS_FILE, folder / EXTENSIONS_FILE.name)
    topo = topology(spec.train)
    heldout = read_jsonl(spec.run_dir / layout.PREP_HELDOUT)
    atomic_write_text(
        folder / "README.md",
        MF_README.format(
            checkpoint=request.checkpoint,
            prompt=ansi_c_quoted(spec_prompt(tok, heldout[0]["prompt"], spec.data)),
            topology=f"this run: {topo.workers} worker(s), data {topo.data_parallel} x model {topo.model_parallel} "
            f"x pipeline {topo.pipeline_stage}",
            r11_runner=R11_MODELS[spec.model.name][4],
        ),
    )
