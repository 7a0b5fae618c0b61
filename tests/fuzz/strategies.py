"""Hypothesis strategies for lab files: valid ones built from the schema, mutated as data,
mutated as text, raw bytes, and a few hand-made documents (command lines and the image cache:
cli_inputs.py).

Every lab generated here is named ``fz...`` and its bridges ``fz...``, so nothing it could
create can be mistaken for a user's object (and the host snapshot can look for ``fz``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import strategies as st

PREFIX = "fz"  # every generated lab and bridge name starts with it
LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
INVENTORY_HOSTS = ("hv1", "hv2")  # extra inventory hosts a valid lab may place VMs on


@dataclass
class ValidLab:
    """A lab the schema accepts, with what the tests may expect of it on this host."""

    doc: dict[str, Any]  # the whole inventory
    name: str
    hosts: tuple[str, ...]  # inventory host names
    capable: bool  # no vhost-net backend or system datapath asked: this host can render it

    @property
    def lab(self) -> dict[str, Any]:
        return self.doc["all"]["vars"]["lab"]


def inventory(lab: Any, extra_hosts: tuple[str, ...] = (), grouped: bool = False) -> dict:
    doc: dict[str, Any] = {"all": {"hosts": {"localhost": {"ansible_connection": "local"}},
                                   "vars": {"lab": lab}}}
    if extra_hosts and grouped:
        doc["all"]["children"] = {"hypervisors": {"hosts": {h: {} for h in extra_hosts}}}
    else:
        doc["all"]["hosts"].update({h: {} for h in extra_hosts})
    return doc


def dump(doc: Any, flow: bool | None = False, unicode: bool = True) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=flow,
                          allow_unicode=unicode, width=10_000).encode()


# -- valid labs ----------------------------------------------------------------------------

def _suffix(max_size: int, alphabet: str = LOWER_DIGITS) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, max_size=max_size)


@st.composite
def valid_labs(draw: st.DrawFn) -> ValidLab:
    name = PREFIX + draw(_suffix(10))
    extra = tuple(draw(st.lists(st.sampled_from(INVENTORY_HOSTS), unique=True, max_size=2)))
    hosts = ("localhost", *extra)
    capable = True
    lab: dict[str, Any] = {"name": name}
    backend = draw(st.sampled_from([None, "auto", "userspace", "auto-deprecated", "vhost-net"]))
    if backend == "auto-deprecated":
        lab["datapath"] = "auto"  # the deprecated name of backend: a warning, still valid
    elif backend is not None:
        lab["backend"] = backend
        capable &= backend != "vhost-net"
    bridges = draw(st.lists(_suffix(8, LOWER_DIGITS + "-").map(lambda s: PREFIX + s),
                            min_size=1, max_size=3, unique=True))
    lab["bridges"] = []
    for br in bridges:
        entry: dict[str, Any] = {"name": br}
        dpt = draw(st.sampled_from([None, "auto", "netdev", "system"]))
        if dpt is not None:
            entry["datapath_type"] = dpt
            capable &= dpt != "system"
        lab["bridges"].append(entry)
    # Addresses come from counters, so they are unique across the lab by construction.
    net = (draw(st.integers(0, 254)), draw(st.integers(8, 24)))
    mac_base = draw(st.integers(0, 255))
    counter = iter(range(1, 250))
    vm_names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True),
                             unique=True, max_size=3))
    vms = []
    for vm_name in vm_names:
        vcpus = draw(st.integers(1, 4))
        vm: dict[str, Any] = {"name": vm_name}
        if draw(st.booleans()) or vcpus != 1:
            vm["vcpus"] = vcpus
        if draw(st.booleans()):
            vm["memory_mib"] = draw(st.integers(128, 1024))
        if draw(st.booleans()):
            vm["image"] = "tiny"
        host = draw(st.sampled_from(hosts))
        if host != "localhost" or draw(st.booleans()):
            vm["host"] = host
        nics = []
        for _ in range(draw(st.integers(0, 3))):
            nic = draw(_valid_nic(bridges, vcpus, net, mac_base, counter))
            nics.append(nic)
        if nics or draw(st.booleans()):
            vm["nics"] = nics
        vms.append(vm)
    if vms or draw(st.booleans()):
        lab["vms"] = vms
    doc = inventory(lab, extra, grouped=draw(st.booleans()))
    return ValidLab(doc=doc, name=name, hosts=hosts, capable=capable)


@st.composite
def _valid_nic(draw: st.DrawFn, bridges: list[str], vcpus: int, net: tuple[int, int],
               mac_base: int, counter: Any) -> dict[str, Any]:
    def ip() -> str:
        return f"10.{net[0]}.0.{next(counter)}/{net[1]}"

    nic: dict[str, Any] = {"bridge": draw(st.sampled_from(bridges))}
    mode = draw(st.sampled_from(["access", "trunk", "untagged"]))
    if mode == "access":
        nic["vlan"] = draw(st.integers(1, 4094))
    if mode == "trunk":
        vids = draw(st.lists(st.integers(1, 4094), min_size=1, max_size=3, unique=True))
        nic["trunks"] = [{"vlan": v, "ip": ip()} if draw(st.booleans()) else v for v in vids]
    elif draw(st.booleans()):
        nic["ip"] = ip()
    if draw(st.booleans()):
        nic["queues"] = draw(st.integers(1, vcpus))
    if draw(st.booleans()):  # locally administered unicast, never a derived 52:54:00 MAC
        nic["mac"] = f"02:00:{mac_base:02x}:00:00:{next(counter):02x}"
    if draw(st.booleans()):
        nic["rx_queue_size"] = draw(st.sampled_from([256, 512, 1024]))
    if draw(st.booleans()):
        nic["tx_queue_size"] = 256
    return nic


# -- hostile values ------------------------------------------------------------------------

CONTROL_CHARS = [chr(c) for c in range(32)] + ["\x7f", "\x85", "\u2028", "\u2029", "\x9b"]
NASTY_STRINGS = [
    "", " ", "\t", "\n", "fz\nab", "fz\rab", "\x1b[31mred\x1b[0m", "fz\x00", "\x07",
    "vm1'/><x", "$(reboot)", "`id`", "a;b", "../../etc", "/", ".", "..", "-", "--json", "-h",
    "\ufb01z", "\uff46\uff5a", "fz\u200bab", "\u202efz", "Фz", "😀", "\ud7ff", "null", "~",
    "yes", "on", "NaN", ".inf", "0x10", "1e3", "4", " 4 ", "4.0", "true", "10.0.0.1/24",
    "tiny", "auto",
    "%(name)s", "{name}", "{{ x }}", "<![CDATA[", "&amp;", "\\", "'", '"',
]
INT_EDGES = [0, -1, 1, 2, 4, 255, 256, 257, 1024, 4094, 4095, 65535, 2**31, 2**32,
             2**63, 2**64, -(2**63), 10**30]

text_values = st.one_of(
    st.sampled_from(NASTY_STRINGS),
    st.text(max_size=24),
    st.text(alphabet=st.sampled_from([*CONTROL_CHARS, "a", "z", "-", " ", "/", "<"]),
            max_size=12),
    st.builds(lambda n, c: c * n, st.sampled_from([300, 5_000, 200_000]),
              st.sampled_from(["a", "fz-", "\n", "é"])),
)
scalar_values = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from(INT_EDGES), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([4.0, 4.5, 1e400, -0.0]),
    text_values,
)
junk = st.recursive(
    scalar_values,
    lambda kids: st.lists(kids, max_size=3)
    | st.dictionaries(st.one_of(text_values, st.integers(-2, 2)), kids, max_size=3),
    max_leaves=6,
)

# Values aimed at one key: the edges of its range, its neighbours, and its near misses.
IP_EDGES = [
    "0.0.0.0/24", "127.0.0.1/8", "224.0.0.1/24", "239.1.2.3/24", "240.0.0.1/24",
    "255.255.255.255/32", "10.0.0.0/24", "10.0.0.255/24", "10.0.0.1/33", "10.0.0.1/-1",
    "10.0.0.1", "10.0.0.1/0", "10.0.0.1/255.255.255.0", "010.0.0.1/24", "10.0.0.256/24",
    "::1/128", "fe80::1/64", "10.0.0.1/24/24", "10.0.0.1 /24", 167772161, 0, -1, 2**32,
]
MAC_EDGES = [
    "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "52:54:00:AA:BB:CC",
    "52-54-00-12-34-56", "5254.0012.3456", "52:54:00:12:34:5g", "52:54:00:12:34",
    "52:54:00:12:34:56:78", " 52:54:00:12:34:56", 525400123456,
]
KEY_EDGES: dict[str, list[Any]] = {
    "name": ["fz-a", "fzabcdefghijk", "fzabcdefghij", "Fz", "fz_a", "fz.a", "1fz", "a" * 40],
    "vcpus": [0, 1, 4, 255, 256, "4", 4.0, 4.5, True, False],
    "memory_mib": [0, 127, 128, 1048576, 1048577, "256", 256.0, True],
    "vlan": [0, 1, 4094, 4095, "100", 100.0, True, [100]],
    "queues": [0, 1, 256, 257, "1", 1.0, True],
    "rx_queue_size": [0, 255, 256, 300, 512, 1024, 2048, "256", 256.0],
    "tx_queue_size": [0, 256, 512, "256", 256.0, True],
    "ip": IP_EDGES,
    "mac": MAC_EDGES,
    "backend": ["auto", "vhost-net", "userspace", "vhost-user", "AUTO", "", 1, True],
    "datapath": ["auto", "vhost-net", "userspace", "netdev", ""],
    "datapath_type": ["auto", "system", "netdev", "dpdk", "", 0],
    "image": ["tiny", "debian", "", "/etc/passwd", {"path": "/x.qcow2", "sha256": "0" * 64},
              {"url": "http://example.invalid/x.img"}],
    "host": ["localhost", "hv1", "nosuch", "", "localhost ", 1, ["localhost"]],
    "bridge": ["fzbr", "nosuch", "", "br-demo"],
    "trunks": [[], [1], [1, 1], [0], [4095], [1, {"vlan": 1}], [{"vlan": 2, "ip": "10.9.9.9/24"}],
               ["100"], [True], [1.0], "100", 100, {"vlan": 1}, [[1]], [None]],
    "bridges": [[], None, {}, [{}], "fzbr", [{"name": "fzbr"}, {"name": "fzbr"}]],
    "vms": [[], None, {}, [{}], "vm1", [{"name": "vm1"}, {"name": "vm1"}]],
    "nics": [[], None, {}, [{}], "fzbr", [{"bridge": "fzbr"}] * 300],
    "hosts": [None, [], {}, "localhost", {"": {}}, {None: {}}],
    "children": [None, [], {}, "x", {"g": None}, {"g": {"hosts": None}}],
}
KNOWN_KEYS = sorted({*KEY_EDGES, "all", "vars", "lab", "uplink", "tunnels", "ansible_connection"})


def key_variants(key: Any) -> st.SearchStrategy[Any]:
    """Near misses of a key: what a typo, a paste or an editor makes of it."""
    k = str(key)
    return st.sampled_from([
        k.upper(), k + " ", " " + k, k[:-1] or "x", k + "s", k.replace("_", "-"), k + ":",
        k.replace("a", "\u0430"), k + "\x00", k + "\n", k + "\x1b[31m", "", 1, None, True,
    ])


def value_for(key: Any) -> st.SearchStrategy[Any]:
    edges = KEY_EDGES.get(key) if isinstance(key, str) else None
    if edges:
        return st.one_of(st.sampled_from(edges), junk)
    return junk


# -- mutations of a valid lab, as data -----------------------------------------------------

def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def _last_key(path: tuple) -> Any:
    """The mapping key a node hangs under (a list item answers for its list's key)."""
    for k in reversed(path):
        if not isinstance(k, int) or isinstance(k, bool):
            return k
    return None


@st.composite
def mutated_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(valid_labs()).doc)
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        doc = _mutate_once(draw, doc)
    return doc


