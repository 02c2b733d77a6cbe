"""dicomframes: stream the frames of huge multi-frame DICOM files, one at a time.

>>> import dicomframes
>>> with dicomframes.open("cine.dcm") as reader:      # doctest: +SKIP
...     for frame in reader:
...         ...

The reader and the errors load with the package; the consumers (whole-slide
pyramids, decompression, offset tables, Dask arrays, data loaders) load on first use of
their names (PEP 562), so ``import dicomframes`` stays light.
"""

from __future__ import annotations

from typing import Any

from dicomframes.errors import (
    ArrayTooLargeError,
    ClosedReaderError,
    DecodeError,
    DestinationError,
    DestinationExistsError,
    DicomFramesError,
    FrameIndexError,
    FrameMismatchError,
    FrameNumberError,
    IndexFileError,
    InvalidFileError,
    MissingDecoderError,
    MissingDependencyError,
    NotAcceptableError,
    NotDicomError,
    NotFoundError,
    NotTiledError,
    RegionError,
    RequestError,
    ServerBusyError,
    SlideError,
    StorageError,
    TranscodeError,
    TruncatedFileError,
    UnsupportedTransferSyntaxError,
)
from dicomframes.frames.index_cache import IndexCache
from dicomframes.io.local import BytesSource, FileObjectSource, LocalFileSource
from dicomframes.io.policy import FetchPolicy
from dicomframes.io.source import Source
from dicomframes.reader import ImageInfo, Reader, iter_frames, open

__version__ = "0.1.0"

#: public name -> the module that defines it, imported on first use
_LAZY = {
    "open_slide": "dicomframes.wsi.slide",
    "Slide": "dicomframes.wsi.slide",
    "decompress": "dicomframes.transcode.decompress",
    "add_offset_table": "dicomframes.transcode.offset_table",
    "to_dask": "dicomframes.integrations.dask",
    "FrameDataset": "dicomframes.integrations.dataset",
    "dicomweb": "dicomframes.web",
    "DicomWeb": "dicomframes.web",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dicomframes' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "open", "iter_frames", "to_dask", "FrameDataset", "open_slide", "Slide", "dicomweb", "DicomWeb", "decompress", "add_offset_table", "Reader", "ImageInfo",
    "FetchPolicy", "Source", "LocalFileSource", "FileObjectSource", "BytesSource", "IndexCache",
    "DicomFramesError", "NotDicomError", "TruncatedFileError", "InvalidFileError",
    "FrameIndexError", "UnsupportedTransferSyntaxError", "MissingDecoderError",
    "DecodeError", "StorageError", "MissingDependencyError", "FrameNumberError", "ClosedReaderError",
    "ArrayTooLargeError", "NotTiledError", "RegionError",
    "SlideError", "FrameMismatchError", "TranscodeError", "DestinationError", "DestinationExistsError",
    "IndexFileError",
    "NotAcceptableError",
    "NotFoundError",
    "RequestError",
    "ServerBusyError",
]
