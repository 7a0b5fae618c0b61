"""The lab file's JSON Schema (`provision schema`, schema/lab.schema.json, named by the
inventories' yaml-language-server modeline): the shipped copy is the generated one, every key
is described, the schema accepts every lab of the repository and of its tests (and whatever
the spec accepts), and it rejects what the spec rejects wherever a schema can say so, at the
key the spec names."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzz import strategies as fuzz
from hypothesis import HealthCheck, given, settings
from integration import (
    test_cli_errors,
    test_faults,
    test_lab_shapes,
    test_multihost,
    test_real_guests,
    test_scale,
    test_verify,
)
from jsonschema import Draft7Validator

from provision.core import schema, tunnels
from provision.core.inventory import load_inventory
from provision.core.spec import Lab
from provision.core.yamlfile import load_document
from provision.errors import SpecError

from .helpers import SEED_KEY, lab_data, mutated
from .test_inventory import HOSTS
from .test_uplinks_mtu import uplinked

# fuzz and integration are the packages of tests/, which pytest puts on sys.path (tests/ has
# no __init__.py) and names its modules by; their lab builders need no daemon.
REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / schema.SHIPPED
SCHEMA = schema.lab_file_schema()
VALIDATOR = Draft7Validator(SCHEMA)
LAB_MODELS = ("Lab", "BridgeSpec", "UplinkSpec", "TunnelSpec", "VmSpec", "NicSpec",
              "TrunkVlan", "DiskImageSpec", "CloudInitSpec")


def inventory(lab: Any, *hosts: str) -> dict[str, Any]:
    return {"all": {"hosts": {h: {} for h in hosts or ("localhost",)}, "vars": {"lab": lab}}}


def write(tmp_path: Path, doc: Any, name: str = "lab.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def spec_error(path: Path) -> SpecError | None:
    """What the tool makes of the file: None if it accepts it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lab.datapath's deprecation
            load_inventory(path)
    except SpecError as exc:
        return exc
    return None


def schema_errors(doc: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in VALIDATOR.iter_errors(doc)]


# -- the shipped copy, the CLI ----------------------------------------------------------------

def test_the_shipped_schema_is_the_generated_one() -> None:
    assert SHIPPED.read_text() == schema.schema_json(), (
        f"{schema.SHIPPED} is not what `provision schema` prints now; regenerate it: "
        f"`make schema` (or `{schema.REGENERATE}`), and commit it")


def test_provision_schema_prints_it_and_writes_it(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "lab.schema.json"
    run = [sys.executable, "-m", "provision.cli", "schema"]
    printed = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path,
                             timeout=60, check=False)
    assert printed.returncode == 0 and printed.stderr == "", printed.stderr
    assert printed.stdout == SHIPPED.read_text()
    written = subprocess.run([*run, "--json", "--output", str(out)], capture_output=True,
                             text=True, env=env, timeout=60, check=False)
    assert (written.returncode, written.stdout, written.stderr) == (0, "", "")
    assert out.read_text() == printed.stdout
    missing = subprocess.run([*run, "--output", str(tmp_path / "no" / "x.json")],
                             capture_output=True, text=True, env=env, timeout=60, check=False)
    assert missing.returncode == 3 and missing.stdout == ""
    assert missing.stderr.startswith("provision: error: --output: cannot write ")


def test_it_is_a_draft07_schema_whose_refs_resolve() -> None:
    Draft7Validator.check_schema(SCHEMA)
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(SCHEMA)
    assert refs == {f"#/definitions/{name}" for name in SCHEMA["definitions"]}


def test_the_inventory_variables_are_the_ones_the_tool_reads() -> None:
    assert schema.UNDERLAY_VAR == tunnels.UNDERLAY_VAR
    assert tunnels.UNDERLAY_VAR in schema.INVENTORY_VARS


# -- every key described, with its default and its limits -------------------------------------

def lab_keys() -> Iterator[tuple[str, str, dict[str, Any], bool]]:
    for model in LAB_MODELS:
        definition = SCHEMA["definitions"][model]
        for key, prop in definition["properties"].items():
            yield model, key, prop, key in definition.get("required", ())


def test_every_model_of_the_spec_is_in_the_schema() -> None:
    models = set()

    def collect(model: type) -> None:
        models.add(model.__name__)
        for field in model.model_fields.values():
            for arg in _type_args(field.annotation):
                if isinstance(arg, type) and hasattr(arg, "model_fields"):
                    collect(arg)

    collect(Lab)
    assert models == set(LAB_MODELS)
    for model in LAB_MODELS:
        assert SCHEMA["definitions"][model]["additionalProperties"] is False, model


