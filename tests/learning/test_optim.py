"""The optimisers and the learning-rate schedule (cellclr.learning.optim): LARS and the warm-up
then cosine schedule against their published formulas; LARS in one step for all parameters."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import cellclr.learning.train as train_module
from cellclr.learning.backbones import build_encoder
from cellclr.learning.optim import build_optimizer, warmup_cosine
from cellclr.learning.train import train
from tests.helpers import CountOps, tiny_config


@torch.no_grad()
def lars_by_hand(groups, state) -> None:
    """LARS written out for one parameter at a time (You et al. 2017, as SimCLR uses it)."""
    for group in groups:
        for p in group["params"]:
            d_p = p.grad
            if group["lars"]:
                d_p = d_p.add(p, alpha=group["weight_decay"])
                p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d_p)
                ok = (p_norm > 0) & (g_norm > 0)
                trust = torch.where(ok, group["trust_coefficient"] * p_norm / g_norm, 1.0)
                d_p = d_p * trust
            buf = state.setdefault(p, {}).get("momentum_buffer")
            buf = d_p.clone() if buf is None else buf.mul_(group["momentum"]).add_(d_p)
            state[p]["momentum_buffer"] = buf
            p.add_(buf, alpha=-group["lr"])


def test_lars_equals_the_per_parameter_formula():
    torch.manual_seed(0)
    a, b = build_encoder("resnet_small", 3, "small2"), build_encoder("resnet_small", 3, "small2")
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = (build_optimizer(m, "lars", 0.5, 1e-4) for m in (a, b))
    state: dict = {}
    x = torch.randn(8, 3, 16, 16)
    for _ in range(3):  # the first step starts the momentum, the later ones use it
        for m in (a, b):
            m.zero_grad()
            (m(x) ** 2).mean().backward()
        opt_a.step()
        lars_by_hand(opt_b.param_groups, state)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def lars_calls(layers: int) -> int:
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(layers)])
    opt = build_optimizer(model, "lars", 0.1, 1e-4)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()  # starts the momentum
    with CountOps() as count:
        opt.step()
    return count.calls


def test_a_lars_step_is_a_few_operations_whatever_the_number_of_parameters():
    # one step for all parameters at once (torch._foreach_*), not a loop over them
    assert lars_calls(40) == lars_calls(4)


def one_step(model: nn.Module, optimizer: str, lr: float, grads: list) -> torch.Tensor:
    model = copy.deepcopy(model)
    opt = build_optimizer(model, optimizer, lr, 1e-4)
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g.clone()
    opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_adam_turns_rounding_noise_into_whole_steps_and_lars_does_not():
    """Why AdamW runs in one and in two processes drift apart while LARS runs do not: gradients
    equal up to float rounding (2e-5 of their largest here, as the two processes' are in
    test_distributed's test_one_step_in_two_processes_equals_one_process) give AdamW steps that
    differ by up to a whole step where a gradient is at rounding level (its first step is
    lr * g / |g|), and LARS steps that differ by 1e-4 of a step."""
    torch.manual_seed(0)
    model = build_encoder("resnet_small", 3, "small2")
    (model(torch.randn(16, 3, 16, 16)) ** 2).mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    noisy = [g + torch.randn_like(g) * 2e-5 * g.abs().max() for g in grads]
    ratios = {}
    for optimizer, lr in (("adamw", 1e-3), ("lars", 0.5)):
        start = torch.cat([p.detach().flatten() for p in model.parameters()])
        exact = one_step(model, optimizer, lr, grads)
        rounded = one_step(model, optimizer, lr, noisy)
        ratios[optimizer] = ((exact - rounded).abs().max() / (exact - start).abs().max()).item()
    assert ratios["adamw"] > 0.5  # up to 2: the step's direction flips
    assert ratios["lars"] < 1e-3


def lars_published(w, b, grads, lr, momentum, beta, eta):
    """LARS as published, in float64: You, Gitman and Ginsburg 2017, "Large Batch Training of
    Convolutional Networks" (arXiv:1708.03888), Algorithm 1, for the weight matrix ``w``: local
    rate lambda = eta * ||w|| / ||g + beta * w|| (the paper writes ||g|| + beta * ||w||: the two
    agree without weight decay; with it we follow SimCLR's implementation, Chen et al. 2020,
    google-research/simclr lars_optimizer.py, which divides by the norm of the decayed
    gradient), v <- m * v + lr * lambda * (g + beta * w), w <- w - v. The bias ``b`` is left out
    of the adaptation and the decay (as SimCLR excludes biases and BatchNorm): plain momentum
    SGD, v <- m * v + lr * g. Returns ``w`` and ``b`` after each step."""
    w, b = w.astype(np.float64), b.astype(np.float64)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    out = []
    for gw, gb in grads:
        decayed = gw + beta * w
        trust = eta * np.linalg.norm(w) / np.linalg.norm(decayed)
        vw = momentum * vw + lr * trust * decayed
        vb = momentum * vb + lr * gb
        w, b = w - vw, b - vb
        out.append((w, b))
    return out


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_lars_follows_the_published_update(weight_decay):
    rng = np.random.default_rng(3)
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(rng.normal(size=(3, 4))))
        layer.bias.copy_(torch.from_numpy(rng.normal(size=3)))
    w0, b0 = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
    grads = [(rng.normal(size=(3, 4)), rng.normal(size=3)) for _ in range(4)]
    opt = build_optimizer(layer, "lars", 0.5, weight_decay)
    expected = lars_published(w0, b0, grads, 0.5, 0.9, weight_decay, 0.001)
    for (gw, gb), (w, b) in zip(grads, expected, strict=True):
        layer.weight.grad = torch.from_numpy(gw).float()
        layer.bias.grad = torch.from_numpy(gb).float()
        opt.step()
        np.testing.assert_allclose(layer.weight.detach().numpy(), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.bias.detach().numpy(), b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected[-1][0], w0, atol=1e-4)  # the weights did move


def schedule_published(base: float, warmup: int, total: int) -> list[float]:
    """The rate of each of the ``total`` steps: a linear warm-up over the first ``warmup`` steps
    (Goyal et al. 2017, "Accurate, Large Minibatch SGD"), the step numbered t = 1, 2, ...
    running at base * t / warmup, so that the last warm-up step reaches the base rate and none
    runs at 0; then a cosine decay to 0 over the remaining steps (Loshchilov and Hutter 2017,
    SGDR, one cycle, as SimCLR and DINO use it): step warmup + 1 + u runs at
    base * 0.5 * (1 + cos(pi * u / (total - warmup))), u = 0, 1, ..."""
    rates = [base * t / warmup for t in range(1, warmup + 1)]
    rates += [
        base * 0.5 * (1 + math.cos(math.pi * u / (total - warmup))) for u in range(total - warmup)
    ]
    return rates


@pytest.mark.parametrize(("warmup", "total"), [(3, 10), (0, 7), (1, 2)])
def test_warmup_then_cosine_follows_the_published_formula(warmup, total):
    layer = nn.Linear(2, 2)
    opt = build_optimizer(layer, "adamw", 0.3, 0.0)
    scheduler = warmup_cosine(opt, warmup, total)
    rates = []
    for _ in range(total):
        decayed, not_decayed = (group["lr"] for group in opt.param_groups)
        assert decayed == not_decayed
        rates.append(decayed)  # the rate the next step runs at
        opt.step()
        scheduler.step()
    assert rates == pytest.approx(schedule_published(0.3, warmup, total), rel=1e-12, abs=1e-15)


def test_training_steps_run_at_the_scheduled_rates(store, tmp_path, monkeypatch):
    """train() steps the schedule once a batch: warm-up over train.warmup_epochs epochs, the
    cosine over the rest (56 cells in batches of 16: 3 steps an epoch)."""
    real, rates = train_module.train_step, []

    def step(net, method, optimizer, scaler, batch):
        rates.append(optimizer.param_groups[0]["lr"])
        return real(net, method, optimizer, scaler, batch)

    monkeypatch.setattr(train_module, "train_step", step)
    train(store, tmp_path / "m", tiny_config("train.epochs=3", "train.lr=0.01"))
    assert rates == pytest.approx(schedule_published(0.01, 3, 9), rel=1e-12, abs=1e-15)
