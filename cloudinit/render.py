"""Render one server's ``#cloud-config`` user-data from the validated model. Pure: no Pulumi, no I/O beyond
reading the template and agent files once.

The user-data only lays the ground for the agent: a lockdown drop-in sshd reads until activation, the agent
itself, the first desired state, the boot unit and the metadata block (bootcmd loads its ruleset at every
boot, a unit of its own from the second boot on, an nftables.service drop-in after every start, reload and
stop of the host's firewall); runcmd runs the agent, which does
the rest exactly as it does for every later change. Before the text is returned it is parsed back the way
cloud-init reads it and judged against the model (cloudinit.cloudconfig): a renderer bug cannot ship.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from agent import state as st
from cloudinit import desired, hardening
from cloudinit.model import HETZNER_USER_DATA_LIMIT, ConfigError, Server
from cloudinit.secrets import AdminSecrets, KeyPair, fresh_key_pair, seed_from_bytes
from cloudinit.templating import template

VERSION = desired.VERSION
STAGE = "/etc/totp-vps"
BOOT_STATE = f"{STAGE}/desired.json"
METADATA_NFT = f"{STAGE}/metadata.nft"
AGENT_BUNDLE = "/usr/local/lib/totp-vps/agent.bundle"
BOOT_UNIT = "/etc/systemd/system/totp-vps-boot.service"
METADATA_ADDRESS = "169.254.169.254"  # Hetzner's metadata service: the user-data, to anyone who asks
METADATA_UNIT = "/etc/systemd/system/totp-vps-metadata.service"
METADATA_WANTS = "/etc/systemd/system/sysinit.target.d/totp-vps-metadata.conf"
NFTABLES_DROPIN = "/etc/systemd/system/nftables.service.d/totp-vps-metadata.conf"
NFT = "/usr/sbin/nft"
PATHS = {"stage": STAGE, "dropin": st.DROPIN, "metadata_nft": METADATA_NFT}
GZIP, BASE64 = "gz+b64", "b64"  # cloud-init's write_files encodings: base64 of gzip, base64


@dataclass(frozen=True)
class WriteFile:
    """One write_files entry: the bytes cloud-init writes (decoded), their mode and how they are encoded."""

    path: str
    mode: str
    data: bytes
    encoding: str | None = None

    @property
    def encoded(self) -> str:
        if self.encoding == GZIP:
            # mtime 0: the same text always gives the same bytes (the user-data must not change between runs).
            return base64.b64encode(gzip.compress(self.data, compresslevel=9, mtime=0)).decode()
        if self.encoding == BASE64:
            return base64.b64encode(self.data).decode()
        return self.data.decode()


def text_file(path: str, mode: str, text: str, encoding: str | None = None) -> WriteFile:
    return WriteFile(path, mode, text.encode(), encoding)


def effective_settings(ssh_port: int) -> tuple[str, ...]:
    """The ``sshd -T`` lines a server on ``ssh_port`` must show for an admin (vpsctl verify, the tests)."""
    return (*st.ADMIN_EFFECTIVE, f"port {ssh_port}")


def metadata_ruleset() -> str:
    """The nftables ruleset that lets only root reach the metadata service (loading it again replaces it)."""
    return template("metadata.nft.j2").render(address=METADATA_ADDRESS)


def metadata_block() -> str:
    """The bootcmd script: writes the ruleset and loads it, at every boot (at the first, before write_files)."""
    return template("metadata-block.sh.j2").render(paths=PATHS, ruleset=metadata_ruleset())


def metadata_files() -> list[WriteFile]:
    """The ruleset and what keeps it loaded: a unit sysinit.target starts at every boot, and the drop-in that
    loads it again after nftables.service flushed the ruleset."""
    load = f"{NFT} -f {METADATA_NFT}"
    unit = METADATA_UNIT.rsplit("/", 1)[1]
    return [
        text_file(METADATA_NFT, "0644", metadata_ruleset()),
        text_file(METADATA_UNIT, "0644", template("totp-vps-metadata.service.j2").render(load=load)),
        text_file(METADATA_WANTS, "0644", template("totp-vps-metadata.wants.conf.j2").render(unit=unit)),
        text_file(NFTABLES_DROPIN, "0644", template("nftables-metadata.conf.j2").render(load=load)),
    ]


def fixed_files(ssh_port: int) -> list[WriteFile]:
    """The files the design fixes (everything but the desired state): the gate compares them with these."""
    return [
        text_file(st.DROPIN, "0644", st.lockdown(ssh_port)),
        WriteFile(AGENT_BUNDLE, "0644", desired.agent_bundle()),
        text_file(desired.AGENT_COMMAND, "0755", desired.agent_files()[st.LAUNCHER]),
        text_file(BOOT_UNIT, "0644", template("totp-vps-boot.service.j2").render(agent_command=desired.AGENT_COMMAND)),
        *metadata_files(),
    ]


def state_file(state: Mapping[str, Any]) -> WriteFile:
    return WriteFile(BOOT_STATE, "0600", _packed(json.dumps(state, sort_keys=True, ensure_ascii=False)))


@lru_cache(maxsize=8)
def _packed(state_json: str) -> bytes:
    """xz at its strongest takes a millisecond or two, and the self-check packs the state it just rendered again."""
    return st.pack(json.loads(state_json))


def render_user_data(server: Server, admin_secrets: Mapping[str, AdminSecrets], host_key: KeyPair, signer: str) -> str:
    """The exact user-data for ``server``; ``signer``: the public key that signs the server's later changes.
    Raises ConfigError if it would not fit Hetzner's limit."""
    from cloudinit import cloudconfig, gate  # the gates parse what this module renders

    text, state = _render(server, admin_secrets, host_key, signer)
    problems = cloudconfig.judge(text, expected=state) + [f"{p}: {why}" for p, why in gate.judge_state(state, server.image)]
    if problems:
        raise AssertionError(f"the renderer produced user-data its own gate refuses: {problems[0]}")
    return text


