"""What an Ascend node looks like from inside a container: the host files a pod or a compose
service mounts, the device files, the node labels a card generation is selected by, and the
HCCL settings of a multi-node run. One place: the k8s render (tunebox/deploy/k8s.py) writes these
into every Ascend pod, and tests/test_k8s.py checks docker-compose.yml against them.

Sources (Huawei's own manifests, Ascend/mindcluster-deploy):
- host mounts: samples/train/basic-training/without-ranktable/mindspore/*.yaml mount
  /usr/local/Ascend/driver; samples/utils/npu-exporter/npu-exporter.yaml mounts /usr/local/dcmi;
  Ascend's own `docker run` lines (MindSpeed-LLM's and triton-ascend's READMEs) mount
  /usr/local/sbin/npu-smi, /usr/local/dcmi and /etc/ascend_install.info and pass the devices
  /dev/davinci<N>, /dev/davinci_manager, /dev/devmm_svm, /dev/hisi_hdc.
- labels: `ring-controller.atlas: ascend-910` (samples/train/basic-training/ranktable/yaml/910/)
  and `ascend-910b` (.../yaml/910b/); node selector `host-arch` + `accelerator-type`
  (`module` for Atlas 800 training servers with 910, `module-910b-8` / `module-910b-16` for
  Atlas 800T A2 / 16-card A2 nodes): mindspore_multinodes_acjob{,_910b}.yaml at commit
  30245331974d47590ef752917231622f5aea39fa, and samples/inference/volcano/
  pytorch_acjob_infer_910b_softsharedev.yaml ("910bx8 is module-910b-8, 910bx16 is module-910b-16").
- HCCL: CANN's environment variable reference (hiascend.com, "HCCL_CONNECT_TIMEOUT": integer in
  [120, 7200], default 120 s; HCCL_BUFFSIZE: MB per communicator buffer, default 200).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

NPU_RESOURCE = "huawei.com/Ascend910"  # the device plugin's resource name for 910 and 910B alike


@dataclass(frozen=True)
class HostPath:
    name: str  # the volume name in Kubernetes
    path: str  # the same path on the host and in the container
    kind: str  # hostPath type: File or Directory


# The host's NPU driver and tools, mounted read only at the same path. Change them here only.
HOST_PATHS = (
    HostPath("ascend-driver", "/usr/local/Ascend/driver", "Directory"),
    HostPath("ascend-dcmi", "/usr/local/dcmi", "Directory"),
    HostPath("npu-smi", "/usr/local/sbin/npu-smi", "File"),
    HostPath("ascend-install-info", "/etc/ascend_install.info", "File"),
)

# The device files compose passes (in Kubernetes the device plugin adds them for the cards it gives).
CONTROL_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")


def device_files(cards: int) -> list[str]:
    return [f"/dev/davinci{i}" for i in range(cards)] + list(CONTROL_DEVICES)


@dataclass(frozen=True)
class CardGeneration:
    ring_controller: str  # label `ring-controller.atlas` on the job and its pods
    accelerator_type: str  # node label `accelerator-type` of the usual 8-card node


CARD_GENERATIONS = {
    "910": CardGeneration("ascend-910", "module"),
    "910b": CardGeneration("ascend-910b", "module-910b-8"),
}


def node_selector(cluster) -> dict[str, str]:
    card = CARD_GENERATIONS[cluster.card]
    return {"host-arch": cluster.host_arch, "accelerator-type": cluster.accelerator_type or card.accelerator_type}


def pod_labels(cluster) -> dict[str, str]:
    return {"ring-controller.atlas": CARD_GENERATIONS[cluster.card].ring_controller}


def hccl_env(cluster) -> list[tuple[str, str]]:
    """The HCCL variables every Ascend pod gets (unset ones are left to CANN's defaults)."""
    env = [("HCCL_CONNECT_TIMEOUT", str(cluster.hccl_connect_timeout)), ("HCCL_BUFFSIZE", str(cluster.hccl_buffsize))]
    if cluster.hccl_exec_timeout is not None:
        env.append(("HCCL_EXEC_TIMEOUT", str(cluster.hccl_exec_timeout)))
    if cluster.hccl_socket_ifname:
        env.append(("HCCL_SOCKET_IFNAME", cluster.hccl_socket_ifname))
    return env


def pod_volumes() -> tuple[list[dict], list[dict]]:
    """(volumes, volumeMounts) for the host paths, as Kubernetes writes them."""
    volumes = [{"name": h.name, "hostPath": {"path": h.path, "type": h.kind}} for h in HOST_PATHS]
    mounts = [{"name": h.name, "mountPath": h.path, "readOnly": True} for h in HOST_PATHS]
    return volumes, mounts


def compose_binds() -> list[dict]:
    """The host paths as docker-compose long-syntax bind mounts."""
    return [{"type": "bind", "source": h.path, "target": h.path, "read_only": True} for h in HOST_PATHS]


def check_card(card: Optional[str]) -> None:
    if card not in CARD_GENERATIONS:
        raise ValueError(f"unknown card generation {card!r}; known: {', '.join(CARD_GENERATIONS)}")
