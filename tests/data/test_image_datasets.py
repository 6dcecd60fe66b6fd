"""load_image_dataset, the embedded digits, Fashion-MNIST IDX reading and the torch wrappers."""

from __future__ import annotations

import gzip
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from timm_gated_ssl.data import (
    DATASET_PRESETS,
    IMAGENET_MEAN,
    EvalDataset,
    SSLBatchDataset,
    build_eval_transform,
    build_ssl_views,
    detect_columns,
    load_digits_dataset,
    load_fashion_mnist,
    load_image_dataset,
)
from timm_gated_ssl.data.fashion_mnist import FASHION_MNIST_DIR, read_idx


def test_digits_sizes_labels_and_split() -> None:
    from sklearn.datasets import load_digits

    ref = load_digits()
    dd = load_digits_dataset()
    assert len(dd["train"]) == 1500 and len(dd["test"]) == 297
    assert dd["train"].features["label"].names == [str(i) for i in range(10)]
    assert dd["train"]["label"] == ref.target[:1500].tolist()
    assert dd["test"]["label"] == ref.target[1500:].tolist()
    img = dd["test"][5]["image"]
    assert img.mode == "RGB" and img.size == (32, 32)
    # Box-averaging back to 8x8 recovers the original 0..16 digit up to interpolation error.
    back = np.asarray(img.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=np.float64)
    assert np.abs(back - ref.images[1505] * 255 / 16).mean() < 20


def test_digits_preset_metadata() -> None:
    info = load_image_dataset("digits", split="train")
    assert (info.image_column, info.label_column, info.num_classes) == ("image", "label", 10)
    assert info.image_size == 32 and len(info) == 1500
    arr = np.stack([np.asarray(r["image"]) for r in info.dataset.select(range(300))]) / 255
    assert abs(arr.mean() - info.mean[0]) < 0.05 and abs(arr.std() - info.std[0]) < 0.05
    with pytest.raises(
        ValueError, match=r"the digits dataset has no split 'val'; it has: test, train"
    ):
        load_image_dataset("digits", split="val")


def test_read_idx_hand_written(tmp_path: Path) -> None:
    data = np.arange(12, dtype=np.uint8).reshape(2, 3, 2)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(header + data.tobytes())
    np.testing.assert_array_equal(read_idx(path), data)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(ValueError, match="not a uint8 IDX file"):
        read_idx(bad)


def test_fashion_mnist_missing_files_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        load_fashion_mnist("validation", tmp_path)


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_preset() -> None:
    info = load_image_dataset("fashion-mnist", split="test")
    assert len(info) == 10_000 and info.num_classes == 10 and info.image_size == 28
    first = info.dataset[0]
    assert first["image"].mode == "L" and first["image"].size == (28, 28)
    assert info.dataset.features["label"].names[9] == "Ankle boot"
    assert np.bincount(info.dataset["label"]).tolist() == [1000] * 10


def _write_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    modes_sizes = [("RGB", (20, 30)), ("L", (17, 17)), ("P", (40, 25)), ("RGBA", (33, 21))]
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i, (mode, (w, h)) in enumerate(modes_sizes):
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
            img.save(root / cls / f"{i}.png")


def test_imagefolder_with_mixed_modes_and_sizes(tmp_path: Path) -> None:
    _write_folder(tmp_path / "imgs")
    info = load_image_dataset(tmp_path / "imgs", split="train")
    assert (info.image_column, info.label_column, info.num_classes) == ("image", "label", 2)
    assert info.mean == IMAGENET_MEAN and info.image_size == 224 and len(info) == 8
    views = build_ssl_views(crop_size=16, mean=info.mean, std=info.std)
    loader = DataLoader(SSLBatchDataset(info.dataset, views), batch_size=8)
    v1, v2 = next(iter(loader))
    assert v1.shape == v2.shape == (8, 3, 16, 16) and v1.dtype == torch.float32
    ev = EvalDataset(
        info.dataset, build_eval_transform(image_size=16, mean=info.mean, std=info.std)
    )
    images, labels = next(iter(DataLoader(ev, batch_size=8)))
    assert images.shape == (8, 3, 16, 16)
    assert sorted(labels.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_from_dict_column_detection() -> None:
    pics = [Image.new("L", (8 + i, 8), color=i * 40) for i in range(4)]
    ds = datasets.Dataset.from_dict({"id": [0, 1, 2, 3], "picture": pics, "target": list("abba")})
    assert detect_columns(ds.features) == ("picture", None)
    info = load_image_dataset(ds, label_column="target", image_size=8)
    assert info.label_column == "target" and info.num_classes == 2 and info.image_size == 8
    assert info.dataset.features["target"].names == ["a", "b"]
    ds2 = datasets.Dataset.from_dict({"img": pics, "labels": [0, 3, 1, 1]})
    info2 = load_image_dataset(ds2)
    assert (info2.image_column, info2.label_column, info2.num_classes) == ("img", "labels", 4)
    ev = EvalDataset(
        info2.dataset,
        build_eval_transform(image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3),
        image_column="img",
        label_column="labels",
        cache_decoded=True,
    )
    assert [ev[i][1] for i in range(4)] == [0, 3, 1, 1]
    assert ev[0][0].shape == (3, 8, 8)
    unlabeled = EvalDataset(
        ds2,
        build_eval_transform(image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3),
        image_column="img",
        label_column=None,
    )
    assert unlabeled[2][1] == -1


def test_ssl_dataset_per_sample_randomness_and_cache() -> None:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 12, 3), dtype=np.uint8))
    rows = [{"image": img}, {"image": img}]
    ds = SSLBatchDataset(
        rows, build_ssl_views(crop_size=8, mean=(0.5,) * 3, std=(0.5,) * 3), cache_decoded=True
    )
    v1, _ = next(iter(DataLoader(ds, batch_size=2)))
    assert not torch.equal(v1[0], v1[1])  # same image, different random parameters


def test_errors() -> None:
    ds = datasets.Dataset.from_dict({"a": [1, 2], "b": ["x", "y"]})
    with pytest.raises(ValueError, match=r"no image column.*\['a', 'b'\]"):
        load_image_dataset(ds)
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar11'.*'cifar10'.*'stl10'"):
        load_image_dataset("cifar11")
    with pytest.raises(ValueError, match="imagenet100.*data_dir= or hub_id="):
        load_image_dataset("imagenet100")
    with pytest.raises(ValueError, match=r"image_column='photo' is not a column"):
        detect_columns(datasets.Features({"x": datasets.Image()}), image_column="photo")
    with pytest.raises(ValueError, match="image_column='img' is not a column"):
        SSLBatchDataset([{"image": 1}], lambda x: (x, x), image_column="img")
    assert set(DATASET_PRESETS) == {
        "cifar10",
        "cifar100",
        "stl10",
        "imagenet100",
        "digits",
        "fashion_mnist",
    }
    assert DATASET_PRESETS["stl10"].pretrain_split == "unlabeled"
