"""Pulumi components: everything in this package registers resources; rendering lives in cloudinit."""

from components.bootstrap_key import BootstrapKey, BootstrapKeyArgs
from components.converge import Converge, ConvergeArgs
from components.firewalls import SharedFirewalls, SharedFirewallsArgs
from components.totp_server import TotpServer, TotpServerArgs

__all__ = ["BootstrapKey", "BootstrapKeyArgs", "Converge", "ConvergeArgs", "SharedFirewalls", "SharedFirewallsArgs",
           "TotpServer", "TotpServerArgs"]
