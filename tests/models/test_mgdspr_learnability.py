"""Learnability of MGDSPR's user behaviour attention (issue 20) on the taste world (data/worlds/taste.py).

The query is broad ("gadget", every gadget Exact), and which gadget the user orders is fixed by the brand of
their earlier orders; off-topic garden clicks are mixed into the history as noise. The shipped full model must
read the history (Li et al., KDD 2021, section 3.3: Q_mgs attends to the real-time, short-term and long-term
behaviour) to rank the ordered item in the top 10; the ``no_user`` variant (no behaviour, no previous queries)
must stay at the chance the world gives. The attention evidence: the query's weights land on the history items
of the taste brand, not on the off-topic clicks and not on the prepended zero vector.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from retrieval_zoo.data.worlds import taste
from retrieval_zoo.runner import run_benchmark

# World-size settings only (the model, loss and optimiser sections stay as shipped):
OVERRIDES = [
    # every gadget is Exact for the one query, so ndcg@10 is flat once gadgets outrank garden tools and
    # selection (ties keep the untrained start) could not see personalisation: select on the personal metric
    "validation.monitor=p_recall@10",
    "validation.metrics=[p_recall@10]",
]
QUIET = {"wandb": "disabled", "progress": False, "print_table": False, "metrics": ["p_recall@10"]}


def train(world, variant: str | None, results_dir):
    [result] = run_benchmark("mgdspr", world, variant=variant, overrides=OVERRIDES, results_dir=results_dir,
                             **QUIET)
    return result


def attention_on_history(result, world, block: str) -> dict[str, float]:
    """Mean query-attention weight (over the 6 query rows and the test searches) of block ``block``: in all on
    the zero vector, on the user's taste-brand items and on the other (off-topic) items, and per item."""
    served = result.load_model(world)
    behaviour = served.module.model.query_tower.behaviour
    behaviour.record_attention()
    served.encode_units(split="test")
    weights, items = behaviour.recorded[block]
    behaviour.record_attention(False)
    weights, items = weights.mean(dim=1).cpu().numpy(), items.cpu().numpy()
    brands = np.array(world.products["brand"].to_list())
    taste_of = dict(world.users.select("user_id", "taste").iter_rows())
    units = served.units
    tastes = np.array([taste_of[units.user_ids[i]] for i in units.indices_of_split("test")])
    real = items >= 0
    matching = real & (brands[items.clip(min=0)] == tastes[:, None])
    other = real & ~matching
    on_taste = (weights[:, 1:] * matching).sum(1)
    on_other = (weights[:, 1:] * other).sum(1)
    return {"null": float(weights[:, 0].mean()), "taste": float(on_taste.mean()), "other": float(on_other.mean()),
            "per_taste_item": float((on_taste / matching.sum(1)).mean()),
            "per_other_item": float((on_other / other.sum(1)).mean())}


@pytest.mark.learnability
@pytest.mark.slow
def test_behaviour_attention_reads_the_taste_and_the_no_user_control_cannot(tmp_path):
    world = taste.build(seed=0)
    relevant = world.judgments.height  # the gadgets: what a user-blind ranking can narrow the order down to
    chance = taste.chance_p_recall(10, relevant)
    tests = int((world.searches["split"] == "test").sum())
    near_chance = chance + 3 * math.sqrt(chance * (1 - chance) / tests)  # 3 binomial sd over the test searches

    full = train(world, None, tmp_path / "full")
    no_user = train(world, "no_user", tmp_path / "no_user")

    assert full.metrics["p_recall@10"] >= 0.8, full.metrics
    assert no_user.metrics["p_recall@10"] <= near_chance, (no_user.metrics, chance)
    for block in ("short", "realtime"):
        mass = attention_on_history(full, world, block)
        # most of the weight is on the taste items, little on the zero vector, and a taste item draws clearly
        # more than an off-topic one (uniform attention would give them the same)
        assert mass["taste"] > 0.5 and mass["null"] < 0.1, (block, mass)
        assert mass["per_taste_item"] > 1.5 * mass["per_other_item"], (block, mass)
