"""Pure rendering of key+TOTP cloud-init user-data (no Pulumi import anywhere in this package)."""

from cloudinit.model import Admin, ConfigError, Server
from cloudinit.render import check_fits, render_user_data
from cloudinit.secrets import AdminSecrets, KeyPair

__all__ = ["Admin", "AdminSecrets", "ConfigError", "KeyPair", "Server", "check_fits", "render_user_data"]
