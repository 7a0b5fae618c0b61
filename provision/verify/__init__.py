"""The verifier: walk every hop of a running lab's data path and prove, with evidence, what
works and what does not (``provision verify``). It observes only and never repairs.

Modules: ``model`` (Check, VerifyReport), ``parse`` (pure parsers), ``matrix`` (who must
reach whom, from the spec), ``host_checks`` (domain, tap, OVS), ``qemu`` (the QEMU process
from /proc), ``guest`` (inside the guests; reachability), ``traffic`` (every queue), ``tcp``
(TCP and throughput), ``runner`` (``verify_lab``), ``output`` (table, JSON, JUnit).
"""

from provision.verify.model import Check, VerifyReport
from provision.verify.runner import verify_lab

__all__ = ["Check", "VerifyReport", "verify_lab"]
