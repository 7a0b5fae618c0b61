"""ansible-test's pip bootstrap, without ci-files.testing.ansible.com.

ansible-test makes each sanity venv without pip and runs a ``get-pip.py`` it downloads from
ci-files.testing.ansible.com, which a host that reaches only PyPI cannot fetch. It looks in
its cache first (``~/.ansible/test/cache/get_pip_<version>.py``); ``make sanity`` puts this
file there. It does what get-pip does with the same arguments: pip from the Python's own
``ensurepip``, then ``pip install`` of the pinned pip from PyPI.

ansible-test runs pip with an environment stripped of ``PIP_CERT`` and ``SSL_CERT_FILE``, so
pip would trust only its bundled certifi and fail behind a proxy whose CA is in the host's
store. The venv's own ``pip.conf`` names the host's CA bundle (OpenSSL's default) instead.
"""

from __future__ import annotations

import ensurepip
import importlib
import os
import shutil
import ssl
import sys
from pathlib import Path
from types import SimpleNamespace

# get-pip's own flags, which pip install does not know.
GET_PIP_FLAGS = {"--no-setuptools", "--no-wheel"}


def trust_host_cas() -> None:
    """Point the venv's pip at the host's CA bundle, unless the venv already configures pip."""
    paths = ssl.get_default_verify_paths()
    cafile = paths.cafile or paths.openssl_cafile
    conf = Path(sys.prefix) / "pip.conf"
    if cafile and Path(cafile).is_file() and not conf.exists():
        conf.write_text(f"[global]\ncert = {cafile}\n")


def cache() -> Path:
    """Put this script where ansible-test looks for the get-pip of the pip version it pins."""
    from ansible_test._internal.python_requirements import get_venv_packages

    python = SimpleNamespace(version="{}.{}".format(*sys.version_info[:2]))
    version = get_venv_packages(python)["pip"]  # type: ignore[arg-type]
    path = Path.home() / ".ansible/test/cache" / f"get_pip_{version.replace('.', '_')}.py"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(__file__, path)
    return path


def main() -> int:
    if sys.argv[1:] == ["--cache"]:
        print(f"ansible-test's pip bootstrap: {cache()}")
        return 0
    trust_host_cas()
    ensurepip.bootstrap(upgrade=False, default_pip=False)
    os.environ.pop("PIP_CONFIG_FILE", None)  # ensurepip set it to os.devnull for itself
    importlib.invalidate_caches()
    from pip._internal.cli.main import main as pip_main

    return pip_main(["install", *(a for a in sys.argv[1:] if a not in GET_PIP_FLAGS)])


if __name__ == "__main__":
    sys.exit(main())
