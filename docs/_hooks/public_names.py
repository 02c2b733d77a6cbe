"""MkDocs hook: the API reference documents the package's public names.

mkdocstrings reads the source statically, so a name that ``dicomframes`` only
re-exports lazily (PEP 562 ``__getattr__``: ``open_slide``, ``Slide``,
``decompress``, ``to_dask``, ``FrameDataset``) is documented at the module that
defines it. This hook imports the package and checks that each object named on
the reference page by its defining module is also what ``dicomframes.<name>``
gives, so a renamed or dropped public name fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import importlib
import re

from mkdocs.exceptions import PluginError

_DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)


def _resolve(path: str):
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def on_page_markdown(markdown, page, config, files, **kwargs):
    if page.file.src_uri != "reference.md":
        return markdown
    import dicomframes

    for path in _DIRECTIVE.findall(markdown):
        try:
            obj = _resolve(path)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"reference.md: {path} does not exist ({exc})") from exc
        module, _, name = path.rpartition(".")
        if module in ("dicomframes", "") or path == "dicomframes.errors":
            continue
        public = getattr(dicomframes, name, None)
        if public is not obj:
            raise PluginError(f"reference.md: {path} is documented as dicomframes.{name}, but dicomframes.{name} is {public!r}")
    return markdown
