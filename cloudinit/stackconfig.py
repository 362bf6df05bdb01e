"""Read the stack config (the ``totp-vps:*`` keys of ``Pulumi.<stack>.yaml``) into validated servers.

``__main__.py`` (through ``pulumi.Config``) and ``vpsctl`` (from the YAML file) both call
:func:`parse`, so they accept exactly the same keys and reject bad values with the same message. Every
value's type is checked before it is used; an unknown key is named without its value (it may be a
misspelt secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from cloudinit.model import NOT_SHOWN, Admin, ConfigError, Server, ServiceAccount, camel, printable

NAMESPACE = "totp-vps"
SECRET_KEYS = frozenset({"seedOverrides"})
KEYS = frozenset({"admins", "servers", "defaults", "issuer", "backupCodes", "serviceAccounts", "operator",
                  "keepLegacyFirewalls"}) | SECRET_KEYS

_ADMIN_KEYS = {"name": "name", "sshKeys": "ssh_keys", "shell": "shell", "rotation": "rotation", "sudo": "sudo"}
_ACCOUNT_KEYS = {"name": "name", "sshKeys": "ssh_keys", "fromCidrs": "from_cidrs", "command": "command",
                 "sudoCommands": "sudo_commands"}  # fmt: skip
_OPERATOR_KEYS = ("admin", "identityFile")
# Every Server field except the ones filled from other keys is a per-server (or defaults) key.
_FROM_ELSEWHERE = {"admins", "service_accounts", "where", "origins", "issuer", "backup_codes"}
_SERVER_KEYS = {camel(f.name): f.name for f in fields(Server) if f.name not in _FROM_ELSEWHERE}
_SERVER_KEYS["admins"] = "admins"
_SERVER_KEYS["serviceAccounts"] = "service_accounts"
_LISTS = ("allowed_cidrs", "penalty_exempt_cidrs")


@dataclass(frozen=True)
class Operator:
    """Who ``pulumi up`` logs in as to bring running servers to the desired state."""

    admin: str
    """An admin of every server."""
    identity_file: str
    """That admin's SSH private key file on the machine running ``pulumi up`` (``~`` is expanded there)."""


@dataclass(frozen=True)
class StackConfig:
    """Everything the program builds, validated."""

    servers: tuple[Server, ...]
    """One entry per Hetzner server."""
    operator: Operator | None = None
    """Set: ``pulumi up`` converges running servers itself; unset: ``vpsctl sync`` does."""
    keep_legacy_firewalls: bool = False
    """Upgrade transition from a firewall per server (components/firewalls.py)."""


def parse(values: Mapping[str, Any]) -> StackConfig:
    """``values``: config keys without the namespace (``servers``, ``admins``, ...) -> plain values."""
    _known(values, KEYS, NAMESPACE, sep=":")
    admins = _people(values.get("admins"), "admins", _ADMIN_KEYS, Admin, required=True)
    accounts = _people(values.get("serviceAccounts", []), "serviceAccounts", _ACCOUNT_KEYS, ServiceAccount, required=False)
    for name, account in accounts.items():
        if name in admins:
            raise ConfigError(f"{account.where}.name", name, "is also an admin name")
    defaults = _mapping(values.get("defaults", {}), "defaults")
    _known(defaults, _SERVER_KEYS.keys() - {"name"}, "defaults")
    servers_raw = values.get("servers")
    if not isinstance(servers_raw, list) or not servers_raw:
        raise ConfigError("servers", servers_raw, "needs a list with at least one server")
    common = {"issuer": values.get("issuer", "totp-vps"), "backup_codes": values.get("backupCodes", 5)}
    servers = tuple(_server(raw, i, defaults, admins, accounts, common, values) for i, raw in enumerate(servers_raw))
    names = [s.name for s in servers]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"servers[{i}].name", name, "is used by another server")
    keep_legacy = values.get("keepLegacyFirewalls", False)
    if not isinstance(keep_legacy, bool):
        raise ConfigError(f"{NAMESPACE}:keepLegacyFirewalls", keep_legacy, "must be true or false")
    return StackConfig(servers=servers, operator=_operator(values.get("operator"), servers), keep_legacy_firewalls=keep_legacy)


def _people(raw: object, where: str, keys: Mapping[str, str], kind: Any, *, required: bool) -> dict[str, Any]:
    """Admins or service accounts by name, each validated by its model class."""
    if not isinstance(raw, list) or (required and not raw):
        raise ConfigError(where, raw, f"needs a list{' with at least one entry' if required else ''}")
    out: dict[str, Any] = {}
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        item = _mapping(item, at)
        _known(item, keys.keys(), at)
        kwargs: dict[str, Any] = {keys[k]: _frozen(v) for k, v in item.items()}
        person = kind(where=at, **kwargs)
        if person.name in out:
            raise ConfigError(f"{at}.name", person.name, f"is used by another entry of {where}")
        out[person.name] = person
    return out


