#!/usr/bin/env python
"""Self-supervised co-training of a dense and a gated encoder (Krishna et al., BMVC 2023).

    accelerate launch recipes/pretrain.py --config recipes/configs/quickstart.yaml \
        --output_dir runs/quickstart [--key value ...]

Any field of ``timm_gated_ssl.recipe.PretrainConfig`` can be overridden as ``--key value``. The
infrastructure flags below are not part of the config. Reads top to bottom: config, data, model,
optimizer, ``prepare``, loop, export.
"""

from __future__ import annotations

import argparse
import time
from itertools import islice
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from tqdm.auto import tqdm

import timm_gated_ssl
from timm_gated_ssl import gate_mode, has_gates
from timm_gated_ssl.budget import BudgetLoss
from timm_gated_ssl.cli import add_training_run_arguments, exit_status, run_main, warn_slow_bf16
from timm_gated_ssl.data.views import eval_data_config
from timm_gated_ssl.errors import ConfigError
from timm_gated_ssl.eval import extract_features, knn_accuracy
from timm_gated_ssl.files import check_output_dir
from timm_gated_ssl.recipe import (
    DualSSLModel,
    PretrainConfig,
    TrainState,
    check_budget_reachable,
    check_environment,
    check_resume,
    export_model,
    prepare_output_dir,
    refuse_earlier_run,
    resolve_checkpoint,
    save_training_state,
    timed_batches,
)
from timm_gated_ssl.recipe.budget_check import build_budget_loader, mac_fraction, settle_budget
from timm_gated_ssl.recipe.data import (
    MonitorData,
    build_monitor_data,
    build_train_loader,
    load_train_split,
)
from timm_gated_ssl.recipe.init import build_backbone
from timm_gated_ssl.recipe.optim import build_optimizer, build_scheduler
from timm_gated_ssl.recipe.outputs import non_finite_loss_error, write_json
from timm_gated_ssl.recipe.summary import training_summary
from timm_gated_ssl.ssl import FeatureDistillLoss, build_ssl_objective, cosine_momentum_schedule


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, PretrainConfig]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_run_arguments(parser, config_name="PretrainConfig")
    args, rest = parser.parse_known_args(argv)
    return args, PretrainConfig.load(args.config, rest)


def knn_monitor(
    accelerator: Accelerator, backbone: torch.nn.Module, monitor: MonitorData, config: PretrainConfig
) -> dict[str, float]:
    """Weighted k-NN top-1 of the dense (and gated) features on the labelled monitor splits."""
    gated = has_gates(backbone)
    results = {}
    for mode in ["dense", "gated"] if gated else ["dense"]:
        kw = {"accelerator": accelerator, "progress": False, "mode": mode if gated else None,
                  "mode_context": gate_mode if gated else None}
        bank = extract_features(backbone, monitor.bank, desc=f"bank/{mode}", **kw)
        query = extract_features(backbone, monitor.query, desc=f"query/{mode}", **kw)
        results[f"knn_{mode}"] = knn_accuracy(bank, query, k=config.knn_k, temperature=config.knn_temperature,
                                              num_classes=monitor.num_classes)
    return results  # extract_features restores the backbone's train/eval state


@torch.no_grad()
def realised_mac_ratio(
    backbone: torch.nn.Module, loader: torch.utils.data.DataLoader, *, max_batches: int = 8
) -> dict[str, float]:
    """Deterministic (eval-mode) gated MACs / dense MACs on evaluation images."""
    device = next(backbone.parameters()).device
    ratio, dense = mac_fraction(backbone, [images.to(device) for images, _ in islice(loader, max_batches)])
    return {"mac_ratio": ratio, "flops_reduction": 1.0 - ratio, "dense_macs": dense, "gated_macs": ratio * dense}


