"""Publish a co-trained checkpoint to the Hugging Face Hub, in timm's format, with a model card.

What is uploaded, in ONE commit (a second push replaces every file, the card included):

- ``config.json`` and ``model.safetensors``, as written by :func:`timm.models.save_for_hf` (the gate
  configuration and the calibrated budgets travel in ``config.json``'s ``model_args``), so that
  ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` rebuilds the same gated model after
  ``import timm_gated_ssl``;
- ``README.md``, built by :func:`~timm_gated_ssl.hub.card.build_model_card`;
- ``results.json`` (the evaluation results) and ``tradeoff.png`` when they exist.

timm's own ``push_to_hf_hub`` is not used: it keeps a stale README on a second push and writes a
card of its own.

Example:
    >>> result = push_to_hub("runs/vicreg_cifar10/export", "my-org/gated-resnet18-cifar10",
    ...                      results="runs/vicreg_cifar10/results.json")  # doctest: +SKIP
    >>> result.commit_url  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from torch import nn

from .card import TRADEOFF_PLOT, ResultsLike, build_model_card, load_results
from .errors import (
    CheckpointError,
    HubAuthError,
    HubError,
    HubRepoNotFoundError,
    MissingTokenError,
    network_error,
)
from .ids import check_repo_id

__all__ = ["MANAGED_FILES", "PushResult", "check_repo_id", "push_to_hub", "stage_checkpoint"]

WEIGHTS_FILES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
"""Weight files a checkpoint directory may hold, in order of preference (timm's)."""
RESULTS_FILE = "results.json"
MANAGED_FILES: tuple[str, ...] = ("config.json", "README.md", RESULTS_FILE, TRADEOFF_PLOT,
                                  *WEIGHTS_FILES)
"""Files a push owns in the repository: one that a new push does not provide is deleted."""

ModelOrDir = nn.Module | str | os.PathLike


@dataclass(frozen=True)
class PushResult:
    """What a push did.

    Attributes:
        repo_id: ``namespace/name``.
        repo_url: URL of the repository.
        revision: Branch the commit went to.
        commit_oid: Id of the new commit.
        commit_url: URL of the new commit.
        files: Files uploaded (paths in the repository).
        deleted: Files of an earlier push that this push removed (e.g. a plot no longer shipped).
    """

    repo_id: str
    repo_url: str
    revision: str
    commit_oid: str
    commit_url: str
    files: tuple[str, ...]
    deleted: tuple[str, ...] = ()


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise CheckpointError(
            f"{path} is not a timm config.json (no 'architecture'); write the checkpoint with "
            "timm.models.save_for_hf(model, DIR, safe_serialization=True)"
        )
    return config


def _stage_model(model: nn.Module, folder: Path) -> None:
    from timm.models import save_for_hf

    if not hasattr(model, "pretrained_cfg"):
        raise CheckpointError(
            f"{type(model).__name__} is not a timm model (no pretrained_cfg); create it with "
            "timm.create_model(...) after `import timm_gated_ssl`"
        )
    calibrated = getattr(model, "calibrated_budgets", None)
    extra = {"calibrated_budgets": dict(calibrated)} if calibrated else None
    save_for_hf(model, folder, model_args=extra, safe_serialization=True)


def _stage_dir(checkpoint: Path, folder: Path) -> None:
    if not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint directory {checkpoint} does not exist")
    weights = next((checkpoint / n for n in WEIGHTS_FILES if (checkpoint / n).is_file()), None)
    if weights is None:
        raise CheckpointError(
            f"no weights in {checkpoint}: expected one of {', '.join(WEIGHTS_FILES)} (write them "
            "with timm.models.save_for_hf(model, DIR, safe_serialization=True)); nothing was uploaded"
        )
    if not (checkpoint / "config.json").is_file():
        raise CheckpointError(f"no config.json in {checkpoint}; nothing was uploaded")
    _read_config(checkpoint / "config.json")
    _check_weights(weights)
    for name in ("config.json", weights.name, TRADEOFF_PLOT, RESULTS_FILE):
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, folder / name)


