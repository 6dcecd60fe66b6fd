"""Model cards for co-trained dense + gated checkpoints.

The card is built with ``huggingface_hub``'s :class:`~huggingface_hub.ModelCard`,
:class:`~huggingface_hub.ModelCardData` and :class:`~huggingface_hub.EvalResult`, so the Hub indexes
it: ``library_name: timm``, tags, datasets, licence and a ``model-index`` with one metric per mode
and budget (linear-probe and k-NN top-1, MACs per image, FLOPs reduction ``1 - F_g / F_d``, as in
Table 1 of Krishna et al., "Unifying Synergies between Self-supervised Learning and Dynamic
Computation", BMVC 2023, arXiv:2301.09164). The body has a budget table, the trade-off plot when
one is shipped, a usage snippet and the paper's citation.

Example:
    >>> card = build_model_card(repo_id="my-org/gated-resnet18-cifar10",
    ...                         architecture="gated_resnet18_cifar", results=None)
    >>> card.data.library_name
    'timm'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..results import EvaluationResult

if TYPE_CHECKING:
    from ..results import ModeEvaluation

__all__ = ["BIBTEX", "TRADEOFF_PLOT", "ResultsLike", "build_model_card", "load_results"]

ResultsLike = Union["EvaluationResult", Mapping[str, Any], str, os.PathLike]
"""An :class:`~timm_gated_ssl.results.EvaluationResult`, its ``to_dict()``, or a JSON file of it."""

TRADEOFF_PLOT = "tradeoff.png"
"""File name of the accuracy/compute trade-off plot, in a checkpoint directory and in the repo."""

BIBTEX = """@inproceedings{krishna2023unifying,
  title     = {Unifying Synergies between Self-supervised Learning and Dynamic Computation},
  author    = {Krishna, Tarun and Rai, Ayush K. and Drimbarean, Alexandru and Arazo, Eric and
               Albert, Paul and Smeaton, Alan F. and McGuinness, Kevin and O'Connor, Noel E.},
  booktitle = {British Machine Vision Conference (BMVC)},
  year      = {2023},
  eprint    = {2301.09164},
  archivePrefix = {arXiv},
}"""

BASE_TAGS: tuple[str, ...] = (
    "timm", "image-feature-extraction", "self-supervised", "dynamic-computation",
    "channel-gating", "conditional-computation", "timm_gated_ssl", "arxiv:2301.09164",
)

# Hub dataset ids of the datasets the paper uses, where one is known; others are used verbatim.
_HUB_DATASETS: dict[str, tuple[str, str]] = {
    "cifar10": ("uoft-cs/cifar10", "CIFAR-10"),
    "cifar100": ("uoft-cs/cifar100", "CIFAR-100"),
    "stl10": ("stl10", "STL-10"),
    "imagenet100": ("imagenet100", "ImageNet-100"),
    "imagenet": ("ILSVRC/imagenet-1k", "ImageNet-1k"),
}
_TASK_TYPE = "image-classification"
_TASK_NAME = "Image classification on frozen features (linear probe, k-NN)"


def _dataset_ids(name: str) -> tuple[str, str]:
    """``(hub dataset id, pretty name)`` for a dataset name such as ``"cifar10"`` or ``"CIFAR-10"``."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return _HUB_DATASETS.get(key, (name, name))


def load_results(results: ResultsLike) -> EvaluationResult:
    """Normalise evaluation results to an :class:`~timm_gated_ssl.results.EvaluationResult`.

    Args:
        results: An ``EvaluationResult``, the dict of its ``to_dict()``, or the path of a JSON file
            holding that dict.

    Raises:
        ValueError: If the dict or file does not follow the ``EvaluationResult`` schema, or the file
            is not JSON; a file's message names it.
        TypeError: If ``results`` is none of the three.
    """
    if isinstance(results, EvaluationResult):
        return results
    if isinstance(results, (str, os.PathLike)):
        path, hint = Path(results), "pass the results.json that recipes/evaluate.py --output_dir writes"
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a JSON file ({err}); {hint}") from None
        if not isinstance(data, Mapping):  # a bad file content, not a bad argument type: ValueError
            raise ValueError(f"{path} holds a JSON {type(data).__name__}, not evaluation results; {hint}")  # noqa: TRY004
        try:
            return EvaluationResult.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} does not hold evaluation results ({err}); {hint}") from None
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be an EvaluationResult, a dict or a JSON path, got {results!r}")
    return EvaluationResult.from_dict(results)


