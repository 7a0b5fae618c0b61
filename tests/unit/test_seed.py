"""The NoCloud seed's files: network-config, user-data (the channel rule and script, the guest
agent, SSH keys, the lab's extras merged in), and what is refused, at which key."""

from __future__ import annotations

import datetime
import shutil
import stat
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.errors import SpecError
from provision.image.seed import (
    CHANNELS_RULE,
    CHANNELS_SCRIPT,
    SeedNic,
    SeedSpec,
    seed_files,
    seed_spec,
)

from .helpers import SEED_KEY as KEY
from .helpers import SEED_MAC1 as MAC1
from .helpers import SEED_MAC2 as MAC2
from .helpers import SEED_MAC3 as MAC3
from .helpers import SEED_NIC as NIC1
from .helpers import SEED_TRUNK as TRUNK
from .helpers import SEED_WHERE as WHERE
from .helpers import seed as spec


def parsed(s: SeedSpec) -> dict[str, Any]:
    return {name: yaml.safe_load(data) for name, data in seed_files(s).items()}


def user_data(s: SeedSpec) -> dict[str, Any]:
    return parsed(s)["user-data"]


def network(s: SeedSpec) -> dict[str, Any]:
    return parsed(s)["network-config"]


def test_meta_data_and_user_data_is_a_cloud_config() -> None:
    s = spec()
    assert parsed(s)["meta-data"] == {"instance-id": s.instance_id, "local-hostname": "vm1"}
    assert seed_files(s)["user-data"].startswith(b"#cloud-config\n")


# -- network-config -------------------------------------------------------------------------

def test_one_nic_is_matched_by_mac_and_driver_renamed_and_static() -> None:
    assert network(spec(NIC1)) == {"version": 2, "ethernets": {"nic0": {
        "match": {"macaddress": MAC1, "driver": "virtio_net"}, "set-name": "nic0",
        "addresses": ["10.9.0.1/24"], "mtu": 1446, "dhcp4": False, "dhcp6": False,
    }}}


def test_several_nics_are_named_by_their_index_and_a_nic_without_address_just_comes_up() -> None:
    third = SeedNic(MAC3, "fd00::3/64", 8, 9000)
    config = network(spec(NIC1, TRUNK, third))
    assert list(config["ethernets"]) == ["nic0", "nic1", "nic2"]
    nic1 = config["ethernets"]["nic1"]
    assert nic1 == {"match": {"macaddress": MAC2, "driver": "virtio_net"}, "set-name": "nic1",
                    "dhcp4": False, "dhcp6": False}
    assert config["ethernets"]["nic2"]["addresses"] == ["fd00::3/64"]
    assert all(set(e["match"]) == {"macaddress", "driver"} for e in config["ethernets"].values())


def test_a_mac_that_yaml_would_read_as_a_number_stays_text() -> None:
    # 52:54:00:12:34:56 is a base-60 integer to a YAML 1.1 reader unless it is quoted.
    assert network(spec(TRUNK))["ethernets"]["nic0"]["match"]["macaddress"] == MAC2


def test_vlans_are_sub_interfaces_of_their_nic_with_its_mtu() -> None:
    config = network(spec(NIC1, replace(TRUNK, mtu=1446)))
    assert config["vlans"] == {
        "nic1.30": {"id": 30, "link": "nic1", "addresses": ["10.0.30.1/24"], "mtu": 1446,
                    "dhcp4": False, "dhcp6": False},
        "nic1.31": {"id": 31, "link": "nic1", "addresses": ["10.0.31.1/24"], "mtu": 1446,
                    "dhcp4": False, "dhcp6": False},
    }
    assert all(len(name) <= 15 for name in config["vlans"])


def test_no_vlans_no_vlans_key_and_nothing_anywhere_asks_for_dhcp() -> None:
    config = network(spec(NIC1))
    assert "vlans" not in config
    assert b"dhcp4: true" not in seed_files(spec(NIC1, TRUNK))["network-config"]


