"""Settings checked at the start of an invocation, before any training (issue 24, part 4), and the signal
pieces the command line uses (part 6)."""

from __future__ import annotations

import signal

import pytest

from retrieval_zoo.interrupts import Interrupted, commit_guard, commits_done, interrupts_raise
from retrieval_zoo.models import ConfigError, list_models, list_variants, load_config
from retrieval_zoo.preflight import check_run_settings, check_seeds


def config(*overrides: str, model: str = "light_two_tower") -> dict:
    return load_config(model, overrides=list(overrides))


def test_every_shipped_config_passes():
    for model in list_models():
        for variant in list_variants(model):
            assert check_run_settings(load_config(model, variant), 2) == [0, 1], (model, variant)


@pytest.mark.reliability
def test_eval_k_below_the_largest_cutoff_fails_before_training():
    # eval.k=5 used to report recall@100 = recall@500 = the real recall@5
    with pytest.raises(ConfigError, match=r"eval.k=5 is below the largest metric cut-off \(recall@500\).*"
                                          r"--set eval.k=500"):
        check_run_settings(config("eval.k=5"), 1)
    assert check_run_settings(config("eval.k=500"), 1) == [0]
    assert check_run_settings(config("eval.k=10"), 1, metrics=["recall@10", "ndcg@10"]) == [0]
    with pytest.raises(ConfigError, match="recall@100"):
        check_run_settings(config("eval.k=10"), 1, metrics=["recall@10", "recall@100"])


@pytest.mark.reliability
def test_eval_k_zero_fails_instead_of_writing_zeros():
    with pytest.raises(ConfigError, match=r"eval.k=0 is below .*at least 500"):
        check_run_settings(config("eval.k=0"), 1)
    with pytest.raises(ConfigError, match=r"eval.k=-3 is below"):
        check_run_settings(config("eval.k=-3"), 1)


@pytest.mark.reliability
def test_validation_k_below_its_metrics_cutoff_fails():
    with pytest.raises(ConfigError, match=r"validation.k=50 is below .*\(recall@100\).*validation.k=100"):
        check_run_settings(config("validation.k=50"), 1)
    with pytest.raises(ConfigError, match="validation config: unknown metric"):
        check_run_settings(config("validation.metrics=[ndcg@10, recal@100]"), 1)
    # switched off, its k does not matter
    assert check_run_settings(config("validation.k=5", "validation.enabled=false"), 1) == [0]


@pytest.mark.reliability
def test_unknown_metric_names_fail():
    with pytest.raises(ConfigError, match="metrics: unknown metric"):
        check_run_settings(config(), 1, metrics=["recall@1000"])


@pytest.mark.reliability
@pytest.mark.parametrize("factory", ["Flatt", "IVF256,Flatt", "HNSWx", "IVF16,PQ7"])
def test_bad_index_factory_fails_on_a_dummy_index(factory):
    with pytest.raises(ConfigError, match=rf"index.factory='{factory}': faiss cannot build it on 128-d vectors"):
        check_run_settings(config(f"index.factory={factory}"), 1)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF256,Flat", "IVF16,PQ16", "PCA64,Flat"])
def test_good_index_factories_pass(factory):
    assert check_run_settings(config(f"index.factory={factory}"), 1) == [0]


@pytest.mark.reliability
def test_ivf_with_more_lists_than_the_catalogue_can_train_fails():
    with pytest.raises(ConfigError, match=r"IVF index with 256 lists needs at least 9984 vectors.*has 1000"):
        check_run_settings(config("index.factory=IVF256,Flat"), 1, catalogue_size=1000)
    assert check_run_settings(config("index.factory=IVF16,Flat"), 1, catalogue_size=1000) == [0]


@pytest.mark.reliability
@pytest.mark.parametrize("seeds, message", [
    ([0, 1, 0], r"seed 0 is listed twice"),
    ([2, -1], r"-1 is not a non-negative integer"),
    (0, r"seeds=0: the number of seeds must be at least 1"),
    (-2, r"at least 1"),
    ([], r"non-empty list"),
    (True, r"non-empty list"),
    (["0"], r"'0' is not a non-negative integer"),
    (1.5, r"give a count"),
])
def test_bad_seeds_fail(seeds, message):
    with pytest.raises(ConfigError, match=message):
        check_run_settings(config(), seeds)


def test_seed_lists():
    assert check_seeds(3) == [0, 1, 2]
    assert check_seeds([4, 0]) == [4, 0]
    assert check_seeds((7,)) == [7]


@pytest.mark.reliability
def test_interrupts_raise_and_commit_guard_holds_a_signal_until_the_commit_is_whole():
    before = signal.getsignal(signal.SIGTERM)
    done = commits_done()
    steps = []
    with pytest.raises(Interrupted) as stopped, interrupts_raise(), commit_guard():
        signal.raise_signal(signal.SIGTERM)
        steps.append("the rest of the commit ran")
    assert steps == ["the rest of the commit ran"]
    assert stopped.value.committed and stopped.value.exit_code == 143 and commits_done() == done + 1
    with pytest.raises(Interrupted) as stopped, interrupts_raise():
        signal.raise_signal(signal.SIGINT)
    assert stopped.value.exit_code == 130 and not stopped.value.committed
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.reliability
def test_the_approximate_index_settings_are_checked_before_training():
    with pytest.raises(ConfigError, match=r"index.approximate_above=0 must be a catalogue size >= 1 or null"):
        check_run_settings(config("index.approximate_above=0"), 1)
    with pytest.raises(ConfigError, match=r"index.approximate_factory='HNSWx': faiss cannot build it"):
        check_run_settings(config("index.approximate_above=100", "index.approximate_factory=HNSWx"), 1)
    with pytest.raises(ConfigError, match=r"index.approximate_factory='IVF256,Flat': an IVF index with 256 lists"):
        check_run_settings(config("index.approximate_above=100", "index.approximate_factory=IVF256,Flat"), 1,
                           catalogue_size=1000)
    # below the threshold the approximate factory is never built, so it is not held against the run
    assert check_run_settings(config("index.approximate_above=5000", "index.approximate_factory=IVF256,Flat"), 1,
                              catalogue_size=1000) == [0]
