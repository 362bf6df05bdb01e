"""Read user-data the way cloud-init will, and judge the WHOLE of it against the design.

cloud-init runs every ``bootcmd`` and ``runcmd`` entry, writes every ``write_files`` entry in order (those
with ``defer: true`` last, after the packages and users), appends where ``append: true`` says so, decodes
``encoding`` (gz, b64, gz+b64) and drops user-data that is not valid YAML as a whole. A gate that only
read the staged files could be passed by an extra runcmd, a deferred duplicate of a file, or a document
cloud-init cannot parse. So :func:`judge` pins the structure: the top-level keys, the exact write_files
paths, modes and encodings, the exact bootcmd and runcmd, every file the design fixes (compared with a
fresh render), and the desired state (schema-valid, and equal to the expected one when given).
"""

from __future__ import annotations

import base64
import binascii
import lzma
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent import state as st
from cloudinit import hardening, render, yamlload

# Every top-level key the renderer writes, and nothing else: cloud-init acts on any key it knows.
TOP_LEVEL = frozenset({
    "disable_root", "manage_etc_hosts", "ssh_pwauth", "ssh_deletekeys", "ssh_genkeytypes", "ssh_keys", "users", "ntp",
    "package_update", "package_upgrade", "packages", "bootcmd", "write_files", "runcmd",
})  # fmt: skip
FIXED = {"disable_root": True, "manage_etc_hosts": True, "ssh_pwauth": False, "ssh_deletekeys": True,
         "ssh_genkeytypes": ["ed25519"], "users": {}, "package_update": True, "package_upgrade": True}  # fmt: skip
ENTRY_KEYS = frozenset({"path", "owner", "permissions", "encoding", "content"})
MAX_DECODED = 1 << 20


@dataclass
class UserData:
    """User-data as cloud-init reads it."""

    data: dict[str, Any]
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """path -> its write_files entries in the order cloud-init writes them (deferred ones last)."""
    problems: list[str] = field(default_factory=list)
    """What cloud-init would read differently from what a person reading the text expects."""

    def content(self, path: str) -> bytes | None:
        """The bytes cloud-init leaves at ``path`` after writing every entry (appends included)."""
        data: bytes | None = None
        for entry in self.files.get(path, []):
            data = (data or b"") + entry["data"] if entry.get("append") else entry["data"]
        return data

    def text(self, path: str) -> str | None:
        data = self.content(path)
        return None if data is None else data.decode("utf-8", "replace")


def decode(entry: Mapping[str, Any]) -> bytes:
    """An entry's content as cloud-init's write_files extracts it (canonicalize_extraction)."""
    content = entry.get("content", "")
    raw = content.encode() if isinstance(content, str) else bytes(content) if isinstance(content, bytes) else b""
    encoding = str(entry.get("encoding") or "").lower().strip()
    if encoding in ("gz+base64", "gzip+base64", "gz+b64", "gzip+b64", "b64", "base64"):
        raw = base64.b64decode(raw)
    if encoding in ("gz+base64", "gzip+base64", "gz+b64", "gzip+b64", "gz", "gzip"):
        inflater = zlib.decompressobj(wbits=47)  # gzip or zlib header, as util.decomp_gzip accepts
        raw = inflater.decompress(raw, MAX_DECODED)
        if inflater.unconsumed_tail:
            raise ValueError(f"decompresses to more than {MAX_DECODED} bytes")
    return raw


def read(user_data: str) -> UserData:
    """Parse like cloud-init (ValueError if cloud-init would drop the whole document)."""
    if not user_data.startswith("#cloud-config\n"):
        raise ValueError("user-data does not start with '#cloud-config' (cloud-init would not read it as cloud-config)")
    try:
        document = yamlload.load(user_data, "user-data")
    except yamlload.YamlError as exc:
        raise ValueError(f"{exc}: cloud-init would ignore ALL of it") from None
    if not isinstance(document.data, dict):
        raise ValueError("user-data is not a YAML mapping")
    duplicates = [f"duplicate key {d}: cloud-init reads only the last" for d in document.duplicate_keys]
    out = UserData(data=document.data, problems=duplicates)
    entries = document.data.get("write_files", [])
    if not isinstance(entries, list):
        out.problems.append("write_files is not a list")
        return out
    ordered = [e for e in entries if not (isinstance(e, dict) and e.get("defer"))] + \
              [e for e in entries if isinstance(e, dict) and e.get("defer")]  # fmt: skip
    for i, entry in enumerate(ordered):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            out.problems.append(f"write_files entry {i} has no path")
            continue
        try:
            data = decode(entry)
        except (ValueError, binascii.Error, zlib.error) as exc:
            out.problems.append(f"write_files {entry['path']}: content cannot be decoded ({type(exc).__name__})")
            continue
        out.files.setdefault(entry["path"], []).append({**entry, "data": data})
    return out


