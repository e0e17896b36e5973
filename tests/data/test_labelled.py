"""The pool of labelled images the Caltech protocol draws its splits from."""

from __future__ import annotations

import shutil

import pytest

from zfnet.data.labelled import open_labelled_images
from zfnet.errors import DataError


def test_folder_pool_without_train_split(secondary_data, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(secondary_data / "train", flat)
    ds = open_labelled_images(flat, "folders", 73)
    pooled = open_labelled_images(secondary_data, "folders", 73)
    assert ds.classes == pooled.classes and len(ds) == 6 * 40 and len(pooled) == 6 * 50
    with pytest.raises(DataError, match="unknown layout|no single-label"):
        open_labelled_images(secondary_data, "imagenet", 73)
    with pytest.raises(DataError, match="does not exist"):
        open_labelled_images(tmp_path / "missing", "folders", 73)
