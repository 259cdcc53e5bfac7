"""Serve the few vendor files the console needs straight from the wheels that ship them.

Bootstrap comes from `bootstrap-wrapper`, plotly.js from `plotly`; both are pinned in
requirements.txt, so the console works air-gapped and no CDN is ever contacted.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def vendor_files() -> dict[str, Path]:
    """Static path (as templates name it) -> file on disk."""
    files: dict[str, Path] = {}
    bootstrap = _package_dir("bootstrap")
    if bootstrap is not None:
        files["vendor/bootstrap/bootstrap.min.css"] = bootstrap / "css" / "bootstrap.min.css"
        files["vendor/bootstrap/bootstrap.bundle.min.js"] = bootstrap / "js" / "bootstrap.bundle.min.js"
    plotly = _package_dir("plotly")
    if plotly is not None:
        files["vendor/plotly/plotly.min.js"] = plotly / "package_data" / "plotly.min.js"
    return {path: file for path, file in files.items() if file.is_file()}


class VendorFinder(BaseFinder):
    """A static files finder that knows exactly the vendor files above, nothing else."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.files = vendor_files()

    def check(self, **kwargs) -> list:
        return []

    def find(self, path: str, find_all: bool = False, **kwargs):
        find_all = find_all or kwargs.get("all", False)
        file = self.files.get(path)
        if file is None:
            return [] if find_all else None
        return [str(file)] if find_all else str(file)

    def list(self, ignore_patterns):
        for path, file in self.files.items():
            storage = _PrefixedStorage(location=str(file.parent), prefix=str(Path(path).parent))
            yield file.name, storage


class _PrefixedStorage(FileSystemStorage):
    """A storage for one vendor folder, published under `prefix` (what collectstatic reads)."""

    def __init__(self, *, location: str, prefix: str) -> None:
        super().__init__(location=location)
        self.prefix = prefix
