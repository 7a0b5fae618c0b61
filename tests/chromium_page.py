"""A page as headless Chromium renders it, for the tests of `provision verify --html`.

Chromium (Debian's `chromium`, installed by `make test`) loads the file twice: `--dump-dom`
gives the DOM after parsing, `--screenshot` a PNG. The DOM is read with the standard
library's HTMLParser, the PNG with zlib (8-bit RGB or RGBA, non-interlaced: what Chromium
writes), so the tests need no extra package. The `chromium` fixture in tests/conftest.py
hands out a `Chromium`.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

FAIL_RED = (0xC6, 0x28, 0x28)  # --fail in templates/report.css
ACTIVE = frozenset({"script", "img", "iframe", "object", "embed"})


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Dom:
    """What the tests look at in a dumped DOM."""

    rows: list[tuple[str, str]] = field(default_factory=list)  # tr.check: (id, status class)
    failing_links: list[str] = field(default_factory=list)  # hrefs of the summary's list
    charts: list[list[tuple[str, float]]] = field(default_factory=list)  # (class, height)
    topology: str = ""  # "svg", "placeholder" or ""
    active: int = 0  # script, img, iframe, object and embed elements: the page has none
    title: str = ""


class _DomParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.dom = Dom()
        self._in_failing = self._in_title = self._in_topology = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "tr" and "check" in classes:
            status = [c for c in classes if c != "check"]
            self.dom.rows.append((a.get("id", ""), status[0] if status else ""))
        elif tag == "ol" and "failing" in classes:
            self._in_failing = True
        elif tag == "a" and self._in_failing:
            self.dom.failing_links.append(a.get("href", ""))
        elif tag == "svg" and "queue-chart" in classes:
            self.dom.charts.append([])
        elif tag == "rect" and "bar" in classes and self.dom.charts:
            self.dom.charts[-1].append((" ".join(classes), float(a.get("height", "0"))))
        elif tag == "figure" and "topology" in classes:
            self._in_topology = True
        elif tag == "svg" and self._in_topology:
            self.dom.topology = "svg"
        elif "topology-missing" in classes:
            self.dom.topology = "placeholder"
        self.dom.active += tag in ACTIVE
        self._in_title = tag == "title" and not self.dom.title

    def handle_endtag(self, tag: str) -> None:
        if tag == "ol":
            self._in_failing = False
        if tag == "figure":
            self._in_topology = False
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.dom.title += data


def parse_dom(text: str) -> Dom:
    parser = _DomParser()
    parser.feed(text)
    parser.close()
    return parser.dom


@dataclass(frozen=True)
class Png:
    width: int
    height: int
    channels: int
    pixels: bytes  # rows of width * channels bytes, unfiltered

    def rows_near(self, rgb: tuple[int, int, int], tolerance: int = 24) -> list[int]:
        """Per pixel row, how many of its pixels are within ``tolerance`` of ``rgb`` on
        every channel."""
        r0, g0, b0 = rgb
        step, stride, px = self.channels, self.width * self.channels, self.pixels
        out = []
        for y in range(self.height):
            n = 0
            for i in range(y * stride, (y + 1) * stride, step):
                if (abs(px[i] - r0) <= tolerance and abs(px[i + 1] - g0) <= tolerance
                        and abs(px[i + 2] - b0) <= tolerance):
                    n += 1
            out.append(n)
        return out

    def count_near(self, rgb: tuple[int, int, int], tolerance: int = 24) -> int:
        return sum(self.rows_near(rgb, tolerance))

    def bands(self, rgb: tuple[int, int, int], gap: int = 8) -> list[tuple[int, int]]:
        """The vertical stretches (first and last pixel row) holding ``rgb``, stretches
        less than ``gap`` rows apart counted as one."""
        out: list[tuple[int, int]] = []
        for y, n in enumerate(self.rows_near(rgb)):
            if not n:
                continue
            if out and y - out[-1][1] <= gap:
                out[-1] = (out[-1][0], y)
            else:
                out.append((y, y))
        return out


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def _unfilter(raw: bytes, width: int, height: int, bpp: int) -> bytes:
    stride = width * bpp
    out = bytearray(stride * height)
    prev = bytearray(stride)
    pos = 0
    for y in range(height):
        kind, line = raw[pos], bytearray(raw[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((x + p) & 0xFF for x, p in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up_left = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, prev[i], up_left)) & 0xFF
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return bytes(out)


def read_png(data: bytes) -> Png:
    """An 8-bit RGB/RGBA non-interlaced PNG, decoded; ValueError for anything else."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, color, _c, _f, interlace = header
    channels = {2: 3, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {color}")
    raw = zlib.decompress(bytes(idat))
    return Png(width, height, channels, _unfilter(raw, width, height, channels))


@dataclass
class Chromium:
    """Headless Chromium on local files, with a profile directory of its own."""

    binary: str
    profile: Path
    timeout: float = 120.0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, "--headless", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--hide-scrollbars", f"--user-data-dir={self.profile}",
                *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout,
                              check=False)
        if proc.returncode != 0:
            raise AssertionError(f"{argv} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc

    def dump_dom(self, page: Path) -> Dom:
        return parse_dom(self._run("--dump-dom", page.resolve().as_uri()).stdout)

    def screenshot(self, page: Path, png: Path, size: tuple[int, int] = (1200, 900),
                   anchor: str = "") -> Png:
        """The page (scrolled to ``#anchor`` when given) as Chromium paints it."""
        url = page.resolve().as_uri() + (f"#{anchor}" if anchor else "")
        self._run(f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", url)
        return read_png(png.read_bytes())
