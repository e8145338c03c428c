"""One registry type for every swappable concept (systems, solvers, datasets, tasks)."""

from __future__ import annotations

from typing import Callable, TypeVar

from lagfit_cli.errors import ArgumentError

T = TypeVar("T")


class Registry(dict[str, T]):
    """``name -> entry``, filled by the :meth:`register` decorator.

    ``kind`` names what is registered ("solver") and ``key`` the argument that selects
    one ("solver"), so an unknown name fails in one line that lists the known ones.
    """

    def __init__(self, kind: str, key: str):
        super().__init__()
        self.kind, self.key = kind, key

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = entry
            return entry

        return decorator

    def lookup(self, name: object) -> T:
        if name not in self:
            raise ArgumentError(
                self.key, f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(sorted(self))}"
            )
        return self[name]
