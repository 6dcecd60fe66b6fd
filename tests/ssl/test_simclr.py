"""NTXentLoss: naive per-anchor implementation, hand value, and 2-process gloo equivalence."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from timm_gated_ssl.ssl import NTXentLoss, VICRegLoss


def naive_ntxent(za: torch.Tensor, zb: torch.Tensor, t: float) -> float:
    z = torch.cat([za, zb]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / t) / denom)
    return total / n2


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_matches_naive(temperature: float) -> None:
    za, zb = torch.randn(5, 4), torch.randn(5, 4)
    got = NTXentLoss(temperature=temperature)(za, zb).item()
    assert got == pytest.approx(naive_ntxent(za, zb, temperature), rel=1e-5)


def test_hand_value_for_orthonormal_aligned_views() -> None:
    # Positive similarity 1, all 2N-2 negatives 0.
    n, t = 3, 0.2
    z = torch.eye(n, 5) * 3.0
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * n - 2))
    assert NTXentLoss(temperature=t)(z, z.clone()).item() == pytest.approx(expected, rel=1e-5)


def test_symmetry_and_permutation_invariance() -> None:
    za, zb = torch.randn(6, 3), torch.randn(6, 3)
    loss = NTXentLoss(temperature=0.3)
    torch.testing.assert_close(loss(za, zb), loss(zb, za))
    perm = torch.randperm(6)
    torch.testing.assert_close(loss(za, zb), loss(za[perm], zb[perm]))


def test_errors() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        NTXentLoss(temperature=0)
    with pytest.raises(ValueError, match="shape"):
        NTXentLoss()(torch.randn(3, 2), torch.randn(4, 2))


WORLD = 2
LOCAL_N = 3


def _reference(za: torch.Tensor, zb: torch.Tensor) -> dict[str, torch.Tensor]:
    za, zb = za.clone().requires_grad_(True), zb.clone().requires_grad_(True)
    ntx = NTXentLoss(temperature=0.2)(za, zb)
    ntx.backward()
    out = {"ntx": ntx.detach(), "ntx_ga": za.grad.clone(), "ntx_gb": zb.grad.clone()}
    za.grad, zb.grad = None, None
    vic = VICRegLoss()(za, zb).loss
    vic.backward()
    out.update(vic=vic.detach(), vic_ga=za.grad.clone(), vic_gb=zb.grad.clone())
    return out


def _worker(rank: int, init_file: str, out_dir: str, za: torch.Tensor, zb: torch.Tensor) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        assert dist.get_world_size() == WORLD
        sl = slice(rank * LOCAL_N, (rank + 1) * LOCAL_N)
        la = za[sl].clone().requires_grad_(True)
        lb = zb[sl].clone().requires_grad_(True)
        res: dict[str, torch.Tensor | int] = {"world_size": dist.get_world_size()}
        ntx = NTXentLoss(temperature=0.2)(la, lb)
        ntx.backward()
        res.update(ntx=ntx.detach(), ntx_ga=la.grad.clone(), ntx_gb=lb.grad.clone())
        la.grad, lb.grad = None, None
        vic = VICRegLoss(gather_distributed=True)(la, lb).loss
        vic.backward()
        res.update(vic=vic.detach(), vic_ga=la.grad.clone(), vic_gb=lb.grad.clone())
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gather_matches_single_process(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    za = torch.randn(WORLD * LOCAL_N, 4, generator=g)
    zb = torch.randn(WORLD * LOCAL_N, 4, generator=g)
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), za, zb), nprocs=WORLD, join=True)
    ref = _reference(za, zb)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert [r["world_size"] for r in results] == [WORLD, WORLD]
    for key in ("ntx", "vic"):
        # DDP optimises the mean of per-rank losses ...
        mean_loss = sum(r[key] for r in results) / WORLD
        torch.testing.assert_close(mean_loss, ref[key])
        # ... and averages gradients, which all_gather's backward has summed over ranks.
        grad_a = torch.cat([r[f"{key}_ga"] for r in results]) / WORLD
        grad_b = torch.cat([r[f"{key}_gb"] for r in results]) / WORLD
        torch.testing.assert_close(grad_a, ref[f"{key}_ga"])
        torch.testing.assert_close(grad_b, ref[f"{key}_gb"])
    # Each rank alone (no gathering) would give a different, smaller-batch NT-Xent.
    local = NTXentLoss(temperature=0.2)(za[:LOCAL_N], zb[:LOCAL_N])
    assert not torch.allclose(local, results[0]["ntx"])
