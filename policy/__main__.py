"""The policy pack the Pulumi CLI runs: ``pulumi preview --policy-pack policy``.

Only builds the PolicyPack, which serves the engine over gRPC until the CLI stops it: never import
this module (tests and ``vpsctl check`` use :mod:`policy.policies` and :mod:`policy.offline`).
"""

import sys
from pathlib import Path

# The CLI runs this file with the pack's folder first on sys.path; the validators read the project's
# hardening data and renderer, so the project root must be importable too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policy.policies import PACK_DESCRIPTION, PACK_NAME, build_policies  # noqa: E402

PolicyPack(
    name=PACK_NAME,
    policies=build_policies(),
    enforcement_level=EnforcementLevel.MANDATORY,
    description=PACK_DESCRIPTION,
)