def _render(server: Server, admin_secrets: Mapping[str, AdminSecrets], host_key: KeyPair,
            signer: str) -> tuple[str, dict[str, Any]]:
    """The user-data and the desired state it carries, within Hetzner's limit (ConfigError otherwise)."""
    state = desired.desired_state(server, admin_secrets, signer)
    files = [*fixed_files(server.ssh_port)]
    files.insert(2, state_file(state))
    text = template("cloud-config.yaml.j2").render(
        version=VERSION,
        server=server,
        host_key=host_key,
        pam_package=hardening.PAM_PACKAGE[server.image],
        ntp_servers=hardening.NTP_SERVERS,
        ntp_pools=hardening.NTP_POOLS,
        metadata_block=metadata_block(),
        # A block literal always ends with a newline: anything else is written as a quoted string.
        files=[{"path": f.path, "mode": f.mode, "encoding": f.encoding, "content": f.encoded,
                "quoted": bool(f.encoding) or not f.encoded.endswith("\n")} for f in files],
        agent_command=desired.AGENT_COMMAND,
    )
    size = len(text.encode())
    if size > HETZNER_USER_DATA_LIMIT:
        keys = sum(len(a.ssh_keys) for a in server.admins) + sum(len(a.ssh_keys) for a in server.service_accounts)
        raise ConfigError(
            server.key("admins"),
            f"{len(server.admins)} admins, {len(server.service_accounts)} service accounts, {keys} keys",
            f"user-data would be {size} bytes, over Hetzner's {HETZNER_USER_DATA_LIMIT}-byte limit: use fewer accounts or keys",
        )
    return text, state


@cache
def _placeholder_key_pair() -> KeyPair:
    return fresh_key_pair()


def check_fits(server: Server) -> None:
    """Raise ConfigError now if the server's user-data would exceed Hetzner's limit.

    Seeds, codes and keys have fixed sizes, so rendering with stand-ins of the same size gives the exact
    byte count (up to compression, which stand-ins can only make better: see the test) before any real
    secret exists: the component must fail before it registers anything."""
    one = AdminSecrets(
        seed="A" * len(seed_from_bytes(bytes(hardening.SEED_BYTES))),
        backup_codes=tuple("1" * 8 for _ in range(server.backup_codes)),
    )
    stand_in = AdminSecrets(seed=one.seed, backup_codes=one.backup_codes, sudo=one)
    pair = _placeholder_key_pair()
    # Only the size here: the real render judges what it renders.
    _render(server, {name: stand_in for name in server.admin_names}, pair, pair.public_openssh)
