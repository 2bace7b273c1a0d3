"""Pydantic instances the engine builds from values it already knows are valid, without validation.

``BaseModel.model_construct`` would do, but it is written in Python and walks every field: measured at
2.5-10 us per call with pydantic 2.14 (more than validating), against ~0.7 us here. Used on the hot path
for the engine's own objects (an input's ``InputEvent``, the ``MemoryRef`` that ``set`` returns); the
result is an ordinary instance: equal, dumpable and copyable like a validated one.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_new = object.__new__
# BaseModel's slots, written through their descriptors: ~15% faster than object.__setattr__ by name.
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


_model_classes: dict[type, bool] = {}


def is_model_class(cls: type) -> bool:
    """``issubclass(cls, BaseModel)``, cached per class. pydantic's metaclass is an ABCMeta, so an
    ``isinstance(x, SomeModel)`` that is not an exact match runs ABCMeta's check in Python (~0.3 us); on
    the hot path (every value stored, every event sent) this answers with one dict lookup."""
    found = _model_classes.get(cls)
    if found is None:
        found = _model_classes[cls] = issubclass(cls, BaseModel)
    return found


def trusted(cls: type[M], values: dict[str, Any], fields_set: set[str]) -> M:
    """An instance of ``cls`` holding ``values`` (every field, already valid); ``fields_set`` are the fields
    given explicitly (what ``exclude_unset`` keeps). Only for classes without private attributes."""
    instance = _new(cls)
    _set_dict(instance, values)
    _set_fields_set(instance, fields_set)
    _set_extra(instance, None)
    _set_private(instance, None)
    return instance
