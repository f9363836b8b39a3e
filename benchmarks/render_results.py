"""RESULTS.md's generated blocks, rendered from the stored result files.

    python -m benchmarks.render_results            # which blocks differ from their result files (exit 1 if any)
    python -m benchmarks.render_results --write    # rewrite those blocks; the notes around them stay as written

Every table and figure list between a pair of `<!-- NAME: begin -->` / `<!-- NAME: end -->` markers in
`benchmarks/RESULTS.md` is the rendering of result files under `benchmarks/results/` (the scaling model's of its own
stated inputs); everything outside the markers is hand-written notes, which no command rewrites.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import RESULTS_MD, RESULTS_ROOT, newest_result, replace_block


@dataclass(frozen=True)
class Block:
    name: str  # the marker's name
    render: Callable[[Path], str]  # results root -> the block, markers included
    before: str | None = None  # where a block missing from the file goes (default: the end)

    @property
    def begin(self) -> str:
        return f"<!-- {self.name}: begin -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.name}: end -->"


def _build_dataset(root: Path) -> str:
    from benchmarks import bench_build_dataset

    return bench_build_dataset.generated_block(root / "build_dataset")


def _train(root: Path) -> str:
    from benchmarks import train_speed_tables

    return train_speed_tables.generated_block(train_speed_tables.load_all(root / "train_speed"))


def _step_flops(root: Path) -> str:
    from benchmarks import step_flops

    return step_flops.generated_block(root / "step_flops" / "eeve_layer_2048.json")


def _retrieval(root: Path) -> str:
    from benchmarks import bench_retrieval

    return bench_retrieval.generated_block(root / "retrieval")


def _docgen(root: Path) -> str:
    from benchmarks import bench_docgen

    return bench_docgen.generated_block(newest_result(root / "docgen", "docgen.json"))


def _generation(root: Path) -> str:
    from benchmarks import bench_generate

    return bench_generate.generated_block(root / "generation")


def _scaling(root: Path) -> str:
    from benchmarks import scaling_model

    return scaling_model.section()


# In the order they appear in RESULTS.md.
BLOCKS = (
    Block("bench_build_dataset", _build_dataset),
    Block("bench_train tables", _train),
    Block("step_flops", _step_flops),
    Block("bench_retrieval", _retrieval),
    Block("bench_docgen", _docgen, before="<!-- bench_generate: begin -->"),
    Block("bench_generate", _generation),
    Block("scaling_model", _scaling),
)


def current(text: str, block: Block) -> str | None:
    """The block as it stands in `text`, markers included, or None where its markers are missing."""
    if block.begin not in text or block.end not in text:
        return None
    return block.begin + text.split(block.begin, 1)[1].split(block.end, 1)[0] + block.end


def stale(path: Path = RESULTS_MD, root: Path = RESULTS_ROOT) -> list[str]:
    """Names of the blocks of `path` that differ from the rendering of the result files under `root`."""
    text = path.read_text(encoding="utf-8")
    return [b.name for b in BLOCKS if current(text, b) != b.render(root)]


def write(path: Path = RESULTS_MD, root: Path = RESULTS_ROOT) -> list[str]:
    """Rewrite every stale block of `path` (a missing one is added); returns their names."""
    text = path.read_text(encoding="utf-8")
    changed = []
    for b in BLOCKS:
        rendered = b.render(root)
        if current(text, b) != rendered:
            text = replace_block(text, rendered, b.begin, b.end, b.before)
            changed.append(b.name)
    path.write_text(text, encoding="utf-8")
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the blocks that differ from the result files")
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD, help="the file to check or write")
    parser.add_argument("--results", type=Path, default=RESULTS_ROOT, help="the result files' root")
    args = parser.parse_args()
    if not args.results_md.is_file():
        print(f"report: {args.results_md}: no such file", file=sys.stderr)
        sys.exit(2)
    if args.write:
        names = write(args.results_md, args.results)
        print(f"rewritten: {', '.join(names)}" if names else "every block was up to date")
        return
    names = stale(args.results_md, args.results)
    if names:
        print(f"out of date with the result files: {', '.join(names)} (python -m benchmarks.render_results --write)")
        sys.exit(1)
    print("every generated block matches the result files")


if __name__ == "__main__":
    main()
