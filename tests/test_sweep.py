"""Sweeps (issue 27): the plan, the results table against values worked out by hand, the cluster render
validated offline, `invoke runs`, and (slow) a real 2x2 sweep on the tiny recipe killed with SIGKILL mid-way
and resumed.

Expected figures are never computed by tunebox here: counts come from the runs' predictions.jsonl (or are
written into fabricated reports by the test), and the Wilson interval is the closed form
(2k + z^2 +- z sqrt(z^2 + 4k(n-k)/n)) / (2(n + z^2)) written out below.

Mutants these tests were run against (each fails at least one test; tunebox restored after):
- sweep.pooled averages the seeds' rates with one run's n instead of summing k and n  -> test_table_*
- table_rows sorted worst first (key without the minus)                             -> test_table_*
- a run with no valid checkpoint scored by its highest score instead of 0           -> test_table_*
- plan_sweep without loading each point's spec (a bad grid key runs)                -> test_bad_grid_key_*
- render_sweep keeps the runs claim ReadWriteOnce / drops the sweep label           -> test_sweep_render_*
- point_finished always False (finished points run again)                          -> test_sweep_end_to_end_*
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import cannot_run
from tunebox.config import load_spec
from tunebox.deploy.crd_schema import validate
from tunebox.deploy.k8s import estimate_disk, find_kubectl, render_sweep
from tunebox.io import InputError
from tunebox.runs import compare, list_runs, read_run, runs_table
from tunebox.sweep import SEED_KEY, collect, parse_grid, plan_sweep

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
Z = 1.959963984540054


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """The Wilson interval in its closed form (Newcombe 1998, eq. for method 3), not tunebox's."""
    root = Z * math.sqrt(Z * Z + 4 * k * (n - k) / n)
    return (max(0.0, (2 * k + Z * Z - root) / (2 * (n + Z * Z))), min(1.0, (2 * k + Z * Z + root) / (2 * (n + Z * Z))))


# ---- the plan -----------------------------------------------------------------------------------


def test_grid_values_split_outside_brackets():
    assert parse_grid("lora.rank=8,16 lora.target_modules=[wq,wv],wq|wk|wv") == [
        ("lora.rank", ["8", "16"]),
        ("lora.target_modules", ["[wq,wv]", "wq|wk|wv"]),
    ]
    with pytest.raises(InputError, match="section.key=value1,value2"):
        parse_grid("lora.rank")
    with pytest.raises(InputError, match="run_id"):
        parse_grid("run_id=a,b")


def test_points_are_isolated_runs_with_the_seed_in_train_seed(tmp_path):
    sweep = plan_sweep(
        str(TINY), "lora.rank=4,8 train.lr=5e-4,1e-3", "0,1", "demo", [f"runs_dir={tmp_path}", "eval.squad_rows=2"]
    )
    assert len(sweep.points) == 8 and len({p.run_id for p in sweep.points}) == 8
    point = sweep.points[-1]
    assert point.run_id == "demo-rank8-lr1e-3-s1"
    spec = sweep.point_spec(point)
    assert (spec.lora.rank, spec.train.lr, spec.train.seed, spec.data.seed) == (8, 1e-3, 1, 0)
    assert spec.eval.squad_rows == 2 and spec.run_dir == tmp_path / "demo-rank8-lr1e-3-s1"
    assert SEED_KEY == "train.seed"


def test_bad_grid_key_fails_at_once_with_the_set_message(tmp_path):
    with pytest.raises(InputError) as set_error:
        load_spec(TINY, ["lora.rnk=4"])
    with pytest.raises(InputError) as grid_error:
        plan_sweep(str(TINY), "lora.rank=4,8 lora.rnk=4,8", "", "bad", [f"runs_dir={tmp_path}"])
    assert str(grid_error.value) == str(set_error.value) and "did you mean 'rank'" in str(set_error.value)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunebox.sweep",
            "--config",
            str(TINY),
            "--grid",
            "lora.rnk=4,8",
            "--set",
            f"runs_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and str(set_error.value) in out.stderr
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


# ---- the table from fabricated run folders --------------------------------------------------------


