"""The Kubernetes Job against issue 29's promise (kill it anywhere, run the same command again): a pod
that is killed is replaced by the Job (restartPolicy Never + backoffLimit >= 1) with the same command,
and the new pod finds what the killed one wrote, because the run folder is on a PersistentVolumeClaim,
not in the pod. The same command resuming is what tests/test_chaos.py proves."""
from __future__ import annotations

import pytest

from test_k8s import OVERLAY_SETS, kubectl, pod_of, rendered  # noqa: F401 (kubectl: the fixture)

# One pod per Job: the Job replaces a killed pod. (multi-node keeps backoffLimit 0 on purpose: one lost pod
# breaks the collective, so the whole Job is applied again, and it resumes the same way.)
SINGLE_POD = ("local-cpu", "ascend-4card")


@pytest.mark.usefixtures("kubectl")
@pytest.mark.parametrize("overlay", SINGLE_POD)
def test_a_killed_pod_is_replaced_and_finds_the_run_it_left(overlay):
    docs = rendered(overlay, OVERLAY_SETS[overlay])
    job, pod, container = pod_of(docs)
    assert pod["restartPolicy"] == "Never"          # the Job makes a new pod; the killed one stays for its logs
    assert job["spec"]["backoffLimit"] >= 1, "a killed pod would end the Job instead of running again"
    runs_dir = next(container["args"][i + 1].split("=", 1)[1] for i, a in enumerate(container["args"][:-1])
                    if a == "--set" and container["args"][i + 1].startswith("runs_dir="))
    mount = max((m for m in container["volumeMounts"] if (runs_dir + "/").startswith(m["mountPath"].rstrip("/") + "/")),
                key=lambda m: len(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "persistentVolumeClaim" in volume, f"{runs_dir} is on {volume}: a new pod would start from nothing"
    assert not mount.get("readOnly")
