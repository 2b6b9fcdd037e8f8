"""curriculum.strategy (real_only / naive / random / curriculum) and re-scoring, in the training loop."""

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import CPU, make_config, make_curriculum, make_data

from entromix.common.errors import ParamsError
from entromix.training.curriculum import schedule
from entromix.training.loop import train_curriculum
from entromix.training.report import train_metrics
from entromix.training.synthetic_pool import SyntheticPool, initial_gate_scores, synthetic_by_tier

TIERS = pd.Series(["good"] * 8 + ["degraded"] * 4 + ["hallucinated"] * 4)  # syn_jsd rises along the pool


@pytest.fixture(scope="module")
def data():
    return make_data()


def run(data, curriculum, config=None, **kwargs):
    table, val_x, val_y = data
    return train_curriculum(config or make_config(), curriculum, table, val_x, val_y, CPU, log=lambda s: None, **kwargs)


@pytest.mark.slow  # trains a network for more than one epoch
def test_real_only_never_admits_a_synthetic_image(data):
    result = run(data, make_curriculum(strategy="real_only"), make_config(epochs=3))
    assert all(
        r["tau"] is None and r["eligible_synthetic"] == 0 and r["admitted_synthetic"] == 0 for r in result.history
    )
    assert not result.used.any() and not result.final_eligible.any()
    tiers = train_metrics(result, make_config(epochs=3), make_curriculum(strategy="real_only"), TIERS)["train"]
    assert tiers["strategy"] == "real_only"
    assert tiers["synthetic"]["all"] == {"pool": 16, "eligible_final": 0, "used": 0}


@pytest.mark.slow  # trains a network for more than one epoch
def test_naive_admits_every_image_from_epoch_0_without_a_gate(data):
    # soft gate configured, but naive has no gate: every placed image counts with weight 1
    result = run(data, make_curriculum(strategy="naive", gate="soft"), make_config(epochs=3))
    assert [r["tau"] for r in result.history] == [1.0, 1.0, 1.0]
    assert all(r["eligible_synthetic"] == 16 for r in result.history)
    # 6 batches of 8, at most 4 synthetic each: all 16 fit, each with weight 1
    assert all(r["admitted_synthetic"] == 16 for r in result.history)
    assert result.used.all() and result.final_eligible.all()


@pytest.mark.slow  # trains a network for more than one epoch
def test_random_admits_the_curriculums_count_but_not_its_images(data):
    config = make_config(epochs=5)
    curriculum, random = make_curriculum(jsd_end=0.5), make_curriculum(jsd_end=0.5, strategy="random")
    a, b = run(data, curriculum, config), run(data, random, config)
    assert [r["tau"] for r in a.history] == [r["tau"] for r in b.history]
    assert [r["eligible_synthetic"] for r in a.history] == [r["eligible_synthetic"] for r in b.history]
    assert a.final_eligible.sum() == b.final_eligible.sum() > 0
    assert not np.array_equal(a.final_eligible, b.final_eligible)
    # the curriculum's final set is the lowest-JSD prefix of the pool; random's is a shuffle of it
    table = data[0]
    assert np.array_equal(np.flatnonzero(a.final_eligible), np.arange(a.final_eligible.sum()))
    assert sorted(b.gate_jsd.tolist()) == sorted(table.jsd[table.is_syn].tolist())


def test_random_gate_scores_are_a_seeded_permutation(data):
    table = data[0]
    random = make_curriculum(strategy="random")
    one, again, other = (initial_gate_scores(table, random, s) for s in (0, 0, 1))
    assert np.array_equal(one, again) and not np.array_equal(one, other)
    assert np.array_equal(np.sort(one[table.is_syn]), np.sort(table.jsd[table.is_syn]))
    assert (one[~table.is_syn] == 0).all()
    assert np.array_equal(initial_gate_scores(table, make_curriculum(), 0)[table.is_syn], table.jsd[table.is_syn])


