"""What every virtio_lab.lab module needs: the ``provision`` library, imported by the Python
that runs the module."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
requirements:
  - The C(provision) library (virtio-lab), importable by the module's Python; run the playbooks
    with C(ansible_python_interpreter="{{ virtio_lab_python | default(ansible_playbook_python) }}")
    and the C(ansible-playbook) of virtio-lab's venv, or C(pip install) virtio-lab into the
    managed host's Python.
"""
