"""Spec validation: every bad input is a SpecError naming its key path."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provision.core.inventory import load_lab
from provision.core.owner import domain_name, nic_mac, tap_name
from provision.core.spec import LAB_NAME, VM_NAME, parse_lab
from provision.errors import SpecError

from .helpers import lab, lab_data, mutated

REPO = Path(__file__).resolve().parents[2]


def test_demo_lab_matches_the_issue() -> None:
    demo = load_lab(REPO / "inventory" / "demo.yml")
    assert demo.name == "demo"
    assert len(demo.bridges) == 1
    assert [vm.vcpus for vm in demo.vms] == [4, 4, 4]
    assert [vm.nics[0].queues for vm in demo.vms] == [4, 4, 4]
    assert [vm.nics[0].vlan for vm in demo.vms] == [100, 100, 200]
    nets = {vm.nics[0].ip.network for vm in demo.vms}  # type: ignore[union-attr]
    assert len(nets) == 1, "all three in one subnet, so VLAN isolation is observable"



@pytest.mark.parametrize(
    ("path", "value", "key_path", "words"),
    [
        (["vms", 0, "colour"], "red", "lab.vms[0].colour", "unknown key"),
        (["vms", 0, "nics", 0, "speed"], 10, "lab.vms[0].nics[0].speed", "unknown key"),
        (["name"], "Bad_Name", "lab.name", "not a valid name"),
        (["vms", 0, "name"], "vm1'/><x", "lab.vms[0].name", "not a valid name"),
        (["vms", 0, "name"], "$(reboot)", "lab.vms[0].name", "not a valid name"),
        (["bridges", 0, "name"], "../../etc", "lab.bridges[0].name", "not a valid name"),
        (["bridges", 0, "name"], "br-a-very-long-name", "lab.bridges[0].name", "not a valid"),
        (["vms", 0, "nics", 0, "queues"], 0, "lab.vms[0].nics[0].queues", "greater than"),
        (["vms", 0, "nics", 0, "queues"], 257, "lab.vms[0].nics[0].queues", "less than"),
        (["vms", 0, "nics", 0, "queues"], 8, "lab.vms[0].nics[0].queues", "exceeds vcpus=4"),
        (["vms", 0, "nics", 0, "rx_queue_size"], 300, "lab.vms[0].nics[0].rx_queue_size",
         "256, 512, 1024"),
        (["vms", 0, "nics", 0, "rx_queue_size"], 2048, "lab.vms[0].nics[0].rx_queue_size",
         "256, 512, 1024"),
        (["vms", 0, "nics", 0, "tx_queue_size"], 512, "lab.vms[0].nics[0].tx_queue_size",
         "vhost-user"),
        (["vms", 0, "nics", 0, "vlan"], 4095, "lab.vms[0].nics[0].vlan", "less than"),
        (["vms", 0, "nics", 0, "trunks"], [100], "lab.vms[0].nics[0]", "exclusive"),
        (["vms", 1, "nics", 0, "trunks"], [100, 100], "lab.vms[1].nics[0].trunks", "twice"),
        (["vms", 0, "nics", 0, "mac"], "01:00:5e:00:00:01", "lab.vms[0].nics[0].mac",
         "multicast"),
        (["vms", 0, "nics", 0, "mac"], "52:54:00:00:00:02", "lab.vms[1].nics[0].mac",
         "also used"),
        (["vms", 1, "nics", 0, "trunks", 1, "ip"], "10.9.0.1/24",
         "lab.vms[1].nics[0].trunks[1].ip", "also used"),
        (["vms", 1, "nics", 0, "ip"], "10.9.9.9/24", "lab.vms[1].nics[0].ip",
         "give it to a VLAN"),
        (["vms", 1, "nics", 0, "trunks", 1, "vlan"], 5000, "lab.vms[1].nics[0].trunks[1].vlan",
         "less than"),
        (["vms", 1, "nics", 0, "trunks", 1, "mtu"], 9000, "lab.vms[1].nics[0].trunks[1].mtu",
         "unknown key"),
        (["vms", 1, "nics", 0, "ip"], "10.9.0.300/24", "lab.vms[1].nics[0].ip", "IPv4"),
        (["vms", 1, "name"], "vm1", "lab.vms[1].name", "used twice"),
        (["vms", 0, "nics", 0, "bridge"], "br-x", "lab.vms[0].nics[0].bridge",
         "not in lab.bridges"),
        (["vms", 0, "image"], "fedora", "lab.vms[0].image", "not an image virtio-lab builds"),
        (["backend"], "dpdk", "lab.backend", "not allowed"),
        (["vms", 0, "memory_mib"], 16, "lab.vms[0].memory_mib", "greater than"),
    ],
)
def test_bad_input_names_the_key_path(path: list, value: object, key_path: str,
                                      words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_lab(mutated(path, value))
    message = str(info.value)
    assert message.startswith(key_path + ":"), message
    assert words in message, message
    assert "\n" not in message


def test_msix_budget_is_checked() -> None:
    nics = [{"bridge": "br-ut", "queues": 1} for _ in range(120)]
    with pytest.raises(SpecError, match=r"lab.vms\[0\].nics: needs 480 MSI-X vectors"):
        parse_lab(lab_data(vms=[{"name": "v", "vcpus": 2, "nics": nics}]))


def test_file_errors_are_spec_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(SpecError, match="cannot read"):
        load_lab(missing)
    bad = tmp_path / "bad.yml"
    bad.write_text("all: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_lab(bad)
    empty = tmp_path / "empty.yml"
    empty.write_text("all:\n  hosts: {}\n")
    with pytest.raises(SpecError, match=r"^all.vars.lab:"):
        load_lab(empty)


def test_defaults_and_derived_names_are_stable() -> None:
    parsed = lab()
    assert parsed.vms[0].vcpus == 4 and parsed.vms[1].vcpus == 2 and parsed.backend == "auto"
    vm2 = parsed.vms[1]
    assert vm2.nics[0].trunk_vlans == (100, 200), "trunks are normalised sorted"
    assert [str(t.ip) if t.ip else None for t in vm2.nics[0].trunks] == [None, "10.9.0.2/24"]
    # Derived MACs must not change between releases: a rebuilt lab keeps its guests' MACs.
    assert nic_mac("ut", "vm1", 0) == "52:54:00:85:a9:01"
    assert len({nic_mac("ut", "vm1", 0), nic_mac("ut", "vm1", 1), nic_mac("uu", "vm1", 0)}) == 3
    assert nic_mac("ut", "vm2", 0, vm2.nics[0].mac) == "52:54:00:00:00:02"


def test_tap_names_fit_ifnamsiz() -> None:
    assert tap_name("demo", "vm1", 0) == "demo-vm1-0"
    long = tap_name("abcdefghijkl", "a-very-long-vm-name", 3)
    assert len(long) <= 15 and long.endswith("-3")
    assert long != tap_name("abcdefghijkl", "a-very-long-vm-nam", 3)


def test_datapath_is_a_deprecated_alias_of_backend() -> None:
    import warnings

    from provision.core.spec import SpecDeprecation

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = parse_lab({**lab_data(), "datapath": "userspace"})
    assert old.backend == "userspace"
    assert [w.category for w in caught] == [SpecDeprecation]
    assert "lab.backend" in str(caught[0].message)
    with pytest.raises(SpecError, match=r"lab\.datapath: .*keep only backend"):
        parse_lab({**lab_data(), "datapath": "userspace", "backend": "userspace"})


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].glob("inventory/*.yml")),
                         ids=lambda p: p.name)
def test_every_shipped_lab_is_valid(path: Path) -> None:
    parsed = load_lab(path)
    assert parsed.vms and parsed.bridges, path


# -- guest addresses -----------------------------------------------------------------------

PRIVATE = "use a private address such as 10.9.0.5/24"


@pytest.mark.parametrize(
    ("ip", "words"),
    [
        ("10.9.0.5", "10.9.0.5 has no prefix length; add one, e.g. 10.9.0.5/24"),
        (167772161, "is the number 167772161; write an address with its prefix length, such as"),
        ("10.9.0.0/24", "10.9.0.0 is the network address of 10.9.0.0/24; use a host address "
                        "such as 10.9.0.1/24"),
        ("10.9.0.255/24", "10.9.0.255 is the broadcast address of 10.9.0.0/24"),
        ("10.9.0.3/30", "10.9.0.3 is the broadcast address of 10.9.0.0/30"),
        ("127.0.0.1/8", f"127.0.0.1 is a loopback address, which never leaves a host; {PRIVATE}"),
        ("224.0.0.5/24", "224.0.0.5 is a multicast address (224.0.0.0/4)"),
        ("0.0.0.0/0", '0.0.0.0 is in 0.0.0.0/8 ("this network"), which no host may use'),
        ("0.0.0.7/24", "0.0.0.7 is in 0.0.0.0/8"),
        ("169.254.1.1/16", "169.254.1.1 is link-local (169.254.0.0/16)"),
        ("255.255.255.255/24", "is reserved (240.0.0.0/4, and 255.255.255.255 broadcasts)"),
        ("10.9.0.5/32", "/32 leaves no peer on the guest's link; use /8 to /31, e.g. 10.9.0.5/24"),
        ("10.9.0.5/0", "/0 would put public address space on the guest's link; use /8 to /31"),
        ("10.9.0.5/7", "/7 would put public address space"),
        ("10.9.0.5/33", "'10.9.0.5/33' has an invalid prefix length; write one from 8 to 31"),
        ("10.9.0.300/24", "'10.9.0.300/24' is not an IPv4 address with a prefix length"),
        ("10.9.0.5/24\n- x", "'10.9.0.5/24\\n- x' has an invalid prefix length"),
    ],
)
def test_guest_addresses_must_reach_peers(ip: object, words: str) -> None:
    for path, key_path in [(["vms", 0, "nics", 0, "ip"], "lab.vms[0].nics[0].ip"),
                           (["vms", 1, "nics", 0, "trunks", 1, "ip"],
                            "lab.vms[1].nics[0].trunks[1].ip")]:
        with pytest.raises(SpecError) as info:
            parse_lab(mutated(path, ip))
        message = str(info.value)
        assert message.startswith(f"{key_path}: ") and words in message, message


@pytest.mark.parametrize("ip", ["10.9.0.4/31", "10.9.0.5/31", "10.9.0.1/30", "10.0.0.1/8",
                                "192.0.2.1/24", " 10.9.0.7/24 ", "10.9.0.7/255.255.255.0"])
def test_usable_guest_addresses(ip: str) -> None:
    parsed = parse_lab(mutated(["vms", 0, "nics", 0, "ip"], ip))
    assert parsed.vms[0].nics[0].ip == ipaddress.IPv4Interface(ip.strip())


# -- MACs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mac", "words"),
    [
        ("00:00:00:00:00:00", "is the all-zero address, which no NIC may use"),
        ("ff:ff:ff:ff:ff:ff", "is a multicast address"),
        ("52:54:00:12:34", "'52:54:00:12:34' is not a MAC address; write one such as "
                           '"52:54:00:12:34:56" (in quotes)'),
        ("52-54-00-12-34-56", "is not a MAC address"),
    ],
)
def test_bad_macs(mac: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_lab(mutated(["vms", 0, "nics", 0, "mac"], mac))
    message = str(info.value)
    assert message.startswith("lab.vms[0].nics[0].mac: ") and words in message, message


def test_an_unquoted_mac_in_a_file_says_to_quote_it(tmp_path: Path) -> None:
    path = tmp_path / "lab.yml"
    path.write_text("all:\n  hosts: {localhost: }\n  vars:\n    lab:\n      name: ut\n"
                    "      bridges: [{name: br-ut}]\n"
                    "      vms: [{name: vm1, nics: [{bridge: br-ut, mac: 52:54:00:12:34:56}]}]\n")
    with pytest.raises(SpecError) as info:
        load_lab(path)
    assert str(info.value).endswith('write it in quotes: mac: "52:54:00:12:34:56"'), info.value


# -- names of owned objects are injective across labs -------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("fz-a", "'fz-a' has a '-': owned objects are named <lab>-<vm>, which must name one VM "
                 "of one lab, so lab names have none; write 'fza'"),
        ("a-very-long-name", "has a '-'"),
        ("-", "has a '-'"),
    ],
)
def test_a_lab_name_has_no_hyphen(name: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_lab(lab_data(name=name))
    assert str(info.value).startswith("lab.name: ") and words in str(info.value), info.value
    assert "write" not in str(info.value) or name == "fz-a"


LAB_NAMES = st.from_regex(LAB_NAME, fullmatch=True)
VM_NAMES = st.from_regex(VM_NAME, fullmatch=True)
NICS = st.integers(min_value=0, max_value=300)


def _readings(name: str, parts: int) -> set[tuple[str, ...]]:
    """Every way to cut ``name`` at '-' into a valid lab, a VM and (parts=3) a NIC index."""
    cuts = [i for i, c in enumerate(name) if c == "-"]
    found = set()
    for i in cuts:
        lab, rest = name[:i], name[i + 1:]
        if parts == 3:
            vm, _, nic = rest.rpartition("-")
            reading: tuple[str, ...] = (lab, vm, nic)
            ok = nic == str(int(nic)) if nic.isdigit() else False
        else:
            vm, reading, ok = rest, (lab, rest), True
        if ok and re.fullmatch(LAB_NAME, lab) and re.fullmatch(VM_NAME, vm):
            found.add(reading)
    return found


@settings(max_examples=300, deadline=None)
@given(LAB_NAMES, VM_NAMES, NICS)
def test_owned_names_have_one_reading(lab: str, vm: str, nic: int) -> None:
    """Distinct (lab, vm, nic) give distinct domains and taps, so no lab can name (and then
    change or delete) another lab's objects: each name reads back one way only. A tap that
    does not fit IFNAMSIZ is ``vl<hash>-<nic>``, with one '-' where readable taps have two,
    so the two kinds never meet; hashed taps are distinct up to a hash collision."""
    assert _readings(domain_name(lab, vm), 2) == {(lab, vm)}
    tap = tap_name(lab, vm, nic)
    if tap.count("-") == 1:
        assert tap.startswith("vl") and tap.endswith(f"-{nic}") and len(tap) == 15
    else:
        assert _readings(tap, 3) == {(lab, vm, str(nic))}


def test_the_old_collision_is_refused() -> None:
    assert domain_name("fz-a", "b") == domain_name("fz", "a-b")  # why hyphens had to go
    with pytest.raises(SpecError, match=r"^lab\.name: 'fz-a' has a '-'"):
        parse_lab(lab_data(name="fz-a", vms=[{"name": "b"}]))


# -- bridge names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("lo", "'lo' is the loopback interface; choose another name"),
        ("all", "/proc/sys/net/ipv4/conf/all"),
        ("default", "/proc/sys/net/ipv4/conf/default"),
        ("ovs-system", "Open vSwitch's kernel datapath device"),
        ("bonding_masters", "bonding driver"),
        (".", "not a valid name"), ("..", "not a valid name"), ("br/0", "not a valid name"),
        ("br:0", "not a valid name"), ("br 0", "not a valid name"), ("br%d", "not a valid name"),
    ],
)
def test_reserved_bridge_names(name: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_lab(lab_data(bridges=[{"name": name}], vms=[]))
    message = str(info.value)
    assert message.startswith("lab.bridges[0].name: ") and words in message, message


def test_a_bridge_named_like_one_of_the_labs_taps() -> None:
    data = lab_data(bridges=[{"name": "br-ut"}, {"name": "ut-vm2-0"}])
    with pytest.raises(SpecError) as info:
        parse_lab(data)
    assert str(info.value) == ("lab.bridges[1].name: 'ut-vm2-0' is also the tap of "
                               "vms[1].nics[0] (taps are <lab>-<vm>-<nic>); rename the bridge")


def test_two_derived_macs_that_collide_name_the_fix() -> None:
    """Derived MACs are 24 bits of a hash: two NICs of a lab can get the same one. Found
    here by search (about 5000 names), then the spec must say it was derived and what to do;
    setting mac: on one of them makes the lab valid."""
    seen: dict[str, str] = {}
    for n in range(100_000):
        mac = nic_mac("ut", f"vm{n}", 0)
        if mac in seen:
            first, second = seen[mac], f"vm{n}"
            break
        seen[mac] = f"vm{n}"
    else:
        pytest.fail("no two derived MACs collided in 100000 names")

    def vm(name: str, mac: str | None = None) -> dict:
        nic = {"bridge": "br-ut", **({"mac": mac} if mac else {})}
        return {"name": name, "nics": [nic]}

    with pytest.raises(SpecError, match=rf"lab.vms\[1\].nics\[0\].mac: {mac} is also used by "
                       r"vms\[0\].nics\[0\] \(derived from the lab, VM and NIC names.*set "
                       r"mac: on one of the two\)"):
        parse_lab(lab_data(vms=[vm(first), vm(second)]))
    fixed = parse_lab(lab_data(vms=[vm(first), vm(second, "52:54:00:00:00:99")]))
    assert [v.name for v in fixed.vms] == [first, second]
