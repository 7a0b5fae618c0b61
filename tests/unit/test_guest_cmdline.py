"""The kernel command line the embedded guest boots with: vlab.nic and vlab.vlan tokens."""

from __future__ import annotations

import pytest

from provision.errors import SpecError
from provision.image.cmdline import MAX_CMDLINE, guest_cmdline

from .helpers import IMAGE

MAC = "52:54:00:AB:00:01"


def vlab_tokens(cmdline: str) -> list[str]:
    return [t for t in cmdline.split() if t.startswith("vlab.")]


def test_three_element_nics_still_work_and_carry_no_vlan_tokens() -> None:
    cmdline = guest_cmdline(IMAGE, "vm1", [(MAC, "10.9.0.1/24", 4)])
    assert cmdline.startswith(IMAGE.cmdline + " ")
    assert vlab_tokens(cmdline) == ["vlab.host=vm1", "vlab.nic=52:54:00:ab:00:01,10.9.0.1/24,4"]


def test_one_vlan_token_per_sub_interface_after_its_nic_address_may_be_empty() -> None:
    nics = [
        (MAC, None, 2, [(30, "10.0.30.2/24"), (31, None)]),
        ("52:54:00:ab:00:02", "10.9.0.2/24", 1, ()),
    ]
    assert vlab_tokens(guest_cmdline(IMAGE, "vm1", nics)) == [
        "vlab.host=vm1",
        "vlab.nic=52:54:00:ab:00:01,,2",
        "vlab.vlan=52:54:00:ab:00:01,30,10.0.30.2/24",
        "vlab.vlan=52:54:00:ab:00:01,31,",
        "vlab.nic=52:54:00:ab:00:02,10.9.0.2/24,1",
    ]


@pytest.mark.parametrize("vid", [0, 4095, -1, True, "30"])
def test_vlan_id_outside_1_to_4094_is_refused_with_its_key(vid: object) -> None:
    with pytest.raises(SpecError, match=r"^nics\[0\]\.trunks\[1\]\.vlan: .* not a VLAN id"):
        guest_cmdline(IMAGE, "vm1", [(MAC, None, 1, [(30, None), (vid, None)])])  # type: ignore[list-item]


def test_vlan_id_twice_on_one_nic_is_refused() -> None:
    with pytest.raises(SpecError, match=r"trunks\[1\]\.vlan: VLAN 30 appears twice"):
        guest_cmdline(IMAGE, "vm1", [(MAC, None, 1, [(30, None), (30, "10.0.30.2/24")])])


def test_same_vlan_id_on_two_nics_is_fine() -> None:
    nics = [(MAC, None, 1, [(30, None)]), ("52:54:00:ab:00:02", None, 1, [(30, None)])]
    assert len([t for t in vlab_tokens(guest_cmdline(IMAGE, "vm1", nics)) if "vlan=" in t]) == 2


@pytest.mark.parametrize(
    ("address", "message"),
    [("10.0.30.2", "needs a /prefix"), ("10.0.30.300/24", "does not appear to be"),
     ("10.0.30.2/24,x", "does not appear to be")],
)
def test_vlan_address_is_validated_like_a_nic_address(address: str, message: str) -> None:
    with pytest.raises(SpecError, match=rf"^nics\[0\]\.trunks\[0\]\.ip: .*{message}"):
        guest_cmdline(IMAGE, "vm1", [(MAC, None, 1, [(30, address)])])


def test_a_command_line_over_the_kernel_limit_is_refused_not_cut() -> None:
    vlans = [(vid, f"10.{vid // 256}.{vid % 256}.2/24") for vid in range(1, 200)]
    with pytest.raises(SpecError, match=rf"over the kernel's {MAX_CMDLINE}"):
        guest_cmdline(IMAGE, "vm1", [(MAC, None, 1, vlans)])
