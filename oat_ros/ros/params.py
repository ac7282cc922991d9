"""Declarative ROS 2 parameters: one table gives the default, description, range, whether a
change applies at runtime, and a validator; the node declares them with descriptors and
checks every change in its on-set-parameters callback (a rejected value keeps the old one)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    runtime: bool = False                 # may change while the node is active
    choices: tuple = ()
    min: float | None = None
    max: float | None = None
    check: Callable[[Any], str | None] | None = None   # returns an error text or None
    extra: dict = field(default_factory=dict)

    def descriptor(self) -> ParameterDescriptor:
        text = self.description
        if self.choices:
            text += f" One of: {', '.join(map(str, self.choices))}."
        if not self.runtime:
            text += " Needs a reload: refused while the node is active."
        d = ParameterDescriptor(name=self.name, description=text)
        if self.min is not None and self.max is not None:
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                d.integer_range = [IntegerRange(from_value=int(self.min), to_value=int(self.max), step=1)]
            elif isinstance(self.default, float):
                d.floating_point_range = [FloatingPointRange(from_value=float(self.min), to_value=float(self.max))]
        return d

    def validate(self, value) -> str | None:
        if self.choices and value not in self.choices:
            return f"'{self.name}' = {value!r}: expected one of {list(self.choices)}"
        if self.min is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not (self.min <= value <= (self.max if self.max is not None else value)):
                return f"'{self.name}' = {value!r}: expected {self.min}..{self.max}"
        if self.check is not None:
            why = self.check(value)
            if why:
                return f"'{self.name}' = {value!r}: {why}"
        return None


def declare(node, table: list[Param]):
    for p in table:
        node.declare_parameter(p.name, p.default, p.descriptor())


def values(node, table: list[Param]) -> dict:
    return {p.name: node.get_parameter(p.name).value for p in table}


def check_changes(table: dict[str, Param], params, active: bool) -> SetParametersResult:
    """Validate a SetParameters batch; all-or-nothing, with the reason of the first failure."""
    for param in params:
        spec = table.get(param.name)
        if spec is None:
            continue  # e.g. use_sim_time: not ours to judge
        if active and not spec.runtime:
            return SetParametersResult(successful=False, reason=(
                f"'{param.name}' needs a reload: deactivate and clean up the node first"))
        why = spec.validate(param.value)
        if why:
            return SetParametersResult(successful=False, reason=why)
    return SetParametersResult(successful=True)
