"""bench.eval's reference side: transformers' generate on the numpy decoder's weights and prompt ids gives the
same tokens as greedy_generate (needs the bench extra: torch, transformers)."""

from __future__ import annotations

import numpy as np
import pytest
from test_decode import VARIANTS, random_parameters

from benches.bench_eval import hf_generate, hf_model_of
from conftest import cannot_run
from tunebox.evaluation.decode import NumpyLlama, greedy_generate


@pytest.mark.parametrize("variant", ["gqa-untied", "mha-tied-theta"])
def test_hf_generate_matches_greedy_generate_token_for_token(variant):
    """Left-padded, length-sorted batches of unequal prompts, a stop token some rows meet and others do not.
    Mutants: right padding in hf_generate; the stop token kept in the output."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        cannot_run(f"{exc}: pip install -e '.[test]' brings torch (CPU) and transformers")
    spec = VARIANTS[variant]
    params = random_parameters(spec, seed=4)
    model = NumpyLlama(params, spec)
    hf = hf_model_of(params, spec)
    rng = np.random.default_rng(9)
    prompts = [rng.integers(spec.pad_token_id + 3, spec.vocab_size, size=n).tolist() for n in (3, 11, 6, 17, 8, 2)]
    free = greedy_generate(model, prompts, 8, stop_ids=[], pad_id=spec.pad_token_id, batch_size=4, progress=False)
    assert len({tuple(o) for o in free}) > 1, "all rows decode alike: the comparison proves little"
    stop = next(t for out in free for t in out[1:] if sum(t in o for o in free) < len(free))
    ours = greedy_generate(model, prompts, 8, stop_ids=[stop], pad_id=spec.pad_token_id, batch_size=4, progress=False)
    assert any(len(o) < 8 for o in ours) and any(len(o) == 8 for o in ours)
    assert hf_generate(hf, prompts, 8, [stop], spec.pad_token_id, batch_size=4) == ours
