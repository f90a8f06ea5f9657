import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet
from hypothesis import given, settings
from hypothesis import strategies as st

from modeconn.curves.family import Bezier, Line
from modeconn.data.catalogue import load_dataset
from modeconn.engine.point import evaluate_point, metrics, predict, recompute_bn
from modeconn.ensembles.along_curve import (
    EnsembleResult,
    disagreement,
    ensemble_log_probs,
    ensembles_along_curve,
    kl_divergence,
)
from modeconn.ensembles.fge import FGEResult, fge, fge_lr
from modeconn.io.checkpoints import load_checkpoint
from modeconn.training import TrainConfig, train_endpoint

FAST = settings(max_examples=40, deadline=None)


def _log_probs(seed: int, n: int = 7, c: int = 5, scale: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.log_softmax(scale * torch.randn(n, c, generator=gen), dim=1)


# --------------------------------------------------------------------------- diversity


@FAST
@given(st.integers(0, 10_000), st.integers(1, 4))
def test_ensemble_of_identical_members_is_the_member(seed, n):
    lp = _log_probs(seed)
    assert torch.allclose(ensemble_log_probs([lp] * n), lp, atol=1e-5)


@FAST
@given(st.integers(0, 10_000))
def test_ensemble_of_two_members_is_log_of_mean_probabilities(seed):
    a, b = _log_probs(seed), _log_probs(seed + 1)
    expected = torch.log((a.exp() + b.exp()) / 2)
    assert torch.allclose(ensemble_log_probs([a, b]), expected, atol=1e-5)


@FAST
@given(st.integers(0, 10_000), st.integers(1, 5))
def test_ensemble_probabilities_sum_to_one(seed, n):
    members = [_log_probs(seed + i, scale=20.0) for i in range(n)]
    total = ensemble_log_probs(members).exp().sum(1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)


def test_ensemble_of_no_members_is_rejected():
    with pytest.raises(ValueError, match="at least one"):
        ensemble_log_probs([])


def test_disagreement_of_a_network_with_itself_is_zero():
    lp = _log_probs(0, n=50)
    assert disagreement(lp, lp) == 0.0


def test_disagreement_counts_differing_predictions_in_percent():
    a = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.3, 0.7]]))
    b = torch.log(torch.tensor([[0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.6, 0.4]]))
    assert disagreement(a, b) == pytest.approx(50.0)


def test_kl_of_a_network_with_itself_is_zero():
    lp = _log_probs(0, n=50)
    assert kl_divergence(lp, lp) == 0.0


@FAST
@given(st.integers(0, 10_000), st.floats(0.0, 30.0))
def test_kl_is_non_negative(seed, scale):
    assert kl_divergence(_log_probs(seed, scale=scale), _log_probs(seed + 1, scale=scale)) >= 0


def test_kl_matches_the_definition():
    a, b = _log_probs(0), _log_probs(1)
    expected = (a.exp() * (a - b)).sum(1).mean().item()
    assert kl_divergence(a, b) == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- fge_lr

LR_ARGS = dict(
    cycle=st.sampled_from([2, 4, 6, 10]),
    lr1=st.floats(1e-3, 1.0),
    ratio=st.floats(0.0, 1.0),
)


@FAST
@given(**LR_ARGS, k=st.integers(0, 5))
def test_fge_lr_starts_each_cycle_at_lr1(cycle, lr1, ratio, k):
    assert fge_lr(k * cycle, cycle, lr1, lr1 * ratio) == lr1


