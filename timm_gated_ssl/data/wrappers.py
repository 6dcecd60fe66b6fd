"""PyTorch dataset wrappers: two augmented views for SSL, (image, label) pairs for evaluation.

Both take a ``datasets.Dataset`` (or anything indexable returning dict rows) and a transform from
:mod:`timm_gated_ssl.data.views`; the default ``torch.utils.data.default_collate`` then stacks the
float tensors into batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from timm_gated_ssl.data.views import to_rgb_uint8
from timm_gated_ssl.errors import DataError

__all__ = ["DecodedImages", "EvalDataset", "SSLBatchDataset", "image_source"]

_LISTED_BAD = 5  # bad images named in a message (the count covers all)


def image_source(rows: Sequence[dict[str, Any]], image_column: str, index: int) -> str:
    """Where row ``index``'s image comes from: its file path when known, else ``row N``."""
    import datasets

    path = None
    if isinstance(rows, datasets.Dataset) and isinstance(rows.features.get(image_column), datasets.Image):
        raw = rows.cast_column(image_column, datasets.Image(decode=False))[index][image_column]
        path = raw.get("path") if isinstance(raw, dict) else None
    return f"{path} (row {index})" if path else f"row {index}"


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Column names without decoding a row when the rows are a ``datasets.Dataset``."""
    names = getattr(rows, "column_names", None)
    return list(names) if names is not None else list(rows[0])


class _RowDataset(Dataset):
    def __init__(
        self, rows: Sequence[dict[str, Any]], image_column: str, cache_decoded: bool
    ) -> None:
        if len(rows) == 0:
            raise DataError("the dataset is empty")
        self.columns = _columns(rows)
        if image_column not in self.columns:
            raise DataError(f"image_column={image_column!r} is not a column; got {self.columns}")
        self.rows = rows
        self.image_column = image_column
        self._cache: list[Tensor | None] | None = [None] * len(rows) if cache_decoded else None

    def __len__(self) -> int:
        return len(self.rows)

    def _row(self, index: int) -> dict[str, Any]:
        """Row ``index``; an image that cannot be decoded is reported with its file."""
        try:
            return self.rows[index]
        except (OSError, ValueError, SyntaxError) as err:  # PIL's decoding errors (UnidentifiedImageError is an OSError)
            raise DataError(
                f"cannot decode image {image_source(self.rows, self.image_column, index)}: {err}; "
                "remove or replace the file"
            ) from None

    def _decode(self, row: dict[str, Any], index: int) -> Tensor:
        try:
            return to_rgb_uint8(row[self.image_column])
        except (OSError, SyntaxError) as err:  # PIL decodes lazily: a truncated file fails here
            raise DataError(
                f"cannot decode image {image_source(self.rows, self.image_column, index)}: {err}; "
                "remove or replace the file"
            ) from None

    def _image(self, row: dict[str, Any], index: int) -> Tensor:
        if self._cache is None:
            return self._decode(row, index)
        cached = self._cache[index]
        if cached is None:
            cached = self._cache[index] = self._decode(row, index)
        return cached

    def decode_all(self) -> None:
        """Check every image now, so that a bad one fails here, before training, not mid-run.

        With ``cache_decoded=True`` every image is decoded into the cache (later epochs reuse the
        tensors, so this costs no more than the first epoch would have). Without the cache (large
        splits) each file is checked with PIL's ``verify`` instead, which reads it without decoding
        the pixels; a file that passes it and still fails to decode is named when it is reached.

        Raises:
            DataError: Naming the first bad files and counting all of them.
        """
        bad: list[str] = []
        raw = self._raw_images() if self._cache is None else None
        for index in range(len(self.rows)):
            try:
                if raw is None:
                    self._image(self._row(index), index)
                else:
                    _verify(raw[index][self.image_column])
            except (DataError, OSError, ValueError, SyntaxError) as err:
                if raw is not None:
                    err = DataError(f"cannot decode image {image_source(self.rows, self.image_column, index)}: {err}")
                bad.append(str(err).removeprefix("cannot decode image ").split(";")[0])
        if bad:
            listed = "; ".join(bad[:_LISTED_BAD]) + (f"; ... ({len(bad) - _LISTED_BAD} more)" if len(bad) > _LISTED_BAD else "")
            raise DataError(
                f"{len(bad)} of {len(self.rows)} images cannot be decoded: {listed}. Remove or "
                "replace these files before training"
            )


    def _raw_images(self) -> Sequence[dict[str, Any]] | None:
        """The rows with undecoded images (``{"bytes", "path"}``), when they are a ``datasets.Dataset``."""
        import datasets

        if isinstance(self.rows, datasets.Dataset) and isinstance(self.rows.features.get(self.image_column),
                                                                  datasets.Image):
            return self.rows.cast_column(self.image_column, datasets.Image(decode=False))
        return None


def _verify(value: Any) -> None:
    """PIL's structural check of an undecoded ``datasets.Image`` value."""
    import io

    from PIL import Image

    if not isinstance(value, dict):
        return
    source = io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
    if source is None:
        return
    with Image.open(source) as image:
        image.verify()