@pytest.mark.slow  # trains a network for more than one epoch
def test_rescoring_replaces_the_scores_and_resumes_exactly(data, tmp_path):
    config = make_config(epochs=5)
    curriculum = make_curriculum(rescore_every=2, jsd_end=0.5)  # re-scored before epochs 2 and 4
    lines = []
    table, val_x, val_y = data
    full = train_curriculum(config, curriculum, table, val_x, val_y, CPU, log=lines.append)
    assert sum("re-scored 16 synthetic images" in line for line in lines) == 2
    assert not np.allclose(full.gate_jsd, table.jsd[table.is_syn])
    assert ((full.gate_jsd >= 0) & (full.gate_jsd <= 1)).all()
    plain = run(data, make_curriculum(jsd_end=0.5), config)
    assert [r["val_loss"] for r in full.history[:2]] == [r["val_loss"] for r in plain.history[:2]]  # warmup identical

    class Crash(Exception):
        pass

    def crash_after_epoch_3(history, model, is_best):
        if history[-1]["epoch"] == 3:
            raise Crash

    path = tmp_path / "resume.pt"
    with pytest.raises(Crash):
        run(data, curriculum, config, on_epoch=crash_after_epoch_3, resume_path=path, fingerprint="r")
    seen = []  # the observer sees the whole history, the resumed epochs included
    resumed = run(
        data,
        curriculum,
        config,
        resume_path=path,
        fingerprint="r",
        on_epoch=lambda history, model, is_best: seen.append([r["epoch"] for r in history]),
    )
    assert seen[0] == [0, 1, 2, 3, 4] and seen[-1] == list(range(config.epochs))
    assert np.array_equal(resumed.gate_jsd, full.gate_jsd) and np.array_equal(resumed.used, full.used)
    assert train_metrics(resumed, config) == train_metrics(full, config)
    for key in full.last_state:
        assert torch.equal(resumed.last_state[key], full.last_state[key]), key


@pytest.mark.slow  # trains a network for more than one epoch
def test_synthetic_by_tier_counts(data):
    result = run(data, make_curriculum(jsd_end=0.5), make_config(epochs=4))
    counts = synthetic_by_tier(result.used, result.final_eligible, TIERS)
    assert list(counts) == ["all", "degraded", "good", "hallucinated"]
    assert counts["all"]["pool"] == 16 and counts["good"]["pool"] == 8
    # tau ends at 0.5 bits; syn_jsd = linspace(0, 0.9, 16): the 9 lowest (<= 0.5) are eligible
    assert counts["all"]["eligible_final"] == 9
    assert counts["good"]["eligible_final"] == 8 and counts["hallucinated"]["eligible_final"] == 0
    assert all(c["used"] <= c["pool"] for c in counts.values())
    unknown = synthetic_by_tier(result.used, result.final_eligible, pd.Series([""] * 16))
    assert list(unknown) == ["all"]


def test_strategy_params_are_checked():
    with pytest.raises(ParamsError, match="curriculum.strategy"):
        make_curriculum(strategy="greedy")
    with pytest.raises(ParamsError, match="rescore_every"):
        make_curriculum(rescore_every=-1)
    with pytest.raises(ParamsError, match="only applies to the curriculum strategy"):
        make_curriculum(strategy="random", rescore_every=2)
    # real_only and naive need no epoch after warmup
    make_curriculum(strategy="real_only", warmup_epochs=10).check_epochs(3)
    assert schedule(3, make_curriculum(strategy="naive", warmup_epochs=10)) == [1.0, 1.0, 1.0]
    assert make_curriculum(rescore_every=3, warmup_epochs=2).rescores_at(2)
    assert [make_curriculum(rescore_every=3, warmup_epochs=2).rescores_at(t) for t in range(9)] == [
        False,
        False,
        True,
        False,
        False,
        True,
        False,
        False,
        True,
    ]


