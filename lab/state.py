"""The lab's state directory: what makes one run of the lab like the last (the same seeds, keys and host key
until ``--fresh``, so a phone enrolled once keeps working), and what ``lab sync`` needs to reach a running lab.

DIR (mode 0700; default ``$XDG_STATE_HOME/totp-vps-lab/<config>-<server>``, else ``~/.local/state/...``):

  lab.json        which config and server the state is for, the guest release, your --identity files (paths),
                  the host port of the last run, what the enrolled phones hold (digests of their URIs)
  engine.json     the mock engine's state: the stack's random bytes and private keys by URN (secret, 0600)
  outputs.json    ``pulumi stack output --json --show-secrets`` of the lab's stack (secret, 0600)
  keys/NAME       a throwaway OpenSSH private key per admin and service account of the server (0600), and NAME.pub
  known_hosts     the pinned host key, under the server's name (``ssh -o HostKeyAlias=NAME``: any port)
  NAME.png/.svg   the enrollment QR codes, ``NAME-sudo.*`` for sudo: totp (secret, 0600)
  vm.json         while a VM runs: host port per guest port, the qemu monitor socket
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudinit.secrets import known_hosts_line
from lab.stack import LabKey, make_key
from vpsctl.errors import CliError
from vpsctl.files import write_private

FORMAT = "totp-vps-lab/state/1"
LOCKS = ("running.lock", "state.lock")


def default_root() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "totp-vps-lab"


def config_name(config: Path) -> str:
    """``Pulumi.dev.yaml`` -> ``dev``: the stack's name, as Pulumi takes it from the file name."""
    name = re.sub(r"\.ya?ml$", "", config.name.removeprefix("Pulumi."))
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "config"


def default_dir(config: Path, server: str) -> Path:
    return default_root() / f"{config_name(config)}-{server}"


@dataclass(frozen=True)
class LabState:
    """One state directory (see the module's docstring). Open it with :meth:`open`."""

    path: Path

    @property
    def lab_file(self) -> Path:
        return self.path / "lab.json"

    @property
    def engine(self) -> Path:
        return self.path / "engine.json"

    @property
    def outputs(self) -> Path:
        return self.path / "outputs.json"

    @property
    def known_hosts(self) -> Path:
        return self.path / "known_hosts"

    @property
    def vm_file(self) -> Path:
        return self.path / "vm.json"

    @property
    def keys(self) -> Path:
        return self.path / "keys"

    def key_file(self, name: str) -> Path:
        return self.keys / name

    # ------------------------------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: Path, *, server: str, create: bool) -> LabState:
        """The state in ``path`` for ``server``; ``create``: make it (0700) if it does not exist yet.

        Refused (bad input, exit 2): a folder that holds something else (it is about to receive secrets), or
        the state of another server."""
        state = cls(path.expanduser().absolute())
        if state.path.exists() and not state.path.is_dir():
            raise CliError(f"--state-dir: {state.path} is not a folder")
        if not state.lab_file.exists():
            leftovers = [p.name for p in state.path.iterdir() if p.name not in LOCKS] if state.path.is_dir() else []
            if leftovers:
                raise CliError(f"--state-dir: {state.path} is not empty and holds no lab state; name a new or empty folder")
            if not create:
                raise CliError(f"no lab state in {state.path}: start the lab first (.venv/bin/python -m lab --config FILE), "
                               "or name its folder with --state-dir (the folder the lab printed)")
        state.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        state.path.chmod(0o700)  # whatever the umask, and if it was made by hand
        record = state.record()
        if record and record.get("server") != server:
            raise CliError(f"--state-dir: {state.path} holds the lab of server {record.get('server')!r}, not {server!r}; "
                           "name another folder")
        return state

    def fresh(self) -> None:
        """Forget everything: new seeds, keys and host key on the next run (--fresh)."""
        for item in self.path.iterdir():
            if item.name in LOCKS:
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()

    # ------------------------------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def _lock(self, name: str, *, wait: bool) -> Iterator[bool]:
        with open(self.path / name, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Held by ``python -m lab`` for as long as its VM runs: one VM per state."""
        with self._lock("running.lock", wait=False) as got:
            if not got:
                raise CliError(f"a lab already runs from {self.path}: stop it first (Ctrl-C where it runs), "
                               "or give this one another --state-dir")
            try:
                yield
            finally:
                self.vm_file.unlink(missing_ok=True)

    def vm_running(self) -> bool:
        """Whether a ``python -m lab`` holds this state's VM (a vm.json left by a killed lab does not count)."""
        with self._lock("running.lock", wait=False) as got:
            return not got

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held while a run reads, changes and writes the stack's state (a lab and a lab sync may overlap)."""
        with self._lock("state.lock", wait=True):
            yield

    # ------------------------------------------------------------------------------------------ files

    def read(self, path: Path) -> Any:
        """A JSON file of the state, or None if it is not there."""
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            raise CliError(f"{path} is damaged (not JSON); start over with --fresh") from None

    def write(self, path: Path, data: Any) -> None:
        # Sorted, as the Pulumi CLI prints JSON (Go sorts map keys): the same state gives the same bytes.
        write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def record(self) -> dict[str, Any]:
        return self.read(self.lab_file) or {}

    def update_record(self, **changes: Any) -> None:
        self.write(self.lab_file, {**self.record(), "format": FORMAT, **changes})

    def key(self, name: str) -> LabKey:
        """``name``'s throwaway key pair: the one from earlier runs, or a new one."""
        path = self.key_file(name)
        public = path.with_name(name + ".pub")
        if path.exists() and public.exists():
            return LabKey(path=path, public=public.read_text().strip())
        self.keys.mkdir(mode=0o700, exist_ok=True)
        return make_key(self.keys, name, file=name)

    def pin(self, server: str, host_public_key: str) -> None:
        """The known_hosts line under the server's name: it holds for whatever port the VM gets."""
        self.known_hosts.write_text(known_hosts_line(server, 22, host_public_key) + "\n")
