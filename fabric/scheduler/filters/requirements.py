"""Image properties and flavor extra specs matched against what hosts report.

A host's properties are its compute node ``stats`` over its service
``capabilities`` (see :meth:`HostState.properties`). A requirement on a
property the host does not report fails that host: a host that cannot say
it supports something is not trusted to.
"""

from __future__ import annotations

from typing import Any

from fabric.scheduler.filters.base import HostFilter
from fabric.scheduler.host_state import HostState
from fabric.scheduler.request import RequestSpec

#: Image property -> host property holding the value or list of values it supports.
IMAGE_PROPERTY_MAP = {
    "architecture": "cpu_arch",
    "hw_architecture": "cpu_arch",
    "hypervisor_type": "hypervisor_type",
    "img_hv_type": "hypervisor_type",
    "vm_mode": "vm_modes",
    "hw_vm_mode": "vm_modes",
}

#: Extra spec scope the host is matched on; other scopes (hw:, quota: ...) are for other workers.
CAPABILITIES_SCOPE = "capabilities"


def _supports(offered: Any, wanted: Any) -> bool:
    if isinstance(offered, (list, tuple, set)):
        return str(wanted) in {str(v) for v in offered}
    return str(offered) == str(wanted)


class ImagePropertiesFilter(HostFilter):
    """Passes hosts that support the image's architecture, hypervisor type and VM mode."""

    def applies(self, spec: RequestSpec) -> bool:
        return any(key in IMAGE_PROPERTY_MAP for key in spec.image_properties)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        properties = host.properties()
        for key, wanted in spec.image_properties.items():
            host_key = IMAGE_PROPERTY_MAP.get(key)
            if host_key is None or wanted in (None, ""):
                continue
            if host_key not in properties or not _supports(properties[host_key], wanted):
                return False
        return True


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def match_requirement(offered: Any, requirement: str) -> bool:
    """Whether a host's value meets one extra spec value.

    Accepted forms: ``"= 4"`` (at least 4), ``"== 4"``, ``"!= 4"``, ``">= 4"``,
    ``"<= 4"`` (numeric), ``"s== x"``, ``"s!= x"`` (string), ``"<in> x"``
    (substring or member), ``"<or> a <or> b"``, or a plain value (equal as text,
    or a member of a list). A numeric operator on a non-number fails.
    """
    requirement = str(requirement).strip()
    words = requirement.split(None, 1)
    if not words:
        return _supports(offered, "")
    op, rest = words[0], (words[1] if len(words) > 1 else "")
    if op == "<or>":
        choices = [c.strip() for c in requirement.split("<or>") if c.strip()]
        return any(_supports(offered, choice) for choice in choices)
    if op == "<in>":
        if isinstance(offered, (list, tuple, set)):
            return _supports(offered, rest)
        return rest in str(offered)
    if op in ("s==", "s!="):
        equal = str(offered) == rest
        return equal if op == "s==" else not equal
    if op in ("=", "==", "!=", ">=", "<="):
        have, want = _number(offered), _number(rest)
        if have is None or want is None:
            return False
        return {"=": have >= want, "==": have == want, "!=": have != want,
                ">=": have >= want, "<=": have <= want}[op]
    return _supports(offered, requirement)


class ExtraSpecsFilter(HostFilter):
    """Passes hosts whose properties meet the flavor's ``capabilities:`` (or unscoped) extra specs."""

    @staticmethod
    def _requirements(spec: RequestSpec) -> list[tuple[str, Any]]:
        found = []
        for key, value in spec.extra_specs.items():
            scope, _, name = key.rpartition(":")
            if scope in ("", CAPABILITIES_SCOPE):
                found.append((name, value))
        return found

    @staticmethod
    def _meets(host: HostState, requirements: list[tuple[str, Any]]) -> bool:
        properties = host.properties()
        return all(name in properties and match_requirement(properties[name], requirement)
                   for name, requirement in requirements)

    def applies(self, spec: RequestSpec) -> bool:
        return bool(self._requirements(spec))

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return self._meets(host, self._requirements(spec))

    def filter_all(self, hosts: list[HostState], spec: RequestSpec) -> list[HostState]:
        # The flavor's requirements are picked out once per decision, not once per host.
        requirements = self._requirements(spec)
        if not requirements:
            return hosts
        return [host for host in hosts if self._meets(host, requirements)]