def _label(entry: ModeEvaluation) -> tuple[str, str]:
    """``(metric config, readable label)`` of one entry, e.g. ``("gated-t0.3", "gated, t_d=0.3")``.

    A calibrated entry is ``"gated-calibrated-t0.3"``: a run trained at t_d = 0.3 and also
    calibrated to 0.3 has two different operating points, which must not share one config name.
    """
    if entry.budget is None:
        return entry.mode, entry.mode
    if entry.calibrated:
        return (f"{entry.mode}-calibrated-t{entry.budget:g}",
                f"{entry.mode}, calibrated to t_d={entry.budget:g}")
    return f"{entry.mode}-t{entry.budget:g}", f"{entry.mode}, t_d={entry.budget:g}"


def _eval_results(results: EvaluationResult) -> list[EvalResult]:
    """One :class:`EvalResult` per metric of every entry (accuracies in %, MACs per image)."""
    hub_id, pretty = _dataset_ids(results.dataset)
    top1 = str(results.protocol.get("top1_name", "Linear-probe top-1"))  # e.g. a fine-tuned run's
    out: list[EvalResult] = []
    for entry in results.entries:
        config, label = _label(entry)
        metrics: list[tuple[str, str, float | None]] = [
            ("accuracy", f"{top1} (%) [{label}]", entry.linear_top1),
            ("accuracy", f"k-NN top-1 (%, k=20) [{label}]", entry.knn_top1),
            ("accuracy", f"1-NN top-1 (%) [{label}]", entry.knn1_top1),
            ("macs", f"MACs per image [{label}]", entry.macs),
            ("mac_fraction", f"MAC fraction of dense [{label}]", entry.mac_fraction),
            ("flops_reduction",
             f"FLOPs reduction (%) [{label}]",
             None if entry.flops_reduction is None else round(100.0 * entry.flops_reduction, 4)),
        ]
        for metric_type, name, value in metrics:
            if value is None:
                continue
            out.append(EvalResult(
                task_type=_TASK_TYPE, task_name=_TASK_NAME, dataset_type=hub_id,
                dataset_name=pretty, dataset_split=results.split, metric_type=metric_type,
                metric_value=value, metric_name=name, metric_config=config,
            ))
    return out


def _gate_section(architecture: str, model_args: Mapping[str, Any], init_from: str | None) -> list[str]:
    lines = ["## Model", "",
             f"- Architecture: `{architecture}` (registered in timm by `import timm_gated_ssl`)"]
    if init_from:
        lines.append(f"- Initialised from: `{init_from}` (its weights started the dense path; the gates "
                     "were trained post hoc, `recipes/pretrain.py --init_from`)")
    if "budget" in model_args:
        lines.append(f"- Training budget `t_d`: {model_args['budget']}")
    if "separate_bn" in model_args:
        lines.append(f"- Separate BatchNorm per mode: {model_args['separate_bn']}")
    calibrated = model_args.get("calibrated_budgets") or {}
    if calibrated:
        budgets = ", ".join(f"{float(b):g}" for b in sorted(calibrated, key=float))
        lines.append(f"- Calibrated budgets (pass one as `budget=`): {budgets}")
    return lines + [""]


def _usage(repo_id: str, budget: float | None) -> list[str]:
    budget_arg = "" if budget is None else f", budget={budget:g}"
    return [
        "## Usage", "",
        "```python",
        "import timm",
        "import timm_gated_ssl  # registers the gated architectures in timm",
        "",
        f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True{budget_arg}).eval()',
        "with timm_gated_ssl.gate_mode(model, \"gated\"):  # or \"dense\"",
        "    features = model.forward_features(images)",
        "```", "",
        ("Without `import timm_gated_ssl`, timm does not know the architecture and fails with "
         "`Unknown model`."), "",
    ]