def _server(raw: object, i: int, defaults: Mapping[str, Any], admins: Mapping[str, Admin],
            accounts: Mapping[str, ServiceAccount], common: Mapping[str, Any], values: Mapping[str, Any]) -> Server:
    where = f"servers[{i}]"
    own = _mapping(raw, where)
    _known(own, _SERVER_KEYS.keys(), where)
    merged = {**defaults, **own}
    origins = {k: f"defaults.{k}" for k in defaults if k not in own}
    origins.update({k: k for k in ("issuer", "backupCodes") if k in values})
    kwargs = {_SERVER_KEYS[k]: v for k, v in merged.items()}
    chosen_admins = _chosen(kwargs.pop("admins", list(admins)), admins, where, "admins", origins)
    chosen_accounts = _chosen(kwargs.pop("service_accounts", list(accounts)), accounts, where, "serviceAccounts", origins)
    for key in _LISTS:
        if key in kwargs:
            if not isinstance(kwargs[key], list):
                raise ConfigError(origins.get(camel(key), f"{where}.{camel(key)}"), kwargs[key], "must be a list")
            kwargs[key] = tuple(kwargs[key])
    kwargs.setdefault("allowed_cidrs", ())
    if "labels" in kwargs:
        kwargs["labels"] = dict(_mapping(kwargs["labels"], origins.get("labels", f"{where}.labels")))
    return Server(where=where, origins=origins, admins=chosen_admins, service_accounts=chosen_accounts, **common, **kwargs)


def _chosen(wanted: object, known: Mapping[str, Any], where: str, key: str, origins: Mapping[str, str]) -> tuple[Any, ...]:
    at = origins.get(key, f"{where}.{key}")
    if not isinstance(wanted, list):
        raise ConfigError(at, wanted, "must be a list of names")
    for j, name in enumerate(wanted):
        if not isinstance(name, str) or name not in known:
            raise ConfigError(f"{at}[{j}]", name, f"is not one of {sorted(known)}")
    return tuple(known[n] for n in wanted)


def _operator(raw: object, servers: tuple[Server, ...]) -> Operator | None:
    if raw is None:
        return None
    item = _mapping(raw, "operator")
    _known(item, _OPERATOR_KEYS, "operator")
    admin, identity = item.get("admin"), item.get("identityFile")
    for key, value in (("admin", admin), ("identityFile", identity)):
        if not printable(value) or len(str(value)) > 4096:
            raise ConfigError(f"operator.{key}", value, "must be set (the admin to log in as, and their SSH private key file)")
    for server in servers:
        if admin not in server.admin_names:
            raise ConfigError("operator.admin", admin, f"is not an admin of {server.name}: pulumi up could not log in there")
    return Operator(admin=str(admin), identity_file=str(identity))


def _frozen(value: Any) -> Any:
    # Lists become tuples: the models are frozen and compare by value.
    return tuple(value) if isinstance(value, list) else value


def _mapping(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(where, raw, "must be a mapping")
    return raw


def _known(raw: Mapping[str, Any], allowed: Any, where: str, sep: str = ".") -> None:
    for key in raw:
        if key not in allowed:
            shown = key if printable(key) and len(str(key)) <= 64 else "(a key with unprintable characters)"
            raise ConfigError(f"{where}{sep}{shown}", NOT_SHOWN, f"unknown setting; known: {', '.join(sorted(allowed))}")


def from_stack_file(document: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a parsed ``Pulumi.<stack>.yaml`` into (plain values, encrypted values) of our namespace."""
    config = document.get("config") or {}
    if not isinstance(config, Mapping):
        raise ConfigError("config", NOT_SHOWN, "must be a mapping of settings")
    plain: dict[str, Any] = {}
    secure: dict[str, Any] = {}
    for full_key, value in config.items():
        namespace, _, key = str(full_key).partition(":")
        if namespace != NAMESPACE:
            if key in KEYS:
                # A misspelt project name would leave the setting unread (a plain-text seed unremarked).
                shown = str(full_key) if printable(full_key) and len(str(full_key)) <= 64 else "a key"
                raise ConfigError(shown, NOT_SHOWN, f"is not read (the project is {NAMESPACE}): write {NAMESPACE}:{key}")
            continue  # hcloud:token and other providers' settings are not ours to read
        if key in SECRET_KEYS:
            if not _encrypted(value):
                raise ConfigError(f"{NAMESPACE}:{key}", NOT_SHOWN,
                                  "holds TOTP seeds in plain text: set it with `pulumi config set --secret --path ...`")
            secure[key] = value
        elif isinstance(value, Mapping) and set(value) == {"secure"}:
            raise ConfigError(f"{NAMESPACE}:{key}", NOT_SHOWN, "is encrypted but is no secret setting; set it without --secret")
        else:
            plain[key] = value
    return plain, secure


def _encrypted(value: object, depth: int = 0) -> bool:
    """Whether every leaf of a stack-file value is ciphertext (``{secure: v1:...}``, as `--secret --path` writes)."""
    if not isinstance(value, Mapping) or not value or depth > 8:
        return False
    if set(value) == {"secure"}:
        return isinstance(value["secure"], str)
    return all(_encrypted(v, depth + 1) for v in value.values())
