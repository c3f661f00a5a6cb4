"""The README's Quick start stays two commands, and CI runs the second one verbatim."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def quick_start_commands():
    """The shell commands in the README's Quick start code blocks, before the next heading."""
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.S | re.M).group(1)
    first_prose = section.index("\n\nThe first command")
    blocks = re.findall(r"```bash\n(.*?)```", section[:first_prose], re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    assert commands[0].startswith("pip install") and commands[0].endswith("gateway")


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert quick_start_commands()[1] in ci


def test_provider_table_is_generated_from_the_classes():
    from gateway.providers import markdown_table
    text = (REPO / "README.md").read_text()
    section = text.split("<!-- providers:start -->\n", 1)[1].split("\n<!-- providers:end -->", 1)[0]
    assert section == markdown_table(), "run: python scripts/provider_table.py --write"
