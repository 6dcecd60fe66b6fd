"""The co-training step's options, each against a hand computation on tiny tensors."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import timm_gated_ssl
from timm_gated_ssl import gate_mode, iter_gates
from timm_gated_ssl.budget import BudgetLoss
from timm_gated_ssl.gates.estimator import straight_through_gate
from timm_gated_ssl.recipe import DualSSLModel
from timm_gated_ssl.recipe.dual import gate_noise_scale
from timm_gated_ssl.ssl import FeatureDistillLoss, build_ssl_objective


def dual(**kwargs) -> DualSSLModel:
    torch.manual_seed(0)
    backbone = timm.create_model("gated_resnet18_cifar", layers=(1, 1, 1, 1), budget=0.3, num_classes=0)
    objective = build_ssl_objective("vicreg", in_dim=backbone.num_features, hidden_dim=32, out_dim=32)
    return DualSSLModel(backbone, objective, gating=True, budget_loss=BudgetLoss(), **kwargs)


def views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 16, 16, generator=g), torch.randn(4, 3, 16, 16, generator=g)


def test_feature_distill_hand_values() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 1.0], [0.0, -3.0]], requires_grad=True)
    loss = FeatureDistillLoss(weight=2.0)(student, teacher)
    # cosines: 1/sqrt(2) and -1 -> 2 * mean(1 - cos)
    torch.testing.assert_close(loss, torch.tensor(2.0 * ((1 - 1 / math.sqrt(2)) + 2.0) / 2))
    loss.backward()
    assert teacher.grad is None and student.grad is not None  # the teacher is detached
    assert FeatureDistillLoss()(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_feature_distill_errors() -> None:
    with pytest.raises(ValueError, match="must be > 0, got 0"):
        FeatureDistillLoss(weight=0.0)
    with pytest.raises(ValueError, match=r"equal shapes, got \(2, 3\) and \(2, 4\)"):
        FeatureDistillLoss()(torch.zeros(2, 3), torch.zeros(2, 4))


def test_distill_term_is_the_gated_view_against_its_dense_features() -> None:
    model = dual(distill=FeatureDistillLoss(weight=3.0)).eval()  # eval: deterministic gates
    v1, v2 = views()
    out = model(v1, v2, progress=0.5)
    with gate_mode(model.backbone, "gated"):
        h_gated = model.backbone(v1)
    h_dense = model.backbone(v1)
    expected = 3.0 * (1 - F.cosine_similarity(h_gated, h_dense, dim=1)).mean()
    torch.testing.assert_close(out.terms["distill"], expected)
    plain = dual().eval()(v1, v2, progress=0.5)
    torch.testing.assert_close(out.loss, plain.loss + expected)


def test_distill_on_embeddings_uses_the_projector() -> None:
    model = dual(distill=FeatureDistillLoss(), distill_on="embeddings").eval()
    v1, v2 = views()
    out = model(v1, v2, progress=0.0)
    with gate_mode(model.backbone, "gated"):
        z_gated = model.objective.projector(model.backbone(v1))
    z_dense = model.objective.projector(model.backbone(v1))
    torch.testing.assert_close(out.terms["distill"], (1 - F.cosine_similarity(z_gated, z_dense, dim=1)).mean())


def test_distill_does_not_pull_the_dense_pass() -> None:
    """The stop-gradient target: the distillation term alone gives the dense-only norms no gradient."""
    model = dual(distill=FeatureDistillLoss()).train()
    v1, _ = views()
    distill = model._distill(*_gated_and_dense(model, v1))
    distill.backward()
    gate = next(iter_gates(model.backbone))[1]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gate.parameters())
    dense_bn = model.backbone.layer1[0].bn1  # the dense copy; the gated pass swaps its own in
    assert dense_bn.weight.grad is None


def _gated_and_dense(model: DualSSLModel, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with gate_mode(model.backbone, "gated"):
        h_gated = model.backbone(images)
    with torch.no_grad():
        h_dense = model.backbone(images)
    return h_gated, h_dense


def test_symmetric_pairing_averages_both_pairs() -> None:
    model = dual(pairing="symmetric").eval()
    v1, v2 = views()
    out = model(v1, v2, progress=0.2)
    bb, objective = model.backbone, model.objective
    with gate_mode(bb, "gated"):
        g1, g2 = bb(v1), bb(v2)
    d1, d2 = bb(v1), bb(v2)
    ssl = (objective(g1, d2).loss + objective(d1, g2).loss) / 2
    with gate_mode(bb, "gated"):
        bb(v1)
        budget_a = model.budget_loss(bb, v1, progress=0.2)
        bb(v2)
        budget_b = model.budget_loss(bb, v2, progress=0.2)
    torch.testing.assert_close(out.loss, ssl + (budget_a.loss + budget_b.loss) / 2)
    torch.testing.assert_close(out.mac_ratio, (budget_a.mac_ratio + budget_b.mac_ratio) / 2)


def test_anchored_pairing_adds_the_vanilla_dense_pair() -> None:
    model = dual(pairing="anchored").eval()
    v1, v2 = views()
    out = model(v1, v2, progress=0.2)
    bb, objective = model.backbone, model.objective
    with gate_mode(bb, "gated"):
        g1 = bb(v1)
        budget = model.budget_loss(bb, v1, progress=0.2)
    d1, d2 = bb(v1), bb(v2)
    ssl = (objective(g1, d2).loss + objective(d1, d2).loss) / 2
    torch.testing.assert_close(out.terms["ssl"], ssl)
    torch.testing.assert_close(out.loss, ssl + budget.loss)
    torch.testing.assert_close(out.mac_ratio, budget.mac_ratio)


def test_dense_warmup_step_is_the_vanilla_step() -> None:
    model = dual().train()
    v1, v2 = views()
    torch.manual_seed(3)
    out = model(v1, v2, progress=0.0, gating_active=False)
    assert out.mac_ratio is None and "compute" not in out.terms
    torch.manual_seed(3)
    torch.testing.assert_close(out.loss, model.objective(model.backbone(v1), model.backbone(v2)).loss)


def test_every_parameter_gets_a_gradient_in_a_dual_step() -> None:
    model = dual(distill=FeatureDistillLoss()).train()
    model(*views(), progress=0.1).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_gate_noise_schedule_values() -> None:
    assert [gate_noise_scale("constant", p) for p in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]
    assert gate_noise_scale("cosine", 0.0) == 1.0
    assert gate_noise_scale("cosine", 0.5) == pytest.approx(0.5)
    assert gate_noise_scale("cosine", 0.25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert gate_noise_scale("cosine", 1.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="valid: constant, cosine"):
        gate_noise_scale("linear", 0.5)


def test_cosine_noise_is_applied_to_the_gates() -> None:
    model = dual(noise_schedule="cosine").train()
    model(*views(), progress=0.5)
    assert [g.noise_scale for _, g in iter_gates(model.backbone)] == pytest.approx([0.5] * 4)


def test_zero_noise_gives_the_inference_mask_with_a_gradient() -> None:
    logits = torch.tensor([[-2.0, -0.1, 0.0, 0.3, 4.0]], requires_grad=True)
    mask = straight_through_gate(logits, stochastic=True, noise_scale=0.0)
    assert mask.tolist() == straight_through_gate(logits.detach(), stochastic=False).tolist()
    mask.sum().backward()
    tau = 2 / 3
    s = torch.sigmoid(logits.detach() / tau)
    torch.testing.assert_close(logits.grad, s * (1 - s) / tau)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="valid: asymmetric, symmetric, anchored"):
        dual(pairing="both")
    with pytest.raises(ValueError, match="valid: features, embeddings"):
        dual(distill_on="logits")
    with pytest.raises(ValueError, match="valid: constant, cosine"):
        dual(noise_schedule="step")
    with pytest.raises(ValueError, match=r"noise scale must be in \[0, 1\]"):
        timm_gated_ssl.set_gate_noise(dual().backbone, 1.5)


def test_ssl_weight_scales_the_ssl_term() -> None:
    v1, v2 = views()
    plain = dual().eval()(v1, v2, progress=0.2)
    half = dual(ssl_weight=0.5).eval()(v1, v2, progress=0.2)
    torch.testing.assert_close(half.terms["ssl"], 0.5 * plain.terms["ssl"])
    torch.testing.assert_close(half.loss, plain.loss - 0.5 * plain.terms["ssl"])


def test_ssl_weight_zero_is_distillation_plus_budget_on_one_view() -> None:
    model = dual(distill=FeatureDistillLoss(weight=2.0), ssl_weight=0.0).eval()
    v1, v2 = views()
    out = model(v1, v2, progress=0.4)
    bb = model.backbone
    with gate_mode(bb, "gated"):
        h_gated = bb(v1)
        budget = model.budget_loss(bb, v1, progress=0.4)
    distill = 2.0 * (1 - F.cosine_similarity(h_gated, bb(v1), dim=1)).mean()
    torch.testing.assert_close(out.loss, distill + budget.loss)
    assert set(out.terms) == {"distill", "compute", "bound"}
    torch.testing.assert_close(out.mac_ratio, budget.mac_ratio)
    # the second view is not used: any other batch gives the same step
    torch.testing.assert_close(model(v1, torch.zeros_like(v2), progress=0.4).loss, out.loss)


def test_ssl_weight_zero_freezes_the_heads_and_trains_the_backbone() -> None:
    model = dual(distill=FeatureDistillLoss(), ssl_weight=0.0).train()
    assert not any(p.requires_grad for p in model.objective.parameters())
    assert dual(distill=FeatureDistillLoss(), ssl_weight=0.0, momentum_target=True).target is None  # no BYOL copy
    model(*views(), progress=0.1).loss.backward()
    gate = next(iter_gates(model.backbone))[1]
    assert all(p.grad is not None for p in gate.parameters())
    assert model.backbone.layer1[0].conv1.weight.grad is not None  # the student pass reaches shared weights
    with pytest.raises(ValueError, match="dense-only step"):
        model(*views(), progress=0.1, gating_active=False)


@pytest.mark.parametrize("kwargs, named", [
    ({}, "distill=None"),
    ({"distill": FeatureDistillLoss(), "pairing": "symmetric"}, "pairing='symmetric'"),
    ({"distill": FeatureDistillLoss(), "distill_on": "embeddings"}, "distill_on='embeddings'"),
])
def test_ssl_weight_zero_is_refused_without_what_it_needs(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=f"ssl_weight=0 .*{named}"):
        dual(ssl_weight=0.0, **kwargs)
    with pytest.raises(ValueError, match=r"ssl_weight must be >= 0, got -1"):
        dual(ssl_weight=-1.0)
