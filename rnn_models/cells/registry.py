"""The registry of kinds of cells: name -> the ``_Cell`` subclass that answers every question about that kind.

Adding a kind of cell is one module that subclasses ``base._Cell``, declares its attributes and calls
``register``; ``rnn_models.cells`` imports it so it is registered on import. The config, the network, the engine
(products, gradients, the thin route), the cost estimate, the figures and the dashboard ask the class; every
question has a default (a dense S x S step through autograd), so a kind needs only ``from_config``, ``project``
and ``_forward`` (tests/test_registry.py registers such a kind in a test and checks every number against
autograd). ``by_kind(attr)`` / ``merged(attr)`` are live name-keyed views where a dict keyed by cell names was.
"""
from __future__ import annotations

from collections.abc import Mapping

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make ``cls`` (a ``_Cell`` subclass with a unique ``name``) a kind of cell."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} declares no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"cell name {cls.name!r} is registered twice ({_REGISTRY[cls.name].__name__}, {cls.__name__})")
    _REGISTRY[cls.name] = cls
    return cls


_UNLISTED: dict[str, type] = {}


def register_unlisted(cls: type) -> type:
    """Make ``cls`` answer ``cell_type(cls.name)`` (its label, colour, settings, ...) without being a kind a
    config may name, the network build or a list offer: ``cell_names()`` and ``CELLS`` leave it out. For a cell
    that wraps one user object and is never built from a config (analysis.own_cell.OwnCell, "own")."""
    if cls.name in _REGISTRY:
        raise ValueError(f"cell name {cls.name!r} is a registered kind")
    _UNLISTED[cls.name] = cls
    return cls


def cell_names() -> tuple[str, ...]:
    """Every registered kind, in registration order (rnn, lstm, gru first)."""
    return tuple(_REGISTRY)


def cell_type(name: str) -> type:
    """The class of the kind ``name``; an unknown name raises ValueError naming the allowed ones."""
    try:
        return _REGISTRY[name] if name in _REGISTRY else _UNLISTED[name]
    except (KeyError, TypeError):
        raise ValueError(f"cell={name!r} is not allowed: choose one of {', '.join(_REGISTRY)}") from None


class by_kind(Mapping):
    """A read-only mapping name -> ``getattr(kind, attr)`` over the registered kinds, read at every use (a kind
    registered later appears): ``by_kind("color")["lstm"] == "#0072B2"``. Where the rest of the code once kept a
    dict keyed by cell names (CELL_COLORS, CELL_LABELS, ...), it keeps one of these."""

    def __init__(self, attr: str):
        self.attr = attr

    def __getitem__(self, name: str):
        if name not in _REGISTRY and name not in _UNLISTED:
            raise KeyError(name)
        return getattr(cell_type(name), self.attr)

    def __iter__(self):
        return iter(tuple(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return f"by_kind({self.attr!r}: {dict(self)!r})"


class merged(Mapping):
    """A read-only mapping key -> value of the registered kinds' dict attribute ``attr`` merged in registration
    order (the first kind that names a key wins): ``merged("gate_titles")["f"]`` is the LSTM's forget gate."""

    def __init__(self, attr: str):
        self.attr = attr

    def _dict(self) -> dict:
        out: dict = {}
        for cls in _REGISTRY.values():
            for k, v in getattr(cls, self.attr, {}).items():
                out.setdefault(k, v)
        return out

    def __getitem__(self, key):
        return self._dict()[key]

    def __iter__(self):
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"merged({self.attr!r}: {self._dict()!r})"