def main(argv: list[str] | None = None) -> int:
    args, config = parse_args(argv)
    # A dense warm-up leaves the gates unused in its steps: DDP must be told.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=config.gating and config.dense_warmup_epochs > 0)
    accelerator = Accelerator(
        cpu=args.cpu, mixed_precision=args.mixed_precision, log_with=args.report_to,
        project_dir=args.output_dir, gradient_accumulation_steps=config.grad_accum_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True), kwargs_handlers=[ddp],
    )
    warn_slow_bf16(accelerator)
    output_dir = Path(args.output_dir)
    # ---- checks: nothing is built or written before the config, model and state are known good
    if args.overwrite and args.resume_from_checkpoint:
        raise ConfigError("--overwrite replaces the run that --resume_from_checkpoint continues: pass one")
    check_environment(config)
    check_output_dir(output_dir, name="--output_dir")
    state_path = None
    if args.resume_from_checkpoint:
        state_path = resolve_checkpoint(output_dir, args.resume_from_checkpoint)
        check_resume(state_path, config, world_size=accelerator.num_processes,
                     run_config=output_dir / "config.yaml")
    refuse_earlier_run(output_dir, overwrite=args.overwrite, resuming=state_path is not None)
    set_seed(config.seed, device_specific=True)

    # ---- data
    train_info = load_train_split(config)
    loader = build_train_loader(config, train_info, world_size=accelerator.num_processes)
    monitor = build_monitor_data(config, train_info) if (config.knn_every or config.eval_split) else None
    # --init_from: the user's encoder in the dense path (refused here, before any write, if it does
    # not fit); a resume takes every weight from its state instead
    backbone = build_backbone(config.model, config.model_args(),
                              init_from=config.init_from if state_path is None else None)
    if config.gating:
        check_budget_reachable(backbone, config.budget, image_size=train_info.image_size)
    if accelerator.is_main_process:
        prepare_output_dir(output_dir, overwrite=args.overwrite, resuming=state_path is not None)
        config.save(output_dir / "config.yaml")
    accelerator.wait_for_everyone()
    record = config.to_dict()  # saved with every training state, checked on resume

    # ---- model: backbone (gated or plain, built above), SSL heads and loss, budget losses
    if args.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    loss_kwargs = {"temperature": config.simclr_temperature} if config.method == "simclr" else {}
    objective = build_ssl_objective(config.method, in_dim=backbone.num_features,
                                    hidden_dim=config.projector_hidden_dim,
                                    out_dim=config.projector_out_dim, **loss_kwargs)
    budget_loss = BudgetLoss(
        config.budget, compute_weight=config.budget_weight, bound_weight=config.bound_weight,
        bound_schedule=config.bound_schedule, bound_decay=config.bound_decay, alpha=config.bound_alpha,
        bound_centre=config.bound_centre,
    ) if config.gating else None
    model = DualSSLModel(
        backbone, objective, gating=config.gating, budget_loss=budget_loss,
        momentum_target=config.method == "byol", pairing=config.pairing,
        distill=FeatureDistillLoss(config.distill_weight) if config.distill_weight > 0 else None,
        distill_on=config.distill_on, noise_schedule=config.gate_noise_schedule, freeze_dense=config.freeze_dense,
        ssl_weight=config.ssl_weight,
    )
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = timm_gated_ssl.convert_sync_batchnorm(model)

    # ---- optimizer (timm) and per-step schedule: warm-up then cosine
    updates_per_epoch = len(loader) // config.grad_accum_steps // accelerator.num_processes
    updates_per_epoch = max(updates_per_epoch, 1)
    total_updates = config.epochs * updates_per_epoch
    global_batch = config.batch_size * accelerator.num_processes * config.grad_accum_steps
    lr = config.lr * global_batch / 256
    optimizer = build_optimizer(model, config, lr=lr)
    scheduler = build_scheduler(optimizer, total_updates=total_updates, min_lr=config.min_lr,
                                warmup_updates=int(config.warmup_epochs * updates_per_epoch))

    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler, state)
    if state_path is not None:
        accelerator.load_state(str(state_path))
        accelerator.print(f"resumed from {state_path} at step {state.step} (epoch {state.epoch})")
    if args.report_to:
        # Trackers (tensorboard's hparams) take scalars only: dicts and None become strings.
        scalars = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.to_dict().items()}
        accelerator.init_trackers("timm_gated_ssl", config=scalars)

    unwrapped = accelerator.unwrap_model(model)
    max_updates = min(total_updates, config.max_steps or total_updates)
    progress = tqdm(total=max_updates, initial=state.step, disable=args.no_progress or not accelerator.is_main_process,
                    desc="pretrain", dynamic_ncols=True)
    start_time, start_images = time.perf_counter(), state.images_seen
    last_time = start_time  # state.train_seconds sums training time over every segment of the run
    metrics: dict[str, float] = {}
    interrupted = False
    try:
        while state.epoch < config.epochs and state.step < max_updates:
            loader.set_epoch(state.epoch)  # sampler order
            loader.dataset.set_epoch(state.epoch)  # augmentations
            batches = accelerator.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
            model.train()
            for view_gated, view_dense in timed_batches(batches, state):
                if args.channels_last:
                    view_gated = view_gated.contiguous(memory_format=torch.channels_last)
                    view_dense = view_dense.contiguous(memory_format=torch.channels_last)
                with accelerator.accumulate(model):
                    epoch_float = state.epoch + state.batch_in_epoch / max(len(loader), 1)
                    out = model(view_gated, view_dense, epoch=epoch_float, progress=state.step / total_updates,
                                gating_active=epoch_float >= config.dense_warmup_epochs)
                    bad = (~torch.isfinite(out.loss.detach())).float().reshape(1)
                    if accelerator.reduce(bad, "sum").item() > 0:
                        raise non_finite_loss_error(out.loss.item(), output_dir=output_dir,
                                                    where=f"step {state.step + 1} (epoch {state.epoch})")
                    accelerator.backward(out.loss)
                    update_lr = optimizer.param_groups[0]["lr"]
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                state.batch_in_epoch += 1
                state.images_seen += view_gated.shape[0] * accelerator.num_processes
                now = time.perf_counter()
                state.train_seconds, last_time = state.train_seconds + (now - last_time), now
                if not accelerator.sync_gradients:
                    continue
                state.step, state.last_lr = state.step + 1, update_lr
                scheduler.step_update(state.step)
                if config.method == "byol":
                    unwrapped.update_target(cosine_momentum_schedule(state.step, total_updates,
                                                                     base_tau=config.byol_momentum))
                elapsed = time.perf_counter() - start_time
                speed = (state.images_seen - start_images) / max(elapsed, 1e-9)
                logs = {"loss": out.loss.item(), **{k: v.item() for k, v in out.terms.items()},
                        "lr": update_lr, "images_per_s": speed}
                if out.mac_ratio is not None:
                    logs["mac_ratio"] = accelerator.reduce(out.mac_ratio.detach().reshape(1), "mean").item()
                progress.update(1)
                if state.step % config.log_every == 0 or state.step == max_updates:
                    postfix = {"loss": f"{logs['loss']:.3f}", "img/s": f"{speed:.0f}"}
                    if "mac_ratio" in logs:
                        postfix["macs"] = f"{logs['mac_ratio']:.3f}"
                    progress.set_postfix(postfix)
                    accelerator.log(logs, step=state.step)
                if state.step >= max_updates:
                    break
            else:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                if config.save_every and state.epoch % config.save_every == 0:
                    save_training_state(accelerator, output_dir, state.step, config=record)
                if monitor is not None and config.knn_every and state.epoch % config.knn_every == 0:
                    knn = knn_monitor(accelerator, unwrapped.backbone, monitor, config)
                    accelerator.log(knn, step=state.step)
                    progress.write(f"epoch {state.epoch}: " + ", ".join(f"{k} {v:.2f}" for k, v in knn.items()))
                last_time = time.perf_counter()  # saving and monitoring are not training time
    except KeyboardInterrupt:
        interrupted = True
        accelerator.print("interrupted: saving the training state")
        save_training_state(accelerator, output_dir, state.step, config=record)
    progress.close()

    # ---- export: timm checkpoint, metrics, final training state
    if not interrupted:
        save_training_state(accelerator, output_dir, state.step, config=record)
    backbone = unwrapped.backbone
    # Whole-run numbers (every segment, resumes included): resuming a finished run keeps them.
    metrics.update(steps=state.step, final_lr=state.last_lr,
                   epochs=state.epoch + state.batch_in_epoch / max(len(loader), 1),
                   images_per_s=state.images_seen / max(state.train_seconds, 1e-9),
                   wall_time_s=state.train_seconds, world_size=accelerator.num_processes,
                   data_fraction=state.data_seconds / max(state.train_seconds, 1e-9))
    # DDP keeps replicas identical; check it, since a desync would silently corrupt the export.
    checksum = torch.stack([p.detach().double().sum() for p in backbone.parameters()]).sum()
    gathered = accelerator.gather(checksum.reshape(1).to(accelerator.device))
    metrics["ranks_in_sync"] = bool(torch.all(gathered == gathered[0]).item())
    model_args = config.model_args()
    if has_gates(backbone):  # the budget on the user's data, calibrated in when training missed it
        check = settle_budget(backbone, build_budget_loader(train_info, images=config.budget_check_images),
                              budget=config.budget, tolerance=config.budget_tolerance, device=accelerator.device)
        metrics.update(check.metrics())
        accelerator.print(check.message())
        table = getattr(backbone, "_model_args", {}).get("calibrated_budgets")
        if check.calibrated is not None and table:  # gated_* models take the table as an argument
            model_args["calibrated_budgets"] = dict(table)
    if monitor is not None:
        metrics.update(knn_monitor(accelerator, backbone, monitor, config))
        if has_gates(backbone):
            metrics.update(realised_mac_ratio(backbone, monitor.query))
    if accelerator.is_main_process:
        export_model(backbone.float(), output_dir, model_args=model_args,
                     data_config=eval_data_config(image_size=train_info.image_size, mean=train_info.mean,
                                                  std=train_info.std),
                     extra={"init_from": config.init_from} if config.init_from else None)
        write_json(output_dir / "metrics.json", {**metrics, "init_from": config.init_from})
        print(training_summary(metrics, output_dir=output_dir, dataset=str(config.dataset),
                               budget=config.budget if has_gates(backbone) else None))
    accelerator.end_training()
    return 130 if interrupted else 0


def cli(argv: list[str] | None = None) -> int:
    """``main`` with bad input reported as one ``error: ...`` line on stderr (exit status 2)."""
    return exit_status(main, argv)


if __name__ == "__main__":
    # One line `error: ...` for the library's errors; os._exit because gloo may abort at
    # interpreter exit after the work is done.
    run_main(main, hard_exit=True)