def near_types(value: Any) -> list[Any]:
    """The same value in another YAML type: what a loose loader would silently convert."""
    if isinstance(value, bool):
        return [int(value), str(value).lower()]
    if isinstance(value, int):
        return [str(value), float(value), f" {value} ", bool(value), [value]]
    if isinstance(value, str):
        out: list[Any] = [[value], {value: None}, value.encode()]
        if value.isdigit():
            out.append(int(value))
        if "/" in value and value[0].isdigit():  # an address: the same address as a number
            out.append(int.from_bytes(bytes(int(x) for x in value.split("/")[0].split("."))))
        return out
    return [None]


OPS = ["replace", "edge", "edge", "retype", "retype", "drop", "add", "rename", "duplicate",
       "wrap"]


def _mutate_once(draw: st.DrawFn, doc: Any) -> Any:
    # Nodes under all.vars.lab first, leaves before containers: that is where the schema is.
    paths = sorted(_paths(doc), key=lambda p: (p[:3] != ("all", "vars", "lab"), -len(p)))
    path = draw(st.sampled_from(paths))
    node = _get(doc, path)
    op = draw(st.sampled_from(OPS))
    if not path:  # the whole document
        return draw(st.one_of(junk, st.builds(inventory, junk)))
    parent, key = _get(doc, path[:-1]), path[-1]
    edges = KEY_EDGES.get(_last_key(path), [])
    if op == "replace":
        parent[key] = draw(value_for(_last_key(path)))
    elif op == "edge" and edges:
        parent[key] = copy.deepcopy(draw(st.sampled_from(edges)))
    elif op == "retype" and not isinstance(node, dict | list):
        parent[key] = draw(st.sampled_from(near_types(node)))
    elif op == "drop":
        del parent[key]
    elif op == "add" and isinstance(node, dict):
        new_key = draw(st.one_of(st.sampled_from(KNOWN_KEYS), text_values))
        node[new_key] = draw(value_for(new_key))
    elif op == "add" and isinstance(node, list):
        node.append(draw(junk))
    elif op == "rename" and isinstance(parent, dict):
        value = parent.pop(key)
        parent[draw(key_variants(key))] = value
    elif op == "duplicate" and isinstance(node, list) and node:
        node.append(copy.deepcopy(draw(st.sampled_from(node))))
    elif op == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(node))
    else:  # wrap, or an op that does not apply to this node: change its shape
        parent[key] = draw(st.sampled_from([[node], {"value": node}, {key: node}]))
    return doc


