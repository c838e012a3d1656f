"""Learning-rate schedules and the NaN/inf guard: values, resume exactness, the GPU-style
deferred check (run here on the CPU with a check interval above one)."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit import train as train_mod
from vaekit.checkpoint import read_history
from vaekit.config import TrainConfig
from vaekit.errors import ConfigError
from vaekit.errors import TrainingInterrupted
from vaekit.optim import LR_SCHEDULES, lr_at, lr_setter
from vaekit.train import FiniteGuard, NonFinite, fit

from test_reliability import QUIET, _same_run, small_cfg


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 10, "lr": 1e-3, **kw})


def test_warmup_ramps_linearly_then_cosine_ends_at_lr_min():
    cfg = _cfg(lr_schedule="cosine", lr_warmup_epochs=2, lr_min=1e-5)
    spe = 50
    assert lr_at(cfg, 0, spe) == pytest.approx(1e-3 / 100)
    assert lr_at(cfg, 49, spe) == pytest.approx(0.5e-3)
    assert lr_at(cfg, 99, spe) == pytest.approx(1e-3)
    assert lr_at(cfg, 100, spe) == pytest.approx(1e-3)
    middle = 100 + (500 - 100) // 2
    assert lr_at(cfg, middle, spe) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(cfg, 500, spe) == pytest.approx(1e-5)
    values = [lr_at(cfg, s, spe) for s in range(100, 500)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_linear_and_constant_schedules():
    assert lr_at(_cfg(lr_schedule="linear"), 250, 50) == pytest.approx(0.5e-3)
    assert lr_at(_cfg(lr_schedule="constant", lr_warmup_epochs=1), 9, 10) == pytest.approx(1e-3)
    assert lr_at(_cfg(lr_schedule="constant", lr_warmup_epochs=1), 4, 10) == pytest.approx(0.5e-3)
    assert lr_at(_cfg(), 123, 50) == 1e-3


def test_constant_schedule_never_touches_the_optimizer():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert lr_setter(opt, _cfg(), 10) is None
    setter = lr_setter(opt, _cfg(lr_schedule="cosine"), 10)
    setter(3, 5)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(_cfg(lr_schedule="cosine"), 25, 10))


def test_unknown_schedule_is_a_config_error_naming_it(tmp_path):
    cfg = small_cfg(1)
    cfg.train.lr_schedule = "triangle"
    with pytest.raises(ConfigError, match="'triangle'.*constant, cosine, linear"):
        fit(cfg, tmp_path / "r", **QUIET)
    assert sorted(LR_SCHEDULES) == ["constant", "cosine", "linear"]


@pytest.mark.parametrize("value,field", [(-1.0, "lr_warmup_epochs"), (1.0, "lr_min"), (math.nan, "lr_min")])
def test_bad_schedule_numbers_are_refused(value, field):
    cfg = small_cfg(1)
    setattr(cfg.train, field, value)
    with pytest.raises(ConfigError, match=f"train.{field}"):
        cfg.validate()


def test_history_records_the_decaying_rate(tmp_path):
    cfg = small_cfg(4)
    cfg.train.lr_schedule, cfg.train.lr_min = "cosine", 1e-4
    lrs = [r["lr"] for r in read_history(fit(cfg, tmp_path / "r", **QUIET).path)]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(1e-4, rel=0.05)


class _StopAfter(train_mod.StopOnSignal):
    """Behaves as if SIGINT arrived once the loop has asked ``n`` times."""

    n = 30

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.asked = 0

    @property
    def requested(self):  # type: ignore[override]
        self.asked += 1
        return "SIGINT" if self.asked > self.n else None

    @requested.setter
    def requested(self, value) -> None:
        pass


def test_interrupted_cosine_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    cfg = small_cfg(3)
    cfg.train.lr_schedule, cfg.train.lr_warmup_epochs = "cosine", 0.5
    straight = fit(cfg, tmp_path / "straight", **QUIET).path
    monkeypatch.setattr(train_mod, "StopOnSignal", _StopAfter)
    with pytest.raises(TrainingInterrupted, match="epoch 1, step 31"):
        fit(cfg, tmp_path / "r", **QUIET)
    monkeypatch.undo()
    fit(None, tmp_path / "r", resume=True, **QUIET)
    _same_run(straight, tmp_path / "r")


def test_deferred_guard_reports_the_first_bad_step_and_term():
    guard = FiniteGuard(torch.device("cpu"), every=50)
    guard.every = 50  # the GPU path: record on the device, read every 50 steps
    guard.start_epoch(3)
    ok = torch.tensor([1.0, 2.0])
    for step in range(7):
        guard.update(ok, step)
    guard.update(torch.tensor([1.0, math.inf]), 7)
    guard.update(torch.tensor([math.nan, 1.0]), 8)
    with pytest.raises(NonFinite) as e:
        for step in range(9, 50):
            guard.update(ok, step)
    assert (e.value.term, e.value.epoch, e.value.step) == ("KL term", 3, 7)
    guard.start_epoch(4, first_step=10)  # resumed mid-epoch: steps count from 10
    guard.update(ok, 10)
    guard.check()
    guard.update(torch.tensor([math.nan, 1.0]), 11)
    with pytest.raises(NonFinite) as e:
        guard.check()
    assert (e.value.term, e.value.epoch, e.value.step) == ("reconstruction term", 4, 11)


def test_immediate_guard_on_cpu():
    guard = FiniteGuard(torch.device("cpu"))
    guard.start_epoch(1)
    guard.update(torch.tensor([1.0, 2.0, 3.0]), 0)
    with pytest.raises(NonFinite) as e:
        guard.update(torch.tensor([1.0, 2.0, math.inf]), 1)
    assert (e.value.term, e.value.step) == ("gradient", 1)

