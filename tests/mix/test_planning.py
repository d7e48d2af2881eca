"""mix/planning.py: the plan made once; its note rebuilds the same plan, checked by the plan's hash."""

import json
import os

import pytest
from conftest import HELD_OUT, STAGE1, TOKENIZER, mixture

from pipeline.cache import TokenCache
from pipeline.mix.planning import plan_from_note, plan_mixture
from pipeline.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def planning_inputs(held_out_run, tmp_path_factory):
    """The held-out dry run's config and caches, every source whole (no sample rules)."""
    cfg = mixture(STAGE1, total_tokens=1_000_000, **HELD_OUT)
    m = held_out_run["manifest"]
    caches = {n: TokenCache(os.path.join(held_out_run["cache"], n, s["cache_fingerprint"][:16]))
              for n, s in m["sources"].items()}
    out = str(tmp_path_factory.mktemp("planning"))
    return cfg, load_tokenizer(TOKENIZER).about(), caches, {n: None for n in caches}, out


def test_the_note_rebuilds_the_same_plan(planning_inputs):
    """What the one pipeline's plan step writes (as JSON) gives the driver the very plan it made."""
    planned = plan_mixture(*planning_inputs)
    assert planned.held_out and planned.splits  # the held-out selections travel in the note too
    note = json.loads(json.dumps(planned.note()))
    again = plan_from_note(*planning_inputs, note)
    assert again.packing == planned.packing
    assert again.splits == planned.splits
    assert again.selections == planned.selections and again.held_out == planned.held_out
    assert again.plans == planned.plans


def test_planning_twice_gives_one_plan(planning_inputs):
    assert plan_mixture(*planning_inputs).packing.plan_hash == plan_mixture(*planning_inputs).packing.plan_hash


def test_a_note_that_does_not_match_its_hash_is_refused(planning_inputs):
    """A note whose selections differ from what its hash promises is a bug, never a silent other plan."""
    note = json.loads(json.dumps(plan_mixture(*planning_inputs).note()))
    source = next(iter(note["selections"]))
    note["selections"][source][0]["cut"] += 1
    with pytest.raises(RuntimeError, match="the plan note: the plan step's plan differs"):
        plan_from_note(*planning_inputs, note)
