"""Data: image folders and ImageNet on disk, the built-in synthetic data set, preprocessing."""

from .folders import IMAGE_EXTENSIONS, LAYOUTS, Batch, ImageFolder, collate, open_dataset
from .images import MAX_IMAGE_PIXELS, image_size, open_image, scan_images
from .loader import ImageStream, mean_image
from .transforms import base_size, center_crop, load_image, random_crops, ten_crops, to_rgb

__all__ = [
    "open_dataset", "ImageFolder", "ImageStream", "Batch", "collate", "mean_image", "LAYOUTS",
    "IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "open_image", "image_size", "scan_images",
    "base_size", "load_image", "to_rgb", "random_crops", "center_crop", "ten_crops",
]
