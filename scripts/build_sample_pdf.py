"""Write data/wms_docs/safety.pdf from assets/wms_pdf/safety.txt (the shipped PDF sample of the WMS manual).

    python scripts/build_sample_pdf.py [--font /usr/share/fonts/truetype/nanum/NanumGothic.ttf]

Needs fpdf2 and a TrueType font with Hangul (Debian: fonts-nanum). The font is subset into the PDF, so the file
stays small and its text extracts as Unicode. Lines starting with '#' become headings (and PDF bookmarks).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from eeve_sft.errors import UserError, run_cli

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FONT = "/usr/share/fonts/truetype/nanum/NanumGothic.ttf"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT / "assets/wms_pdf/safety.txt"))
    parser.add_argument("--output", default=str(ROOT / "data/wms_docs/safety.pdf"))
    parser.add_argument("--font", default=DEFAULT_FONT)
    args = parser.parse_args(argv)
    try:
        from fpdf import FPDF
    except ImportError:
        raise UserError("this script needs fpdf2: pip install fpdf2==2.8.9") from None
    if not Path(args.font).is_file():
        raise UserError(f"font not found: {args.font} (install a Hangul TrueType font, e.g. Debian's fonts-nanum)")
    blocks = [b.strip() for b in Path(args.source).read_text(encoding="utf-8").split("\n\n") if b.strip()]
    pdf = FPDF(format="A4")
    pdf.set_creation_date(datetime(2026, 12, 1, tzinfo=UTC))  # fixed: a rebuild gives the same bytes
    pdf.add_font("Nanum", fname=args.font)
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    for block in blocks:
        if block.startswith("#"):
            level = len(block) - len(block.lstrip("#"))
            title = block.lstrip("#").strip()
            if level == 1:
                pdf.set_title(title)
            pdf.set_font("Nanum", size=18 if level == 1 else 14)
            pdf.start_section(title, level=level - 1)
            pdf.multi_cell(0, 10, title)
        else:
            pdf.set_font("Nanum", size=11)
            pdf.multi_cell(0, 7, " ".join(block.split()))
        pdf.ln(4)
    pdf.output(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