def _check_weights(path: Path) -> None:
    """Refuse weights that cannot be read back (truncated, damaged): they would upload fine and
    fail for everyone who downloads them."""
    from ..errors import DamagedFileError
    from ..files import check_safetensors

    try:
        if path.suffix == ".safetensors":
            if not check_safetensors(path):
                raise DamagedFileError(f"{path} holds no tensors")
        else:
            import torch

            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged file
                raise DamagedFileError(f"{path} is damaged or truncated and cannot be read ({err})") from None
    except DamagedFileError as err:
        raise CheckpointError(f"{err}; nothing was uploaded") from None


def stage_checkpoint(
    model_or_checkpoint_dir: ModelOrDir,
    folder: str | os.PathLike,
    *,
    repo_id: str,
    results: ResultsLike | None = None,
    datasets: Sequence[str] = (),
    license: str = "apache-2.0",
    ssl_method: str | None = None,
) -> tuple[str, ...]:
    """Write everything a push uploads into ``folder``; no network. Returns the file names.

    Args:
        model_or_checkpoint_dir: A timm model, or a directory with ``config.json`` and
            ``model.safetensors`` (optionally ``results.json`` and ``tradeoff.png``).
        folder: An existing, empty directory.
        repo_id: ``namespace/name`` (for the card).
        results: Evaluation results; defaults to the checkpoint directory's ``results.json``.
        datasets: Pretraining datasets for the card.
        license: Licence of the weights.
        ssl_method: Self-supervised objective, for the card.

    Raises:
        CheckpointError: If the model or directory cannot be published.
    """
    folder = Path(folder)
    if isinstance(model_or_checkpoint_dir, nn.Module):
        _stage_model(model_or_checkpoint_dir, folder)
    else:
        _stage_dir(Path(model_or_checkpoint_dir), folder)
    config = _read_config(folder / "config.json")
    if results is None and (folder / RESULTS_FILE).is_file():
        results = folder / RESULTS_FILE
    if results is not None:
        try:
            evaluation = load_results(results)
        except (OSError, ValueError, TypeError) as err:
            raise CheckpointError(f"cannot use the evaluation results: {err}") from None
        (folder / RESULTS_FILE).write_text(json.dumps(evaluation.to_dict(), indent=2) + "\n")
        results = evaluation
    card = build_model_card(
        repo_id=repo_id,
        architecture=config["architecture"],
        model_args=config.get("model_args") or {},
        results=results,
        datasets=datasets,
        license=license,
        ssl_method=ssl_method,
        tradeoff_plot=TRADEOFF_PLOT if (folder / TRADEOFF_PLOT).is_file() else None,
        init_from=config.get("init_from"),
    )
    card.save(folder / "README.md")
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_file()))


def _hub_error(err: HfHubHTTPError, repo_id: str, revision: str) -> HubError:
    """Translate a ``huggingface_hub`` HTTP error into one of ours, with a message that says what to do."""
    status = err.response.status_code if err.response is not None else None
    detail = f" (Hub said: {err.server_message.strip()})" if err.server_message else ""
    if isinstance(err, RevisionNotFoundError):
        return HubRepoNotFoundError(f"branch {revision!r} of {repo_id} not found (404){detail}")
    if isinstance(err, (RepositoryNotFoundError, EntryNotFoundError)) or status == 404:
        return HubRepoNotFoundError(
            f"repository {repo_id} not found or not visible with this token (404){detail}; check "
            "the repo id and that the token can write to its namespace")
    if status == 401:
        return HubAuthError(
            f"the Hub rejected the token (401){detail}; set a valid write token in HF_TOKEN or run "
            "`hf auth login` (formerly `huggingface-cli login`)")
    if status == 403:
        return HubAuthError(
            f"the token may not write to {repo_id} (403){detail}; use a token with write access "
            "to that user or organisation")
    return HubError(f"pushing to {repo_id} failed with HTTP {status}{detail}")


