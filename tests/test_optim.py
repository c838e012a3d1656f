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
    guard.start_epoch(4)  # resumed mid-epoch: the steps go on from 10
    guard.update(ok, 10)
    guard.check()
    guard.update(torch.tensor([math.nan, 1.0]), 11)
    with pytest.raises(NonFinite) as e:
        guard.check()
    assert (e.value.term, e.value.epoch, e.value.step) == ("reconstruction term", 4, 11)


def test_the_deferred_guard_costs_a_gpu_step_one_copy():
    """A GPU step is bound by the operations the host issues (about 3 ms per step on an H200,
    whatever the batch): the guard's share of a step is one copy into its buffer (it was 14
    kernels), and the loop adds one in-place sum, not a stack of reordered terms."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    guard = FiniteGuard(torch.device("cpu"))
    guard.every = 50
    guard.start_epoch(1)
    parts, sums = torch.tensor([3.0, 1.0, 2.0]), torch.zeros(3)
    guard.update(parts[1:3], 0)  # the first update makes the buffer
    for step in range(1, 5):
        with Count() as count:
            guard.update(parts[1:3], step)
            sums += parts[:3]
        assert [op for op in count.ops if op not in ("aten.select.int", "aten.slice.Tensor")] == [
            "aten.copy_.default", "aten.add_.Tensor"], count.ops


def test_immediate_guard_on_cpu():
    guard = FiniteGuard(torch.device("cpu"))
    guard.start_epoch(1)
    guard.update(torch.tensor([1.0, 2.0, 3.0]), 0)
    with pytest.raises(NonFinite) as e:
        guard.update(torch.tensor([1.0, 2.0, math.inf]), 1)
    assert (e.value.term, e.value.step) == ("gradient", 1)



@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_adam_is_torchs_fused_adam_bit_for_bit_and_takes_its_state(weight_decay):
    """vaekit calls torch's fused Adam kernel itself (torch.optim's first use imports the compiler stack,
    seconds of every command's start); the steps, the state and its layout are torch.optim.Adam(fused=True)'s,
    so checkpoints written by either continue exactly under the other."""
    from vaekit.optim import FusedAdam

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3, bias=False))

    def train(model, opt, steps, seed):
        g = torch.Generator().manual_seed(seed)
        for i in range(steps):
            for group in opt.param_groups:
                group["lr"] = 1e-2 / (1 + i)
            opt.zero_grad(set_to_none=True)
            model(torch.randn(16, 5, generator=g)).pow(2).sum().backward()
            opt.step()

    ours, theirs = net(), net()
    a = FusedAdam(ours.parameters(), lr=1e-2, weight_decay=weight_decay)
    b = torch.optim.Adam(theirs.parameters(), lr=1e-2, weight_decay=weight_decay, fused=True)
    train(ours, a, 25, 1), train(theirs, b, 25, 1)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(p, q)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"] and sa["state"].keys() == sb["state"].keys()
    for i in sb["state"]:
        assert sa["state"][i].keys() == sb["state"][i].keys()
        for k in sb["state"][i]:
            assert torch.equal(sa["state"][i][k], sb["state"][i][k]) and sa["state"][i][k].dtype == sb["state"][i][k].dtype

    # a state saved by torch's optimiser continues under ours exactly as under torch's, and the reverse
    for source in (b, a):
        state = {i: {k: v.clone() for k, v in s.items()} for i, s in source.state_dict()["state"].items()}
        m1, m2 = net(), net()
        m1.load_state_dict(theirs.state_dict()), m2.load_state_dict(theirs.state_dict())
        o1 = FusedAdam(m1.parameters(), lr=1e-2, weight_decay=weight_decay)
        o2 = torch.optim.Adam(m2.parameters(), lr=1e-2, weight_decay=weight_decay, fused=True)
        for o in (o1, o2):
            o.load_state_dict({"state": state, "param_groups": o.state_dict()["param_groups"]})
        train(m1, o1, 5, 2), train(m2, o2, 5, 2)
        for p, q in zip(m1.parameters(), m2.parameters()):
            assert torch.equal(p, q)


def test_fused_adam_moments_keep_a_channels_last_weights_layout_through_a_checkpoint():
    """A conv net trains channels-last on a GPU; its saved moments come back contiguous, and CUDA's
    fused kernel refuses moments laid out unlike their parameter (a resumed fp16 conv run failed
    there on an H200). Loaded moments take their parameter's layout, and the steps go on equal."""
    from vaekit.optim import FusedAdam

    def net():
        torch.manual_seed(0)
        return torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)

    def step(model, opt, seed):
        x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
        opt.zero_grad(set_to_none=True)
        model(x.contiguous(memory_format=torch.channels_last)).square().sum().backward()
        opt.step()

    a = net()
    opt = FusedAdam(a.parameters(), lr=1e-2)
    step(a, opt, 0)
    saved = {i: {k: v.contiguous() for k, v in s.items()} for i, s in opt.state_dict()["state"].items()}
    assert not saved[0]["exp_avg"].is_contiguous(memory_format=torch.channels_last)
    b = net()
    b.load_state_dict(a.state_dict())
    resumed = FusedAdam(b.parameters(), lr=1e-2)
    resumed.load_state_dict({"state": saved, "param_groups": resumed.state_dict()["param_groups"]})
    weight = b.weight
    for k in ("exp_avg", "exp_avg_sq"):
        assert resumed.state[weight][k].stride() == weight.stride()
        assert torch.equal(resumed.state[weight][k], opt.state[a.weight][k])
    step(a, opt, 1), step(b, resumed, 1)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_a_vaekit_command_does_not_import_the_compiler_stack(tmp_path):
    """A small training run (and so every command that does less) starts without torch._dynamo and
    scikit-learn, the two largest imports it used to pay for."""
    import subprocess
    import sys

    code = ("import sys; from vaekit.cli import main; code = main(['train', '--epochs', '1', '--no-progress', "
            f"'--out', {str(tmp_path / 'run')!r}]); "
            "print(code, 'torch._dynamo' in sys.modules, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-3:] == ["0", "False", "False"], out
