"""Data for SSL pretraining and evaluation: dataset loading, two-view augmentations, wrappers."""

from timm_gated_ssl.data.datasets import (
    DATASET_PRESETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetPreset,
    ImageDataset,
    detect_columns,
    load_image_dataset,
)
from timm_gated_ssl.data.digits import load_digits_dataset
from timm_gated_ssl.data.fashion_mnist import load_fashion_mnist
from timm_gated_ssl.data.views import (
    TwoViewTransform,
    build_eval_transform,
    build_ssl_view,
    build_ssl_views,
    to_rgb_uint8,
)
from timm_gated_ssl.data.wrappers import EvalDataset, SSLBatchDataset

__all__ = [
    "DATASET_PRESETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetPreset",
    "EvalDataset",
    "ImageDataset",
    "SSLBatchDataset",
    "TwoViewTransform",
    "build_eval_transform",
    "build_ssl_view",
    "build_ssl_views",
    "detect_columns",
    "load_digits_dataset",
    "load_fashion_mnist",
    "load_image_dataset",
    "to_rgb_uint8",
]
