"""Installed package versions, for the records that runs, indexes and benchmarks keep of what produced them."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata


def package_versions(names: Iterable[str], missing: str | None = None) -> dict[str, str | None]:
    """{name: installed version} for each of `names`, `missing` for a package that is not installed."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = missing
    return found
