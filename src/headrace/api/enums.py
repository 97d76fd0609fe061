"""Enum numbers for the wire.

The GAPIC REST transport (Beam's DataflowRunner) sends enums as proto numbers. The
discovery document lists enum names but not their numbers, and its order is not the proto
order (JOB_MESSAGE_BASIC is 5, after WARNING and ERROR). The numbers come from the proto
enums that google-cloud-dataflow-client carries; an enum it does not know (worker-only
messages) falls back to the document's order, which is proto order for those.
"""

from __future__ import annotations

import enum
import functools
import inspect

import proto
from google.cloud.dataflow_v1beta3 import types as gapic_types


def _proto_enums():
    seen: set[type] = set()
    stack = [getattr(gapic_types, n) for n in dir(gapic_types)]
    while stack:
        obj = stack.pop()
        if not inspect.isclass(obj) or obj in seen:
            continue
        seen.add(obj)
        if issubclass(obj, proto.Enum):
            yield obj
        elif issubclass(obj, proto.Message):
            stack.extend(vars(obj).values())


@functools.cache
def _numbers_by_names() -> dict[frozenset[str], dict[str, int]]:
    table: dict[frozenset[str], dict[str, int]] = {}
    for e in _proto_enums():
        members = {m.name: m.value for m in e}  # type: ignore[attr-defined]
        table[frozenset(members)] = members
    return table


@functools.cache
def numbering(names: tuple[str, ...]) -> dict[int, str]:
    """Map wire numbers to names for an enum given by its discovery names."""
    wanted = frozenset(names)
    for members, numbers in _numbers_by_names().items():
        if wanted <= members:
            return {numbers[n]: n for n in names}
    return dict(enumerate(names))


def is_enum_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, (bool, enum.Enum))
