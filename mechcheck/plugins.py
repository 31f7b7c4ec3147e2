"""The plugin manager and the registry built from it.

:func:`get_plugin_manager` adds the hookspecs, registers the built-ins as an ordinary
plugin, loads the ``mechcheck`` entry points and checks that every hook
implementation matches a spec.  :class:`Registry` gathers what the hooks return into
name-keyed tables, rejecting duplicate names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from mechcheck import builtin, hookspecs
from mechcheck.errors import ClaimSpecError, MechcheckError, closest

__all__ = ["AUTOLOAD_OFF", "Registry", "get_plugin_manager"]

AUTOLOAD_OFF = "MECHCHECK_DISABLE_PLUGIN_AUTOLOAD"
"""Set this environment variable (to anything non-empty) to load no ``mechcheck``
entry-point plugins, only the built-ins and the plugins passed explicitly."""


def get_plugin_manager(extra: Iterable[object] = ()) -> pluggy.PluginManager:
    """A plugin manager with the built-ins, entry-point plugins (unless the environment
    variable ``MECHCHECK_DISABLE_PLUGIN_AUTOLOAD`` is set) and ``extra``."""
    pm = pluggy.PluginManager("mechcheck")
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="mechcheck.builtin")
    if not os.environ.get(AUTOLOAD_OFF):
        pm.load_setuptools_entrypoints("mechcheck")
    for plugin in extra:
        if not pm.is_registered(plugin):
            pm.register(plugin)
    pm.check_pending()
    return pm


def _table(kind: str, results: Iterable[list[Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for items in results:
        for item in items or ():
            if item.name in table:
                raise MechcheckError(
                    f"two plugins register a {kind} named '{item.name}'",
                    hint="rename one of them or unregister the other plugin",
                )
            table[item.name] = item
    return table


@dataclass(frozen=True, eq=False)
class Registry:
    """Name-keyed tables of everything the plugins registered."""

    interventions: Mapping[str, Any]
    metrics: Mapping[str, Any]
    kinds: Mapping[str, Any]
    archs: tuple[Any, ...]
    tasks: Mapping[str, Any]

    @classmethod
    def from_plugins(cls, pm: pluggy.PluginManager | None = None) -> Registry:
        pm = pm or get_plugin_manager()
        hook = pm.hook
        return cls(
            interventions=_table("intervention", hook.mechcheck_interventions()),
            metrics=_table("metric", hook.mechcheck_metrics()),
            kinds=_table("claim kind", hook.mechcheck_claim_kinds()),
            archs=tuple(a for items in hook.mechcheck_model_adapters() for a in items),
            tasks=_table("task", hook.mechcheck_tasks()),
        )

    def kind_keys(self) -> dict[str, Mapping[str, Any]]:
        """kind name -> its KeySpecs, the loader's view of the kinds."""
        return {name: kind.keys for name, kind in self.kinds.items()}

    def lookup(self, table: str, name: str, *, key: str) -> Any:
        """``getattr(self, table)[name]`` or an error listing what is registered."""
        entries = getattr(self, table)
        if name in entries:
            return entries[name]
        near = closest(name, entries)
        hint = f"did you mean {near[0]}? " if near else ""
        raise ClaimSpecError(
            f"unknown {table[:-1] if table != 'kinds' else 'kind'} '{name}'", key=key,
            hint=f"{hint}registered: {', '.join(sorted(entries))}",
        )