def fake_run(
    runs: Path,
    run_id: str,
    rank: int,
    seed: int,
    k_strict: int,
    k_within: int,
    n: int,
    score,
    f1: float,
    step: int,
    step_seconds: list[float],
    rss: float,
    k_split=None,
) -> None:
    """A run folder as evaluate/train leave it, with the figures the test chose."""
    run = runs / run_id
    (run / "evaluate").mkdir(parents=True)
    (run / "train").mkdir()
    chosen = score is not None
    entry = {
        "model": f"step-{step:06d}",
        "step": step,
        "n": n,
        "accuracy_strict": k_strict / n,
        "accuracy_within_1pct": k_within / n,
        "squad": {"n": 8, "f1": f1, "em": 0.0},
        "retention": {"measured": True, "passes": chosen},
        "score": score if chosen else 0.77,
    }
    if k_split is not None:
        entry["per_source"] = {
            "split": {"n": 10, "accuracy_strict": 0.0, "accuracy_within_1pct": k_split / 10},
            "file": {"n": n - 10, "accuracy_strict": 0.0, "accuracy_within_1pct": (k_within - k_split) / (n - 10)},
        }
    other = dict(entry, model="step-000001", step=1, score=0.01, accuracy_strict=0.0)
    report = {
        "checkpoints": [other, entry],
        "contest": {"ratio": 0.001 * rank},
        "best_checkpoint": {
            "model": entry["model"] if chosen else None,
            "step": step if chosen else None,
            "valid": chosen,
            "highest_score": entry["model"],
        },
    }
    (run / "evaluate" / "report.json").write_text(json.dumps(report))
    (run / "train" / "summary.json").write_text(json.dumps({"peak_rss_mb": rss}))
    (run / "train" / "loss.jsonl").write_text(
        "".join(json.dumps({"step": i + 1, "loss": 1.0, "seconds": s}) + "\n" for i, s in enumerate(step_seconds))
    )
    (run / "record.jsonl").write_text(json.dumps({"job": "evaluate", "finished": f"2026-12-05T0{seed}:00:00"}) + "\n")


def test_table_aggregates_seeds_pools_counts_and_sorts_by_score(tmp_path):
    runs = tmp_path / "runs"
    sweep = plan_sweep(str(TINY), "lora.rank=4,8", "0,1", "t", [f"runs_dir={runs}"])
    # rank 4: strict 3/40 and 5/40, within 10/40 and 14/40; scores 0.30, 0.50; 60+60 s and 90+90 s of steps
    fake_run(runs, "t-rank4-s0", 4, 0, 3, 10, 40, 0.30, 10.0, 200, [60.0, 60.0], 900.0, k_split=4)
    fake_run(runs, "t-rank4-s1", 4, 1, 5, 14, 40, 0.50, 12.0, 250, [90.0, 90.0], 950.0, k_split=6)
    # rank 8: seed 1 keeps no checkpoint (its best scores 0.77 but counts 0): (0.90 + 0) / 2 = 0.45 is still above
    # rank 4's (0.30 + 0.50) / 2 = 0.40, so rank 8 comes first, flagged
    fake_run(runs, "t-rank8-s0", 8, 0, 9, 20, 40, 0.90, 8.0, 150, [30.0], 1200.0, k_split=5)
    fake_run(runs, "t-rank8-s1", 8, 1, 1, 2, 40, None, 4.0, 100, [30.0], 1100.0, k_split=1)
    md = collect(sweep).read_text()
    rows = [l for l in (runs / "sweeps" / "t" / "results.csv").read_text().splitlines()]
    header = rows[0].split(",")
    first, second = (dict(zip(header, r.split(","))) for r in rows[1:])
    assert (first["lora.rank"], second["lora.rank"]) == ("8", "4")
    # rank 4 by hand: mean strict (3/40 + 5/40) / 2 = 0.1, min 0.075, max 0.125; pooled 8/80
    assert float(second["strict_mean"]) == pytest.approx(0.1)
    assert (float(second["strict_min"]), float(second["strict_max"])) == (0.075, 0.125)
    assert (int(second["strict_k"]), int(second["strict_n"])) == (8, 80)
    low, high = wilson_by_hand(8, 80)
    assert float(second["strict_ci_low"]) == pytest.approx(low, abs=1e-12)
    assert float(second["strict_ci_high"]) == pytest.approx(high, abs=1e-12)
    assert (int(second["within_1pct_k"]), int(second["within_1pct_n"])) == (24, 80)
    assert float(second["within_1pct_ci_low"]) == pytest.approx(wilson_by_hand(24, 80)[0], abs=1e-12)
    assert float(second["squad_f1_mean"]) == 11.0 and float(second["squad_f1_min"]) == 10.0
    assert float(second["score_mean"]) == pytest.approx(0.40) and second["chosen_steps"] == "200 250"
    assert float(second["train_minutes_mean"]) == pytest.approx(2.5)  # (120 s + 180 s) / 2 / 60
    assert float(second["peak_rss_mb_max"]) == 950.0 and float(second["trainable_ratio"]) == pytest.approx(0.004)
    assert (second["retention_pass"], second["retention_fail"]) == ("2", "0")
    # rank 8: the invalid seed scores 0 and fails retention; its figures are its highest-scoring checkpoint's
    assert float(first["score_mean"]) == pytest.approx(0.45) and first["no_valid_checkpoint"] == "1"
    assert first["chosen_steps"] == "150 none" and (first["retention_pass"], first["retention_fail"]) == ("1", "1")
    assert (int(first["strict_k"]), int(first["strict_n"])) == (10, 80)
    # the markdown says the same, with the command that made it
    assert "invoke sweep --config" in md and "--seeds 0,1" in md
    lo8, hi8 = wilson_by_hand(8, 80)
    assert f"{lo8:.3f}-{hi8:.3f} (8/80)" in md and "**fail** 1/2" in md
    # per held-out source: split within 1% for rank 4 pooled 10/20
    lo, hi = wilson_by_hand(10, 20)
    assert f"{lo:.3f}-{hi:.3f} (10/20)" in md
    assert (runs / "sweeps" / "t" / "results.png").stat().st_size > 1000
    assert len((runs / "sweeps" / "t" / "runs.csv").read_text().splitlines()) == 5


