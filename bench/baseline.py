"""The bare baseline: the program's resources with fixed inputs and none of our code.

It registers exactly what ``__main__.py`` registers for ``fleet(servers, admins)`` (tests/configs.py):
the same type tokens and count, the same parent relationships, the same provider SDK
classes (so RandomBytes and PrivateKey carry their built-in ``additional_secret_outputs``) and the
Server's own ``additional_secret_outputs``/``ignore_changes``. Inputs are constants: no config
reading, no validation, no rendering, no enrollment outputs, no Output chains between resources.
What the real program costs beyond this is what our code costs.
"""

from __future__ import annotations

import gc
import runpy
from collections.abc import Callable

import pulumi
import pulumi_hcloud as hcloud
import pulumi_random as random
import pulumi_tls as tls

# The component type tokens of components/ (spelt out here: the baseline must not import our code).
BOOTSTRAP_KEY = "totp-vps:index:BootstrapKey"
SHARED_FIREWALLS = "totp-vps:index:SharedFirewalls"
TOTP_SERVER = "totp-vps:index:TotpServer"
# A fixed public key line; the mock provider does not parse it.
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBASELINEBASELINEBASELINEBASELINEBASELINE00 baseline"
BACKUP_CODES = 5
BYTES_PER_CODE = 8
SEED_BYTES = 20


def program(servers: int, admins: int, user_data_bytes: int) -> Callable[[], None]:
    """A program for ``mockengine.run(..., program=...)``; ``user_data_bytes``: the size of the fixed
    user-data string handed to every server (the caller passes the real size so payloads match).

    It executes this file with runpy, as Pulumi's language host executes every program (and as the
    mock engine executes ``__main__.py``): the SDK records the Python stack at each registration, at
    a cost per frame, so a baseline called as a bare function would be shallower than any program."""

    def run() -> None:
        runpy.run_path(__file__, run_name="__main__", init_globals={"SHAPE": (servers, admins, user_data_bytes)})

    return run


def register(servers: int, admins: int, user_data_bytes: int) -> None:
    """The baseline program's body."""
    user_data = "#cloud-config\n" + "#" * max(0, user_data_bytes - 14)
    key = pulumi.ComponentResource(BOOTSTRAP_KEY, "bootstrap")
    tls.PrivateKey("bootstrap-private-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=key))
    hcloud.SshKey("bootstrap-ssh-key", name="baseline-bootstrap", public_key=PUBLIC_KEY, labels={},
                  opts=pulumi.ResourceOptions(parent=key))
    key.register_outputs({})
    shared = pulumi.ComponentResource(SHARED_FIREWALLS, "firewalls")
    # The fleet's servers all have the same rules: one shared firewall.
    hcloud.Firewall(
        "firewalls-baseline",
        name="baseline",
        rules=[
            hcloud.FirewallRuleArgs(direction="in", protocol="tcp", port="22", source_ips=["198.51.100.0/24", "2001:db8::/32"]),
            hcloud.FirewallRuleArgs(direction="in", protocol="icmp", source_ips=["0.0.0.0/0", "::/0"]),
        ],
        labels={},
        opts=pulumi.ResourceOptions(parent=shared),
    )
    shared.register_outputs({})
    # The stack's key that signs every desired state (day two), at the stack's top level.
    tls.PrivateKey("state-signing-key", algorithm="ED25519")
    for s in range(servers):
        name = f"srv-{s}"
        comp = pulumi.ComponentResource(TOTP_SERVER, name)
        child = pulumi.ResourceOptions(parent=comp)
        for a in range(admins):
            random.RandomBytes(f"{name}-admin{a}-totp-seed-a", length=SEED_BYTES, keepers={"rotation": "0"}, opts=child)
            random.RandomBytes(
                f"{name}-admin{a}-backup-codes",
                length=BACKUP_CODES * BYTES_PER_CODE,
                keepers={"rotation": "0", "count": str(BACKUP_CODES)},
                opts=child,
            )
        tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=child)
        hcloud.Server(
            f"{name}-server",
            name=name,
            image="debian-12",
            server_type="cx23",
            location="fsn1",
            ssh_keys=["10000001"],
            firewall_ids=[10_000_001],
            user_data=user_data,
            labels={},
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
            delete_protection=False,
            rebuild_protection=False,
            opts=pulumi.ResourceOptions(
                parent=comp,
                protect=False,
                ignore_changes=["user_data", "ssh_keys"],
                additional_secret_outputs=["userData"],
            ),
        )
        comp.register_outputs({})


if __name__ == "__main__":
    gc.freeze()  # the same GC setting as __main__.py: like for like
    register(*globals()["SHAPE"])
