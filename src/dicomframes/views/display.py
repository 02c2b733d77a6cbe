"""Display transforms, as options: the modality LUT, the VOI LUT or window, palette colour.

Frames come back as pydicom's ``pixel_array`` gives them (stored values); these
functions apply pydicom's own ``apply_modality_lut``, ``apply_voi_lut`` and
``apply_color_lut`` (``pydicom.pixels``) with the file's data set
(`header_dataset`, everything but Pixel Data), so they agree with pydicom by
construction. What they add: frame numbers in place of arrays, and the
functional groups of enhanced objects (enhanced CT, MR, ...), which pydicom's
functions do not read: a frame's Pixel Value Transformation and Frame VOI LUT
are taken from its Per-Frame Functional Groups item, else from the Shared
Functional Groups, else from the top level of the data set.

They need pydicom (`MissingDependencyError` without it), and read the header
again on each call unless given the data set (``dataset=reader.dataset()``),
which is worth doing for many frames of one file.
"""

from __future__ import annotations

import io
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from dicomframes.errors import MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    from dicomframes.reader import Reader

__all__ = ["header_dataset", "modality_lut", "voi_lut", "palette", "PYDICOM_HINT"]

PYDICOM_HINT = 'pip install pydicom (or pip install "dicomframes[metadata]")'

# Functional group macros -> the attributes they carry, copied onto a frame's view of the data set.
_PIXEL_VALUE_TRANSFORMATION = ("PixelValueTransformationSequence", ("RescaleIntercept", "RescaleSlope", "RescaleType"))
_FRAME_VOI_LUT = (
    "FrameVOILUTSequence",
    ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction", "VOILUTSequence"),
)


def _pydicom(what: str) -> Any:
    try:
        import pydicom
        import pydicom.pixels
    except ImportError as exc:
        raise MissingDependencyError(f"{what} needs pydicom, which is not installed ({exc})", hint=PYDICOM_HINT) from exc
    return pydicom


def _head(source: Any, end: int) -> bytes:
    """Bytes ``[0, end)`` of `source`: those its block cache still holds, the rest in one read."""
    held = source.block_cache.run(0, end) if end > 0 else b""
    if len(held) >= end:
        return bytes(held[:end])
    return bytes(held) + source.read(len(held), end - len(held))


def header_dataset(reader: Reader) -> Any:
    """Everything but Pixel Data as a pydicom ``FileDataset``, parsed from the
    header bytes (those before the Pixel Data element); see `Reader.dataset`."""
    pydicom = _pydicom("reader.dataset()")
    h = reader.header
    # The Pixel Data element's header: tag, VR, 2 reserved bytes and a 4-byte
    # length in explicit VR (its VRs are all long ones), tag and length in implicit VR.
    end = h.pixel_offset - (12 if h.explicit_vr else 8)
    if h.transfer_syntax.deflated:
        # The file meta group as stored, then the data set up to Pixel Data,
        # deflated again (small) so that pydicom reads it as it reads the file.
        meta = _head(reader.source, h.dataset_offset)
        inflated = reader.data_source.read(0, end)
        deflater = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = meta + deflater.compress(inflated) + deflater.flush()
    else:
        data = _head(reader.source, end)
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    ds.filename = reader.path
    return ds


def _array(frame: Any, reader: Reader, frame_number: int | None) -> tuple[np.ndarray, int | None]:
    if isinstance(frame, (int, np.integer)) and not isinstance(frame, bool):
        k = int(frame)
        if k < 0:
            k += len(reader)
        return reader.frame(int(frame)), k
    return np.asarray(frame), frame_number


def _group_item(ds: Any, macro: str, frame_number: int | None) -> Any:
    """The frame's item of a functional group macro: per-frame first, then shared; None if neither."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        if frame_number is None:
            if any(macro in item for item in per_frame):
                raise ValueError(
                    f"the file has a per-frame {macro}: pass the frame number (frame_number=) with an array, "
                    "or the frame number in place of the array"
                )
        elif 0 <= frame_number < len(per_frame) and per_frame[frame_number].get(macro):
            return per_frame[frame_number][macro][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and shared[0].get(macro):
        return shared[0][macro][0]
    return None


def _frame_view(ds: Any, frame_number: int | None, macro: tuple[str, tuple[str, ...]]) -> Any:
    """`ds` itself, or (functional groups) a shallow copy of its image attributes
    with those of the frame's macro item."""
    name, keywords = macro
    item = _group_item(ds, name, frame_number)
    if item is None:
        return ds
    from pydicom import Dataset

    view = Dataset()
    for elem in ds:
        if elem.tag.group == 0x0028:  # image pixel, modality LUT, VOI LUT, palette
            view.add(elem)
    for keyword in keywords:
        if keyword in item:
            view.add(item[keyword])
    return view


def modality_lut(
    frame: Any, reader: Reader, *, frame_number: int | None = None, dataset: Any = None
) -> np.ndarray:
    """pydicom's ``apply_modality_lut`` (Modality LUT, or Rescale Slope and Intercept).

    `frame` is an array from `reader`, or a frame number (that frame is read).
    With functional groups, the frame's Pixel Value Transformation applies: give
    `frame_number` with an array where the file has one per frame. `dataset`:
    ``reader.dataset()``, to reuse over many calls. Needs pydicom.
    """
    pydicom = _pydicom("the modality LUT")
    arr, number = _array(frame, reader, frame_number)
    ds = dataset if dataset is not None else header_dataset(reader)
    return pydicom.pixels.apply_modality_lut(arr, _frame_view(ds, number, _PIXEL_VALUE_TRANSFORMATION))


def voi_lut(
    frame: Any,
    reader: Reader,
    index: int = 0,
    *,
    prefer_lut: bool = True,
    frame_number: int | None = None,
    dataset: Any = None,
) -> np.ndarray:
    """pydicom's ``apply_voi_lut`` (VOI LUT, or Window Center and Width; view `index`).

    Apply it to the output of `modality_lut`, as pydicom expects. `frame` is an
    array, or a frame number (that frame is read, with no modality LUT). With
    functional groups, the frame's Frame VOI LUT (and Pixel Value
    Transformation, which the window's range depends on) applies: give
    `frame_number` with an array where the file has one per frame. Needs pydicom.
    """
    pydicom = _pydicom("the VOI LUT")
    arr, number = _array(frame, reader, frame_number)
    ds = dataset if dataset is not None else header_dataset(reader)
    view = _frame_view(ds, number, _FRAME_VOI_LUT)
    rescale = _group_item(ds, _PIXEL_VALUE_TRANSFORMATION[0], number)
    if rescale is not None:
        if view is ds:
            view = _frame_view(ds, number, _PIXEL_VALUE_TRANSFORMATION)
        else:
            for keyword in _PIXEL_VALUE_TRANSFORMATION[1]:
                if keyword in rescale:
                    view.add(rescale[keyword])
    return pydicom.pixels.apply_voi_lut(arr, view, index=index, prefer_lut=prefer_lut)


def palette(frame: Any, reader: Reader, *, dataset: Any = None) -> np.ndarray:
    """pydicom's ``apply_color_lut`` with the file's Palette Color Lookup Tables:
    an RGB array from a PALETTE COLOR frame (an array, or a frame number). Needs pydicom."""
    pydicom = _pydicom("palette colour")
    arr, _ = _array(frame, reader, None)
    ds = dataset if dataset is not None else header_dataset(reader)
    return pydicom.pixels.apply_color_lut(arr, ds)
