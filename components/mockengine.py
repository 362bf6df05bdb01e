"""Run the real Pulumi program offline under the SDK's mock engine, and record what it registers.

``vpsctl check`` feeds the recording to the policy pack; the tests and benchmarks use it to ask "the
firewall's rules" by type token. No Pulumi CLI, no provider plugins, no cloud account.

Two things the stock MockMonitor gets wrong for us are fixed here: it ignores
``additional_secret_outputs`` (so provider-secret outputs such as RandomBytes.base64 would look plain),
and it drops ``register_outputs``. Provider outputs are deterministic functions of the resource name and
inputs, so the same config always gives the same state, like a real stack whose state already exists.

``StatefulMocks`` is the other engine: the lab's. Its random bytes and private keys are real randomness,
kept in a state (keyed by URN) from one run to the next for as long as the inputs that make the real
provider replace them stay the same, as ``pulumi up`` keeps them in a stack's state.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import hashlib
import json
import os
import runpy
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf import struct_pb2
from pulumi.runtime import mocks as _mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

PROJECT = "totp-vps"
PROGRAM = Path(__file__).resolve().parent.parent / "__main__.py"
SECRET = "[secret]"  # noqa: S105 - the placeholder shown instead of a secret
RANDOM_BYTES = "random:index/randomBytes:RandomBytes"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
STATE_FORMAT = "totp-vps/mock-engine-state/1"
# The inputs whose change makes the provider replace the resource (RequiresReplace in the Terraform providers
# pulumi-random and pulumi-tls bridge): a replacement has new randomness, any other run keeps what it had.
REPLACED_ON = {RANDOM_BYTES: ("keepers", "length"), PRIVATE_KEY: ("algorithm", "ecdsaCurve", "rsaBits")}


@dataclass
class Registration:
    """One resource as the engine saw it: inputs carry secret markers exactly as sent."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    options: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    """For components: what register_outputs sent; for custom resources: the provider's state."""

    @property
    def plain_inputs(self) -> dict[str, Any]:
        return unwrap(self.inputs)


class ProgramFailed(Exception):
    """The program raised; ``registrations`` is what it had registered by then."""

    def __init__(self, message: str, registrations: list[Registration]) -> None:
        super().__init__(message)
        self.registrations = registrations


@dataclass
class ProgramRun:
    """Everything one offline run of the program produced."""

    registrations: list[Registration]
    stack_outputs: dict[str, Any]
    """Stack outputs with secret markers (like the engine's state)."""

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def one(self, type_: str, name: str) -> Registration:
        found = [r for r in self.registrations if r.type == type_ and r.name == name]
        if len(found) != 1:
            raise LookupError(f"{len(found)} registrations of {type_} named {name}")
        return found[0]


def is_secret(value: Any) -> bool:
    return rpc.is_rpc_secret(value)