# -- user-data: hostname, channels, agent, keys ---------------------------------------------

def rule_lines(s: SeedSpec) -> list[str]:
    files = {f["path"]: f for f in user_data(s)["write_files"]}
    return [line for line in files[CHANNELS_RULE]["content"].splitlines()
            if not line.startswith("#")]


@pytest.mark.parametrize("queues", [1, 2, 64, 256])
def test_one_channel_rule_per_mac_run_at_every_boot_and_once_now(queues: int) -> None:
    s = spec(replace(NIC1, queues=queues), TRUNK)
    assert rule_lines(s) == [
        f'ACTION=="add", SUBSYSTEM=="net", DRIVERS=="virtio_net", ATTR{{address}}=="{mac}", '
        f'RUN+="{CHANNELS_SCRIPT} {mac} {n}"'
        for mac, n in ((MAC1, queues), (MAC2, 1))
    ]
    runcmd = user_data(s)["runcmd"]
    assert runcmd[:2] == [[CHANNELS_SCRIPT, MAC1, str(queues)], [CHANNELS_SCRIPT, MAC2, "1"]]


def test_the_channel_script_and_rule_are_root_files_with_the_right_modes() -> None:
    files = {f["path"]: f for f in user_data(spec())["write_files"]}
    assert files[CHANNELS_SCRIPT]["permissions"] == "0755"
    assert files[CHANNELS_RULE]["permissions"] == "0644"
    assert files[CHANNELS_SCRIPT]["content"].startswith("#!/bin/sh\n")
    assert MAC1 not in files[CHANNELS_SCRIPT]["content"]  # values are arguments, not code


def test_hostname_guest_agent_and_keys() -> None:
    data = user_data(spec(keys=(KEY,)))
    assert data["hostname"] == "vm1"
    assert data["runcmd"][-1] == ["systemctl", "enable", "--now", "qemu-guest-agent.service"]
    assert data["ssh_authorized_keys"] == [KEY]
    assert "ssh_authorized_keys" not in user_data(spec())


# -- the channel script, run by a real shell against a made-up /sys/class/net --------------

def fake_nic(root: Path, name: str, mac: str, queues: int, device: bool = True) -> None:
    nic = root / name
    (nic / "queues").mkdir(parents=True)
    (nic / "address").write_text(mac + "\n")
    for i in range(queues):
        (nic / "queues" / f"rx-{i}").mkdir()
    if device:
        (nic / "device").mkdir()


@pytest.fixture
def channels(tmp_path: Path) -> Any:
    """Run the seed's channel script on a fake sysfs; ethtool records its arguments."""
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    files = {f["path"]: f["content"] for f in user_data(spec())["write_files"]}
    script = files[CHANNELS_SCRIPT]
    assert script.count("/sys/class/net/*") == 1 and script.count("PATH=") == 1
    bin_dir, sysfs = tmp_path / "bin", tmp_path / "net"
    bin_dir.mkdir()
    sysfs.mkdir()
    ethtool = bin_dir / "ethtool"
    ethtool.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/ethtool.log\n')
    ethtool.chmod(ethtool.stat().st_mode | stat.S_IEXEC)
    script = script.replace("/sys/class/net/*", f"{sysfs}/*").replace(
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"PATH={bin_dir}:/usr/bin:/bin")

    def run(mac: str, queues: int) -> tuple[int, list[str]]:
        done = subprocess.run([sh, "-c", script, "virtio-lab-channels", mac, str(queues)],
                              capture_output=True, text=True, check=False)
        log = tmp_path / "ethtool.log"
        return done.returncode, log.read_text().splitlines() if log.exists() else []

    return sysfs, run


def test_the_channel_script_sets_the_nic_with_that_mac_not_its_vlan(channels: Any) -> None:
    sysfs, run = channels
    fake_nic(sysfs, "nic1.30", MAC2, 1, device=False)  # a VLAN: same MAC, no device
    fake_nic(sysfs, "enp2s0", MAC2, 1)
    fake_nic(sysfs, "enp1s0", MAC1, 1)
    assert run(MAC2, 4) == (0, ["-L enp2s0 combined 4"])