@FAST
@given(**LR_ARGS, k=st.integers(0, 5))
def test_fge_lr_hits_lr2_exactly_at_mid_cycle(cycle, lr1, ratio, k):
    lr2 = lr1 * ratio
    assert fge_lr(k * cycle + cycle // 2, cycle, lr1, lr2) == lr2


@FAST
@given(**LR_ARGS, epoch=st.floats(0.0, 50.0))
def test_fge_lr_is_periodic_in_the_cycle_length(cycle, lr1, ratio, epoch):
    lr2 = lr1 * ratio
    later = fge_lr(epoch + cycle, cycle, lr1, lr2)
    assert later == pytest.approx(fge_lr(epoch, cycle, lr1, lr2), rel=1e-6, abs=1e-9)


@FAST
@given(**LR_ARGS, epoch=st.floats(0.0, 50.0))
def test_fge_lr_stays_between_lr2_and_lr1(cycle, lr1, ratio, epoch):
    lr2 = lr1 * ratio
    assert lr2 <= fge_lr(epoch, cycle, lr1, lr2) <= lr1


@pytest.mark.parametrize("cycle", [0, 1, 3])
def test_fge_rejects_a_cycle_that_misses_lr2_at_an_epoch_end(cycle):
    with pytest.raises(ValueError, match="even"):
        fge(TinyNet(), None, cycle=cycle, progress=False)


# --------------------------------------------------------------------------- along a curve


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(train=256, test=120)


@pytest.fixture(scope="module")
def endpoints(digits):
    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = TinyNet()
        config = TrainConfig(epochs=3, lr=0.05, batch_size=64, seed=seed, progress=False)
        train_endpoint(net, digits, config)
        nets.append(net)
    return nets


@pytest.fixture(scope="module")
def bent_curve(endpoints):
    w1, w2 = endpoints
    curve = Bezier(TinyNet(), w1, w2, degree=2)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        curve.bends.add_(0.05 * torch.randn(curve.bends.shape, generator=gen))
    return curve


@pytest.fixture(scope="module")
def along(bent_curve, digits):
    return ensembles_along_curve(bent_curve, digits, ts=5, progress=False)


def _independent_log_probs(net, data):
    net = copy.deepcopy(net)
    recompute_bn(net, data.train_x)
    return predict(net, data.test_x)


def test_member_at_t0_is_the_start_network(along, endpoints, digits):
    direct = evaluate_point(copy.deepcopy(endpoints[0]), None, digits, splits=("test",))["test"]
    assert along.member_error[0] == along.start_error == pytest.approx(direct.error)
    assert along.member_nll[0] == along.start_nll == pytest.approx(direct.nll, rel=1e-5)


def test_ensemble_of_start_with_itself_equals_start_alone(along):
    assert along.ensemble_error[0] == along.start_error
    assert along.ensemble_nll[0] == pytest.approx(along.start_nll, rel=1e-5)
    assert along.disagreement[0] == 0.0 and along.kl[0] == 0.0


def test_reference_matches_an_independent_two_network_ensemble(along, endpoints, digits):
    lps = [_independent_log_probs(net, digits) for net in endpoints]
    ref = metrics(torch.log((lps[0].exp() + lps[1].exp()) / 2), digits.test_y)
    assert along.reference_error == pytest.approx(ref.error)
    assert along.reference_nll == pytest.approx(ref.nll, rel=1e-5)


def test_ensemble_at_t1_is_the_reference_ensemble(along):
    assert along.ensemble_error[-1] == along.reference_error
    assert along.ensemble_nll[-1] == pytest.approx(along.reference_nll)


@pytest.mark.parametrize("prefix", ["", "line_"])
def test_ensemble_nll_is_at_most_the_members_mean_nll(along, prefix):
    ensemble = getattr(along, prefix + "ensemble_nll")
    members = (along.start_nll + getattr(along, prefix + "member_nll")) / 2
    assert np.all(ensemble <= members + 1e-6)  # -log of a mean <= mean of -logs (convexity)


def test_line_arrays_equal_those_of_a_line_curve(along, bent_curve, digits):
    line = Line(
        TinyNet(),
        bent_curve.space.unflatten(bent_curve.start),
        bent_curve.space.unflatten(bent_curve.end),
    )
    direct = ensembles_along_curve(line, digits, ts=5, line=False, progress=False)
    for name in ("member_error", "ensemble_error", "disagreement"):
        assert np.array_equal(getattr(along, "line_" + name), getattr(direct, name)), name
    for name in ("member_nll", "ensemble_nll", "kl"):
        assert np.allclose(getattr(along, "line_" + name), getattr(direct, name)), name


def test_a_line_curve_reports_itself_as_the_line(bent_curve, digits):
    line = Line(
        TinyNet(),
        bent_curve.space.unflatten(bent_curve.start),
        bent_curve.space.unflatten(bent_curve.end),
    )
    result = ensembles_along_curve(line, digits, ts=3, progress=False)
    assert np.array_equal(result.line_ensemble_nll, result.ensemble_nll)


def test_ensemble_gain_reads_the_nearest_t(along):
    assert along.ensemble_gain(0.45) == along.start_error - along.ensemble_error[2]


def test_ensemble_result_survives_save_and_load(along, tmp_path):
    along.save(tmp_path / "ens")
    back = EnsembleResult.load(tmp_path / "ens")
    assert back.task == along.task and back.metrics == along.metrics
    assert all(np.array_equal(getattr(back, k), getattr(along, k)) for k in along.metrics)
    assert back.meta == along.meta


def test_loading_an_fge_file_as_ensembles_is_rejected(tmp_path):
    one = np.ones(1)
    FGEResult(one, one, one, one, one, 0.0, 0.0).save(tmp_path / "f")
    with pytest.raises(ValueError, match="fge"):
        EnsembleResult.load(tmp_path / "f")


# --------------------------------------------------------------------------- FGE

CYCLES = 3


@pytest.fixture(scope="module")
def fge_run(endpoints, digits):
    before = copy.deepcopy(endpoints[0].state_dict())
    result = fge(
        endpoints[0],
        digits,
        cycles=CYCLES,
        cycle=2,
        lr1=0.05,
        lr2=0.001,
        batch_size=64,
        progress=False,
    )
    return result, before


def test_fge_takes_one_snapshot_per_cycle(fge_run):
    result, _ = fge_run
    assert result.snapshot_epochs.tolist() == [1, 3, 5][:CYCLES]


def test_fge_snapshots_are_where_the_rate_reaches_lr2(fge_run):
    result, _ = fge_run
    meta = result.meta
    lrs = [fge_lr(e, meta["cycle"], meta["lr1"], meta["lr2"]) for e in result.snapshot_epochs]
    assert lrs == [meta["lr2"]] * CYCLES


def test_fge_arrays_have_one_entry_per_snapshot(fge_run):
    result, _ = fge_run
    lengths = {
        len(getattr(result, k))
        for k in ("member_error", "member_nll", "ensemble_error", "ensemble_nll")
    }
    assert lengths == {CYCLES}


def test_fge_leaves_the_input_model_unchanged(fge_run, endpoints):
    _, before = fge_run
    after = endpoints[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fge_first_ensemble_is_the_first_snapshot(fge_run):
    result, _ = fge_run
    assert result.ensemble_error[0] == result.member_error[0]
    assert result.ensemble_nll[0] == pytest.approx(result.member_nll[0], rel=1e-6)


def test_fge_ensemble_nll_is_at_most_the_snapshots_mean_nll(fge_run):
    result, _ = fge_run
    means = np.cumsum(result.member_nll) / np.arange(1, CYCLES + 1)
    assert np.all(result.ensemble_nll <= means + 1e-6)


def test_fge_start_matches_the_input_network(fge_run, endpoints, digits):
    result, _ = fge_run
    direct = metrics(_independent_log_probs(endpoints[0], digits), digits.test_y)
    assert result.start_error == pytest.approx(direct.error)
    assert result.start_nll == pytest.approx(direct.nll, rel=1e-5)


def test_fge_result_survives_save_and_load(fge_run, tmp_path):
    result, _ = fge_run
    result.save(tmp_path / "fge")
    back = FGEResult.load(tmp_path / "fge")
    assert np.array_equal(back.snapshot_epochs, result.snapshot_epochs)
    assert np.array_equal(back.ensemble_nll, result.ensemble_nll)
    assert back.start_error == result.start_error and math.isfinite(back.start_nll)
    assert back.meta["history"] == result.meta["history"]


FGE_ARGS = dict(cycles=CYCLES, cycle=2, lr1=0.05, lr2=0.001, batch_size=64, progress=False)


def test_fge_resumes_after_a_crash_to_the_same_snapshots(fge_run, endpoints, digits, tmp_path):
    class Crash(Exception):
        pass

    def crash(epoch, record):
        if epoch == 4:  # after the snapshots of epochs 1 and 3, before the last one
            raise Crash

    path = tmp_path / "fge-run.pt"
    with pytest.raises(Crash):
        fge(endpoints[0], digits, checkpoint=path, callbacks=[crash], **FGE_ARGS)
    saved = load_checkpoint(path, expect="fge")
    assert saved.meta["epoch"] == 3 and not saved.finished
    assert [s["epoch"] for s in saved.training["extra"]] == [1, 3]
    resumed = fge(endpoints[0], digits, checkpoint=path, **FGE_ARGS)
    uninterrupted, _ = fge_run
    assert resumed.snapshot_epochs.tolist() == uninterrupted.snapshot_epochs.tolist()
    for name in ("member_nll", "ensemble_nll", "ensemble_error"):
        assert np.allclose(getattr(resumed, name), getattr(uninterrupted, name), rtol=1e-6), name
    assert [r["epoch"] for r in resumed.meta["history"]] == [1, 2, 3, 4, 5]


def test_fge_refuses_to_resume_a_run_of_other_settings(endpoints, digits, tmp_path):
    path = tmp_path / "fge-run.pt"
    fge(endpoints[0], digits, checkpoint=path, **{**FGE_ARGS, "cycles": 1})
    with pytest.raises(ValueError, match="fge: stored"):
        fge(endpoints[0], digits, checkpoint=path, **{**FGE_ARGS, "cycles": 1, "lr2": 0.002})
    with pytest.raises(ValueError, match="start: stored"):
        fge(endpoints[1], digits, checkpoint=path, **{**FGE_ARGS, "cycles": 1})
