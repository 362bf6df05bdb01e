"""Read the stack config (the ``totp-vps:*`` keys of ``Pulumi.<stack>.yaml``) into validated servers.

``__main__.py`` (through ``pulumi.Config``) and ``vpsctl`` (from the YAML file) both call
:func:`parse`, so they accept exactly the same keys and reject bad values with the same message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from cloudinit.model import Admin, ConfigError, Server, camel

NAMESPACE = "totp-vps"
SECRET_KEYS = frozenset({"seedOverrides"})
KEYS = frozenset({"admins", "servers", "defaults", "issuer", "backupCodes", "keepLegacyFirewalls"}) | SECRET_KEYS

_ADMIN_KEYS = {"name": "name", "sshKeys": "ssh_keys", "shell": "shell", "rotation": "rotation"}
# Every Server field except the ones filled from other keys is a per-server (or defaults) key.
_SERVER_KEYS = {camel(f.name): f.name for f in fields(Server) if f.name not in {"admins", "where", "issuer", "backup_codes"}}
_SERVER_KEYS["admins"] = "admins"


@dataclass(frozen=True)
class StackConfig:
    """Everything the program builds, validated."""

    servers: tuple[Server, ...]
    """One entry per Hetzner server."""
    keep_legacy_firewalls: bool = False
    """Upgrade transition from a firewall per server (components/firewalls.py)."""


def parse(values: Mapping[str, Any]) -> StackConfig:
    """``values``: config keys without the namespace (``servers``, ``admins``, ...) -> plain values."""
    for key in values:
        if key not in KEYS:
            raise ConfigError(f"{NAMESPACE}:{key}", values[key], f"unknown setting; known: {sorted(KEYS)}")
    admins = _admins(values.get("admins"))
    defaults = _mapping(values.get("defaults", {}), "defaults")
    _known(defaults, _SERVER_KEYS.keys() - {"name"}, "defaults")
    servers_raw = values.get("servers")
    if not isinstance(servers_raw, list) or not servers_raw:
        raise ConfigError("servers", servers_raw, "needs a list with at least one server")
    common = {"issuer": values.get("issuer", "totp-vps"), "backup_codes": values.get("backupCodes", 5)}
    servers = tuple(
        _server({**defaults, **_mapping(raw, f"servers[{i}]")}, i, admins, common) for i, raw in enumerate(servers_raw)
    )
    names = [s.name for s in servers]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"servers[{i}].name", name, "is used by another server")
    keep_legacy = values.get("keepLegacyFirewalls", False)
    if not isinstance(keep_legacy, bool):
        raise ConfigError(f"{NAMESPACE}:keepLegacyFirewalls", keep_legacy, "must be true or false")
    return StackConfig(servers=servers, keep_legacy_firewalls=keep_legacy)


def _admins(raw: object) -> dict[str, Admin]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("admins", raw, "needs a list with at least one admin")
    out: dict[str, Admin] = {}
    for i, item in enumerate(raw):
        where = f"admins[{i}]"
        item = _mapping(item, where)
        _known(item, _ADMIN_KEYS.keys(), where)
        keys = item.get("sshKeys")
        if not isinstance(keys, list):
            raise ConfigError(f"{where}.sshKeys", keys, "needs a list of public key lines")
        kwargs: dict[str, Any] = {_ADMIN_KEYS[k]: tuple(v) if k == "sshKeys" else v for k, v in item.items()}
        admin = Admin(where=where, **kwargs)
        if admin.name in out:
            raise ConfigError(f"{where}.name", admin.name, "is used by another admin")
        out[admin.name] = admin
    return out


def _server(raw: Mapping[str, Any], i: int, admins: Mapping[str, Admin], common: Mapping[str, Any]) -> Server:
    where = f"servers[{i}]"
    _known(raw, _SERVER_KEYS.keys(), where)
    kwargs = {_SERVER_KEYS[k]: v for k, v in raw.items()}
    wanted = kwargs.pop("admins", list(admins))
    if not isinstance(wanted, list):
        raise ConfigError(f"{where}.admins", wanted, "must be a list of admin names")
    for j, name in enumerate(wanted):
        if name not in admins:
            raise ConfigError(f"{where}.admins[{j}]", name, f"is not one of the admins {sorted(admins)}")
    for key in ("allowed_cidrs",):
        if key in kwargs:
            if not isinstance(kwargs[key], list):
                raise ConfigError(f"{where}.{camel(key)}", kwargs[key], "must be a list")
            kwargs[key] = tuple(kwargs[key])
    kwargs.setdefault("allowed_cidrs", ())
    if "labels" in kwargs:
        kwargs["labels"] = dict(_mapping(kwargs["labels"], f"{where}.labels"))
    return Server(where=where, admins=tuple(admins[n] for n in wanted), **common, **kwargs)


def _mapping(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(where, raw, "must be a mapping")
    return raw


def _known(raw: Mapping[str, Any], allowed: Any, where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}", raw[key], f"unknown setting; known: {sorted(allowed)}")


def from_stack_file(document: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a parsed ``Pulumi.<stack>.yaml`` into (plain values, encrypted values) of our namespace."""
    config = document.get("config") or {}
    if not isinstance(config, Mapping):
        raise ConfigError("config", config, "must be a mapping of settings")
    plain: dict[str, Any] = {}
    secure: dict[str, Any] = {}
    for full_key, value in config.items():
        namespace, _, key = str(full_key).partition(":")
        if namespace != NAMESPACE:
            continue  # hcloud:token and other providers' settings are not ours to read
        if key in SECRET_KEYS:
            secure[key] = value
        elif isinstance(value, Mapping) and set(value) == {"secure"}:
            raise ConfigError(f"{NAMESPACE}:{key}", "[secret]", "is encrypted but is no secret setting; set it without --secret")
        else:
            plain[key] = value
    return plain, secure
