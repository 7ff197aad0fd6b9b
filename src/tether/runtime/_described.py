"""How a backend describes an interface it serves (`welcome`, `GET {prefix}/`)."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs

from ._policies import OperationPolicy

__all__ = ["InterfaceInfo"]


@attrs.frozen(slots=True)
class InterfaceInfo:
    """What a backend says about one interface it serves.

    `policies`: the operations that declare a policy (idempotent, cacheable,
    long-running), by name; described as `"policies": {op: {...}}`, absent
    when none does.
    """

    version: str
    operations: tuple[str, ...]
    policies: dict[str, OperationPolicy] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The interface as `welcome` and `GET {prefix}/` describe it."""
        obj: dict[str, Any] = {"version": self.version, "operations": list(self.operations)}
        if self.policies:
            obj["policies"] = {name: p.to_json() for name, p in self.policies.items()}
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> InterfaceInfo:
        """Read a described interface; policies this version cannot read are dropped.

        Raises:
            ValueError: it is not an object with a version and a list of
                operation names.
        """
        if type(obj) is not dict:
            raise ValueError(f"an interface is described by an object, got {obj!r}")
        version = obj.get("version")
        operations = obj.get("operations")
        if (
            type(version) is not str
            or type(operations) is not list
            or not all(type(op) is str for op in operations)
        ):
            raise ValueError(
                "an interface is described by a version (a string) and operations (an array "
                f"of strings), got {obj!r}"
            )
        policies: dict[str, OperationPolicy] = {}
        described = obj.get("policies")
        if type(described) is dict:
            for name, raw in described.items():
                if type(raw) is dict:
                    with contextlib.suppress(ValueError):
                        policies[str(name)] = OperationPolicy.from_json(raw)
        return cls(version, tuple(operations), policies)
