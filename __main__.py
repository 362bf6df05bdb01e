"""totp-vps: Hetzner servers whose SSH needs a key AND a TOTP code. `pulumi up` runs this."""

import pulumi

from cloudinit.model import ConfigError
from components.program import build

try:
    outputs = build()
except ConfigError as exc:
    # One line naming the setting, no stack trace; nothing was registered.
    raise pulumi.RunError(f"totp-vps config: {exc}") from None

for key, value in outputs.items():
    pulumi.export(key, value)
