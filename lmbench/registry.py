"""Small name -> object registries, one per axis (models, tokenizers, sources, samplers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from lmbench.errors import choice_error

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes for one spec axis; `axis` is the spec field that picks a name (e.g. ``model.family``)."""

    def __init__(self, axis: str) -> None:
        self.axis = axis
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.axis} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The object registered as `name`; a SpecError naming the axis, the close match and the choices otherwise."""
        if name not in self._items:
            raise choice_error(self.axis, name, self._items)
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
