"""BootstrapKey: one throwaway SSH key per stack, the only key Hetzner ever gets.

Hetzner sets and e-mails a root password for a server created without an SSH key, and it refuses a
second key with the same fingerprint in a project (so uploading the admins' own keys fails for anyone
who already uploaded theirs). Admins' keys therefore never go to Hetzner: the user-data installs them.
This key is generated in the stack, its private half stays a secret in the state and is never exported
or used, so a server whose user-data did not apply is reachable by nobody (cloud-init then installs
Hetzner's key for root or the image's default user) instead of by every admin with a key alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
import pulumi_tls as tls

TYPE = "totp-vps:index:BootstrapKey"


@dataclass(frozen=True, kw_only=True)
class BootstrapKeyArgs:
    """Inputs of BootstrapKey."""

    key_name: str
    """Hetzner name of the key (unique in the project)."""
    labels: Mapping[str, str]
    """Hetzner labels (the stack's ownership label)."""


class BootstrapKey(pulumi.ComponentResource):
    """A ``tls.PrivateKey`` (Ed25519) and its public half uploaded as one ``hcloud.SshKey``."""

    key_id: pulumi.Output[str]
    """Hetzner id of the uploaded key: what every server names in ``ssh_keys``."""

    def __init__(self, name: str, args: BootstrapKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # The provider marks the private key outputs secret itself; nothing here reads them.
        private = tls.PrivateKey(f"{name}-private-key", algorithm="ED25519", opts=child)
        key = hcloud.SshKey(
            f"{name}-ssh-key",
            name=args.key_name,
            public_key=private.public_key_openssh.apply(str.strip),
            labels=dict(args.labels),
            opts=child,
        )
        self.key_id = key.id
        self.register_outputs({"sshKeyId": self.key_id})
