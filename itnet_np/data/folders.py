"""ImageNet-style class folders: ``root/CLASS/IMAGE`` -> (images, labels, classes).

Classes are the sub-directory names (hidden ones, starting with '.', skipped), sorted; label i is ``classes[i]``. Every file with an image
extension (.png .jpg .jpeg .bmp .gif .webp, any case) is read with Pillow (the ``data`` extra),
converted to RGB (or L with ``grayscale=True``) and resized to ``size = (height, width)`` with
bilinear filtering. Files are visited in sorted order, so the result is deterministic.

images: (N, H, W, 3) or (N, H, W, 1) float32 in [0, 1]; labels: (N,) int64; classes: list of str.
"""
import os

import numpy as np

from ..errors import ConfigError, DataError
from .base import check_int
from .digits import require

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _size(size):
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ConfigError(f"size must be (height, width), got {size!r}")
    return check_int("size[0]", size[0], 1), check_int("size[1]", size[1], 1)


def load_image_folder(root, size=(32, 32), grayscale=False):
    """Read a class-folder tree (see the module docstring); DataError names the bad file or folder."""
    image_module = require("PIL.Image", "pillow", "load_image_folder")
    height, width = _size(size)
    if not os.path.isdir(root):
        raise DataError(f"load_image_folder: {root!r} is not a directory")
    classes = sorted(d for d in os.listdir(root)
                     if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise DataError(f"load_image_folder: {root!r} has no class sub-directories (expected root/CLASS/IMAGE)")
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(f"load_image_folder: class folder {folder!r} holds no images "
                            f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        for f in files:
            path = os.path.join(folder, f)
            try:
                with image_module.open(path) as im:
                    im = im.convert("L" if grayscale else "RGB").resize((width, height), image_module.BILINEAR)
                    pixels = np.asarray(im, dtype=np.float32) / 255.0
            except (OSError, ValueError, SyntaxError) as e:  # Pillow reports bad files with these
                raise DataError(f"load_image_folder: cannot read image {path!r}: {e}") from None
            images.append(pixels.reshape(height, width, -1))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes
