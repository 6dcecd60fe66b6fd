"""Image folders and splits: bad images, missing splits and empty folders are named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from timm_gated_ssl.data import EvalDataset, build_eval_transform, load_image_dataset
from timm_gated_ssl.data.wrappers import DecodedImages
from timm_gated_ssl.errors import DataError, UnknownSplitError


def _folder(root: Path, *, bad: tuple[str, ...] = ()) -> Path:
    for label in ("cat", "dog"):
        (root / "train" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (12, 12), (40 * i, 90, 0)).save(root / "train" / label / f"{i}.png")
    good = (root / "train" / "cat" / "0.png").read_bytes()
    for name in bad:
        (root / name).write_bytes(good[: len(good) // 2] if name.endswith("cut.png") else b"not an image")
    return root


@pytest.mark.parametrize("cache", [True, False], ids=["decoded", "verified"])
def test_bad_images_are_all_named_before_use(tmp_path: Path, cache: bool) -> None:
    root = _folder(tmp_path / "data", bad=("train/cat/junk.png", "train/dog/cut.png"))
    info = load_image_dataset(str(root), split="train")
    images = DecodedImages(info.dataset, image_column=info.image_column, cache_decoded=cache)
    with pytest.raises(DataError, match=r"2 of 8 images cannot be decoded: .*cat/junk\.png.*dog/cut\.png") as err:
        images.decode_all()
    assert "\n" not in str(err.value)


def test_decoding_error_mid_epoch_names_the_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", bad=("train/cat/junk.png",))
    info = load_image_dataset(str(root), split="train")
    dataset = EvalDataset(info.dataset, build_eval_transform(image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3),
                          image_column=info.image_column, label_column=info.label_column)
    bad = next(i for i in range(len(dataset)) if "junk" in str(info.dataset.cast_column(
        "image", __import__("datasets").Image(decode=False))[i]["image"]["path"]))
    with pytest.raises(DataError, match=r"cannot decode image .*junk\.png \(row \d+\)"):
        dataset[bad]


def test_missing_split_lists_the_splits(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data")
    with pytest.raises(UnknownSplitError, match=rf"image folder {root} has no split 'test'; it has: train") as err:
        load_image_dataset(str(root), split="test")
    assert err.value.available == ["train"] and err.value.split == "test"
    with pytest.raises(UnknownSplitError, match="digits dataset has no split 'val'; it has: test, train"):
        load_image_dataset("digits", split="val")


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match=rf"image folder {tmp_path} holds no images \("):
        load_image_dataset(str(tmp_path), split="train")


def test_image_size_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="image_size must be an integer >= 1"):
        load_image_dataset("digits", split="train", image_size=0)


@pytest.mark.parametrize("bad", [-1, 2.5])
def test_a_label_that_is_no_class_index_names_its_row(bad: float) -> None:
    import datasets

    labels = [0, 1, bad, 1]
    ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (4, 4))] * 4, "label": labels})
    with pytest.raises(DataError, match=rf"label {bad!r} in column 'label' at row 2 is not a class index"):
        load_image_dataset(ds)