def build_model_card(
    *,
    repo_id: str,
    architecture: str,
    model_args: Mapping[str, Any] | None = None,
    results: ResultsLike | None = None,
    datasets: Sequence[str] = (),
    license: str = "apache-2.0",
    ssl_method: str | None = None,
    tradeoff_plot: str | None = None,
    tags: Sequence[str] = (),
    init_from: str | None = None,
) -> ModelCard:
    """Build the model card (``README.md``) of a co-trained dense + gated checkpoint.

    Args:
        repo_id: ``namespace/name`` of the repository; used for the title and the usage snippet.
        architecture: timm architecture name from ``config.json`` (e.g. ``"gated_resnet18_cifar"``).
        model_args: ``config.json`` ``model_args`` (budget, separate_bn, calibrated_budgets...).
        results: Evaluation results (see :func:`load_results`); ``None`` gives a card without
            numbers.
        datasets: Dataset names used for pretraining; the results' dataset is added.
        license: SPDX-style licence id for the weights.
        ssl_method: Self-supervised objective, e.g. ``"vicreg"``; added as a tag and to the text.
        tradeoff_plot: Path, inside the repository, of the trade-off plot to show.
        tags: Extra tags.
        init_from: The encoder the run started from (``config.json``'s ``init_from``, recorded by
            ``recipes/pretrain.py --init_from``); ``None`` for a run from scratch.

    Returns:
        A :class:`~huggingface_hub.ModelCard`; ``str(card)`` is the README text.
    """
    model_args = dict(model_args or {})
    evaluation = load_results(results) if results is not None else None
    dataset_ids = [_dataset_ids(name)[0] for name in datasets]
    if evaluation is not None and _dataset_ids(evaluation.dataset)[0] not in dataset_ids:
        dataset_ids.append(_dataset_ids(evaluation.dataset)[0])
    all_tags = list(dict.fromkeys([*BASE_TAGS, *([ssl_method.lower()] if ssl_method else []), *tags]))
    name = repo_id.split("/")[-1]
    data = ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification" if model_args.get("num_classes") else "image-feature-extraction",
        license=license,
        tags=all_tags,
        datasets=dataset_ids or None,
        model_name=name,
        eval_results=_eval_results(evaluation) if evaluation and evaluation.entries else None,
    )

    method = f" with {ssl_method}" if ssl_method else ""
    body = [
        f"# {name}", "",
        (f"One `{architecture}` encoder pretrained{method} in two modes at once, a dense mode and "
         "a gated mode in which small per-block gates switch intermediate channels off per input, "
         "as in Krishna et al., *Unifying Synergies between Self-supervised Learning and Dynamic "
         "Computation*, BMVC 2023 ([arXiv:2301.09164](https://arxiv.org/abs/2301.09164)). "
         "The same weights give a dense encoder and a cheaper gated one."), "",
        *_gate_section(architecture, model_args, init_from),
        "## Results", "",
    ]
    if evaluation is not None and evaluation.entries:
        body += [
            evaluation.to_markdown(), "",
            ("MACs count convolution multiply-accumulates only (stem, blocks, downsample and "
             "gates); FLOPs reduction is `1 - F_gated / F_dense`, measured on the test set with "
             "deterministic gates."), "",
        ]
        if any(e.mode == "fixed" for e in evaluation.entries):
            body += [("`fixed` rows: a plain timm model (no gates) exported from these weights at that "
                      "fraction of the dense MACs with `timm_gated_ssl.export_at_budget`; it costs the "
                      "same for every input, so it runs at that cost on any runtime (ONNX, TensorRT)."), ""]
    else:
        body += ["No evaluation results were published with this checkpoint.", ""]
    if tradeoff_plot:
        body += ["## Accuracy / compute trade-off", "", f"![accuracy vs compute]({tradeoff_plot})", ""]
    calibrated = model_args.get("calibrated_budgets") or {}
    example = min((float(b) for b in calibrated), default=model_args.get("budget"))
    body += _usage(repo_id, example)
    body += ["## Citation", "", "```bibtex", BIBTEX, "```", ""]

    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
