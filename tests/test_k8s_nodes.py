"""The multi-node overlay's node count, without kubectl: train.workers is split into pods of one
node's cards (4 on the overlay), and a multi-node run needs at least two of them."""
from __future__ import annotations

from pathlib import Path

import pytest

from tunebox.deploy.k8s import overlay_shape, plan_render
from tunebox.io import InputError

TINY = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"


def test_the_multi_node_overlay_has_four_cards_a_node():
    assert overlay_shape("multi-node").npus_per_pod == 4  # the figures below are worked for 4


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 6])
def test_multi_node_refuses_fewer_than_two_nodes(workers):
    """4 workers fit one node: the overlay would render a one-pod "multi-node" Job; refuse it."""
    with pytest.raises(InputError, match=r"at least 2 nodes \(8, 12, \.\.\.\); the spec has " + str(workers)):
        plan_render(TINY, "multi-node", overrides=[f"train.workers={workers}", f"train.batch_size={workers}"])


@pytest.mark.parametrize("workers, nodes", [(8, 2), (12, 3), (16, 4)])
def test_multi_node_pods_are_workers_over_four(workers, nodes):
    plan = plan_render(TINY, "multi-node", overrides=[f"train.workers={workers}", f"train.batch_size={workers}"])
    assert (plan.nodes, plan.workers) == (nodes, workers)