def test_table_lists_points_not_finished(tmp_path):
    runs = tmp_path / "runs"
    sweep = plan_sweep(str(TINY), "lora.rank=4,8", "", "u", [f"runs_dir={runs}"])
    fake_run(runs, "u-rank4", 4, 0, 1, 2, 8, 0.2, 1.0, 5, [1.0], 10.0)
    md = collect(sweep).read_text()
    assert "Not finished (no evaluate/report.json yet): u-rank8." in md


# ---- invoke runs ----------------------------------------------------------------------------------


def test_runs_lists_the_difference_from_the_nearest_recipe_and_compares_two(tmp_path):

    runs = tmp_path / "runs"
    for run_id, rank, k in (("a", 4, 3), ("b", 16, 5)):
        fake_run(runs, run_id, rank, 0, k, k, 40, 0.1 * k, 5.0, 100, [60.0], 500.0)
        spec = load_spec(TINY, [f"lora.rank={rank}", f"run_id={run_id}"]).to_dict()
        (runs / run_id / "evaluate" / "manifest.json").write_text(json.dumps({"spec": spec}))
    table = runs_table(list_runs(runs))
    assert "| a | tiny.yaml | lora.rank=4 | 100 | 0.3000 |" in table
    text = compare(read_run(runs / "a"), read_run(runs / "b"))
    assert "| lora.rank | 4 | 16 |" in text and "run_id" not in text.split("## Results")[0]
    lo, hi = wilson_by_hand(5, 40)
    assert f"0.125 (5/40; 95% CI {lo:.3f}-{hi:.3f})" in text


# ---- the cluster render ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overlay,sets", [("local-cpu", []), ("ascend-4card", ["train.device=Ascend", "train.workers=4"])]
)
def test_sweep_render_is_one_job_per_point_and_validates(overlay, sets, tmp_path):

    if find_kubectl() is None:
        cannot_run("kubectl is not installed: it renders the manifests (pip install -e '.[test]')")
    sweep = plan_sweep(str(TINY), "lora.rank=4,8", "0,1", "r", sets)
    text, plans = render_sweep(
        sweep.config, overlay, [p.overrides() for p in sweep.points], "r", overrides=sweep.overrides
    )
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        validate(doc)
    jobs = [d for d in docs if d["kind"] == "Job"]
    assert len(jobs) == 4 and len({j["metadata"]["name"] for j in jobs}) == 4
    for job, point in zip(jobs, sweep.points):
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"run_id={point.run_id}" in args and f"{SEED_KEY}={point.seed}" in args
        assert args.index("runs_dir=/data/runs") < args.index(f"run_id={point.run_id}")
        assert job["metadata"]["labels"]["tunebox.io/sweep"] == "r"
        assert job["metadata"]["labels"]["tunebox.io/run-id"] == point.run_id
    claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "tunebox-runs"]
    assert len(claims) == 1 and claims[0]["spec"]["accessModes"] == ["ReadWriteMany"]
    each = estimate_disk(sweep.point_spec(sweep.points[0])).gib
    assert claims[0]["spec"]["resources"]["requests"]["storage"] == f"{4 * each}Gi"
    groups = [d for d in docs if d["kind"] == "PodGroup"]
    if overlay == "ascend-4card":  # Volcano queues each point's pod through its own PodGroup
        assert sorted(g["metadata"]["name"] for g in groups) == sorted(j["metadata"]["name"] for j in jobs)
        for job in jobs:
            annotations = job["spec"]["template"]["metadata"]["annotations"]
            assert annotations["scheduling.k8s.io/group-name"] == job["metadata"]["name"]
    else:
        assert not groups