def test_the_channel_script_leaves_a_count_already_set_and_fails_on_an_unknown_mac(
    channels: Any,
) -> None:
    sysfs, run = channels
    fake_nic(sysfs, "enp1s0", MAC1, 4)
    assert run(MAC1, 4) == (0, [])
    assert run(MAC3, 4) == (1, [])


# -- the lab's extras ------------------------------------------------------------------------

def test_extras_add_keys_and_extend_virtio_labs_lists() -> None:
    extras = {
        "packages": ["iperf3"],
        "runcmd": ["echo one", ["touch", "/run/two"]],
        "write_files": [{"path": "/etc/motd", "content": "lab\n"}],
        "ssh_authorized_keys": ["ssh-ed25519 AAAA other@host"],
        "timezone": "UTC",
    }
    data = user_data(spec(keys=(KEY,), extras=extras))
    assert data["packages"] == ["iperf3"]
    assert data["timezone"] == "UTC"
    assert data["runcmd"][-2:] == ["echo one", ["touch", "/run/two"]]
    assert data["runcmd"][0][0] == CHANNELS_SCRIPT  # virtio-lab's first
    assert [f["path"] for f in data["write_files"]] == [CHANNELS_SCRIPT, CHANNELS_RULE,
                                                         "/etc/motd"]
    assert data["ssh_authorized_keys"] == [KEY, "ssh-ed25519 AAAA other@host"]


@pytest.mark.parametrize("key", ["hostname", "fqdn", "preserve_hostname", "network",
                                 "prefer_fqdn_over_hostname"])
def test_an_extra_that_overrides_the_data_path_is_refused(key: str) -> None:
    with pytest.raises(SpecError) as err:
        spec(extras={"packages": ["iperf3"], key: "x"})
    assert err.value.path == f"{WHERE}.{key}"


@pytest.mark.parametrize("path", [CHANNELS_RULE, CHANNELS_SCRIPT,
                                  "/etc/udev/rules.d/./70-virtio-lab-channels.rules"])
def test_an_extra_file_over_the_channel_rule_or_script_is_refused(path: str) -> None:
    extras = {"write_files": [{"path": "/etc/motd", "content": "x"}, {"path": path}]}
    with pytest.raises(SpecError) as err:
        spec(extras=extras)
    assert err.value.path == f"{WHERE}.write_files[1].path"


@pytest.mark.parametrize(("extras", "path"), [
    ({"runcmd": "reboot"}, "runcmd"),
    ({"write_files": {"path": "/x"}}, "write_files"),
    ({"write_files": ["/x"]}, "write_files[0]"),
    ({"ssh_authorized_keys": KEY}, "ssh_authorized_keys"),
])
def test_an_extra_that_does_not_extend_a_list_as_a_list_is_refused(
    extras: dict[str, Any], path: str,
) -> None:
    with pytest.raises(SpecError) as err:
        spec(keys=(KEY,), extras=extras)
    assert err.value.path == f"{WHERE}.{path}"


@pytest.mark.parametrize(("extras", "path"), [
    ({"packages": {"iperf3"}}, "packages"),
    ({"bootcmd": [b"\x00binary"]}, "bootcmd[0]"),
    ({"write_files": [{"path": "/x", "content": object()}]}, "write_files[0].content"),
    ({"users": [{1: "one"}]}, "users[0]"),
    ({"phone_home": {"url": "\ud800"}}, "phone_home.url"),
])
def test_an_extra_yaml_cannot_write_is_refused_at_its_key(
    extras: dict[str, Any], path: str,
) -> None:
    with pytest.raises(SpecError) as err:
        spec(extras=extras)
    assert err.value.path == f"{WHERE}.{path}"


