"""The registry of kinds of cells: name -> the ``_Cell`` subclass that answers every question about that kind.

Adding a kind of cell is one module that subclasses ``base._Cell``, declares its attributes and calls
``register``; ``rnn_models.cells`` imports it so it is registered on import.
"""
from __future__ import annotations

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make ``cls`` (a ``_Cell`` subclass with a unique ``name``) a kind of cell."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} declares no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"cell name {cls.name!r} is registered twice ({_REGISTRY[cls.name].__name__}, {cls.__name__})")
    _REGISTRY[cls.name] = cls
    return cls


def cell_names() -> tuple[str, ...]:
    """Every registered kind, in registration order (rnn, lstm, gru first)."""
    return tuple(_REGISTRY)


def cell_type(name: str) -> type:
    """The class of the kind ``name``; an unknown name raises ValueError naming the allowed ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"cell={name!r} is not allowed: choose one of {', '.join(_REGISTRY)}") from None
