"""Run the policy pack offline, through the engine's own code path: the SDK's analyzer servicer.

``PolicyPack(...)`` would start a gRPC server; here the same servicer class gets the same policies and
is called in-process with real ``AnalyzeRequest`` / ``AnalyzeStackRequest`` protobufs, built from a
recorded program run (inputs with secret markers and unknowns kept, resource options, stack outputs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2
from pulumi.runtime import proto
from pulumi.runtime.rpc import UNKNOWN
from pulumi_policy import EnforcementLevel
from pulumi_policy.policy import _PolicyAnalyzerServicer

from components.mockengine import PROJECT, ProgramRun, Registration
from policy.policies import PACK_DESCRIPTION, PACK_NAME, PACK_VERSION, STACK, build_policies

LEVELS = {proto.ADVISORY: "advisory", proto.MANDATORY: "mandatory", proto.DISABLED: "disabled", proto.REMEDIATE: "remediate"}
_LEVEL_BY_NAME = {v: k for k, v in LEVELS.items()}


@dataclass(frozen=True)
class Finding:
    """One diagnostic the analyzer returned."""

    policy: str
    level: str
    message: str
    """The violation text without the policy title (the analyzer prefixes it with a newline)."""
    urn: str


def _value(tree: Any) -> Any:
    """Recorded value -> what the engine marshals: secret markers kept, unknowns as the sentinel string."""
    if isinstance(tree, Mapping):
        return {str(k): _value(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_value(v) for v in tree]
    if tree is None or isinstance(tree, str | bool | int | float):
        return tree
    return UNKNOWN  # the SDK's Unknown placeholders


def struct(props: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(_value(props))
    return out


def options(reg: Registration) -> Any:
    o = reg.options
    return proto.AnalyzerResourceOptions(
        protect=bool(o.get("protect")),
        ignoreChanges=list(o.get("ignoreChanges", [])),
        deleteBeforeReplace=bool(o.get("deleteBeforeReplace")),
        deleteBeforeReplaceDefined="deleteBeforeReplace" in o,
        additionalSecretOutputs=list(o.get("additionalSecretOutputs", [])),
        parent=reg.parent,
    )


def analyze_request(reg: Registration) -> Any:
    """What the engine sends before a resource step: the resource's inputs."""
    return proto.AnalyzeRequest(type=reg.type, properties=struct(reg.inputs), urn=reg.urn, name=reg.name, options=options(reg))


def stack_urn(stack: str = "offline") -> str:
    return f"urn:pulumi:{stack}::{PROJECT}::{STACK}::{PROJECT}-{stack}"


def analyze_stack_request(run: ProgramRun) -> Any:
    """What the engine sends after the deployment: every resource's state, the stack's outputs included."""
    resources = [
        proto.AnalyzerResource(
            type=reg.type,
            properties=struct(reg.outputs if reg.custom else {**reg.inputs, **reg.outputs}),
            urn=reg.urn,
            name=reg.name,
            options=options(reg),
            parent=reg.parent,
            dependencies=reg.options.get("dependencies", []),
            propertyDependencies={k: proto.AnalyzerPropertyDependencies(urns=v)
                                  for k, v in reg.options.get("propertyDependencies", {}).items()},
        )
        for reg in run.registrations
    ]
    root = stack_urn(run.registrations[0].urn.split("::")[0].split(":")[-1]) if run.registrations else stack_urn()
    resources.insert(
        0,
        proto.AnalyzerResource(
            type=STACK, properties=struct(run.stack_outputs), urn=root, name=root.rsplit("::", 1)[-1],
            options=proto.AnalyzerResourceOptions(),
        ),
    )
    return proto.AnalyzeStackRequest(resources=resources)


def analyzer(config: Mapping[str, Any] | None = None) -> _PolicyAnalyzerServicer:
    """The servicer PolicyPack would serve, configured like ``--policy-pack-config`` configures it.

    ``config``: policy id -> level name, or -> {"enforcementLevel": level, ...}."""
    policies = build_policies()
    servicer = _PolicyAnalyzerServicer(PACK_NAME, PACK_VERSION, policies, EnforcementLevel.MANDATORY, None, PACK_DESCRIPTION)
    if config:
        defaults = {p.name: (p.enforcement_level or EnforcementLevel.MANDATORY).value for p in policies}
        request = proto.ConfigureAnalyzerRequest()
        for name, value in config.items():
            if name not in defaults:
                raise ValueError(f"policy config: {name!r} is not a policy of this pack (policies: {', '.join(defaults)})")
            entry = value if isinstance(value, Mapping) else {"enforcementLevel": value}
            level = entry.get("enforcementLevel", defaults[name])
            if level not in _LEVEL_BY_NAME:
                raise ValueError(f"policy config: {name}.enforcementLevel {level!r} is not one of {sorted(_LEVEL_BY_NAME)}")
            cfg = proto.PolicyConfig(enforcementLevel=_LEVEL_BY_NAME[level])
            props = {k: v for k, v in entry.items() if k != "enforcementLevel"}
            if props:
                cfg.properties.update(props)
            request.policyConfig[name].CopyFrom(cfg)
        servicer.Configure(request, None)
    return servicer


def _findings(response: Any) -> Iterable[Finding]:
    for d in response.diagnostics:
        title, _, rest = d.message.partition("\n")
        yield Finding(policy=d.policyName, level=LEVELS[d.enforcementLevel], message=rest or title, urn=d.urn)


def check(run: ProgramRun, config: Mapping[str, Any] | None = None) -> list[Finding]:
    """Every diagnostic for a program run: Analyze per resource, then AnalyzeStack once."""
    servicer = analyzer(config)
    out: list[Finding] = []
    for reg in run.registrations:
        for f in _findings(servicer.Analyze(analyze_request(reg), None)):
            out.append(f if f.urn else Finding(f.policy, f.level, f.message, reg.urn))
    out.extend(_findings(servicer.AnalyzeStack(analyze_stack_request(run), None)))
    return out