# -- mutations of a valid lab file, as bytes -----------------------------------------------

YAML_SNIPPETS = [
    b"&a ", b"*a", b"*undefined", b"<<: *a\n", b"!!python/object:os.system ",
    b"!!python/object/apply:os.system ['true'] ", b"!!python/name:os.system ", b"!!binary ",
    b"!!set ", b"!!omap ", b"!!timestamp ", b"!!float ", b"!!int ", b"!!str ", b"!!map ",
    b"!local ", b"\t", b"{", b"}", b"[", b"]", b": ", b"- ", b"? ", b"|\n", b">\n", b"---\n",
    b"...\n", b"%YAML 1.1\n", b"%TAG ! tag:example.com,2000:\n", b"# ", b"'", b'"', b"\\",
    b"\x00", b"\xff", b"\xc3\x28", b"\xef\xbb\xbf", b"\r", b"\r\n", b"\x85", b"\xe2\x80\xa8",
    b"\x1b[31m", b"~", b"null", b".inf", b".nan", b"0x1F", b"0o17", b"1e400", b"1_000", b"y",
    b"on", b"2001-12-14", b"=", b",", b"@", b"`", b"%", b"\n  extra: 1\n", b"\n    - 1\n",
]


@st.composite
def valid_lab_bytes(draw: st.DrawFn) -> bytes:
    return dump(draw(valid_labs()).doc, flow=draw(st.sampled_from([False, None, True])),
                unicode=draw(st.booleans()))


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_lab_bytes()))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(
            ["flip", "insert", "delete", "truncate", "dupline", "tab", "nest", "encode"]))
        if op == "flip" and data:
            data[min(i, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            snippet = draw(st.one_of(st.sampled_from(YAML_SNIPPETS), st.binary(max_size=8)))
            data[i:i] = snippet
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 40))]
        elif op == "truncate":
            del data[i:]
        elif op == "dupline":
            start = data.rfind(b"\n", 0, i) + 1
            end = data.find(b"\n", i)
            line = data[start:end + 1 if end >= 0 else len(data)]
            data[start:start] = line
        elif op == "tab":
            data = bytearray(data.replace(b"  ", b"\t", draw(st.integers(1, 3))))
        elif op == "nest":
            n = draw(st.sampled_from([10, 200, 400, 1_000, 5_000]))
            opener, closer = draw(st.sampled_from([(b"[", b"]"), (b"{a: ", b"}")]))
            data[i:i] = opener * n + (closer * n if draw(st.booleans()) else b"")
        else:
            codec = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp037"]))
            data = bytearray(data.decode("utf-8", "replace").encode(codec, "replace"))
    return bytes(data)


