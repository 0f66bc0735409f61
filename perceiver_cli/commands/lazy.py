"""Command groups whose subcommands are listed from a table and imported only when one runs or shows its help."""

from __future__ import annotations

import importlib

import typer

# name -> (module, attribute, one-line summary); the attribute is a command function or a Typer group.
Table = dict[str, tuple[str, str, str]]


def _usage_name(param) -> str:
    """An argument in a usage line: NAME when required, [NAME] when not, with ... when repeatable."""
    name = param.display_name_raw if param.required else f"[{param.display_name_raw}]"
    return name + ("..." if param.nargs != 1 else "")


def _plain_argument_help(command) -> None:
    """Arguments are shown in help by their metavar alone (IMAGE), as options are, without a type label,
    and in usage lines as NAME or [NAME] (Typer writes a required one as {NAME})."""
    for param in getattr(command, "params", ()):
        if isinstance(param, typer.core.TyperArgument):
            param.display_type_rich = lambda ctx: ""
            param._usage_display_name = lambda param=param: _usage_name(param)
    for sub in getattr(command, "commands", {}).values():
        _plain_argument_help(sub)


class LazyGroup(typer.core.TyperGroup):
    """A group whose subcommands come from `table`, each built from its module on first use."""

    table: Table = {}

    def list_commands(self, ctx) -> list[str]:
        return list(self.table)

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in self.table:
            return None
        module_name, attribute, summary = self.table[cmd_name]
        target = getattr(importlib.import_module(module_name), attribute)
        if isinstance(target, typer.Typer):
            command = typer.main.get_command(target)
        else:
            single = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
            single.command(cmd_name, help=getattr(target, "help", None) or target.__doc__,
                           epilog=getattr(target, "epilog", None), short_help=summary)(target)
            command = typer.main.get_command(single)
        command.name = cmd_name
        _plain_argument_help(command)
        return command

    def format_commands(self, ctx, formatter) -> None:
        rows = [(name, summary) for name, (_, _, summary) in self.table.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def lazy_group(table: Table) -> type[LazyGroup]:
    """The LazyGroup class for `table` (Typer takes a class, not an instance)."""
    return type("LazyGroup", (LazyGroup,), {"table": table})