def test_sweep_render_passes_image_namespace_and_sets_to_every_point_and_labels_the_pods():
    """Two points (pa, pb) with an image, a namespace and a sweep-wide --set. Kills tunebox.deploy.k8s's
    x_render_sweep__mutmut_9 (the image dropped), _10 (the namespace dropped), _19 (the sweep's --set dropped),
    _50-_53 (the pod template's sweep label missing or None), the header's mutants and, with two points,
    `len(plans) > 2` for the runs claim's access mode."""
    if find_kubectl() is None:
        cannot_run("kubectl is not installed: it renders the manifests (pip install -e '.[test]')")
    image = "registry.example.com:5000/team/tunebox:9.9-custom"
    text, plans = render_sweep(
        TINY,
        "local-cpu",
        [["run_id=pa"], ["run_id=pb"]],
        "s",
        image=image,
        namespace="ml",
        overrides=["train.epochs=2"],
    )
    head = text.split("\n")[:2]
    assert (
        head[0] == "# Rendered by `python -m tunebox.sweep --render local-cpu` from recipes/tiny.yaml: sweep s, "
        "2 point(s) on overlay local-cpu."
    )
    assert head[1].startswith("# Jobs: tunebox-pa, tunebox-pb; runs claim ") and head[1].endswith("Gi.")
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert all(d["metadata"].get("namespace") == "ml" for d in docs)
    jobs = [d for d in docs if d["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in jobs] == ["tunebox-pa", "tunebox-pb"]
    for job, run_id in zip(jobs, ("pa", "pb")):
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == image
        assert container["args"].index("train.epochs=2") < container["args"].index(f"run_id={run_id}")
        assert job["spec"]["template"]["metadata"]["labels"]["tunebox.io/sweep"] == "s"
    config_maps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(config_maps) == 2 and all(c["metadata"]["labels"]["tunebox.io/sweep"] == "s" for c in config_maps)
    claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "tunebox-runs"]
    assert claims[0]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert head[1].endswith(f"runs claim {claims[0]['spec']['resources']['requests']['storage']}.")


def test_a_one_point_sweep_keeps_the_runs_claim_read_write_once():
    """One point runs on one node: the runs claim stays as the overlay has it (ReadWriteOnce on local-cpu), and the
    header names the one Job. Kills x_render_sweep__mutmut_101 (`len(plans) >= 1`) and _114 (the header reading
    the second point's spec)."""
    if find_kubectl() is None:
        cannot_run("kubectl is not installed: it renders the manifests (pip install -e '.[test]')")
    text, plans = render_sweep(TINY, "local-cpu", [["run_id=pa"]], "s")
    assert text.split("\n")[1].startswith("# Jobs: tunebox-pa; runs claim ")
    claims = [d for d in yaml.safe_load_all(text) if d and d["metadata"]["name"] == "tunebox-runs"]
    assert [c["spec"]["accessModes"] for c in claims] == [["ReadWriteOnce"]]


def test_sweep_render_refuses_two_points_with_one_job_name():
    """Kills x_render_sweep__mutmut_23-_26 (the refusal's message or its file dropped)."""
    if find_kubectl() is None:
        cannot_run("kubectl is not installed: it renders the manifests (pip install -e '.[test]')")
    with pytest.raises(InputError) as err:
        render_sweep(TINY, "local-cpu", [["run_id=pa"], ["run_id=pa"]], "s")
    assert str(err.value) == (
        f"{TINY}: two sweep points render the same Job name tunebox-pa; give them run_ids that differ in their "
        "first 33 characters"
    )


# ---- the real thing: a 2x2 sweep on the tiny recipe, killed and resumed --------------------------


def _count(path: Path, key: str) -> tuple[int, int]:
    rows = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    return sum(1 for r in rows if r[key]), len(rows)


@pytest.mark.slow
def test_sweep_end_to_end_killed_and_resumed_matches_the_reports(tmp_path):
    """lora.rank 4,8 x train.seed 0,1 on the tiny recipe (60 rows, 2 SQuAD questions): about 2 minutes a
    point on 2 busy cores. SIGKILL to the whole sweep once the first point has finished and the second is
    in its pipeline; the same command then skips the first point and finishes the rest."""
    runs = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "tunebox.sweep",
        "--config",
        str(TINY),
        "--grid",
        "lora.rank=4,8",
        "--seeds",
        "0,1",
        "--name",
        "e2e",
        "--set",
        f"runs_dir={runs}",
        "--set",
        "eval.squad_rows=2",
        "--set",
        "data.max_rows=60",
    ]
    # INFO whatever the caller's level (.ci/run exports TUNEBOX_LOG=WARNING): the test reads the sweep's
    # "skipped" lines
    env = dict(os.environ, PYTHONPATH=str(REPO), TUNEBOX_LOG="INFO")
    first, second = runs / "e2e-rank4-s0", runs / "e2e-rank4-s1"
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    try:
        while not (second / "train").is_dir():
            assert proc.poll() is None and time.time() < deadline, "the sweep ended or hung before the kill point"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (first / "bundle" / "manifest.json").exists() and not (second / "evaluate" / "report.json").exists()
    first_record = (first / "record.jsonl").read_text()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "point 1/4 e2e-rank4-s0 (lora.rank=4, train.seed=0): skipped" in out.stderr
    assert (first / "record.jsonl").read_text() == first_record  # no job of the finished point ran again

    header, *lines = (runs / "sweeps" / "e2e" / "results.csv").read_text().splitlines()
    table = {row["lora.rank"]: row for row in (dict(zip(header.split(","), l.split(","))) for l in lines)}
    expected_order = []
    for rank in ("4", "8"):
        ks, ns, wk, scores, f1s, steps, minutes, rss = [], [], [], [], [], [], [], []
        for seed in (0, 1):
            run = runs / f"e2e-rank{rank}-s{seed}"
            report = json.loads((run / "evaluate" / "report.json").read_text())
            chosen = report["best_checkpoint"]["model"]
            k, n = _count(run / "evaluate" / chosen / "predictions.jsonl", "strict")
            w, _ = _count(run / "evaluate" / chosen / "predictions.jsonl", "within_1pct")
            ks.append(k), ns.append(n), wk.append(w)
            scores.append(next(c["score"] for c in report["checkpoints"] if c["model"] == chosen))
            f1s.append(json.loads((run / "evaluate" / chosen / "squad.json").read_text())["f1"])
            steps.append(str(int(chosen.split("-")[1])))
            steps_s = [json.loads(l)["seconds"] for l in (run / "train" / "loss.jsonl").read_text().splitlines()]
            minutes.append(sum(steps_s) / 60)
            rss.append(json.loads((run / "train" / "summary.json").read_text())["peak_rss_mb"])
            assert json.loads((run / "train" / "manifest.json").read_text())["spec"]["train"]["seed"] == seed
        row = table[rank]
        assert (int(row["strict_k"]), int(row["strict_n"])) == (sum(ks), sum(ns))
        low, high = wilson_by_hand(sum(ks), sum(ns))
        assert float(row["strict_ci_low"]) == pytest.approx(low, abs=1e-12)
        assert float(row["strict_ci_high"]) == pytest.approx(high, abs=1e-12)
        assert int(row["within_1pct_k"]) == sum(wk)
        assert float(row["within_1pct_ci_high"]) == pytest.approx(wilson_by_hand(sum(wk), sum(ns))[1], abs=1e-12)
        assert float(row["strict_mean"]) == pytest.approx((ks[0] / ns[0] + ks[1] / ns[1]) / 2)
        assert float(row["score_mean"]) == pytest.approx(sum(scores) / 2)
        assert float(row["squad_f1_mean"]) == pytest.approx(sum(f1s) / 2)
        assert row["chosen_steps"] == " ".join(steps)
        assert float(row["train_minutes_mean"]) == pytest.approx(sum(minutes) / 2)
        assert float(row["peak_rss_mb_max"]) == max(rss) and max(rss) > 100
        expected_order.append((-sum(scores) / 2, -(ks[0] / ns[0] + ks[1] / ns[1]) / 2, rank))
    assert [line.split(",")[0] for line in lines] == [r for *_, r in sorted(expected_order)]
    assert (runs / "sweeps" / "e2e" / "results.png").exists()
    assert "invoke sweep --config" in (runs / "sweeps" / "e2e" / "results.md").read_text()
