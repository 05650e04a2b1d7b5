"""LARS: one step for all parameters at once, equal to the per-parameter formula."""

import copy

import torch
from torch import nn

from cellclr.learning.backbones import build_encoder
from cellclr.learning.optim import build_optimizer
from tests.helpers import CountOps


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
