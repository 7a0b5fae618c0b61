"""`provision hosts`, the pure parts: the address plan, names, conflicts with this machine's
routes, firewall listings, the hypervisors' configuration files and their inventory."""

from __future__ import annotations

import re
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
import yaml

from provision.errors import SpecError
from provision.hypervisors import config
from provision.hypervisors.inventory import check_writable, render_inventory
from provision.hypervisors.plan import (
    MAX_HOSTS,
    MGMT_BRIDGE,
    MGMT_GATEWAY,
    UNDERLAY_BRIDGE,
    Hypervisor,
    iptables_forward_drops,
    nft_forward_drops,
    parse_name,
    plan_hypervisors,
    root_links,
    route_conflicts,
)

# ---- the plan ------------------------------------------------------------------------------


def test_plan_names_and_addresses() -> None:
    hosts = plan_hypervisors(3)
    assert [h.name for h in hosts] == ["hv1", "hv2", "hv3"]
    hv3 = hosts[2]
    assert hv3.mgmt_ip == IPv4Interface("192.168.250.3/24")
    assert hv3.underlay_ip == IPv4Interface("192.168.251.3/24")
    assert (hv3.mgmt_veth, hv3.underlay_veth) == ("vlhv3-mgmt", "vlhv3-underlay")
    assert str(hv3.state_dir) == "/var/lib/virtio-lab/hypervisors/hv3"


def test_every_planned_interface_fits_linux_and_is_unique() -> None:
    hosts = plan_hypervisors(MAX_HOSTS)
    links = root_links(hosts)
    assert len(set(links)) == len(links) == 2 + 2 * MAX_HOSTS
    assert all(len(name) <= 15 for name in links)  # IFNAMSIZ - 1
    assert {MGMT_BRIDGE, UNDERLAY_BRIDGE} <= set(links)
    mgmt = {h.mgmt_ip for h in hosts}
    assert len(mgmt) == MAX_HOSTS and MGMT_GATEWAY not in mgmt
    assert all(h.mgmt_ip.network == MGMT_GATEWAY.network for h in hosts)
    assert not any(h.underlay_ip.network.overlaps(MGMT_GATEWAY.network) for h in hosts)


@pytest.mark.parametrize("count", [0, -1, MAX_HOSTS + 1])
def test_a_count_out_of_range_is_bad_input(count: int) -> None:
    with pytest.raises(SpecError, match=r"^N: .*give 1 to 8") as err:
        plan_hypervisors(count)
    assert err.value.exit_code == 3


def test_names_parse_to_hypervisors() -> None:
    assert parse_name("hv1") == Hypervisor(1)
    assert parse_name("hv8").index == 8


@pytest.mark.parametrize("name", ["hv0", "hv9", "hv01", "HV1", "hv", "hv1;rm -rf /", "localhost"])
def test_bad_names_are_bad_input(name: str) -> None:
    with pytest.raises(SpecError, match=r"^HOST: .* is not a hypervisor name") as err:
        parse_name(name)
    assert err.value.exit_code == 3


# ---- conflicts and the firewall ---------------------------------------------------------


def test_routes_overlapping_our_subnets_conflict() -> None:
    routes = [
        ("0.0.0.0/0", "eth0"),  # default: not a conflict
        ("192.0.2.0/24", "eth0"),
        ("192.168.0.0/16", "wg0"),  # covers both
        ("192.168.251.7/32", "eth1"),  # an address of the machine in the underlay subnet
        ("192.168.251.255/32", "eth1"),  # its broadcast route: the same conflict, once
        ("192.168.250.0/24", "vlhv-mgmt"),  # ours, from an earlier `hosts up`
        ("fd00::/64", "eth0"),
    ]
    problems = route_conflicts(routes, own=["vlhv-mgmt"])
    assert problems == [
        "route 192.168.0.0/16 dev wg0 overlaps the management subnet 192.168.250.0/24",
        "route 192.168.0.0/16 dev wg0 overlaps the underlay subnet 192.168.251.0/24",
        "route 192.168.251.7/32 dev eth1 overlaps the underlay subnet 192.168.251.0/24",
    ]
    assert route_conflicts([("10.0.0.0/8", "eth0"), ("junk", "x")]) == []


NFT_DROPPING = """\
table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established accept
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "eth0" drop
	}
}
table ip filter {
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
	}
}
"""


def test_nft_forward_chains_that_may_drop_are_named() -> None:
    assert nft_forward_drops(NFT_DROPPING) == [
        'nft inet filter chain forward: rule `iifname "eth0" drop`',
        "nft ip filter chain FORWARD: policy drop",
    ]
    accepting = "table ip filter {\n chain FORWARD {\n  type filter hook forward priority " \
                "filter; policy accept;\n }\n}\n"
    assert nft_forward_drops(accepting) == [] and nft_forward_drops("") == []


