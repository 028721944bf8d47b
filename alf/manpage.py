"""alf(1), written from the click definitions themselves, so the page and ``--help`` never
disagree. ``docs/alf.1`` is this module's output (a test checks it), installed with the package
into share/man/man1; ``alf man`` prints it anywhere (``alf man | man -l -``).
"""

from __future__ import annotations

import click

SEE_ALSO = "nc(1), ssh(1), tar(1), zfs(8)"


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, and a leading dot or quote that would read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line if line[:1] in ".'" else line) for line in text.splitlines())


def _paragraphs(help_text: str) -> list[str]:
    """click's help: paragraphs split by blank lines; a paragraph led by \\b keeps its lines."""
    out = []
    for para in help_text.strip().split("\n\n"):
        lines = [line.rstrip() for line in para.strip("\n").splitlines()]
        if lines and lines[0].strip() == "\b":
            out.append(".nf\n" + _roff("\n".join(lines[1:])) + "\n.fi")
        else:
            out.append(_roff(" ".join(line.strip() for line in lines)))
    return out


PAGE_DATE = "December 2026"  # the page's date: moved by hand when the page changes much


def option_sections(
    command: click.Command, ctx: click.Context, sections: dict[str, list[str]]
) -> list[tuple[str, list[tuple[str, str]]]]:
    """``command``'s options as (title, help records), in the order of ``sections`` (option
    names per title); options in no section come last, under "Other"."""
    groups: dict[str, list[tuple[str, str]]] = {title: [] for title in sections}
    groups["Other" if sections else "Options"] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        title = next(
            (t for t, names in sections.items() if param.name in names), "Other" if sections else "Options"
        )
        groups[title].append(record)
    return [(title, rows) for title, rows in groups.items() if rows]


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    out = []
    for title, rows in option_sections(command, ctx, getattr(command, "sections", {})):
        out.append(f".SS {title}")
        for names, text in rows:
            out.append(f".TP\n.B {_roff(names)}\n{_roff(text)}")
    return out


def render(group: click.Group, version: str, date: str = PAGE_DATE) -> str:
    """The page for ``group`` (alf's main group): synopsis, each command (in the order they
    were added) with its options in the command's ``sections`` if it has them, then the
    epilogs (units, exit status) once."""
    ctx = click.Context(group, info_name="alf", **group.context_settings)
    lines = [
        f'.TH ALF 1 "{date}" "alf {version}" "User Commands"',
        ".SH NAME",
        "alf \\- move files and pipes across imperfect networks, verified end to end",
        ".SH SYNOPSIS",
    ]
    commands = [(n, c) for n, c in group.commands.items() if not c.hidden]
    for name, command in commands:
        sub = click.Context(command, info_name=name, parent=ctx)
        args = " ".join(p.make_metavar(sub) for p in command.get_params(sub) if isinstance(p, click.Argument))
        lines.append(f".B alf {name}\n[\\fIOPTIONS\\fR] {_roff(args)}\n.br")
    lines.append(".SH DESCRIPTION")
    lines += [p if p.startswith(".nf") else p + "\n.PP" for p in _paragraphs(group.help or "")]
    epilogs: list[str] = []
    for name, command in commands:
        sub = click.Context(command, info_name=name, parent=ctx)
        lines.append(f".SH ALF {name.upper()}")
        lines += _paragraphs(command.help or "")
        lines += _options(command, sub)
        for part in (command.epilog or "").split("\n\n"):
            if part.strip() and part not in epilogs:
                epilogs.append(part)
    for part in epilogs:
        title, _, body = part.replace("\b\n", "").partition("\n")
        lines.append(f".SH {title.rstrip(':').upper()}")
        lines.append(".nf\n" + _roff(body) + "\n.fi")
    lines += [
        ".SH SHELL COMPLETION",
        "bash: add",
        '.B eval "$(_ALF_COMPLETE=bash_source alf)"',
        "to ~/.bashrc; zsh: the same with",
        ".BR zsh_source ;",
        "fish:",
        ".B _ALF_COMPLETE=fish_source alf | source",
        ".SH SECURITY",
        "alf neither encrypts nor authenticates its traffic: anyone on the path can read it, and",
        "whoever can change packets can change the content and its digest together. The",
        "checkphrase guards against a wrong or stale peer, not an attacker. Use alf inside a VPN or",
        "on a network you trust.",
        ".SH SEE ALSO",
        SEE_ALSO,
        "",
    ]
    return "\n".join(lines)
