"""The plugin manager and the registry built from it.

:func:`get_plugin_manager` adds the hookspecs, registers the built-ins as an ordinary
plugin, loads the ``mechcheck`` entry points and checks that every hook
implementation matches a spec.  :class:`Registry` gathers what the hooks return into
name-keyed tables, rejecting duplicate names with an error that names both plugins.

This module imports no layer above it: the built-ins are registered by their module
name, as an entry point would be, and callers (the pytest plugin, the CLI,
``evaluate_path``) build the registry that a :class:`~mechcheck.session.Session`
uses.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from mechcheck import hookspecs
from mechcheck.errors import ClaimSpecError, MechcheckError, ModelLoadError, closest

if TYPE_CHECKING:
    from mechcheck.models.loading import LoadedModel, LoadOptions, ModelSource
    from mechcheck.report.results import ClaimResult
    from mechcheck.spec.schema import KeySpec

__all__ = ["AUTOLOAD_ENV", "BUILTIN", "HOOK_NAMES", "Registry", "get_plugin_manager",
           "misspelled_hooks", "plugin_label"]

BUILTIN = "mechcheck.builtin"
# Set to 1 to load no entry-point plugins (as PYTEST_DISABLE_PLUGIN_AUTOLOAD does for pytest).
AUTOLOAD_ENV = "MECHCHECK_DISABLE_PLUGIN_AUTOLOAD"
HOOK_NAMES = tuple(sorted(name for name in vars(hookspecs) if name.startswith("mechcheck_")))

# table -> (hook, the word for one entry in messages)
_TABLES = {
    "interventions": ("mechcheck_interventions", "intervention"),
    "metrics": ("mechcheck_metrics", "metric"),
    "kinds": ("mechcheck_claim_kinds", "claim kind"),
    "tasks": ("mechcheck_tasks", "task"),
    "rules": ("mechcheck_decision_rules", "decision rule"),
    "scores": ("mechcheck_attention_scores", "attention score"),
    "zoo": ("mechcheck_zoo_models", "zoo model"),
}
_UNKNOWN = {"kinds": "kind", "rules": "test", "scores": "pattern", "zoo": "zoo model"}


def get_plugin_manager(extra: Iterable[object] = ()) -> pluggy.PluginManager:
    """A plugin manager with the built-ins, entry-point plugins and ``extra``.

    The entry points of the group ``mechcheck`` are not loaded when the environment
    variable ``MECHCHECK_DISABLE_PLUGIN_AUTOLOAD`` is set (to anything but 0 or empty).
    """
    pm = pluggy.PluginManager("mechcheck")
    pm.add_hookspecs(hookspecs)
    pm.register(importlib.import_module(BUILTIN), name=BUILTIN)
    if os.environ.get(AUTOLOAD_ENV, "") in ("", "0"):
        pm.load_setuptools_entrypoints("mechcheck")
    for plugin in extra:
        if not pm.is_registered(plugin):
            pm.register(plugin)
    pm.check_pending()
    return pm


def misspelled_hooks(plugin: object) -> list[tuple[str, str | None]]:
    """``(name, closest hook name or None)`` for each ``mechcheck_*`` attribute of
    ``plugin`` that is no mechcheck hook."""
    found = []
    for name in sorted(dir(plugin)):
        if name.startswith("mechcheck_") and name not in HOOK_NAMES:
            near = closest(name, HOOK_NAMES)
            found.append((name, near[0] if near else None))
    return found


def plugin_label(pm: pluggy.PluginManager, plugin: object) -> str:
    """How messages name a plugin: its registered name (with its module's file), or its
    class for an object registered without a name."""
    name = pm.get_name(plugin) or ""
    if not name or name == str(id(plugin)):  # pluggy's name for an unnamed object
        name = getattr(plugin, "__name__", "") or (
            f"{type(plugin).__qualname__} object from {type(plugin).__module__}")
    where = getattr(plugin, "__file__", None)
    if where and not name.startswith(("mechcheck.", "mechcheck-")):
        return f"{name} ({where})" if name != where else str(where)
    return name


def _contributions(pm: pluggy.PluginManager, hook_name: str) -> Iterator[tuple[str, Any]]:
    """``(plugin label, item)`` for every item that every implementation of the hook
    returns, in pluggy's call order (plugins before the ``trylast`` built-ins)."""
    caller = getattr(pm.hook, hook_name)
    for impl in reversed(caller.get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue
        label = plugin_label(pm, impl.plugin)
        for item in impl.function() or ():
            yield label, item


def _table(word: str, found: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for label, item in found:
        if item.name in table:
            raise MechcheckError(
                f"two plugins register a {word} named '{item.name}': {owner[item.name]} "
                f"and {label}",
                hint="rename one of them or unregister the other plugin")
        table[item.name] = item
        owner[item.name] = label
    return table


def _archs(found: Iterable[tuple[str, Any]]) -> tuple[Any, ...]:
    """The architecture maps; a name or model_type claimed twice is an error."""
    archs: list[Any] = []
    names: dict[str, str] = {}
    types: dict[str, tuple[str, str]] = {}
    for label, arch in found:
        if arch.name in names:
            raise MechcheckError(
                f"two plugins register an architecture map named '{arch.name}': "
                f"{names[arch.name]} and {label}",
                hint="rename one of the maps or unregister the other plugin")
        for model_type in arch.model_types:
            if model_type in types:
                other_label, other = types[model_type]
                raise MechcheckError(
                    f"two plugins register an architecture map for model_type "
                    f"'{model_type}': '{other}' from {other_label} and '{arch.name}' from "
                    f"{label}", hint="drop the model_type from one map or unregister the "
                    "other plugin")
            types[model_type] = (label, arch.name)
        names[arch.name] = label
        archs.append(arch)
    return tuple(archs)


@dataclass(frozen=True, eq=False)
class Registry:
    """Name-keyed tables of everything the plugins registered.

    ``pm`` is the plugin manager it was built from, for the hooks that are called
    during a run (``mechcheck_load_model``, ``mechcheck_claim_result``); None for a
    registry assembled by hand, which loads models the built-in way and has no sinks
    (and only the decision rules, attention scores and zoo models given to it).
    """

    interventions: Mapping[str, Any]
    metrics: Mapping[str, Any]
    kinds: Mapping[str, Any]
    archs: tuple[Any, ...]
    tasks: Mapping[str, Any]
    rules: Mapping[str, Any] = field(default_factory=dict)
    scores: Mapping[str, Any] = field(default_factory=dict)
    zoo: Mapping[str, Any] = field(default_factory=dict)
    pm: pluggy.PluginManager | None = None

    @classmethod
    def from_plugins(cls, pm: pluggy.PluginManager | None = None) -> Registry:
        pm = pm or get_plugin_manager()
        tables = {name: _table(word, _contributions(pm, hook))
                  for name, (hook, word) in _TABLES.items()}
        return cls(**tables, archs=_archs(_contributions(pm, "mechcheck_model_adapters")),
                   pm=pm)

    def kind_keys(self) -> dict[str, Mapping[str, KeySpec]]:
        """kind name -> its KeySpecs, the loader's view of the kinds.  Keys whose value
        names a registry entry (``pattern:``) accept this registry's names."""
        from mechcheck.spec.schema import bind_all

        return {name: bind_all(kind.keys, self._names()) for name, kind in self.kinds.items()}

    def common_keys(self) -> dict[str, KeySpec]:
        """The keys every claim may carry, ``test:`` accepting the registered rules."""
        from mechcheck.spec.schema import COMMON_KEYS, bind_all

        return bind_all(COMMON_KEYS, self._names())

    def _names(self) -> dict[str, tuple[str, ...]]:
        return {table: tuple(getattr(self, table)) for table in ("rules", "scores", "zoo")}

    def lookup(self, table: str, name: str, *, key: str) -> Any:
        """``getattr(self, table)[name]`` or an error listing what is registered."""
        entries = getattr(self, table)
        if name in entries:
            return entries[name]
        near = closest(name, entries)
        hint = f"did you mean {near[0]}? " if near else ""
        word = _UNKNOWN.get(table, table[:-1])
        raise ClaimSpecError(
            f"unknown {word} '{name}'", key=key,
            hint=f"{hint}registered: {', '.join(sorted(entries))}",
        )

    def load_model(self, source: ModelSource, options: LoadOptions) -> LoadedModel:
        """The model for ``source``: the first ``mechcheck_load_model`` that loads it."""
        if self.pm is None:
            from mechcheck.models.loading import load_source

            loaded = load_source(source, options)
        else:
            loaded = self.pm.hook.mechcheck_load_model(source=source, options=options)
        if loaded is None:
            raise ModelLoadError(f"no plugin loads the model {source}", key="model",
                                 hint="model: takes a folder, hf:<repo id>, zoo:<name>, "
                                 "gguf:<file> or a source that an installed plugin adds")
        return loaded

    def emit_result(self, result: ClaimResult,
                    warn: Callable[[str], None] | None = None) -> None:
        """Pass ``result`` to every ``mechcheck_claim_result`` sink.  A sink that raises
        is reported with a warning naming its plugin; the other sinks still run."""
        if self.pm is None:
            return
        for impl in reversed(self.pm.hook.mechcheck_claim_result.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue
            try:
                impl.function(result=result)
            except Exception as exc:  # noqa: BLE001 - a sink must not end the run
                line = (f"mechcheck plugin {plugin_label(self.pm, impl.plugin)} failed in "
                        f"mechcheck_claim_result for claim '{result.id}': "
                        f"{type(exc).__name__}: {exc}")
                if warn is not None:
                    warn(line)
                else:
                    warnings.warn(line, RuntimeWarning, stacklevel=2)
