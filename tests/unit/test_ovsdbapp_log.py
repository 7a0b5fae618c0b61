"""ovsdbapp reports failed interfaces only through its logger: those records must reach our
errors (``OvsdbappLog``), and nothing of them the terminal."""

from __future__ import annotations

import logging

import pytest

from provision.backends.ovs import OVSDBAPP_LOG


def test_post_commit_failures_are_kept_for_our_errors_not_printed(
        capsys: pytest.CaptureFixture[str]) -> None:
    OVSDBAPP_LOG.take()
    log = logging.getLogger("ovsdbapp.schema.open_vswitch.impl_idl")
    try:
        raise RuntimeError("Failed to add interfaces: lab-vm1-0")
    except RuntimeError:
        log.exception("Post-commit checks failed")
    log.debug("Running txn ...")  # below WARNING: not an error of ours
    assert OVSDBAPP_LOG.take() == [
        "Post-commit checks failed: Failed to add interfaces: lab-vm1-0"]
    assert OVSDBAPP_LOG.take() == []
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
