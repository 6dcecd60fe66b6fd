"""Publish a co-trained checkpoint on the Hugging Face Hub, with its model card.

    python recipes/push_to_hub.py --checkpoint runs/vicreg_cifar10/export \
        --repo_id my-org/gated-resnet18-cifar10 --results runs/vicreg_cifar10/results.json

The checkpoint directory holds ``config.json`` and ``model.safetensors`` as written by
``timm.models.save_for_hf(model, DIR, safe_serialization=True)``, and optionally ``results.json``
(``EvaluationResult.to_dict()``) and ``tradeoff.png``. The token comes from ``--token``,
``HF_TOKEN`` or ``hf auth login``. See docs/hub.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from timm_gated_ssl.cli import exit_status, run_main
from timm_gated_ssl.hub import push_to_hub


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="directory with config.json + weights")
    parser.add_argument("--repo_id", required=True, help="namespace/name of the Hub repository")
    parser.add_argument("--results", default=None, help="results.json (EvaluationResult.to_dict())")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", default=None, help="write token (default: HF_TOKEN or login)")
    parser.add_argument("--revision", default=None, help="branch to push to (default: main)")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--dataset", action="append", default=[], help="pretraining dataset")
    parser.add_argument("--ssl_method", default=None, help="e.g. vicreg, for the card")
    parser.add_argument("--license", default="apache-2.0")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = push_to_hub(
        args.checkpoint, args.repo_id, results=args.results, private=args.private,
        token=args.token, revision=args.revision, commit_message=args.commit_message,
        datasets=args.dataset, license=args.license, ssl_method=args.ssl_method,
    )
    print(f"pushed {', '.join(result.files)} to {result.repo_url} ({result.revision})")
    if result.deleted:
        print(f"removed stale files: {', '.join(result.deleted)}")
    print(f"commit: {result.commit_url}")
    print(f'load with: timm.create_model("hf-hub:{result.repo_id}", pretrained=True) '
          "after `import timm_gated_ssl`")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """``main`` with bad input reported as one ``error: ...`` line on stderr (exit status 2)."""
    return exit_status(main, argv)


if __name__ == "__main__":
    run_main(main)
