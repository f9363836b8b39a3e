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


def pinned_packages(distribution: str = "eeve-sft") -> dict[str, tuple[str, str | None]]:
    """{package: (version specifier, extra or None)} for every requirement the installed `distribution` declares,
    as its metadata holds them (setup.cfg's install_requires and extras); the first extra that names a package."""
    from packaging.requirements import Requirement

    extras = metadata.metadata(distribution).get_all("Provides-Extra") or []
    pinned: dict[str, tuple[str, str | None]] = {}
    for line in metadata.requires(distribution) or []:
        requirement = Requirement(line)
        marker = requirement.marker
        extra = None if marker is None else next((e for e in extras if marker.evaluate({"extra": e})), None)
        pinned.setdefault(requirement.name, (str(requirement.specifier), extra))
    return pinned
