"""A DICOMweb server over folders and buckets of DICOM files (the ``[server]`` extra).

    >>> from dicomframes.server import create_app          # doctest: +SKIP
    >>> app = create_app("./slides/")                      # doctest: +SKIP

or from the command line: ``dicomframes serve ./slides/``. Needs Starlette,
uvicorn and pydicom: ``pip install "dicomframes[server]"``.
"""

from __future__ import annotations

from typing import Any

from dicomframes.errors import MissingDependencyError

INSTALL = 'pip install "dicomframes[server]"'


def create_app(roots: Any, **options: Any) -> Any:
    """The ASGI app serving the DICOM files under `roots`: see `dicomframes.server.app.create_app`."""
    try:
        from dicomframes.server.app import create_app as make
    except ImportError as exc:
        raise MissingDependencyError(f"the server needs {exc.name or 'Starlette'}", hint=INSTALL) from None
    return make(roots, **options)


__all__ = ["create_app"]
