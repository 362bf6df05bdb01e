"""Pulumi components: everything in this package registers resources; rendering lives in cloudinit."""

from components.admin_keys import AdminKeys, AdminKeysArgs
from components.totp_server import TotpServer, TotpServerArgs

__all__ = ["AdminKeys", "AdminKeysArgs", "TotpServer", "TotpServerArgs"]