def _type_args(annotation: Any) -> Iterator[Any]:
    """``annotation`` and every type inside it (unions, tuples, Annotated)."""
    yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _type_args(arg)


@pytest.mark.parametrize(("model", "key", "prop", "required"), list(lab_keys()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_key_has_a_description_and_a_default_unless_required(
        model: str, key: str, prop: dict[str, Any], required: bool) -> None:
    assert len(prop.get("description", "")) > 20, f"{model}.{key} has no description"
    assert required or prop.get("deprecated") or "default" in prop, f"{model}.{key}: no default"
    assert not required or "default" not in prop, f"{model}.{key}: required, with a default"


@pytest.mark.parametrize(("model", "key", "prop", "required"), list(lab_keys()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_the_examples_and_defaults_are_valid(
        model: str, key: str, prop: dict[str, Any], required: bool) -> None:
    check = Draft7Validator({**prop, "definitions": SCHEMA["definitions"]})
    for value in [*prop.get("examples", ()), *([prop["default"]] if "default" in prop else [])]:
        assert list(check.iter_errors(value)) == [], f"{model}.{key}: {value!r}"


def _limits(node: Any) -> set[str]:
    """The keywords of a property's schema that limit its value beyond its JSON type."""
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("description", "default", "examples", "title", "type",
                     "patternErrorMessage", "deprecationMessage"):
                continue
            if k == "additionalProperties" and v is True:
                continue
            if k in ("anyOf", "oneOf", "allOf", "items", "not"):
                found |= _limits(v)
            else:
                found.add(k)
    elif isinstance(node, list):
        for v in node:
            found |= _limits(v)
    return found


# The keys whose value the schema limits by type alone, and why. A new key lands here only
# when nothing more can be said of it.
UNLIMITED = {
    ("NicSpec", "bridge"): "one of lab.bridges' names: the tool checks it",
    ("VmSpec", "host"): "one of the inventory's hosts: the tool checks it",
    ("DiskImageSpec", "url"): "urlsplit's reading (scheme, host, file) is not a pattern",
    ("CloudInitSpec", "user_data"): "any #cloud-config",
}
LIMITS = {  # the model's ranges, enums and patterns, as the schema must state them
    ("Lab", "name"): {"pattern"}, ("Lab", "backend"): {"enum"},
    ("Lab", "bridges"): {"minItems", "$ref"}, ("VmSpec", "name"): {"pattern"},
    ("VmSpec", "vcpus"): {"minimum", "maximum"}, ("VmSpec", "memory_mib"): {"minimum", "maximum"},
    ("NicSpec", "vlan"): {"minimum", "maximum"}, ("NicSpec", "queues"): {"minimum", "maximum"},
    ("NicSpec", "trunks"): {"minimum", "maximum", "minItems", "uniqueItems", "$ref"},
    ("NicSpec", "ip"): {"pattern"}, ("NicSpec", "mac"): {"pattern"},
    ("NicSpec", "rx_queue_size"): {"enum"}, ("NicSpec", "tx_queue_size"): {"enum"},
    ("TrunkVlan", "vlan"): {"minimum", "maximum"}, ("TrunkVlan", "ip"): {"pattern"},
    ("BridgeSpec", "name"): {"pattern", "enum"}, ("BridgeSpec", "datapath_type"): {"enum"},
    ("UplinkSpec", "interface"): {"pattern"}, ("UplinkSpec", "vlan_mode"): {"enum"},
    ("UplinkSpec", "vlans"): {"minimum", "maximum", "uniqueItems"},
    ("UplinkSpec", "probe"): {"format"}, ("TunnelSpec", "type"): {"enum"},
    ("TunnelSpec", "underlay_mtu"): {"minimum", "maximum"},
    ("DiskImageSpec", "path"): {"pattern"}, ("DiskImageSpec", "sha256"): {"pattern"},
    ("DiskImageSpec", "format"): {"enum"}, ("CloudInitSpec", "ssh_authorized_keys"): {"pattern"},
}


def test_every_key_states_its_limits() -> None:
    unlimited = {(m, k) for m, k, prop, _ in lab_keys() if not _limits(prop)}
    assert unlimited == set(UNLIMITED)
    for (model, key), limits in LIMITS.items():
        prop = SCHEMA["definitions"][model]["properties"][key]
        assert limits <= _limits(prop), f"{model}.{key}: {sorted(_limits(prop))}"


# -- what it accepts ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(REPO.glob("inventory/*.yml")), ids=lambda p: p.name)
def test_every_shipped_lab_is_valid_and_names_the_schema(path: Path) -> None:
    assert path.read_text().startswith(
        "# yaml-language-server: $schema=../schema/lab.schema.json\n"), path
    assert spec_error(path) is None
    assert schema_errors(load_document(path)) == []


def _load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_cli", REPO / "benchmarks" / "bench_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _disk_lab() -> dict[str, Any]:
    data = lab_data(cloud_init={"ssh_authorized_keys": [SEED_KEY]})
    data["vms"][0].update(image="debian", cloud_init={"user_data": {"packages": ["iperf3"]}})
    data["vms"][1]["image"] = {"url": "https://example.org/i/noble.img", "sha256": "AB" * 32,
                               "format": "raw"}
    return data


def _padded() -> dict[str, Any]:
    """Text with spaces around it, which the models strip before they check it."""
    data = lab_data(name=" ut ", bridges=[{"name": "br-ut "}],
                    cloud_init={"ssh_authorized_keys": [f" {SEED_KEY} "]})
    data["vms"][0].update(name=" vm1", image={"path": " /srv/x.qcow2", "sha256": "AB" * 32})
    data["vms"][0]["nics"][0].update(mac=" 52:54:00:AA:00:01 ", ip=" 10.9.0.1/24\t")
    data["vms"][1]["nics"][0]["trunks"][1]["ip"] = "10.9.0.2/255.255.255.0"
    return inventory(data)


def _grouped() -> dict[str, Any]:
    """test_inventory's hosts in a child group, with host and group variables."""
    data = lab_data()
    data["vms"][1]["host"] = "hv3"
    doc = copy.deepcopy(HOSTS)
    doc["children"]["hypervisors"]["vars"] = {tunnels.UNDERLAY_VAR: "192.0.2.99"}
    doc["children"]["hypervisors"]["hosts"]["hv2"] = {tunnels.UNDERLAY_VAR: "192.0.2.2",
                                                      "virtio_lab_underlay_prefix": 24}
    doc["vars"] = {"lab": data, "colour": "all"}
    return {"all": doc, "ungrouped": {"hosts": None}}


TEST_LABS: dict[str, Callable[[], Any]] = {
    "unit/helpers BASE": lambda: inventory(lab_data()),
    "unit disk images and cloud_init": lambda: inventory(_disk_lab()),
    "unit uplink, trunk of every VLAN": lambda: inventory(uplinked()),
    "unit uplink, access": lambda: inventory(uplinked(vlan_mode="access", vlans=[100],
                                                      probe="192.0.2.1")),
    "unit inventory with groups and host vars": _grouped,
    "unit text with spaces around": _padded,
    "unit deprecated datapath": lambda: inventory({**lab_data(), "datapath": "userspace"}),
    "unit tunnels and a path image": lambda: inventory(lab_data(
        tunnels={"type": "vxlan", "underlay_mtu": 9000},
        vms=[{"name": "vm1", "host": "hv1", "image": {"path": "/srv/x.qcow2",
                                                      "sha256": "0" * 64}}]), "hv1"),
    "integration lab_shapes": lambda: inventory(test_lab_shapes.shapes("vltschema")),
    "integration cli_errors": lambda: inventory(test_cli_errors.small_lab(
        "vltschema", backend="vhost-net")),
    "integration faults": lambda: inventory(test_faults.two_vm_lab("vltschema")),
    "integration real_guests": lambda: inventory(test_real_guests.real_lab(
        "vltschema", Path("/var/tmp/base.qcow2"), "c" * 64)),
    "integration verify": lambda: inventory(test_verify.lab_doc("vltschema", "userspace")),
    "integration scale": lambda: inventory(test_scale.scale_lab("vltschema")),
    "integration multihost": lambda: test_multihost.lab_doc("hv2"),
    "benchmarks bench_cli": lambda: _load_bench().lab_document("vlb300x0000", 300, 4, 2),
}


@pytest.mark.parametrize("name", sorted(TEST_LABS))
def test_the_labs_the_tests_use_are_valid(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, TEST_LABS[name]())
    assert spec_error(path) is None
    assert schema_errors(load_document(path)) == []


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(fuzz.valid_labs())
def test_the_fuzzers_valid_labs_are_valid(lab: fuzz.ValidLab) -> None:
    assert schema_errors(lab.doc) == []


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("schema")


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(doc=fuzz.mutated_docs())
def test_whatever_the_spec_accepts_the_schema_accepts(scratch: Path, doc: Any) -> None:
    """The fuzzer's mutations of valid labs, through the tool's own YAML loader: where the
    spec takes one, an editor must not mark it wrong."""
    path = scratch / "mutated.yml"
    path.write_bytes(fuzz.dump(doc))
    if spec_error(path) is None:
        assert schema_errors(load_document(path)) == []


# -- what it rejects, as the spec does ------------------------------------------------------------

def lab_with(path: list, value: object) -> dict[str, Any]:
    return inventory(mutated(path, value))


def inventory_with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = inventory(lab_data())
    change(doc)
    return doc


NIC0 = ["vms", 0, "nics", 0]
TRUNK = ["vms", 1, "nics", 0]
REJECTED: dict[str, Any] = {
    # unknown keys (every model forbids extras)
    "lab key": lab_with(["colour"], "red"),
    "vm key": lab_with(["vms", 0, "colour"], "red"),
    "nic key": lab_with([*NIC0, "speed"], 10),
    "trunk entry key": lab_with([*TRUNK, "trunks", 1, "mtu"], 9000),
    "bridge key": lab_with(["bridges", 0, "stp"], True),
    # names by pattern
    "lab name case": lab_with(["name"], "Bad_Name"),
    "lab name hyphen": lab_with(["name"], "my-lab"),
    "lab name length": lab_with(["name"], "abcdefghijklm"),
    "lab name number": lab_with(["name"], 7),
    "vm name markup": lab_with(["vms", 0, "name"], "vm1'/><x"),
    "vm name shell": lab_with(["vms", 0, "name"], "$(reboot)"),
    "bridge name path": lab_with(["bridges", 0, "name"], "../../etc"),
    "bridge name length": lab_with(["bridges", 0, "name"], "br-a-very-long-name"),
    "bridge name reserved": inventory(lab_data(bridges=[{"name": "ovs-system"}], vms=[])),
    "uplink interface": inventory(uplinked(interface="eth 1")),
    # ranges and types
    "vcpus 0": lab_with(["vms", 0, "vcpus"], 0),
    "vcpus 256": lab_with(["vms", 0, "vcpus"], 256),
    "vcpus boolean": lab_with(["vms", 0, "vcpus"], True),
    "vcpus text": lab_with(["vms", 0, "vcpus"], "4"),
    "vcpus decimal": lab_with(["vms", 0, "vcpus"], 4.5),
    "memory 127": lab_with(["vms", 0, "memory_mib"], 127),
    "queues 0": lab_with([*NIC0, "queues"], 0),
    "queues 257": lab_with([*NIC0, "queues"], 257),
    "vlan 0": lab_with([*NIC0, "vlan"], 0),
    "vlan 4095": lab_with([*NIC0, "vlan"], 4095),
    "vlan text": lab_with([*NIC0, "vlan"], "100"),
    "vlan list": lab_with([*NIC0, "vlan"], [100]),
    "rx ring 300": lab_with([*NIC0, "rx_queue_size"], 300),
    "rx ring 2048": lab_with([*NIC0, "rx_queue_size"], 2048),
    "tx ring 512": lab_with([*NIC0, "tx_queue_size"], 512),
    "underlay mtu": lab_with(["tunnels"], {"underlay_mtu": 1200}),
    # enums
    "backend": lab_with(["backend"], "dpdk"),
    "datapath_type": lab_with(["bridges", 0, "datapath_type"], "dpdk"),
    "tunnel type": lab_with(["tunnels"], {"type": "gre"}),
    "image name": lab_with(["vms", 0, "image"], "fedora"),
    "image format": lab_with(["vms", 0, "image"], {"path": "/x.img", "sha256": "0" * 64,
                                                    "format": "vmdk"}),
    "uplink vlan_mode": inventory(uplinked(vlan_mode="hybrid")),
    # trunks
    "trunks empty": lab_with([*TRUNK, "trunks"], []),
    "trunks twice": lab_with([*TRUNK, "trunks"], [100, 100]),
    "trunk vlan 5000": lab_with([*TRUNK, "trunks", 1, "vlan"], 5000),
    "trunk number 0": lab_with([*TRUNK, "trunks", 0], 0),
    "trunk text": lab_with([*TRUNK, "trunks", 0], "200"),
    "vlan and trunks": lab_with([*NIC0, "trunks"], [200]),
    "ip on a trunk": lab_with([*TRUNK, "ip"], "10.9.9.9/24"),
    # addresses
    "ip without prefix": lab_with([*NIC0, "ip"], "10.9.0.5"),
    "ip /32": lab_with([*NIC0, "ip"], "10.9.0.5/32"),
    "ip /7": lab_with([*NIC0, "ip"], "10.9.0.5/7"),
    "ip octet": lab_with([*NIC0, "ip"], "10.9.0.300/24"),
    "ip number": lab_with([*NIC0, "ip"], 167772161),
    "ip v6": lab_with([*NIC0, "ip"], "fe80::1/64"),
    "mac multicast": lab_with([*NIC0, "mac"], "01:00:5e:00:00:01"),
    "mac all-zero": lab_with([*NIC0, "mac"], "00:00:00:00:00:00"),
    "mac dashes": lab_with([*NIC0, "mac"], "52-54-00-12-34-56"),
    "mac number": lab_with([*NIC0, "mac"], 525400123456),
    "uplink probe number": inventory(uplinked(probe=3232235777)),
    # images and cloud-init
    "disk image without sha256": lab_with(["vms", 0, "image"], {"path": "/x.qcow2"}),
    "disk image with path and url": lab_with(["vms", 0, "image"], {
        "path": "/x.qcow2", "url": "https://example.org/x.qcow2", "sha256": "0" * 64}),
    "disk image without a source": lab_with(["vms", 0, "image"], {"sha256": "0" * 64}),
    "relative image path": lab_with(["vms", 0, "image"], {"path": "x.qcow2",
                                                          "sha256": "0" * 64}),
    "short sha256": lab_with(["vms", 0, "image"], {"path": "/x.qcow2", "sha256": "abc"}),
    "cloud_init on tiny": lab_with(["vms", 1, "cloud_init"], {}),
    "ssh key": lab_with(["cloud_init"], {"ssh_authorized_keys": ["my key"]}),
    # uplinks
    "access uplink without vlans": inventory(uplinked(vlan_mode="access")),
    "access uplink with two": inventory(uplinked(vlan_mode="access", vlans=[1, 2])),
    "uplink vlan 0": inventory(uplinked(vlans=[0])),
    "uplink vlans twice": inventory(uplinked(vlans=[5, 5])),
    # the lab's shape
    "no bridges": lab_with(["bridges"], []),
    "vms a mapping": lab_with(["vms"], {"name": "vm1"}),
    "host number": lab_with(["vms", 0, "host"], 1),
    "datapath and backend": inventory({**lab_data(), "datapath": "auto", "backend": "auto"}),
    "datapath unknown": inventory({**lab_data(), "datapath": "dpdk"}),
    # the inventory around it
    "no all": {"ungrouped": {"vars": {"lab": lab_data()}}},
    "no lab": inventory_with(lambda d: d["all"]["vars"].pop("lab")),
    "empty lab": inventory_with(lambda d: d["all"]["vars"].update(lab=None)),
    "lab a list": inventory_with(lambda d: d["all"]["vars"].update(lab=[lab_data()])),
    "hosts a list": inventory_with(lambda d: d["all"].update(hosts=["localhost"])),
    "host vars text": inventory_with(lambda d: d["all"]["hosts"].update(localhost="local")),
    "children text": inventory_with(lambda d: d["all"].update(children="hv")),
    "group vars a list": inventory_with(lambda d: d["all"].update(
        children={"hv": {"vars": [1], "hosts": {"hv1": None}}})),
}


def _key_path(spec_path: str) -> list[str | int]:
    """``lab.vms[0].nics[0].ip`` as the document's path, ``all.vars.lab.vms.0.nics.0.ip``."""
    words = spec_path.replace("[", ".").replace("]", "").split(".")
    path: list[str | int] = ["all", "vars"] if words[0] == "lab" else []
    return path + [int(w) if w.isdigit() else w for w in words]


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_the_schema_rejects_what_the_spec_rejects_at_its_key(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, REJECTED[name])
    spec = spec_error(path)
    assert spec is not None, "the spec accepts it: not a sample of what it rejects"
    doc = load_document(path)
    errors = list(VALIDATOR.iter_errors(doc))
    assert errors, f"the schema accepts what the spec rejects: {spec}"
    # The schema marks the key the spec names, or the object that holds it (a rule across
    # keys, such as vlan with trunks, is the object's).
    where = _key_path(spec.path)
    assert any(_marks(e, where) for e in errors), f"spec: {spec}; schema: {schema_errors(doc)}"


def _marks(error: Any, where: list[str | int]) -> bool:
    """Whether an error of the schema, or one of the errors of the branches it tried (anyOf,
    oneOf), is about the key at ``where`` or the object that holds it. ``required`` is about
    the missing key; ``datapath`` is named as the spec names it once read, ``backend``."""
    path = ["backend" if p == "datapath" else p for p in error.absolute_path]
    if error.validator == "required":
        path.append(next(k for k in error.validator_value if k not in error.instance))
        if where[:len(path)] == path:
            return True
    elif where[:len(path)] == path and len(path) >= len(where) - 1:
        return True
    return any(_marks(sub, where) for sub in error.context or ())