def push_to_hub(
    model_or_checkpoint_dir: ModelOrDir,
    repo_id: str,
    *,
    results: ResultsLike | None = None,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    datasets: Sequence[str] = (),
    license: str = "apache-2.0",
    ssl_method: str | None = None,
) -> PushResult:
    """Upload a co-trained checkpoint and its model card to the Hub in one commit.

    Everything local is checked first (repo id, weights, config, results, token), so bad input
    fails before any network call; the checkpoint directory is only read, never written.

    Args:
        model_or_checkpoint_dir: A timm model (saved with :func:`timm.models.save_for_hf`) or a
            directory holding ``config.json`` and ``model.safetensors`` (plus optional
            ``results.json`` and ``tradeoff.png``).
        repo_id: ``namespace/name`` of the model repository; created if missing.
        results: Evaluation results for the card's ``model-index`` (an ``EvaluationResult``, its
            ``to_dict()``, or a JSON path); defaults to the directory's ``results.json``.
        private: Create the repository as private (an existing one keeps its visibility).
        token: Hugging Face write token; defaults to ``HF_TOKEN`` or the saved login.
        revision: Branch to commit to (created from ``main`` if missing); default ``main``.
        commit_message: Commit title; a default names the architecture.
        datasets: Pretraining datasets listed in the card.
        license: Licence of the weights, for the card.
        ssl_method: Self-supervised objective (e.g. ``"vicreg"``), for the card.

    Returns:
        A :class:`PushResult` with the repository URL, the commit and the files.

    Raises:
        InvalidRepoIdError: ``repo_id`` is not ``namespace/name``.
        CheckpointError: No weights or config, or unreadable results.
        MissingTokenError: No token given and none configured.
        HubAuthError: The Hub rejected the token (401) or refused the write (403).
        HubRepoNotFoundError: The repository or branch is not visible to the token (404).
        HubOfflineError: ``HF_HUB_OFFLINE`` is set.
        HubConnectionError: The Hub cannot be reached.
        HubError: Any other Hub failure.
    """
    check_repo_id(repo_id)
    branch = revision or "main"
    with tempfile.TemporaryDirectory(prefix="timm_gated_ssl_push_") as tmp:
        staged = stage_checkpoint(model_or_checkpoint_dir, tmp, repo_id=repo_id, results=results,
                                  datasets=datasets, license=license, ssl_method=ssl_method)
        token = token or get_token()
        if not token:
            raise MissingTokenError(
                "pushing to the Hub needs a write token: pass token=..., set the HF_TOKEN "
                "environment variable, or run `hf auth login` (formerly `huggingface-cli login`)")
        architecture = _read_config(Path(tmp) / "config.json")["architecture"]
        api = HfApi(token=token)
        try:
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
            if branch != "main":
                api.create_branch(repo_id, branch=branch, exist_ok=True)
            existing = set(api.list_repo_files(repo_id, revision=branch))
            stale = tuple(sorted(n for n in MANAGED_FILES if n in existing and n not in staged))
            operations: list[CommitOperationAdd | CommitOperationDelete] = [
                CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(tmp) / name))
                for name in staged
            ]
            operations += [CommitOperationDelete(path_in_repo=name) for name in stale]
            info = api.create_commit(
                repo_id, operations=operations, revision=branch,
                commit_message=commit_message or f"Upload {architecture} with timm_gated_ssl",
            )
        except HfHubHTTPError as err:
            raise _hub_error(err, repo_id, branch) from None
        except Exception as err:
            translated = network_error(err, action=f"pushing to {repo_id}")
            if translated is None:
                raise
            raise translated from None
    return PushResult(repo_id=repo_id, repo_url=str(repo_url), revision=branch,
                      commit_oid=info.oid, commit_url=info.commit_url, files=staged, deleted=stale)
