"""Frames as pictures: 8-bit pixels for a browser, encoded as JPEG or PNG (Pillow).

Rendering follows PS3.18 8.3.5.1 as far as the header allows: the Modality
and VOI LUTs of the instance (pydicom's, through the reader) where pixels are
not already 8-bit, then the window's range mapped to 0-255.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from dicomframes.server.media import parse_accept

#: picture formats by media type, and the file extension DeepZoom names them by
FORMATS = {"image/jpeg": "jpeg", "image/png": "png"}
MEDIA = {"jpeg": "image/jpeg", "png": "image/png"}


def to_8bit(reader: Any, i: int, frame: np.ndarray) -> np.ndarray:
    """Frame `i` (`frame`, as read) as uint8 pixels: as it is if already 8-bit,
    else through its Modality and VOI LUTs, the window's range (or without a
    window, the frame's own range) mapped to 0-255."""
    if frame.dtype == np.uint8:
        return frame
    ds = reader.dataset()  # parsed once for both (each would read the header again)
    modality = reader.modality_lut(frame, frame_number=i, dataset=ds)
    values = np.asarray(reader.voi_lut(modality, frame_number=i, dataset=ds), dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    """uint8 pixels (rows, columns) or (rows, columns, 3) as a JPEG or PNG file."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels))
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, format="JPEG", quality=quality)
    else:
        image.save(out, format="PNG", compress_level=1)  # fast: tiles are made per request
    return out.getvalue()


def choose(accept: str | None, default: str = "jpeg") -> str | None:
    """The picture format an Accept header asks for most (JPEG where any picture
    will do), or None where it accepts neither JPEG nor PNG."""
    for media in parse_accept(accept):
        if media.type in FORMATS:
            return FORMATS[media.type]
        if media.type in ("*/*", "image/*"):
            return default
    return None
