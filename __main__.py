"""totp-vps: Hetzner servers whose SSH needs a key AND a TOTP code. `pulumi up` runs this."""

import gc

import pulumi

from cloudinit.model import ConfigError
from components.program import build

# Everything imported so far (the SDKs: hundreds of thousands of objects) lives until the end; keep
# the cyclic GC from re-scanning it at every full collection while a fleet's Output graph grows.
gc.freeze()

try:
    outputs = build()
except ConfigError as exc:
    # One line naming the setting, no stack trace; nothing was registered.
    raise pulumi.RunError(f"totp-vps config: {exc}") from None

for key, value in outputs.items():
    pulumi.export(key, value)