@pytest.mark.slow  # trains a network for more than one epoch
def test_oracle_gate_admits_exactly_the_good_tier_after_warmup(data):
    from dataclasses import replace

    from entromix.training.table import with_tiers

    table, val_x, val_y = data
    tiered = with_tiers(table, TIERS)
    result = train_curriculum(
        make_config(epochs=4),
        make_curriculum(strategy="oracle_gate", jsd_end=1.0),
        tiered,
        val_x,
        val_y,
        CPU,
        log=lambda s: None,
    )
    assert [r["eligible_synthetic"] for r in result.history] == [0, 0, 8, 8]  # warmup 2, then the 8 good ones
    assert np.array_equal(result.final_eligible, (TIERS == "good").to_numpy())
    assert not result.used[(TIERS != "good").to_numpy()].any()
    metrics = train_metrics(result, make_config(epochs=4), make_curriculum(strategy="oracle_gate"), TIERS)["train"]
    assert (
        metrics["synthetic"]["hallucinated"]["eligible_final"] == 0
        and metrics["synthetic"]["good"]["eligible_final"] == 8
    )
    with pytest.raises(ParamsError, match="oracle_gate.*needs ingest.tiers_csv"):
        train_curriculum(
            make_config(epochs=4),
            make_curriculum(strategy="oracle_gate"),
            replace(table, tiers=None),
            val_x,
            val_y,
            CPU,
            log=lambda s: None,
        )


def test_mix_class_weights_count_the_admitted_synthetic_images(data):
    from entromix.training.sampler import EpochBatches

    table = data[0]
    pool = SyntheticPool(table, make_curriculum(), 0, batch_size=8, min_batches=0, device=CPU)
    # 36 benign + 12 malignant real rows, plus synthetic rows 48..63 with jsd 0..0.9 (16 steps of 0.06)
    rows = [np.arange(48), np.arange(48, 64)]
    w_warmup = pool.mix_class_weights(EpochBatches(rows[:1], 0, 0), None, 2)
    assert w_warmup.tolist() == pytest.approx([48 / 72, 48 / 24])  # the real counts
    w_open = pool.mix_class_weights(EpochBatches(rows, 16, 16), 0.3, 2)
    admitted = int((table.jsd[48:] <= 0.3).sum())  # 6 synthetic malignant images
    n = 48 + admitted
    assert w_open.tolist() == pytest.approx([n / (2 * 36), n / (2 * (12 + admitted))])


@pytest.mark.slow  # trains a network for more than one epoch
def test_class_weights_modes_reach_the_loss(data, monkeypatch):
    """The class weights the loss uses, epoch by epoch: ``none`` all ones; ``mix`` the real counts
    (48 / (2 * 36), 48 / (2 * 12)) while nothing is admitted (warmup), then n / (2 n_c) over the
    epoch's batches once synthetic malignant images are in: the malignant weight falls."""
    from entromix.training.loss import EntroMixLoss

    used: list[list[float]] = []  # each change of the weights the loss was called with
    forward = EntroMixLoss.forward

    def recording_forward(self, *args, **kwargs):
        if not used or used[-1] != self.class_weights.tolist():
            used.append(self.class_weights.tolist())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(EntroMixLoss, "forward", recording_forward)
    result = run(data, make_curriculum(jsd_end=0.5), make_config(epochs=3, class_weights="none"))
    assert np.isfinite([r["train_loss"] for r in result.history]).all() and used == [[1.0, 1.0]]
    used.clear()
    result = run(data, make_curriculum(jsd_end=0.5), make_config(epochs=3, class_weights="mix"))
    assert np.isfinite([r["train_loss"] for r in result.history]).all()
    assert [r["admitted_synthetic"] for r in result.history] == [0, 0, 9]
    assert len(used) == 2 and used[0] == pytest.approx([48 / 72, 48 / 24]), used
    benign, malignant = used[1]
    assert malignant < 2.0 and benign > 48 / 72, used  # 9 synthetic malignant in the batches
    assert 1 / (2 * benign) + 1 / (2 * malignant) == pytest.approx(1.0)  # n_0 / n + n_1 / n


@pytest.mark.slow  # trains a network for more than one epoch
def test_min_steps_lengthen_epochs_and_keep_the_schedule(data):
    short = run(data, make_curriculum(), make_config(epochs=3))
    long = run(data, make_curriculum(), make_config(epochs=3, min_steps=30))
    assert [r["train_images"] for r in short.history] == [48, 48, 48]  # 6 batches of 8
    assert [r["train_images"] for r in long.history] == [80, 80, 80]  # 10 batches of 8: 30 steps over 3 epochs
    assert [r["tau"] for r in short.history] == [r["tau"] for r in long.history]