def test_iptables_forward_policy_and_rules_that_may_drop() -> None:
    listing = "-P FORWARD DROP\n-A FORWARD -i docker0 -j ACCEPT\n-A FORWARD -j REJECT\n"
    assert iptables_forward_drops(listing) == [
        "iptables FORWARD policy DROP", "iptables rule `-A FORWARD -j REJECT`"]
    assert iptables_forward_drops("-P FORWARD ACCEPT\n") == []


# ---- configuration files -----------------------------------------------------------------


def _settings(text: str, key: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(rf"\s*{key}\s*=", line)]


def test_qemu_conf_turns_cgroup_controllers_off_once() -> None:
    host = ('user = "libvirt-qemu"\n#cgroup_controllers = [ "cpu" ]\n'
            'cgroup_controllers = [ "cpu",\n   "devices",\n   "memory" ]\nvnc_listen = "0.0.0.0"')
    text = config.private_qemu_conf(host)
    assert _settings(text, "cgroup_controllers") == ["cgroup_controllers = [ ]"]
    assert '"devices"' not in text and '"memory"' not in text  # the whole list went
    assert 'user = "libvirt-qemu"' in text and 'vnc_listen = "0.0.0.0"' in text
    assert "#cgroup_controllers" in text  # comments stay
    assert _settings(config.private_qemu_conf(""), "cgroup_controllers") == [
        "cgroup_controllers = [ ]"]


def test_libvirtd_conf_gets_the_hypervisors_own_uuid() -> None:
    text = config.private_libvirtd_conf('host_uuid = "00000000-0000-0000-0000-000000000001"\n'
                                        'log_level = 3\n', "5e1c0c9e-1d4e-4c1f-9a53-7c2f1b0d9f1a")
    assert _settings(text, "host_uuid") == ['host_uuid = "5e1c0c9e-1d4e-4c1f-9a53-7c2f1b0d9f1a"']
    assert "log_level = 3" in text


def test_sshd_listens_on_the_management_address_only_and_takes_keys_only() -> None:
    text = config.sshd_config("192.168.250.2", Path("/s/hv2/ssh/key"), Path("/s/keys"))
    lines = set(text.splitlines())
    assert [line for line in lines if line.startswith("ListenAddress")] == [
        "ListenAddress 192.168.250.2"]
    assert {"PasswordAuthentication no", "PermitRootLogin prohibit-password",
            "HostKey /s/hv2/ssh/key", "AuthorizedKeysFile /s/keys"} <= lines


def test_known_hosts_pins_name_and_address() -> None:
    line = config.known_hosts_line(("hv1", "192.168.250.1"), "ssh-ed25519 AAAAkey root@hv1\n")
    assert line == "hv1,192.168.250.1 ssh-ed25519 AAAAkey\n"


# ---- the inventory -------------------------------------------------------------------------


def test_inventory_has_every_host_with_its_addresses_and_ssh_settings() -> None:
    text = render_inventory(plan_hypervisors(2), Path("/s/id_ed25519"), Path("/s/known_hosts"),
                            "/opt/venv/bin/python")
    doc = yaml.safe_load(text)
    assert set(doc["all"]) == {"hosts"}  # host variables only: merges with a lab file
    hv2 = doc["all"]["hosts"]["hv2"]
    assert hv2["ansible_host"] == "192.168.250.2" and hv2["ansible_user"] == "root"
    assert hv2["ansible_ssh_private_key_file"] == "/s/id_ed25519"
    assert hv2["ansible_python_interpreter"] == hv2["virtio_lab_python"] == "/opt/venv/bin/python"
    assert hv2["virtio_lab_underlay_ip"] == "192.168.251.2"
    assert hv2["virtio_lab_underlay_prefix"] == 24
    args = hv2["ansible_ssh_common_args"]
    assert "UserKnownHostsFile=/s/known_hosts" in args and "StrictHostKeyChecking=yes" in args
    assert list(doc["all"]["hosts"]) == ["hv1", "hv2"]


def test_an_unwritable_inventory_is_bad_input(tmp_path: Path) -> None:
    check_writable(tmp_path / "hosts.yml")
    for bad in (tmp_path / "missing" / "hosts.yml", tmp_path):
        with pytest.raises(SpecError, match=r"^--inventory: ") as err:
            check_writable(bad)
        assert err.value.exit_code == 3


def test_the_hypervisors_lock_conflicts_and_its_file_goes_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provision import hypervisors
    from provision.errors import OperationError

    monkeypatch.setenv("VIRTIO_LAB_RUNDIR", str(tmp_path))
    with hypervisors._lock():
        assert (tmp_path / "hypervisors.lock").exists()
        with pytest.raises(OperationError, match="another `provision hosts up`"), \
                hypervisors._lock():
            pass
    assert list(tmp_path.iterdir()) == []