def state_of(user_data: UserData) -> dict[str, Any]:
    """The desired state the agent will apply at first boot (StateError/ValueError if it would refuse it)."""
    data = user_data.content(render.BOOT_STATE)
    if data is None:
        raise ValueError(f"no {render.BOOT_STATE} in write_files")
    try:
        return st.validate(st.unpack(data))
    except lzma.LZMAError as exc:
        raise ValueError(f"{render.BOOT_STATE} cannot be unpacked ({exc})") from None


def judge(user_data: str, expected: Mapping[str, Any] | None = None) -> list[str]:
    """Everything in ``user_data`` that the design does not put there; empty when it is as rendered.

    ``expected``: the desired state it must carry (the renderer's self-check); without it the state is
    only checked to be one the agent accepts (the policy pack judges its contents)."""
    try:
        ud = read(user_data)
    except ValueError as exc:
        return [str(exc)]
    problems = list(ud.problems)
    data = ud.data
    extra, missing = sorted(set(data) - TOP_LEVEL), sorted(TOP_LEVEL - set(data))
    problems += [f"top-level key {k!r} is not part of the design (cloud-init would act on it)" for k in extra]
    problems += [f"top-level key {k!r} is missing" for k in missing]
    problems += [f"{k} is {data.get(k)!r}, want {v!r}" for k, v in FIXED.items() if k in data and data[k] != v]
    keys = data.get("ssh_keys")
    if not isinstance(keys, dict) or set(keys) != {"ed25519_private", "ed25519_public"}:
        problems.append("ssh_keys must hold exactly the pinned Ed25519 host key (ed25519_private, ed25519_public)")
    packages = sorted({hardening.PAM_PACKAGE[image] for image in hardening.IMAGES} | {"nftables"})
    if not isinstance(data.get("packages"), list) or not set(map(str, data["packages"])) <= set(packages):
        problems.append(f"packages must be only {', '.join(packages)}")
    if data.get("bootcmd") != [render.metadata_block()]:
        problems.append("bootcmd differs from the metadata block the design runs (an extra or changed command)")
    if data.get("runcmd") != [[render.desired.AGENT_COMMAND, "boot"]]:
        problems.append(f"runcmd must be exactly [[{render.desired.AGENT_COMMAND}, boot]] (an extra or changed command)")
    for entries in ud.files.values():
        for entry in entries:
            unknown = sorted(set(entry) - ENTRY_KEYS - {"data"})
            if unknown:
                problems.append(f"write_files {entry['path']}: {', '.join(unknown)} is not part of the design "
                                "(defer and append change what is written, and when)")
            if entry.get("owner", "root:root") != "root:root":
                problems.append(f"write_files {entry['path']}: owner {entry.get('owner')!r}, want root:root")
        if len(entries) > 1:
            problems.append(f"write_files {entries[0]['path']} is written {len(entries)} times (the last one wins)")
    try:
        state = state_of(ud)
    except (ValueError, st.StateError) as exc:
        return [*problems, f"desired state: {exc}"]
    if expected is not None and st.canonical(dict(expected)) != st.canonical(state):
        problems.append("the desired state differs from the one rendered from the stack config")
    designed = {f.path: f for f in render.fixed_files(state["sshPort"])}
    designed[render.BOOT_STATE] = render.state_file(state)
    for path in sorted(set(ud.files) - set(designed)):
        problems.append(f"write_files {path} is not part of the design")
    for path, want in designed.items():
        found = ud.files.get(path)
        if not found:
            problems.append(f"write_files {path} is missing")
            continue
        entry = found[-1]
        if str(entry.get("permissions")) != want.mode or (entry.get("encoding") or None) != want.encoding:
            problems.append(f"write_files {path}: mode {entry.get('permissions')} / encoding {entry.get('encoding')}, "
                            f"want {want.mode} / {want.encoding}")
        if not _same(path, ud.content(path), want.data):
            problems.append(f"write_files {path} differs from the design's file (compared with a fresh render)")
    return problems


def _same(path: str, have: bytes | None, want: bytes) -> bool:
    if have == want:
        return True
    if path in (render.AGENT_BUNDLE, render.BOOT_STATE) and have is not None:
        # Compared by what they hold: another xz build may pack the same JSON into other bytes.
        try:
            return bool(st.unpack(have) == st.unpack(want))
        except (ValueError, lzma.LZMAError):
            return False
    return have == want
