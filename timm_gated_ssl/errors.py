"""Errors raised by timm_gated_ssl, in one place.

Each subclasses the builtin that callers would catch anyway (``ValueError``, ``TypeError``,
``RuntimeError``), so ``except ValueError`` keeps working while ``except GatingError`` catches ours.
"""

from __future__ import annotations


class GatingError(Exception):
    """Base class of every error raised by this library."""


class UnsupportedModelError(GatingError, TypeError):
    """The model has no block family that gates can be attached to."""


class GatesAlreadyAttachedError(GatingError, RuntimeError):
    """``attach_gates`` was called on a model that already carries gates."""


class NoGatesError(GatingError, RuntimeError):
    """An operation that needs gates was given a model without any."""


class InvalidBudgetError(GatingError, ValueError):
    """A compute budget is not a number in (0, 1]."""


class UncalibratedBudgetError(GatingError, KeyError):
    """``set_budget`` asked for a budget the model has not been calibrated for."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


def check_budget(budget: object, *, name: str = "budget") -> float:
    """Validate a compute budget (a fraction of the dense MACs) and return it as a float.

    Args:
        budget: The value to check.
        name: How the value is called in the error message.

    Raises:
        InvalidBudgetError: If ``budget`` is not a real number in (0, 1].
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise InvalidBudgetError(
            f"{name} must be a number in (0, 1] (a fraction of the dense compute), "
            f"got {budget!r} of type {type(budget).__name__}"
        )
    value = float(budget)
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise InvalidBudgetError(
            f"{name} must be in (0, 1] (a fraction of the dense compute), got {budget!r}"
        )
    return value


class CalibrationError(GatingError, ValueError):
    """``calibrate_budget`` cannot meet its request: no calibration data, a target the model cannot
    reach (below the cost of its never-gated layers), or no threshold within the tolerance."""


class ConfigError(GatingError, ValueError):
    """A recipe's configuration is unusable: a malformed YAML file, an unknown key, a value of the
    wrong type or out of range, a model that does not exist or takes other arguments."""


class DataError(GatingError, ValueError):
    """A dataset cannot be used as asked: a split it does not have, a folder without images, an
    image that cannot be decoded."""


class UnknownSplitError(DataError):
    """A dataset has no split of the requested name.

    Attributes:
        split: The requested split.
        available: The splits it has (when known).
    """

    def __init__(self, message: str, *, split: str, available: list[str] | None = None) -> None:
        super().__init__(message)
        self.split = split
        self.available = list(available or [])


class DamagedFileError(GatingError, ValueError):
    """A file this library wrote or reads (weights, a training state) is truncated or damaged."""


class TrainingStateError(GatingError, ValueError):
    """A training state cannot be resumed from exactly: not a state folder, damaged, saved by
    another number of processes, or from a run with other hyperparameters."""


class MissingDependencyError(GatingError, ImportError):
    """An optional dependency is not installed (the message names the extra that brings it)."""


class OutputExistsError(GatingError, FileExistsError):
    """An output would replace a file or folder the user has (refused unless it is ours and
    overwriting was asked for)."""


class InputShapeError(GatingError, ValueError):
    """Images given to an accounting or export function do not have the shape the model takes."""
