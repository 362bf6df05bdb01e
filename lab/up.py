"""The lab's ``pulumi up``: the real program (``__main__.py``) with the lab stack's config, under the mock engine
that keeps a stack's state (``components.mockengine.StatefulMocks``), against the lab's state directory.

The first run creates the stack: real random seeds and codes, a real host key and state-signing key. Every later
run keeps them, as ``pulumi up`` would, unless the config asks for new ones (a ``rotation``, another
``backupCodes`` count) or ``--fresh`` dropped the state. New admins get new keys; removed ones vanish from the
outputs (their throwaway key stays in ``keys/`` and is reused if they come back).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent import state as st
from cloudinit import stackconfig
from cloudinit.model import Server
from components import mockengine
from lab.stack import Choice, lab_values
from lab.state import LabState
from vpsctl.errors import CliError

STACK = "lab"
SERVER_RESOURCE = "hcloud:index/server:Server"


@dataclass(frozen=True)
class LabStack:
    """What one run of the program made for the lab's server."""

    server: Server
    """The lab's server as the program validated it (the guest image, the lab's keys)."""
    outputs: dict[str, Any]
    """The stack outputs, secrets shown (what outputs.json holds)."""
    user_data: str
    """The user-data the program registered for the server (the Server resource's userData input)."""
    made: tuple[str, ...]
    """URNs of the random bytes and private keys this run created or replaced."""

    @property
    def host_key(self) -> str:
        return str(self.outputs["servers"][self.server.name]["hostPublicKey"])

    def enrollment(self, admin: str) -> Mapping[str, Any]:
        return self.outputs["enrollment"][self.server.name][admin]


def run_program(values: Mapping[str, Any], engine_state: Mapping[str, Any] | None) -> tuple[LabStack, dict[str, Any]]:
    """(what the program made, the engine's new state) for the lab stack's config ``values`` (one server)."""
    try:
        mocks = mockengine.StatefulMocks(engine_state)
    except ValueError as exc:
        raise CliError(f"engine.json: {exc}; start over with --fresh") from None
    try:
        done = mockengine.run(values, mocks=mocks, stack=STACK)
    except mockengine.ProgramFailed as exc:
        raise CliError(str(exc)) from None  # the program's own one line, "totp-vps config: ..."
    server = stackconfig.parse(values).servers[0]
    user_data = mockengine.unwrap(done.one(SERVER_RESOURCE, f"{server.name}-server").inputs)["userData"]
    # As `pulumi stack output --json` prints them: the engine's numbers are float64, and the CLI writes a whole one
    # without a fraction (22, not 22.0), which is what st.normal makes of them.
    outputs = st.normal(mockengine.unwrap(done.stack_outputs))
    stack = LabStack(server=server, outputs=outputs, user_data=user_data, made=tuple(mocks.made))
    return stack, mocks.state


def up(choice: Choice, state: LabState, release: str, identities: Mapping[str, Mapping[str, str]], *,
       preview: bool = False) -> LabStack:
    """Run the program for ``choice``'s server as guest ``release`` against ``state`` and, unless ``preview``
    (like ``pulumi preview``), keep what it made: engine.json, outputs.json, known_hosts, lab.json.

    ``identities``: admin -> {"file": private key path, "public": its public line}, admins who log in with their
    own key (--identity) instead of a lab key. Every other admin and service account gets (or keeps) a lab key."""
    public = {name: state.key(name).public for name in choice.people}
    files = {name: str(state.key_file(name)) for name in choice.people}
    for admin, identity in identities.items():
        public[admin], files[admin] = identity["public"], identity["file"]
    values = lab_values(choice, release, public, files)
    stack, engine = run_program(values, state.read(state.engine))
    if not preview:
        state.write(state.engine, engine)
        state.write(state.outputs, stack.outputs)
        state.pin(stack.server.name, stack.host_key)
        state.update_record(server=stack.server.name, release=release, identities=dict(identities))
    return stack


def enrolled(outputs: Mapping[str, Any], server: str) -> dict[str, str]:
    """Admin -> a digest of what their phone holds (the otpauth URIs) after ``outputs``: tells a new or rotated seed
    from a kept one without keeping a secret in lab.json."""
    out = {}
    for admin, item in ((outputs.get("enrollment") or {}).get(server) or {}).items():
        uris = [str(item.get("otpauthUri")), str((item.get("sudo") or {}).get("otpauthUri"))]
        out[admin] = hashlib.sha256("\n".join(uris).encode()).hexdigest()[:16]
    return out
