"""The documentation (issue #15): mkdocs builds it with warnings as errors (which checks every link and
anchor inside docs/), README.md's relative links resolve, every ``shrinknet`` command line shown in a code
block of README.md or docs/ is one the real command parses (its subcommand, options and choices), and the
README's Python example runs as printed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^[ \t]*```([^\n]*)\n(.*?)^[ \t]*```", re.S | re.M)  # (language, text); indented in a list too
COMMANDS = ("", "bash", "sh", "shell", "console")  # fences that hold commands; program output is fenced as text
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


# -- mkdocs -----------------------------------------------------------------------------------------
def test_mkdocs_builds_strict(tmp_path):
    """``mkdocs build --strict``: any warning (a broken link or anchor, a docstring mkdocstrings cannot
    read, a page missing from the nav) fails; the CLI and API pages are really generated."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    site = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(site)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    from shrinknet.cli import cli

    reference = (site / "cli" / "index.html").read_text()
    assert all(f'id="{name}"' in reference for name in cli.commands), sorted(cli.commands)
    api = (site / "api" / "index.html").read_text()
    assert all(f'id="shrinknet.{name}"' in api for name in ("prune", "PruneConfig", "PruneResult", "export"))


# -- README links -----------------------------------------------------------------------------------
def _slug(heading: str) -> str:
    from markdown.extensions.toc import slugify

    return slugify(heading, "-")


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file (or heading anchor, in a Markdown file) does not exist."""
    bad = []
    for target in _LINK.findall(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(target)
        elif anchor and dest.suffix == ".md":
            headings = re.findall(r"^#+\s+(.*?)\s*$", _FENCE.sub("", dest.read_text()), re.M)
            if anchor not in {_slug(h) for h in headings}:
                bad.append(target)
    return bad


def test_readme_links_resolve():
    assert broken_links(ROOT / "README.md") == []


def test_the_link_check_finds_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Some part\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md) [ok](docs/a.md#some-part) [web](https://example.org/x) ![img](pic.png)\n"
                    "[gone](docs/b.md) [no anchor](docs/a.md#other)\n")
    assert broken_links(page) == ["docs/b.md", "docs/a.md#other"]


# -- command lines ----------------------------------------------------------------------------------
def command_lines(text: str) -> list[str]:
    """Every ``shrinknet ...`` command line in the fenced command blocks of ``text`` (backslash continuations
    joined, comments dropped; ``torchrun ... -m shrinknet ARGS`` counts as ``shrinknet ARGS``)."""
    lines = []
    for lang, block in _FENCE.findall(text):
        if lang.strip() not in COMMANDS:
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(re.sub(r"\s+#.*$", "", line).split())
            if line.startswith("torchrun ") and " -m shrinknet " in line:
                line = "shrinknet " + line.split(" -m shrinknet ", 1)[1]
            if line.startswith("shrinknet ") or line == "shrinknet":
                lines.append(line)
    return lines


def check_command(line: str) -> None:
    """Parse ``line`` with the real command's parser: click.UsageError for an unknown subcommand or
    option, a missing option value, an extra argument, or a value outside an option's choices."""
    from shrinknet.cli import cli

    args = shlex.split(line)[1:]
    group_ctx = click.Context(cli, info_name="shrinknet")
    opts, rest, _ = cli.make_parser(group_ctx).parse_args(args)
    if not rest:
        raise click.UsageError(f"no subcommand in {line!r}")
    name, *args = rest
    cmd = cli.commands.get(name)
    if cmd is None:
        raise click.UsageError(f"no such command {name!r}")
    ctx = click.Context(cmd, info_name=name, parent=group_ctx)
    opts, extra, order = cmd.make_parser(ctx).parse_args(args)
    if extra:
        raise click.UsageError(f"unexpected extra argument(s) {extra}")
    for param in order:
        if isinstance(param.type, click.Choice):
            values = opts[param.name]
            for v in values if isinstance(values, (list, tuple)) else [values]:
                param.type.convert(v, param, ctx)


EXAMPLES = sorted({(page.relative_to(ROOT).as_posix(), line) for page in PAGES
                   for line in command_lines(page.read_text())})


def test_the_docs_show_command_lines():
    assert len(EXAMPLES) >= 20
    assert {"train", "prune", "report", "export", "info", "rank", "reproduce", "demo"} <= {
        shlex.split(line)[1] for _, line in EXAMPLES}


@pytest.mark.parametrize(("page", "line"), EXAMPLES, ids=[f"{p}: {line[10:50]}" for p, line in EXAMPLES])
def test_command_lines_in_the_docs_parse(page, line):
    check_command(line)


@pytest.mark.parametrize("line", [
    "shrinknet prune m.pt --budgett 8KiB",          # misspelt option
    "shrinknet prune m.pt --dtype int9",            # not a choice
    "shrinknet prune m.pt extra --budget 8KiB",     # an argument too many
    "shrinknet shrink m.pt",                        # no such command
    "shrinknet prune m.pt --budget",                # option without its value
], ids=["option", "choice", "argument", "command", "value"])
def test_the_command_check_refuses_wrong_lines(line):
    with pytest.raises(click.UsageError):
        check_command(line)


def test_command_lines_are_found_in_fences_only():
    text = ("Run `shrinknet prune x` inline.\n\n```\nshrinknet info m.safetensors   # comment\n"
            "torchrun --standalone -m shrinknet prune M --budget 1KiB \\\n   --out O\n```\n"
            "- a list item:\n\n  ```bash\n  shrinknet export m.safetensors --format c --out m.c\n  ```\n"
            "```text\nshrinknet iterative brute force: what a run printed\n```\n")
    assert command_lines(text) == ["shrinknet info m.safetensors", "shrinknet prune M --budget 1KiB --out O",
                                   "shrinknet export m.safetensors --format c --out m.c"]


# -- the README's example ---------------------------------------------------------------------------
def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    """The Python example under "Your own model" runs as printed and writes the C export it names."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Your own model", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "shrinknet.PruneConfig(" in code and "result.fit(" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out
    assert re.search(r"kept \[\d+\] neurons, \d+ B at int8", printed), printed
    assert (tmp_path / "model.c").stat().st_size > 0 and (tmp_path / "model.h").exists()