def unwrap(tree: Any) -> Any:
    """The tree with secret markers removed (what ``--show-secrets`` shows)."""
    if rpc.is_rpc_secret(tree):
        return unwrap(rpc.unwrap_rpc_secret(tree))
    if isinstance(tree, dict):
        return {k: unwrap(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unwrap(v) for v in tree]
    return tree


def redact(tree: Any) -> Any:
    """The tree with every secret replaced by ``[secret]`` (what a plain ``stack output`` shows)."""
    if rpc.is_rpc_secret(tree):
        return SECRET
    if isinstance(tree, dict):
        return {k: redact(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [redact(v) for v in tree]
    return tree


def plain_leaves(tree: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) for every leaf NOT under a secret marker."""
    if rpc.is_rpc_secret(tree):
        return
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from plain_leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from plain_leaves(v, f"{path}[{i}]")
    else:
        yield path, tree


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()


def _stream(seed: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def _numeric_id(name: str) -> str:
    return str(int.from_bytes(_digest(name)[:4], "big") % 90_000_000 + 10_000_000)


def _key_state(key: ed25519.Ed25519PrivateKey) -> dict[str, str]:
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return {"privateKeyOpenssh": private.decode(), "publicKeyOpenssh": public.decode() + "\n"}


@functools.cache
def _host_key_state(name: str) -> dict[str, str]:
    """Serialised once per name: the OpenSSH format embeds a random check number, and a real stack
    keeps the key text from its first creation in state."""
    return _key_state(ed25519.Ed25519PrivateKey.from_private_bytes(_digest(name)[:32]))


class DeterministicMocks(pulumi.runtime.Mocks):
    """Provider stand-ins whose outputs depend only on name and inputs (stable across runs)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = dict(args.inputs)
        plain = unwrap(inputs)
        rid = _numeric_id(args.name)
        if args.typ == RANDOM_BYTES:
            raw = _stream(_digest(args.name, plain.get("keepers")), int(plain["length"]))
            inputs.update(base64=base64.b64encode(raw).decode(), hex=raw.hex())
        elif args.typ == PRIVATE_KEY:
            inputs.update(_host_key_state(args.name))
        elif args.typ == "hcloud:index/server:Server":
            n = int(rid) % 250 + 1
            inputs.update(ipv4Address=f"203.0.113.{n}", ipv6Address=f"2001:db8:{n:x}::1", status="running")
        elif args.typ == "hcloud:index/sshKey:SshKey":
            inputs.update(fingerprint=":".join(f"{b:02x}" for b in _digest(plain.get("publicKey"))[:16]))
        return rid, inputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


# The URN of the resource being registered on this thread: the SDK hands Mocks.new_resource no URN, and it
# registers from a pool of threads, so RecordingMonitor passes it along here.
_registering = threading.local()


class StatefulMocks(DeterministicMocks):
    """The providers' stateful resources as a real stack has them: RandomBytes and PrivateKey get real randomness
    (``os.urandom``, a new Ed25519 key) when created or replaced, and keep their outputs across runs while the
    inputs that force a replacement stay the same. Everything else is DeterministicMocks'.

    ``state`` (from :attr:`state` of an earlier run, or None for a new stack): what the stack's state holds.
    After a run, :attr:`state` holds exactly the resources that run registered (the others were deleted, as
    ``pulumi up`` deletes them) and :attr:`made` the URNs that got new randomness."""

    def __init__(self, state: Mapping[str, Any] | None = None) -> None:
        if state is not None and state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a mock engine state (want format {STATE_FORMAT})")
        self._before: dict[str, Any] = copy.deepcopy(dict(state["resources"])) if state else {}
        self._after: dict[str, Any] = {}
        self.made: list[str] = []
        self._lock = threading.Lock()

    @property
    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"format": STATE_FORMAT, "resources": copy.deepcopy(self._after)}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if args.typ not in REPLACED_ON:
            return super().new_resource(args)
        urn: str = _registering.urn
        plain = unwrap(dict(args.inputs))
        # Through JSON, so what is compared is what the state file holds (tuples and lists alike).
        forcing = json.loads(json.dumps({k: plain.get(k) for k in REPLACED_ON[args.typ]}))
        with self._lock:
            old = self._before.get(urn)
            if old is not None and old.get("type") == args.typ and old.get("inputs") == forcing:
                outputs = old["outputs"]
            else:
                outputs = _fresh(args.typ, plain)
                self.made.append(urn)
            self._after[urn] = {"type": args.typ, "inputs": forcing, "outputs": outputs}
        return _numeric_id(args.name), {**dict(args.inputs), **outputs}


def _fresh(typ: str, inputs: Mapping[str, Any]) -> dict[str, str]:
    """A new resource's outputs, random as the real provider makes them."""
    if typ == RANDOM_BYTES:
        raw = os.urandom(int(inputs["length"]))
        return {"base64": base64.b64encode(raw).decode(), "hex": raw.hex()}
    if inputs.get("algorithm") != "ED25519":
        raise ValueError(f"the mock engine makes Ed25519 private keys only, not {inputs.get('algorithm')!r}")
    return _key_state(ed25519.Ed25519PrivateKey.generate())


class RecordingMonitor(_mocks.MockMonitor):
    """MockMonitor that records registrations and honours additional_secret_outputs."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []
        self._by_urn: dict[str, Registration] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        _registering.urn = self.make_urn(request.parent, request.type, request.name)
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        for key in request.additionalSecretOutputs:
            if key in response.object.fields:
                _mark_secret(response.object.fields[key])
        reg = Registration(
            type=request.type,
            name=request.name,
            urn=response.urn,
            parent=request.parent,
            custom=bool(request.custom),
            inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
            options={
                "protect": request.protect,
                "ignoreChanges": list(request.ignoreChanges),
                "additionalSecretOutputs": list(request.additionalSecretOutputs),
                "replaceOnChanges": list(request.replaceOnChanges),
                "deleteBeforeReplace": request.deleteBeforeReplace,
                "aliases": [_alias_urn(a, request, response.urn) for a in request.aliases],
                # Every resource this one waits for: depends_on (a component expanded to its children) and inputs.
                "dependencies": list(request.dependencies),
                # Which resources each input came from (the engine hands these to stack policies).
                "propertyDependencies": {k: list(v.urns) for k, v in request.propertyDependencies.items()},
            },
            outputs=rpc.deserialize_properties(response.object, keep_unknowns=True) if request.custom else {},
        )
        self.registrations.append(reg)
        self._by_urn[reg.urn] = reg
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        reg = self._by_urn.get(request.urn)
        if reg is not None:
            reg.outputs = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
        return super().RegisterResourceOutputs(request)


def _alias_urn(alias: Any, request: Any, urn: str) -> str:
    """The URN an alias stands for. The SDK sends an alias by its parts (an alias spec, such as only an old name)
    when the monitor supports that, as the real engine does; the engine then fills in the rest from the resource
    itself: same stack, project, type and parent unless the alias names others."""
    if alias.urn:
        return str(alias.urn)
    spec = alias.spec
    stack, project, qualified, _ = urn.removeprefix("urn:pulumi:").split("::", 3)
    prefix = qualified.removesuffix(request.type)  # a child's type carries its parents' (parent$child)
    if spec.noParent:
        prefix = ""
    elif spec.parentUrn:
        prefix = spec.parentUrn.split("::")[2] + "$"
    name, type_ = spec.name or request.name, spec.type or request.type
    return f"urn:pulumi:{spec.stack or stack}::{spec.project or project}::{prefix}{type_}::{name}"


def _mark_secret(value: struct_pb2.Value) -> None:
    inner = struct_pb2.Value()
    inner.CopyFrom(value)
    value.struct_value.Clear()
    value.struct_value.fields[rpc._special_sig_key].string_value = rpc._special_secret_sig
    value.struct_value.fields["value"].CopyFrom(inner)


@contextlib.contextmanager
def _closing_workers() -> Iterator[None]:
    """The SDK's blocking calls run on worker threads of this run's own, and what they leave is closed.

    The SDK hands every registration to the monitor on the event loop's default executor, and the SDK's
    MockMonitor gives each worker thread an event loop of its own (``_ensure_event_loop`` in
    pulumi/runtime/mocks.py) that nothing ever closes. A loop is a reference cycle (its self-pipe's reader
    callback holds it), so such a loop is only collected at interpreter exit, where the collector may
    finalise its self-pipe socket first; ``loop.__del__`` then fails with "Exception ignored ... Invalid
    file descriptor: -1", a traceback after the command's own output, in some runs and not others."""
    loop = _ensure_event_loop()  # the main thread's loop: _sync_await runs the program on it
    loops: list[asyncio.AbstractEventLoop] = []

    def own_loop() -> None:
        worker_loop = asyncio.new_event_loop()
        asyncio.set_event_loop(worker_loop)  # what the monitor's _ensure_event_loop finds in this thread
        loops.append(worker_loop)

    workers = ThreadPoolExecutor(thread_name_prefix="mockengine", initializer=own_loop)
    # asyncio has no public getter; the previous executor (usually none) serves registrations made
    # outside a run again afterwards (the tests' autouse mocks).
    previous = loop._default_executor
    loop.set_default_executor(workers)
    try:
        yield
    finally:
        workers.shutdown(wait=True)
        for worker_loop in loops:
            worker_loop.close()
        loop._default_executor = previous


def run(
    config: Mapping[str, Any],
    secret_config: Mapping[str, Any] | None = None,
    *,
    program: Callable[[], None] | None = None,
    stack: str = "offline",
    preview: bool = False,
    mocks: pulumi.runtime.Mocks | None = None,
) -> ProgramRun:
    """Run ``program`` (default: the real ``__main__.py``) with ``totp-vps:`` config values.

    ``config``/``secret_config``: keys without the namespace; secret ones are marked secret, as
    ``pulumi config set --secret`` would. ``mocks``: the providers (default: a new DeterministicMocks;
    a StatefulMocks carries a stack's state).
    Process-global (the SDK's mock settings are): one run at a time.
    """
    with _closing_workers():
        return _run(config, secret_config, program=program, stack=stack, preview=preview, mocks=mocks)


def _run(config: Mapping[str, Any], secret_config: Mapping[str, Any] | None, *, program: Callable[[], None] | None,
         stack: str, preview: bool, mocks: pulumi.runtime.Mocks | None) -> ProgramRun:
    monitor = RecordingMonitor(mocks or DeterministicMocks())
    settings.ROOT.set(None)  # a fresh root stack per run, so exports never leak between runs
    _mocks.set_mocks(monitor.mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    values = {**config, **(secret_config or {})}
    pulumi.runtime.set_all_config(
        {f"{PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()},
        [f"{PROJECT}:{k}" for k in (secret_config or {})],
    )
    def body() -> None:
        if program is not None:
            program()
        else:
            runpy.run_path(str(PROGRAM), run_name="__main__")

    try:
        _sync_await(run_pulumi_func(body))
    except Exception as exc:  # the program's own error, e.g. pulumi.RunError for a bad setting
        raise ProgramFailed(str(exc), monitor.registrations) from exc
    root = settings.get_root_resource()
    exported = getattr(root, "outputs", {}) or {}
    struct = _sync_await(rpc.serialize_properties(dict(exported), {}))
    return ProgramRun(registrations=monitor.registrations, stack_outputs=rpc.deserialize_properties(struct, keep_unknowns=True))
