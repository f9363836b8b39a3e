"""Print this installation's environment for a bug report: the project's commit, Python and platform, torch with
its CUDA and GPUs, whether the Hugging Face Hub answers, and every pinned package with its installed version.

    python scripts/env.py          # text to paste into a report
    python scripts/env.py --json   # the same as one JSON object

A package whose installed version is not the one pinned in setup.cfg is marked; so is a missing one (an extra
that was not installed, such as liger on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import json
import sys

from eeve_sft.errors import one_line_usage_errors, run_cli


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    return one_line_usage_errors(parser).parse_args(argv)


def collect() -> dict:
    from packaging.specifiers import SpecifierSet

    from eeve_sft import __version__
    from eeve_sft.hub import hub_unavailable
    from eeve_sft.training.run_dir import machine_info
    from eeve_sft.versions import pinned_packages

    pinned = pinned_packages()
    info = machine_info(tuple(pinned))
    packages = {}
    for name, (specifier, extra) in pinned.items():
        installed = info["packages"][name]
        matches = installed is not None and SpecifierSet(specifier).contains(installed, prereleases=True)
        packages[name] = {"installed": installed, "pinned": specifier, "extra": extra, "matches": matches}
    info["packages"] = packages
    return {"eeve_sft": __version__, **info, "hub": hub_unavailable() or "reachable"}


def render(info: dict) -> str:
    commit = info["git_commit"] or "not a git checkout"
    if info["git_dirty"]:
        commit += " (with uncommitted changes)"
    lines = [
        f"- eeve-sft: {info['eeve_sft']}, git {commit}",
        f"- Python: {info['python']}",
        f"- Platform: {info['platform']}",
        f"- torch: {info['torch']}, CUDA {info['cuda'] or 'none (CPU build)'}",
        f"- GPUs: {', '.join(info['gpus']) or 'none'}",
        f"- Hugging Face Hub: {info['hub']}",
    ]
    for name, package in info["packages"].items():
        where = f"extra {package['extra']}" if package["extra"] else "required"
        if package["installed"] is None:
            lines.append(f"- {name}: not installed ({where}, pinned {package['pinned']})")
        else:
            mark = "" if package["matches"] else f"  <- not what setup.cfg pins: {package['pinned']}"
            lines.append(f"- {name}: {package['installed']} ({where}){mark}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    info = collect()
    print(json.dumps(info, indent=2) if args.json else render(info))


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
