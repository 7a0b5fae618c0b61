"""What a VM boots (``image:``) and what its cloud-init seed adds (``cloud_init:``), as the
lab file writes them. Validated here; resolved against the image cache by ``image.sources``.

``image:`` is ``tiny`` (the embedded initramfs, direct kernel boot), the name of a disk
image virtio-lab builds (``debian``), or a disk image a user brings::

    image: {path: /srv/images/noble.qcow2, sha256: 3f2a...}
    image: {url: https://cloud.debian.org/.../debian-12-genericcloud-amd64.qcow2,
            sha256: 9b1c..., format: qcow2}

A disk image boots through its own bootloader from a qcow2 overlay per VM, with a
cloud-init NoCloud seed built from the lab.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)

from provision.core.spec_errors import PathError, Strict
from provision.core.spec_schema import also, one_of, rules
from provision.errors import shown

# Images virtio-lab builds itself (`provision image build NAME`); tiny boots a kernel
# directly, the others are disk images.
BUILT_IMAGES = ("tiny", "debian")
DISK_FORMATS = ("qcow2", "raw")
URL_SCHEMES = ("http", "https", "file")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# An OpenSSH public key line: type, base64 body, optional comment.
SSH_KEY_RE = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|"
                        r"sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
                        r" [A-Za-z0-9+/=]+( .*)?$")


class DiskImageSpec(Strict):
    """A disk image by path or URL, pinned by its sha256."""

    model_config = ConfigDict(json_schema_extra=rules(one_of("path", "url")))  # _one_source

    path: StrictStr | None = Field(
        default=None, examples=["/srv/images/noble.qcow2"],
        json_schema_extra=also(pattern=r"^/[^\x00]*$",
                               patternErrorMessage="an absolute path, such as /srv/x.qcow2"),
        description="An image file on this host, by absolute path (copied into the image "
        "cache once); exclusive with url.")
    url: StrictStr | None = Field(
        default=None,
        examples=["https://cloud.debian.org/images/cloud/bookworm/latest/"
                  "debian-12-genericcloud-amd64.qcow2"],
        description="An http, https or file URL of the image (downloaded into the image cache "
        "once); exclusive with path.")
    sha256: StrictStr = Field(
        json_schema_extra=also(pattern="^[0-9a-fA-F]{64}$",
                               patternErrorMessage="the 64 hex digits `sha256sum FILE` prints"),
        description="The sha256 of the image file's bytes, as `sha256sum` prints it: checked "
        "before any use, and what the lab's record names.")
    format: Literal["qcow2", "raw"] = Field(
        default="qcow2",
        description="The image's format: qcow2 or raw. Never probed (a raw image may look "
        "like qcow2).")

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str) -> str:
        v = v.lower()
        if not SHA256_RE.fullmatch(v):
            raise ValueError(f"{shown(v)} is not a sha256; write the 64 hex digits "
                             "`sha256sum FILE` prints")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"{shown(v)} is relative; write an absolute path")
        if v is not None and "\0" in v:
            raise ValueError("has a NUL character")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in URL_SCHEMES:
            raise ValueError(f"{shown(v)} is not an {', '.join(URL_SCHEMES)} URL")
        if parts.scheme != "file" and not parts.netloc:
            raise ValueError(f"{shown(v)} names no host")
        if not parts.path or parts.path.endswith("/"):
            raise ValueError(f"{shown(v)} names no file")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> DiskImageSpec:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path and url, with the image's sha256")
        return self

    @property
    def source(self) -> str:
        return self.path or self.url or ""

    @property
    def name(self) -> str:
        """How the image is named in domain metadata and records."""
        return f"sha256:{self.sha256}"


def _image_kind(v: Any) -> str:
    return "image-name" if isinstance(v, str) else "image-disk"


# A name or a mapping, told apart before validation, so that an error names the branch the
# user wrote (a bad mapping is not "input should be 'tiny' or 'debian'").
ImageSpec = Annotated[
    Annotated[Literal["tiny", "debian"], Tag("image-name")]
    | Annotated[DiskImageSpec, Tag("image-disk")],
    Discriminator(_image_kind),
]


def check_image_value(v: Any) -> Any:
    """A clear line for an image name that is not one virtio-lab builds (pydantic would list
    every branch of the union)."""
    if isinstance(v, str) and v not in BUILT_IMAGES:
        raise ValueError(f"{shown(v)} is not an image virtio-lab builds "
                         f"({', '.join(BUILT_IMAGES)}); for your own disk image write "
                         "{path: FILE, sha256: HASH} or {url: URL, sha256: HASH}")
    if not isinstance(v, str | dict | DiskImageSpec):
        raise ValueError("must be an image name (tiny, debian) or {path|url, sha256}")
    return v


def is_disk(image: ImageSpec) -> bool:
    """Whether the VM boots a disk (overlay, seed, firmware) rather than tiny's kernel."""
    return image != "tiny"


class CloudInitSpec(Strict):
    """What a disk image's NoCloud seed adds to what virtio-lab writes (hostname, network,
    channels, agent): keys for the default user, and more #cloud-config."""

    ssh_authorized_keys: tuple[StrictStr, ...] = Field(
        default=(),
        examples=[["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxVb2qTQp0cK1tZ you@laptop"]],
        json_schema_extra=also(items={
            "type": "string", "pattern": SSH_KEY_RE.pattern,
            "patternErrorMessage": "an OpenSSH public key line, such as the content of "
            "~/.ssh/id_ed25519.pub"}),
        description="OpenSSH public key lines for the image's default user.")
    user_data: dict[StrictStr, Any] = Field(
        default_factory=dict, examples=[{"packages": ["tcpdump"]}],
        json_schema_extra={"default": {}},
        description="More #cloud-config keys for the seed's user-data; a VM's keys win over "
        "the lab's.")

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, key in enumerate(v):
            if "\n" in key or not SSH_KEY_RE.fullmatch(key):
                raise PathError(str(i), f"{shown(key)} is not an OpenSSH public key line "
                                "(such as the content of ~/.ssh/id_ed25519.pub)")
        return v

    def merged(self, vm: CloudInitSpec | None) -> CloudInitSpec:
        """The lab's settings with a VM's on top: keys add up, user_data keys of the VM win."""
        if vm is None:
            return self
        keys = tuple(dict.fromkeys(self.ssh_authorized_keys + vm.ssh_authorized_keys))
        return CloudInitSpec(ssh_authorized_keys=keys,
                             user_data={**self.user_data, **vm.user_data})
