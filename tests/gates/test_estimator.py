import math

import torch

from timm_gated_ssl.gates import straight_through_gate
from timm_gated_ssl.gates.estimator import logistic_noise


def test_eval_mask_is_sign_of_logits() -> None:
    logits = torch.tensor([[-1.0, 0.0, 1e-6, -1e-6, 3.0]])
    mask = straight_through_gate(logits, stochastic=False)
    assert mask.tolist() == [[0.0, 1.0, 1.0, 0.0, 1.0]]


def test_train_mask_is_exactly_binary_and_on_with_probability_sigmoid() -> None:
    # P(sigmoid((a + e) / tau) >= 0.5) = P(e >= -a) = sigmoid(a) for logistic e, whatever tau.
    a = torch.tensor([-2.0, -0.5, 0.0, 1.0]).repeat(40000, 1)
    mask = straight_through_gate(a, tau=2 / 3, stochastic=True)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    expected = torch.sigmoid(a[0])
    assert torch.allclose(mask.mean(0), expected, atol=0.01)


def test_straight_through_gradient_is_the_soft_sample_gradient() -> None:
    tau = 2 / 3
    logits = torch.randn(64, 8, requires_grad=True)
    torch.manual_seed(1)
    mask = straight_through_gate(logits, tau=tau, stochastic=True)
    (mask * torch.arange(8.0)).sum().backward()
    torch.manual_seed(1)
    noise = logistic_noise(logits)
    soft = torch.sigmoid((logits.detach() + noise) / tau)
    expected = soft * (1 - soft) / tau * torch.arange(8.0)
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_noise_is_finite_and_logistic() -> None:
    noise = logistic_noise(torch.empty(200000))
    assert torch.isfinite(noise).all()
    assert abs(noise.mean().item()) < 0.03
    assert abs(noise.var().item() - math.pi**2 / 3) < 0.1
