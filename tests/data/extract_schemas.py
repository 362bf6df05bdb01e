"""Cut the parts of the providers' Pulumi package schemas that the tests check registrations against.

    python tests/data/extract_schemas.py DIR > tests/data/provider-schemas.json

DIR holds each provider's ``provider/cmd/pulumi-resource-<name>/schema.json``, saved as
``<name>.json``, taken unchanged from the commits in ORIGINS. Kept: the resources the program
registers and the types they reference, with their input properties (type, items, $ref,
additionalProperties, enum, willReplaceOnChanges) and required inputs; descriptions are dropped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ORIGINS = {
    "hcloud": "pulumi/pulumi-hcloud c3608de6 (2026-07-24), bridging terraform-provider-hcloud v1.66.1",
    "random": "pulumi/pulumi-random f64d8726 (2026-08-14)",
    "tls": "pulumi/pulumi-tls f7db93b2 (2026-08-14)",
    "command": "pulumi/pulumi-command 010bd8e0 (2026-08-21)",
}
RESOURCES = {
    "hcloud": ["hcloud:index/server:Server", "hcloud:index/firewall:Firewall", "hcloud:index/sshKey:SshKey"],
    "random": ["random:index/randomBytes:RandomBytes"],
    "tls": ["tls:index/privateKey:PrivateKey"],
    "command": ["command:local:Command"],
}
KEEP = ("type", "items", "$ref", "additionalProperties", "enum", "willReplaceOnChanges", "replaceOnChanges")
LOCAL_REF = "#/types/"  # other refs point into Pulumi's own schema (pulumi.json#/Any: any value)


def slim(prop: dict[str, Any]) -> dict[str, Any]:
    out = {k: prop[k] for k in KEEP if k in prop}
    for nested in ("items", "additionalProperties"):
        if isinstance(out.get(nested), dict):
            out[nested] = slim(out[nested])
    return out


def refs(tree: Any) -> set[str]:
    if isinstance(tree, dict):
        ref = tree.get("$ref")
        found = {ref.removeprefix(LOCAL_REF)} if isinstance(ref, str) and ref.startswith(LOCAL_REF) else set()
        return found.union(*(refs(v) for v in tree.values()))
    if isinstance(tree, list):
        return set().union(*(refs(v) for v in tree))
    return set()


def main(directory: Path) -> None:
    out: dict[str, Any] = {"origin": ORIGINS, "resources": {}, "types": {}}
    for provider, tokens in RESOURCES.items():
        schema = json.loads((directory / f"{provider}.json").read_text())
        pending: set[str] = set()
        for token in tokens:
            resource = schema["resources"][token]
            props = {k: slim(v) for k, v in resource["inputProperties"].items()}
            out["resources"][token] = {"inputProperties": props, "requiredInputs": resource.get("requiredInputs", [])}
            pending |= refs(props)
        while pending:
            token = pending.pop()
            if token in out["types"]:
                continue
            kind = schema["types"][token]
            props = {k: slim(v) for k, v in kind.get("properties", {}).items()}
            out["types"][token] = {"properties": props, "required": kind.get("required", []), **({"enum": kind["enum"]} if
                                   "enum" in kind else {})}
            pending |= refs(props)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
