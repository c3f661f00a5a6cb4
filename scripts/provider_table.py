"""Print the README's provider table from the provider classes; `--write` updates README.md in place."""

import argparse
import re
import sys
from pathlib import Path

from gateway.providers import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- providers:start -->", "<!-- providers:end -->"


def main(argv=None):
    """Print the table, or rewrite the README section between the markers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update README.md between the markers")
    args = parser.parse_args(argv)
    table = markdown_table()
    if not args.write:
        print(table)
        return 0
    text = README.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        print(f"README.md has no {START} ... {END} section", file=sys.stderr)
        return 1
    README.write_text(pattern.sub(lambda m: f"{START}\n{table}\n{END}", text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
