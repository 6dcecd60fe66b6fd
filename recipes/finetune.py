#!/usr/bin/env python
"""Train a classifier on a pretrained (gated) encoder: the paper's linear evaluation, or a full
fine-tune that keeps the gated mode at its budget.

    accelerate launch recipes/finetune.py --checkpoint runs/quickstart --dataset digits \
        --output_dir runs/quickstart_linear [--config recipes/configs/finetune_quickstart.yaml] \
        [--mode linear|full] [--channels_last] [--key value ...]

Any field of ``timm_gated_ssl.finetune.FinetuneConfig`` can be overridden as ``--key value``
(``--checkpoint`` and ``--dataset`` are fields too). ``--mode linear``: frozen backbone in eval
mode, one zero-initialised linear head per mode and budget, trained on augmented crops, top-1 mean
and std over ``seeds``. ``--mode full``: backbone and a dense and a gated head trained together with
cross-entropy plus the budget losses, then the budgets re-calibrated. The output folder is a timm
classifier (``timm.create_model("local-dir:OUT", pretrained=True)`` after ``import timm_gated_ssl``),
``heads.safetensors``, ``metrics.json`` and ``results.json`` (for ``recipes/push_to_hub.py``).
Reads top to bottom: config, checkpoint, data, heads, optimizer, ``prepare``, loop, evaluate, export.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from tqdm.auto import tqdm

from timm_gated_ssl import gate_config, has_gates
from timm_gated_ssl.cli import add_training_run_arguments, exit_status, run_main, warn_slow_bf16
from timm_gated_ssl.data.views import eval_data_config
from timm_gated_ssl.errors import ConfigError, NoGatesError
from timm_gated_ssl.files import check_output_dir, refuse_overlap
from timm_gated_ssl.finetune import (
    FinetuneConfig,
    FinetuneState,
    HeadSpec,
    build_finetune_data,
    build_results,
    evaluate_heads,
    export_classifier,
)
from timm_gated_ssl.finetune.phases import (
    full_heads,
    full_phase,
    linear_phase,
    result_rows,
    rows_to_results,
    step,
)
from timm_gated_ssl.hub import load_run
from timm_gated_ssl.recipe import (
    check_budget_reachable,
    check_resume,
    prepare_output_dir,
    refuse_earlier_run,
    resolve_checkpoint,
    save_training_state,
)
from timm_gated_ssl.recipe.optim import build_optimizer, build_scheduler
from timm_gated_ssl.recipe.outputs import non_finite_loss_error, write_json


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, FinetuneConfig]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_run_arguments(parser, config_name="FinetuneConfig")
    args, rest = parser.parse_known_args(argv)
    config = FinetuneConfig.load(args.config, rest)
    config.check_inputs()
    return args, config


def main(argv: list[str] | None = None) -> None:
    args, config = parse_args(argv)
    accelerator = Accelerator(
        cpu=args.cpu, mixed_precision=args.mixed_precision, log_with=args.report_to,
        project_dir=args.output_dir, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    warn_slow_bf16(accelerator)
    output_dir = Path(args.output_dir)
    resuming = args.resume_from_checkpoint is not None
    # ---- checks first: nothing is written before the config, the checkpoint, the data and the
    # training state to resume are known good
    if args.overwrite and resuming:
        raise ConfigError("--overwrite replaces the run that --resume_from_checkpoint continues: pass one")
    check_output_dir(output_dir, name="--output_dir")
    if not str(config.checkpoint).startswith("hf-hub:"):
        refuse_overlap(output_dir, str(config.checkpoint), output_name="--output_dir", source_name="--checkpoint")
    state_path = resolve_checkpoint(output_dir, args.resume_from_checkpoint) if resuming else None
    refuse_earlier_run(output_dir, overwrite=args.overwrite, resuming=resuming)
    set_seed(config.seeds[0], device_specific=True)

    # ---- checkpoint: the pretrained encoder (pooled features), gated or not
    loaded = load_run(config.checkpoint)
    backbone = loaded.model
    backbone.reset_classifier(0)
    gated = has_gates(backbone)
    if not gated and (config.mode == "full" or config.budget is not None or config.budgets):
        raise NoGatesError(
            f"{loaded.source} ({loaded.name}) has no gates: mode full and budget/budgets need a gated "
            "checkpoint (a gated_* architecture); use --mode linear without budgets for a vanilla baseline"
        )
    trained_budget = gate_config(backbone).budget if gated else None
    target = config.budget if config.budget is not None else trained_budget

    # ---- data: augmented training crops, test split, held-out calibration images
    data = build_finetune_data(config, pretrain_config=loaded.pretrain_config,
                               need_calibration=config.mode == "full" or bool(config.budgets),
                               world_size=accelerator.num_processes)
    num_classes, image_size = data.protocol.num_classes, data.protocol.image_size
    resolved = FinetuneConfig.from_dict({**config.to_dict(), "image_size": image_size})
    record = resolved.to_dict()  # config.yaml, and the manifest of every saved state
    if gated:
        wanted = ([("--budget", target)] if config.mode == "full" else []) + [("--budgets", b) for b in config.budgets]
        for flag, budget in wanted:
            check_budget_reachable(backbone, budget, image_size=image_size, flag=flag)
    if state_path is not None:
        check_resume(state_path, resolved, world_size=accelerator.num_processes,
                     run_config=output_dir / "config.yaml")
    if accelerator.is_main_process:
        prepare_output_dir(output_dir, overwrite=args.overwrite, resuming=resuming)
        resolved.save(output_dir / "config.yaml")
    accelerator.wait_for_everyone()

    def save_state(step: int) -> None:
        save_training_state(accelerator, output_dir, step, config=record)

    backbone.to(accelerator.device)
    if args.channels_last:
        backbone.to(memory_format=torch.channels_last)

    # ---- heads (+ backbone in full mode)
    specs: list[HeadSpec] = []
    if config.mode == "linear":
        model, specs = linear_phase(backbone, config, num_classes=num_classes, gated=gated,
                                    trained_budget=trained_budget, calibration=data.calibration)
    else:
        model = full_phase(backbone, config, num_classes=num_classes, target=target, accelerator=accelerator)

    # ---- optimizer (timm) and per-step schedule: warm-up then cosine, restarted for every seed
    updates_per_epoch = max(len(data.train) // accelerator.num_processes, 1)
    total_updates = config.epochs * updates_per_epoch
    lr = config.lr * config.batch_size * accelerator.num_processes / 256
    optimizer = build_optimizer(model, config, lr=lr)
    scheduler = build_scheduler(optimizer, total_updates=total_updates, min_lr=config.min_lr,
                                warmup_updates=int(config.warmup_epochs * updates_per_epoch))
    model, optimizer, loader = accelerator.prepare(model, optimizer, data.train)
    test_loader = accelerator.prepare_data_loader(data.test)  # sharded; results gathered
    state = FinetuneState()
    accelerator.register_for_checkpointing(scheduler, state)
    if state_path is not None:
        accelerator.load_state(str(state_path))
        accelerator.print(f"resumed from {state_path} at run {state.run}, step {state.step} (epoch {state.epoch})")
    if args.report_to:
        scalars = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.to_dict().items()}
        accelerator.init_trackers("timm_gated_ssl_finetune", config=scalars)

    unwrapped = accelerator.unwrap_model(model)
    max_updates = min(total_updates, config.max_steps or total_updates)
    start_time, start_images = time.perf_counter(), state.images_seen
    try:
        while state.run < len(config.seeds):
            seed = config.seeds[state.run]
            loader.dataset.seed = seed  # the crops of this seed (SeededViews)
            progress = tqdm(total=max_updates, initial=state.step, desc=f"{config.mode} seed {seed}",
                            disable=args.no_progress or not accelerator.is_main_process, dynamic_ncols=True)
            while state.epoch < config.epochs and state.step < max_updates:
                loader.set_epoch(seed * 100_003 + state.epoch)  # sampler order: per seed and epoch
                loader.dataset.set_epoch(state.epoch)
                batches = accelerator.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
                model.train()
                for images, labels in batches:
                    if args.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    epoch_float = state.epoch + state.batch_in_epoch / max(len(loader), 1)
                    out = step(model, backbone, specs, images, labels, mode=config.mode, epoch=epoch_float,
                               progress=state.step / max(total_updates, 1), accelerator=accelerator)
                    bad = (~torch.isfinite(out.loss.detach())).float().reshape(1)
                    if accelerator.reduce(bad, "sum").item() > 0:
                        raise non_finite_loss_error(
                            out.loss.item(), output_dir=output_dir,
                            where=f"step {state.step + 1} (epoch {state.epoch}, seed {seed})")
                    accelerator.backward(out.loss)
                    update_lr = optimizer.param_groups[0]["lr"]
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    state.batch_in_epoch += 1
                    state.images_seen += images.shape[0] * accelerator.num_processes
                    state.step, state.last_lr = state.step + 1, update_lr
                    scheduler.step_update(state.step)
                    progress.update(1)
                    if state.step % config.log_every == 0 or state.step == max_updates:
                        logs = {"loss": out.loss.item(), **{k: v.item() for k, v in out.terms.items()},
                                "lr": update_lr}
                        if out.mac_ratio is not None:
                            logs["mac_ratio"] = accelerator.reduce(out.mac_ratio.detach().reshape(1), "mean").item()
                        progress.set_postfix({k: f"{logs[k]:.3f}" for k in ("loss", "mac_ratio") if k in logs})
                        accelerator.log(logs, step=state.run * total_updates + state.step)
                    if state.step >= max_updates:
                        break
                else:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                    if config.save_every and state.epoch % config.save_every == 0:
                        save_state(state.run * total_updates + state.step)
            progress.close()
            if config.mode == "full":
                break
            # ---- linear: this seed's heads on the test split, then fresh heads for the next seed
            if len(state.finished) == state.run:  # not yet evaluated (a resumed finished run is)
                results = evaluate_heads(backbone, unwrapped.folded(), specs, test_loader,
                                         image_size=image_size, accelerator=accelerator)
                state.finished.append(result_rows(results))
                accelerator.print(f"seed {seed}: " + ", ".join(f"{r.spec.name} {r.top1:.2f}" for r in results))
            if state.run + 1 == len(config.seeds):
                break
            state.run, state.step, state.epoch, state.batch_in_epoch = state.run + 1, 0, 0, 0
            unwrapped.reset()
            optimizer.optimizer.state.clear()
            scheduler.step_update(0)
            save_state(state.run * total_updates)
    except KeyboardInterrupt:
        accelerator.print("interrupted: saving the training state")
        save_state(state.run * total_updates + state.step)
        accelerator.end_training()
        sys.exit(130)
    wall_time = time.perf_counter() - start_time
    save_state(state.run * total_updates + state.step)

    # ---- full: re-calibrate the budgets on held-out training images, then evaluate both heads
    metrics: dict[str, object] = {"mode": config.mode, "steps": state.step, "final_lr": state.last_lr,
                                  "seeds": list(config.seeds),
                                  "world_size": accelerator.num_processes, "wall_time_s": wall_time,
                                  "images_per_s": (state.images_seen - start_images) / max(wall_time, 1e-9)}
    if config.mode == "full":
        specs, heads, metrics["calibration_mac_fraction"] = full_heads(
            backbone, unwrapped.heads.folded(), config, target=target, calibration=data.calibration)
        results = evaluate_heads(backbone, heads, specs, test_loader, image_size=image_size, accelerator=accelerator)
        state.finished = [result_rows(results)]
    else:
        heads = unwrapped.folded()
    runs = rows_to_results(state.finished)
    evaluation = build_results(
        runs, mode=config.mode, model_name=loaded.name, dataset=str(config.dataset), split=config.test_split,
        protocol={"checkpoint": loaded.source, "mode": config.mode, "train_split": config.train_split,
                  "train_images": len(data.protocol.train), "test_images": len(data.protocol.test),
                  "image_size": image_size, "epochs": config.epochs, "seeds": list(config.seeds),
                  "augment": config.augment, "calibration": data.protocol.calibration_source},
    )
    for entry, spec in zip(evaluation.entries, runs[0]):
        name = spec.spec.name
        metrics[f"top1_{name}"], metrics[f"top1_{name}_std"] = entry.linear_top1, entry.linear_top1_std
        metrics[f"mac_fraction_{name}"] = entry.mac_fraction
    if gated:
        metrics.update(budget=target, mac_fraction=metrics["mac_fraction_gated"])
    checksum = torch.stack([p.detach().double().sum() for p in unwrapped.parameters()]).sum()
    gathered = accelerator.gather(checksum.reshape(1).to(accelerator.device))
    metrics["ranks_in_sync"] = bool(torch.all(gathered == gathered[0]).item())

    # ---- export: timm classifier + every head, results for the model card, metrics
    if accelerator.is_main_process:
        train = data.protocol.train
        export_classifier(backbone, heads, "gated" if gated else "vanilla", output_dir,
                          data_config=eval_data_config(image_size=image_size, mean=train.mean, std=train.std))
        write_json(output_dir / "results.json", evaluation.to_dict())
        write_json(output_dir / "metrics.json", metrics)
        print(evaluation.to_markdown())
        print("final: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    accelerator.end_training()


def cli(argv: list[str] | None = None) -> int:
    """``main`` with bad input reported as one ``error: ...`` line on stderr (exit status 2)."""
    return exit_status(main, argv)


if __name__ == "__main__":
    run_main(main, hard_exit=True)  # os._exit: gloo may abort at interpreter exit after the work is done