def test_user_data_that_is_not_a_mapping_or_has_a_key_that_is_not_text() -> None:
    for extras in (["packages"], "packages: [x]", {5: "x"}):
        with pytest.raises(SpecError) as err:
            spec(extras=extras)
        assert err.value.path == WHERE


def test_extras_reach_the_guest_exactly_whatever_they_hold() -> None:
    hostile = ["a: b\n- c", "#cloud-config", "!!python/object:os.system", "'\"", "yes", "0x1F",
               "52:54:00:12:34:56", "line\n  indented\n", "trailing space \n", "tab\there",
               "ünïcode ✓", "{x: 1}", "- item", "~", "null", "", "*alias", "&anchor", "%TAG"]
    extras = {"runcmd": hostile, "bootcmd": [["echo", *hostile]],
              "write_files": [{"path": "/etc/x", "content": "\n".join(hostile)}],
              "x_dates": {"when": "2024-01-01", "on": datetime.date(2024, 1, 2)},
              "x_num": [1.5, -3, True, None]}
    data = user_data(spec(extras=extras))
    assert data["runcmd"][-len(hostile):] == hostile
    assert data["bootcmd"] == [["echo", *hostile]]
    assert data["write_files"][-1]["content"] == "\n".join(hostile)
    assert data["x_dates"] == {"when": "2024-01-01", "on": datetime.date(2024, 1, 2)}
    assert data["x_num"] == [1.5, -3, True, None]


# -- refused NICs, hostnames and keys --------------------------------------------------------

@pytest.mark.parametrize(("nic", "path"), [
    (replace(NIC1, mac="52:54:00:aa:00"), "nics[0].mac"),
    (replace(NIC1, mac='52:54:00:aa:00:01", RUN+="/bin/evil'), "nics[0].mac"),
    (replace(NIC1, address="10.9.0.1"), "nics[0].ip"),
    (replace(NIC1, address="10.9.0.300/24"), "nics[0].ip"),
    (replace(NIC1, queues=0), "nics[0].queues"),
    (replace(NIC1, queues=257), "nics[0].queues"),
    (replace(NIC1, queues=True), "nics[0].queues"),
    (replace(NIC1, mtu=67), "nics[0].mtu"),
    (replace(TRUNK, vlans=((4095, "10.0.0.1/24"),)), "nics[0].vlans[0].vlan"),
    (replace(TRUNK, vlans=((30, "10.0.0.1/24"), (30, "10.0.0.2/24"))), "nics[0].vlans[1].vlan"),
    (replace(TRUNK, vlans=((30, "nope/24"),)), "nics[0].vlans[0].ip"),
])
def test_a_bad_nic_is_refused_at_its_key(nic: SeedNic, path: str) -> None:
    with pytest.raises(SpecError) as err:
        spec(nic)
    assert err.value.path == path


def test_two_nics_with_one_mac_are_refused() -> None:
    with pytest.raises(SpecError) as err:
        spec(NIC1, replace(TRUNK, mac=MAC1.upper()))
    assert err.value.path == "nics[1].mac"


@pytest.mark.parametrize(("s", "path"), [
    (SeedSpec("vlab-1", "bad name", (NIC1,)), "hostname"),
    (SeedSpec("../../etc", "vm1", (NIC1,)), "instance_id"),
    (SeedSpec("vlab-1", "vm1", (NIC1,), (KEY + "\nssh-rsa AAAA evil",)),
     "ssh_authorized_keys[0]"),
    (SeedSpec("vlab-1", "vm1", (NIC1,), ("",)), "ssh_authorized_keys[0]"),
])
def test_a_bad_hostname_instance_id_or_key_is_refused(s: SeedSpec, path: str) -> None:
    with pytest.raises(SpecError) as err:
        seed_files(s)
    assert err.value.path == path


def test_a_vm_without_nics_still_gets_a_seed() -> None:
    s = seed_spec("vm1", ())
    assert network(s) == {"version": 2, "ethernets": {}}
    assert rule_lines(s) == []