class SSLBatchDataset(_RowDataset):
    """Yield ``(view1, view2)`` float32 tensors: two augmentations of one image.

    Every ``__getitem__`` draws new random parameters, per sample and per view. Images are decoded
    to RGB uint8 tensors first (any PIL mode or size); with ``cache_decoded=True`` the decoded
    tensors are kept in memory so later epochs skip PNG decoding (small datasets; one cache
    per worker process).

    Args:
        rows: A ``datasets.Dataset`` or a sequence of dict rows.
        transform: A two-view transform, e.g. :func:`~timm_gated_ssl.data.views.build_ssl_views`;
            it receives the uint8 tensor.
        image_column: Column holding the images.
        cache_decoded: Keep decoded uint8 tensors in memory.

    Example:
        >>> info = load_image_dataset("digits", split="train")  # doctest: +SKIP
        >>> ds = SSLBatchDataset(info.dataset, build_ssl_views(crop_size=32, mean=info.mean,
        ...                      std=info.std), image_column=info.image_column)  # doctest: +SKIP
        >>> v1, v2 = next(iter(DataLoader(ds, batch_size=256, drop_last=True)))  # doctest: +SKIP
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        transform: Callable[[Tensor], tuple[Tensor, Tensor]],
        *,
        image_column: str = "image",
        cache_decoded: bool = False,
    ) -> None:
        super().__init__(rows, image_column, cache_decoded)
        self.transform = transform

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(self._image(self._row(index), index))


class DecodedImages(_RowDataset):
    """Yield each row's image as an RGB ``uint8`` ``(3, H, W)`` tensor, for batched augmentation
    (:mod:`~timm_gated_ssl.data.batched_views`). Arguments as :class:`SSLBatchDataset`'s."""

    def __init__(
        self, rows: Sequence[dict[str, Any]], *, image_column: str = "image", cache_decoded: bool = False
    ) -> None:
        super().__init__(rows, image_column, cache_decoded)

    def __getitem__(self, index: int) -> Tensor:
        return self._image(self._row(index), index)


class EvalDataset(_RowDataset):
    """Yield ``(image, label)`` with a deterministic transform, for linear probes and k-NN.

    Args:
        rows: A ``datasets.Dataset`` or a sequence of dict rows.
        transform: E.g. :func:`~timm_gated_ssl.data.views.build_eval_transform`; it receives the
            uint8 tensor.
        image_column: Column holding the images.
        label_column: Column holding integer labels; ``None`` yields label -1.
        cache_decoded: Keep decoded uint8 tensors in memory.
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        transform: Callable[[Tensor], Tensor],
        *,
        image_column: str = "image",
        label_column: str | None = "label",
        cache_decoded: bool = False,
    ) -> None:
        super().__init__(rows, image_column, cache_decoded)
        if label_column is not None and label_column not in self.columns:
            raise DataError(f"label_column={label_column!r} is not a column; got {self.columns}")
        self.transform = transform
        self.label_column = label_column

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        row = self._row(index)
        label = -1 if self.label_column is None else int(row[self.label_column])
        return self.transform(self._image(row, index)), label
