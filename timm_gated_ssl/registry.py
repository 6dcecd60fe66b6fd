"""One way to extend the library: a :class:`Registry` of named entries, looked up by key.

Every place where a new block family or gate type plugs in is one of these, registered the same
way (a decorator or :meth:`Registry.add`) and looked up by key, never by trying entries in list
order:

* ``attach.FAMILIES``: block families gates attach to, by family name (``"resnet"``, ``"vit"``);
* ``gates.GATE_CLASSES``: gate classes, by ``gate_type`` (``"channel"``, ``"width"``);
* ``compute.BLOCK_COSTS``: how a family's masks change its layers' MACs, by family name;
* ``compact.COMPACT_BUILDERS``: compact blocks, by ``(gate_type, family)``;
* ``compact.STATIC_EXPORTERS``: static exports, by family name.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

from .errors import GatingError

__all__ = ["Registry", "RegistryKeyError"]

V = TypeVar("V")


class RegistryKeyError(GatingError, KeyError):
    """A key no entry is registered under (the message lists the registered keys)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class Registry(Generic[V]):
    """An ordered mapping from keys to entries that refuses to register a key twice.

    Args:
        kind: What the entries are, for error messages (e.g. ``"block family"``).

    Example:
        >>> COSTS: Registry[Callable[..., int]] = Registry("block cost")
        >>> @COSTS.register("resnet")
        ... def resnet_cost(block): ...
        >>> COSTS["resnet"] is resnet_cost
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[Hashable, V] = {}

    def add(self, key: Hashable, entry: V) -> V:
        """Register ``entry`` under ``key`` and return it.

        Raises:
            ValueError: ``key`` is already registered.
        """
        if key in self._entries:
            raise ValueError(f"a {self.kind} is already registered under {key!r}")
        self._entries[key] = entry
        return entry

    def remove(self, key: Hashable) -> V:
        """Unregister ``key`` and return its entry (a plug-in unloading, or a test cleaning up)."""
        entry = self[key]
        del self._entries[key]
        return entry

    def register(self, key: Hashable) -> Callable[[V], V]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(key, entry)

    def __getitem__(self, key: Hashable) -> V:
        try:
            return self._entries[key]
        except KeyError:
            raise RegistryKeyError(f"no {self.kind} is registered under {key!r}; registered: "
                                   f"{', '.join(map(repr, self._entries)) or 'none'}") from None

    def get(self, key: Hashable, default: V | None = None) -> V | None:
        return self._entries.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[Hashable]:
        return list(self._entries)

    def values(self) -> list[V]:
        return list(self._entries.values())

    def items(self) -> list[tuple[Hashable, V]]:
        return list(self._entries.items())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, keys={self.keys()!r})"
