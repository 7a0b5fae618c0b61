"""A lab file as an Ansible inventory: the lab in ``all.vars.lab``, the inventory's hosts, and
each host's variables (where a multi-host lab finds every hypervisor's underlay address).

``yamlfile`` reads the document; this module checks the inventory's shape around the lab
(``all.hosts``, ``all.children``, every group's ``vars``) and that each VM's ``host`` is a host
of the inventory. Extra inventories (``provision up -i hosts.yml``, as with
``ansible-playbook -i hosts.yml -i lab.yml``) add hosts and host variables, never a lab.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.core.spec import Lab, parse_lab
from provision.core.yamlfile import load_document, yaml_value
from provision.errors import SpecError, shown

SHAPE = "all: {hosts: {...}, vars: {lab: {...}}} (see inventory/demo.yml)"


@dataclass(frozen=True)
class Inventory:
    """The validated lab and the inventory around it."""

    lab: Lab
    # all.hosts and the hosts of every group below all.children; None: not known (a lab
    # Ansible hands over, having placed it itself)
    hosts: tuple[str, ...] | None
    # per host, as Ansible ranks them: the vars of the groups it is in (all first, children
    # after), then its own; at one rank, a later inventory wins
    host_vars: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def var(self, host: str, name: str) -> Any:
        return self.host_vars.get(host, {}).get(name)

    def with_var(self, name: str, by_host: Mapping[str, Any]) -> Inventory:
        """This inventory with host variable ``name`` set for the hosts of ``by_host``."""
        merged = {h: dict(v) for h, v in self.host_vars.items()}
        for host, value in by_host.items():
            merged.setdefault(host, {})[name] = value
        return Inventory(self.lab, self.hosts, merged)

    def placed(self, host: str | None) -> Lab:
        """The lab with only the VMs placed on ``host`` (every bridge stays: each hypervisor
        of a lab carries all of its bridges); the whole lab when ``host`` is None."""
        if host is None:
            return self.lab
        if self.hosts is not None and host not in self.hosts:
            # Filtering by a name the inventory lacks would drop every VM, and `up` would
            # then remove the running ones as "not in the lab".
            raise SpecError("--host", f"{shown(host)} is not a host of the inventory "
                            f"({_listed(self.hosts)}); name one of them")
        return self.lab.model_copy(update={"vms": tuple(v for v in self.lab.vms
                                                        if v.host == host)})


def load_lab(path: str | Path) -> Lab:
    """Read a lab file and validate it, including that every VM's ``host`` is a host of the
    inventory."""
    return load_inventory(path).lab


def load_inventory(path: str | Path, extra: Sequence[str | Path] = ()) -> Inventory:
    """The lab of a lab file, with the hosts and host variables of it and of ``extra``
    inventories (which hold hosts only: a lab is read from ``path`` alone)."""
    source = os.fspath(path)
    group = _all_group(load_document(source), source)
    hosts: dict[str, None] = {}
    group_vars: dict[str, dict[str, Any]] = {}
    own_vars: dict[str, dict[str, Any]] = {}
    for other in extra:
        _collect(_all_group(load_document(os.fspath(other)), os.fspath(other)), "all", {},
                 hosts, (group_vars, own_vars))
    _collect(group, "all", {}, hosts, (group_vars, own_vars))
    host_vars = {h: {**group_vars.get(h, {}), **own_vars.get(h, {})} for h in hosts}
    labvars = group.get("vars") or {}
    if labvars.get("lab") is None:
        missing = "is empty" if "lab" in labvars else f"is missing from {source}"
        raise SpecError("all.vars.lab", f"{missing}; write the lab there, shaped like "
                        "inventory/demo.yml's")
    lab = parse_lab(labvars["lab"])
    names = tuple(hosts)
    for i, vm in enumerate(lab.vms):
        if vm.host not in hosts:
            raise SpecError(
                f"lab.vms[{i}].host",
                f"{shown(vm.host)} is not a host of the inventory "
                f"({_listed(names) or 'it has none'}); add it under all.hosts or fix the name",
            )
    return Inventory(lab, names, host_vars)


def inventory_hosts(group: Any, where: str = "all") -> tuple[str, ...]:
    """Host names of an inventory group and of its children, in file order, once each."""
    hosts: dict[str, None] = {}
    _collect(group, where, {}, hosts, ({}, {}))
    return tuple(hosts)


def _all_group(doc: Any, source: str) -> dict[Any, Any]:
    if doc is None:
        raise SpecError(source, f"is empty; a lab file is an Ansible inventory: {SHAPE}")
    if not isinstance(doc, dict):
        raise SpecError(source, f"holds {yaml_value(doc)}; a lab file is a mapping: {SHAPE}")
    return _mapping(doc.get("all"), "all", "a mapping with hosts, vars or children")


_Vars = dict[str, dict[str, Any]]


def _collect(group: Any, where: str, inherited: dict[str, Any], hosts: dict[str, None],
             variables: tuple[_Vars, _Vars]) -> None:
    """Walk a group and its children: every host once (file order), the vars of its groups
    and its own vars (``variables``: group vars and own vars, by host)."""
    group = _mapping(group, where, "a mapping with hosts, vars or children")
    own = _mapping(group.get("vars"), f"{where}.vars", "a mapping of variables, such as {lab: ...}")
    scope = {**inherited, **{k: v for k, v in own.items() if k != "lab"}}
    listed = _mapping(group.get("hosts"), f"{where}.hosts",
                      "a mapping of host names, such as {localhost: {ansible_connection: local}}")
    group_vars, own_vars = variables
    for name, mine in listed.items():
        _name(name, f"{where}.hosts", "host")
        mine = _mapping(mine, f"{where}.hosts.{name}",
                        "empty or a mapping of host variables, such as {ansible_host: 192.0.2.7}")
        hosts[name] = None
        group_vars[name] = {**group_vars.get(name, {}), **scope}
        own_vars[name] = {**own_vars.get(name, {}), **mine}
    children = _mapping(group.get("children"), f"{where}.children",
                        "a mapping of groups, such as {hypervisors: {hosts: ...}}")
    for name, child in children.items():
        _name(name, f"{where}.children", "group")
        _collect(child, f"{where}.children.{name}", scope, hosts, variables)


def _mapping(value: Any, where: str, what: str) -> dict[Any, Any]:
    """``value`` if it is a mapping, {} if empty (Ansible allows ``hosts:`` with nothing)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(where, f"is {yaml_value(value)}; it must be {what}")
    return value


def _name(name: Any, where: str, what: str) -> None:
    if name is None:
        raise SpecError(where, f"a {what} name is empty; write the name")
    if not isinstance(name, str):
        raise SpecError(where, f"the {what} name {shown(name)} is not text but "
                        f"{yaml_value(name)}; write it in quotes")


def _listed(names: tuple[str, ...], most: int = 5) -> str:
    """A few names for a message, and how many more there are."""
    more = f", ... ({len(names) - most} more)" if len(names) > most else ""
    return ", ".join(shown(n) for n in names[:most]) + more