# Whole documents that hit the YAML features a fuzzer rarely builds on its own.
LAB_TAIL = b"    lab: {name: fzr, bridges: [{name: fzbr}]}\n"
SPECIAL_FILES: dict[str, bytes] = {
    "empty": b"",
    "only-document-marker": b"---\n",
    "recursive-children": b"all: &g\n  hosts: {localhost: {}}\n  children: {loop: *g}\n"
                          b"  vars:\n" + LAB_TAIL,
    "recursive-lab": b"all:\n  vars:\n    lab: &l {name: fzr, bridges: [{name: fzbr}], x: *l}\n",
    "recursive-list": b"all:\n  vars:\n    lab: {name: fzr, bridges: &b [*b]}\n",
    "billion-laughs": b"a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    + b"".join(b"a%d: &a%d [%s]\n" % (i, i, b", ".join([b"*a%d" % (i - 1)] * 10))
               for i in range(1, 12))
    + b"all:\n  vars:\n    lab: {name: fzr, bridges: [{name: fzbr}], vms: *a11}\n",
    "deep-nesting": b"all:\n  vars:\n    lab: {name: fzr, bridges: " + b"[" * 3000
    + b"]" * 3000 + b"}\n",
    "non-utf8": b"all:\n  vars:\n    lab: {name: fz\xff, bridges: [{name: fzbr}]}\n",
    "utf16": "all:\n  vars:\n    lab: {name: fzr, bridges: [{name: fzbr}]}\n".encode("utf-16"),
    "python-tag": b"all: !!python/object/apply:os.system ['true']\n",
    "list-root": b"- all\n",
    "scalar-all": b"all: 1\n",
    "int-keys": b"1: {2: {3: 4}}\n",
    "control-char-key": b"all:\n  vars:\n    lab: {name: fzr, bridges: [{name: fzbr}],"
                        b' "x\\e[31m\\ny": 1}\n',
    "nul-in-name": b'all:\n  vars:\n    lab: {name: "fz\\0a", bridges: [{name: fzbr}]}\n',
    "merge-key": b"base: &b {name: fzr, bridges: [{name: fzbr}]}\n"
                 b"all:\n  vars:\n    lab: {<<: *b, backend: auto}\n",
    "duplicate-keys": b"all:\n  vars:\n    lab: {name: fzr, name: fzs, bridges: [{name: fzbr}]}\n",
}

lab_files = st.one_of(
    valid_lab_bytes(),
    st.builds(dump, mutated_docs(), st.sampled_from([False, None])),
    mutated_bytes(),
    st.binary(max_size=600),
    st.sampled_from(sorted(SPECIAL_FILES.values())),
)
