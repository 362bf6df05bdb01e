"""The renderer's output, checked with the real cloud-init and by reading it back like a server would."""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pyotp
import pytest
import yaml
from conftest import require, require_tool
from sshd_harness import new_key

from agent import state as st
from cloudinit import Admin, ConfigError, Server, check_fits, cloudconfig, desired, gate, hardening, pam, render_user_data
from cloudinit.model import ServiceAccount
from cloudinit.secrets import AdminSecrets, fresh_admin_secrets, fresh_key_pair

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "Pulumi.example.yaml"
CIDRS = ("198.51.100.0/24",)
TOTP_OPTIONS = ('" RATE_LIMIT 3 30', '" WINDOW_SIZE 3', '" DISALLOW_REUSE', '" TOTP_AUTH')


def make_server(admins: int = 2, *, image: str = "debian-12", backup_codes: int = 5, keys: int = 1, **kwargs: object) -> Server:
    people = tuple(Admin(name=f"admin{i}", ssh_keys=tuple(new_key(f"admin{i}-{k}@laptop")[1] for k in range(keys)),
                         sudo="totp" if i == 1 else "nopasswd") for i in range(admins))
    return Server(name="web-1", admins=people, allowed_cidrs=CIDRS, image=image, backup_codes=backup_codes, **kwargs)  # type: ignore[arg-type]


def secrets_for(server: Server) -> dict[str, AdminSecrets]:
    return {a.name: fresh_admin_secrets(server.backup_codes, sudo=a.sudo == "totp") for a in server.admins}


def render_it(server: Server) -> tuple[str, dict[str, AdminSecrets]]:
    secrets = secrets_for(server)
    signer = fresh_key_pair()
    return render_user_data(server, secrets, fresh_key_pair(), signer.public_openssh), secrets


DEPLOY = ServiceAccount(name="deploy", ssh_keys=(new_key("deploy@ci")[1],), from_cidrs=("198.51.100.64/26",),
                        command="/usr/local/bin/deploy", sudo_commands=("/usr/bin/systemctl restart app",))


@pytest.fixture(scope="module")
def rendered() -> tuple[Server, str, dict[str, AdminSecrets]]:
    server = make_server(2, service_accounts=(DEPLOY,))
    user_data, secrets = render_it(server)
    return server, user_data, secrets


def state_of(user_data: str) -> dict[str, object]:
    return cloudconfig.state_of(cloudconfig.read(user_data))


def pam_reader(files: dict[str, str]):  # type: ignore[no-untyped-def]
    """A /etc/pam.d as a server has it: the state's files over this host's Debian ones."""
    def read(name: str) -> str | None:
        path = name if name.startswith("/") else f"/etc/pam.d/{name}"
        if path in files:
            return files[path]
        return Path(path).read_text() if Path(path).is_file() else None
    return read


# --------------------------------------------------------------------------------------- cloud-init


def cloud_init_schema(tmp_path: Path, user_data: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "user-data"
    path.write_text(user_data)
    # cwd outside the repo: this project's own package is also called `cloudinit`.
    return subprocess.run([require_tool("cloud-init"), "schema", "-c", str(path)], capture_output=True, text=True, cwd=tmp_path,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, check=False, timeout=60)


@cache
def cloud_init_top_level_keys() -> frozenset[str]:
    """Every top-level key the installed cloud-init's schema defines (the union over its modules)."""
    tool = require_tool("cloud-init")
    # The interpreter that runs cloud-init, in isolated mode (no cwd, no PYTHONPATH): finds ITS package.
    shebang = Path(tool).read_text(errors="replace").splitlines()[0]
    python = shebang[2:].split()[0] if shebang.startswith("#!") else "python3"
    found = subprocess.run(
        [python, "-I", "-c", "import cloudinit.config.schema as s, os; print(os.path.dirname(s.__file__))"],
        capture_output=True, text=True, cwd="/", check=False, timeout=30,
    )
    schema_file = Path(found.stdout.strip()) / "schemas" / "schema-cloud-config-v1.json"
    require(found.returncode == 0 and schema_file.is_file(), f"cloud-init's schema JSON not found ({found.stderr.strip()})")
    schema = json.loads(schema_file.read_text())
    keys: set[str] = set()
    for ref in schema["allOf"]:
        definition = schema["$defs"][ref["$ref"].rsplit("/", 1)[1]]
        keys.update(definition.get("properties", {}))
    assert {"users", "write_files", "runcmd", "packages"} <= keys, "schema layout changed: parsing found too few keys"
    return frozenset(keys)


def unknown_top_level_keys(user_data: str) -> list[str]:
    return sorted(set(cloudconfig.read(user_data).data) - cloud_init_top_level_keys())


def test_output_is_cloud_config_that_parses(rendered: tuple[Server, str, dict[str, AdminSecrets]]) -> None:
    _server, user_data, _secrets = rendered
    assert user_data.startswith("#cloud-config\n")
    data = yaml.safe_load(user_data)
    assert isinstance(data, dict)
    assert data["disable_root"] is True and data["ssh_pwauth"] is False
    assert data["users"] == {}, "cloud-init creates no account: the agent does, from the desired state"
    assert data["runcmd"] == [[desired.AGENT_COMMAND, "boot"]]
    assert cloudconfig.judge(user_data) == []


@pytest.mark.parametrize("image", sorted(hardening.IMAGES))
def test_cloud_init_schema_accepts_every_image(tmp_path: Path, image: str) -> None:
    user_data, _ = render_it(make_server(2, image=image))
    result = cloud_init_schema(tmp_path, user_data)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


@pytest.mark.parametrize("admins", [1, 10])
def test_cloud_init_schema_accepts_one_and_ten_admins(tmp_path: Path, admins: int) -> None:
    user_data, _ = render_it(make_server(admins, backup_codes=10))
    result = cloud_init_schema(tmp_path, user_data)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_every_top_level_key_is_known_to_cloud_init(rendered: tuple[Server, str, dict[str, AdminSecrets]]) -> None:
    assert unknown_top_level_keys(rendered[1]) == []


def test_a_misspelled_top_level_key_is_caught(tmp_path: Path, rendered: tuple[Server, str, dict[str, AdminSecrets]]) -> None:
    misspelled = rendered[1].replace("\nwrite_files:", "\nwrite_file:").replace("\nssh_pwauth:", "\nssh_pw_auth:")
    # cloud-init's own schema check lets it through (why our check exists) ...
    assert cloud_init_schema(tmp_path, misspelled).returncode == 0
    # ... ours does not: unknown to cloud-init, and not part of the design.
    assert unknown_top_level_keys(misspelled) == ["ssh_pw_auth", "write_file"]
    problems = cloudconfig.judge(misspelled)
    assert any("'ssh_pw_auth' is not part of the design" in p for p in problems), problems


# ---------------------------------------------------------------------------------------- contents


def test_totp_files_in_the_desired_state(rendered: tuple[Server, str, dict[str, AdminSecrets]]) -> None:
    server, user_data, secrets = rendered
    state = state_of(user_data)
    admins = {a["name"]: a for a in state["admins"]}  # type: ignore[union-attr]
    assert set(admins) == set(server.admin_names)
    for name, admin in admins.items():
        for kind, expect in (("totp", secrets[name]), ("sudoTotp", secrets[name].sudo)):
            if expect is None:
                assert kind not in admin or admin[kind] is None
                continue
            lines = str(admin[kind]).splitlines()
            seed, options, codes = lines[0], lines[1:5], lines[5:]
            assert re.fullmatch(r"[A-Z2-7]+", seed), "seed is not unpadded base32"
            assert len(base64.b32decode(seed + "=" * (-len(seed) % 8))) * 8 >= 160, "seed under 160 bits"
            assert seed == expect.seed, "seed in the file differs from the admin's secret"
            pyotp.TOTP(seed).now()  # an authenticator app accepts it
            assert tuple(options) == TOTP_OPTIONS
            assert len(codes) == server.backup_codes and tuple(codes) == expect.backup_codes
            assert all(re.fullmatch(r"[1-9][0-9]{7}", c) for c in codes), "a backup code pam_google_authenticator would not read"
    assert secrets["admin1"].sudo is not None and secrets["admin1"].sudo.seed != secrets["admin1"].seed, "sudo has its own seed"


def test_pam_stacks_need_the_code_and_never_a_password(rendered: tuple[Server, str, dict[str, AdminSecrets]]) -> None:
    files = state_of(rendered[1])["files"]
    for service, allowed in (("sshd", frozenset()), ("sudo", gate.SUDO_ARGS), ("sudo-i", gate.SUDO_ARGS)):
        assert pam.judge_auth(service, pam_reader(files), gate.TOTP_MODULE, allowed=allowed) == [], service  # type: ignore[arg-type]
    # sudo reads the root-owned seed as root: exactly those two options, any other value is weakening.
    assert set(files[st.PAM_SUDO[0]].split()) >= gate.SUDO_ARGS  # type: ignore[index]
    assert "user_readenv=1" not in files[st.PAM_SSHD], "no ~/.pam_environment: the drop-in says no user environment"  # type: ignore[index]


def test_sudoers_rules(rendered: tuple[Server, str, dict[str, AdminSecrets]]) -> None:
    sudoers = str(state_of(rendered[1])["files"][st.SUDOERS])  # type: ignore[index]
    rules = [line for line in sudoers.splitlines() if line and not line.startswith("#")]
    assert rules == [
        "admin0 ALL=(ALL:ALL) NOPASSWD: ALL",
        "admin1 ALL=(ALL:ALL) ALL",
        "deploy ALL=(root) NOPASSWD: /usr/bin/systemctl restart app",
        f"%{st.ADMIN_GROUP} ALL=(root) NOPASSWD: {desired.AGENT_COMMAND}",  # last: sudo takes the last rule that matches
    ]
    visudo = require_tool("visudo")
    check = subprocess.run([visudo, "-c", "-f", "/dev/stdin"], input=sudoers, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_hardening_data_shape() -> None:
    assert re.fullmatch(r"20\d\d\.\d{1,2}\.\d+", hardening.VERSION)
    assert set(hardening.IMAGES) == {"debian-12", "debian-13", "ubuntu-22.04", "ubuntu-24.04", "ubuntu-26.04"}
    assert set(hardening.PAM_PACKAGE) == set(hardening.IMAGES)
    lists = (hardening.KEX, hardening.CIPHERS, hardening.MACS, hardening.HOST_KEY_ALGORITHMS, hardening.PUBKEY_ALGORITHMS)
    for algorithms in lists:
        names = [name for name, _ in algorithms]
        assert len(names) == len(set(names)), f"duplicate algorithm in {names}"
        for name, since in algorithms:
            assert re.fullmatch(r"[a-z0-9@.-]+", name) and len(since) == 2 and all(isinstance(v, int) for v in since)
    weak = re.compile(r"sha1|nistp\d+-sha|ecdh-sha2|cbc|3des|arcfour|md5|-96|group1-|group14-sha1|gex-sha1")
    for image in hardening.IMAGES:
        crypto = hardening.crypto_for(image)
        assert set(crypto) == {"KexAlgorithms", "Ciphers", "MACs", "HostKeyAlgorithms", "PubkeyAcceptedAlgorithms"}
        assert all(crypto.values()), f"{image}: an empty algorithm list would make sshd use its defaults"
        for directive in ("KexAlgorithms", "Ciphers", "MACs"):
            assert not weak.search(crypto[directive]), f"{image} {directive}: weak algorithm"
        # paramiko and every OpenSSH client since 7.4 share curve25519 (paramiko has no sntrup761).
        assert "curve25519-sha256" in crypto["KexAlgorithms"].split(",")
        assert crypto["HostKeyAlgorithms"].split(",")[0] == "ssh-ed25519"
    assert 6 <= hardening.MAX_AUTH_TRIES <= 10, "too low locks out agents with several keys; too high invites guessing"
    assert hardening.TOTP_RATE_LIMIT == (3, 30) and hardening.TOTP_WINDOW_SIZE == 3 and hardening.SEED_BYTES >= 20


# --------------------------------------------------------------------------------------------- size


def test_twenty_admins_fit_hetzners_limit() -> None:
    """The agent travels in the user-data too; 20 admins with 10 backup codes and a sudo seed each still fit."""
    server = make_server(20, backup_codes=10)
    user_data, _ = render_it(server)
    assert len(user_data.encode()) <= 32 * 1024
    check_fits(server)


def test_over_hetzner_limit_is_a_clear_error() -> None:
    many = make_server(1)
    people = tuple(Admin(name=f"admin{i}", ssh_keys=tuple(new_key(f"admin{i}-key{k}")[1] for k in range(4))) for i in range(40))
    server = Server(name="web-1", admins=people, allowed_cidrs=CIDRS)
    with pytest.raises(ConfigError) as raised:
        render_it(server)
    message = str(raised.value)
    assert "admins" in message and "32768" in message and "\n" not in message
    # The component can ask before any secret exists, and gets the same answer.
    with pytest.raises(ConfigError, match="32768"):
        check_fits(server)
    check_fits(many)


def test_same_inputs_give_byte_identical_output() -> None:
    server = make_server(3)
    secrets = secrets_for(server)
    host_key, signer = fresh_key_pair(), fresh_key_pair().public_openssh
    assert render_user_data(server, secrets, host_key, signer) == render_user_data(server, secrets, host_key, signer)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and (isinstance(body[0].value.value, str) or body[0].value.value is Ellipsis):
            del body[0]
    return tree


def test_the_shipped_agent_is_the_repositorys_standard_library_code_for_python_3_10() -> None:
    """Comments and docstrings blanked, every line where it was (tracebacks match), nothing but the standard
    library imported, and no syntax newer than the oldest image's Python (Ubuntu 22.04: 3.10)."""
    shipped = desired.agent_files()
    assert set(shipped) == {p.name for p in desired.AGENT_DIR.glob("*.py")} | {st.LAUNCHER}
    for name, text in shipped.items():
        original = (desired.AGENT_DIR / name).read_text()
        assert text.count("\n") == original.count("\n") or name == st.LAUNCHER, name
        tree = ast.parse(text, feature_version=(3, 10))
        assert ast.dump(_without_docstrings(tree)) == ast.dump(_without_docstrings(ast.parse(original))), name
        imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        foreign = imported - set(sys.stdlib_module_names) - {"agent", "__future__"}
        assert not foreign, f"{name} imports {foreign}"
    assert st.unbundle(desired.agent_bundle()) == {k: v for k, v in shipped.items() if k != st.LAUNCHER}


def test_renderer_imports_no_pulumi(tmp_path: Path) -> None:
    code = (
        "import sys, cloudinit, cloudinit.render, cloudinit.stackconfig, cloudinit.secrets\n"
        "from cloudinit.secrets import fresh_admin_secrets, fresh_key_pair\n"
        "from cloudinit import Admin, Server, render_user_data\n"
        "k = fresh_key_pair()\n"
        "s = Server(name='a', admins=(Admin(name='alice', ssh_keys=(k.public_openssh,)),), allowed_cidrs=('198.51.100.0/24',))\n"
        "render_user_data(s, {'alice': fresh_admin_secrets(5)}, k, k.public_openssh)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('pulumi')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------ vpsctl render


def vpsctl(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "vpsctl", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False, timeout=60)


def secret_strings(secrets_json: dict[str, dict]) -> Iterator[str]:
    yield from secrets_json["signingKey"]["private"].splitlines()[1:-1]
    for name, server in secrets_json.items():
        if name == "signingKey":
            continue
        yield from server["hostKey"]["private"].splitlines()[1:-1]
        for admin in server["admins"].values():
            yield admin["seed"]
            yield from admin["backupCodes"]


def test_vpsctl_render_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = vpsctl("render", "--config", str(EXAMPLE_CONFIG), "--out", str(out))
    assert first.returncode == 0, first.stderr
    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert {p.relative_to(out).as_posix() for p in written} >= {"secrets.json", "web-1/user-data", "db-1/user-data"}
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o600, f"{path.relative_to(out)} is not 0600"
    for name in ("web-1", "db-1"):
        assert (out / name).stat().st_mode & 0o077 == 0, f"{name}/ is readable by others"
        user_data = (out / name / "user-data").read_text()
        assert cloudconfig.judge(user_data) == [] and unknown_top_level_keys(user_data) == []

    secrets_json = json.loads((out / "secrets.json").read_text())
    shown = first.stdout + first.stderr
    leaked = [s for s in secret_strings(secrets_json) if s in shown]
    assert not leaked, f"{len(leaked)} secret value(s) printed on stdout/stderr"

    again = tmp_path / "again"
    second = vpsctl("render", "--config", str(EXAMPLE_CONFIG), "--out", str(again), "--secrets", str(out / "secrets.json"))
    assert second.returncode == 0, second.stderr
    for name in ("web-1", "db-1"):
        assert (again / name / "user-data").read_bytes() == (out / name / "user-data").read_bytes(), f"{name} changed"


def test_vpsctl_render_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["config"]["totp-vps:servers"][1]["sshPort"] = 70000
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    result = vpsctl("render", "--config", str(bad), "--out", str(out))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "servers[1].sshPort" in lines[0] and "70000" in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists(), "a failed render wrote files"


def test_vpsctl_render_writes_nothing_when_a_later_server_does_not_fit(tmp_path: Path) -> None:
    """Every server is rendered before anything is written: db-1 over Hetzner's limit leaves no web-1 files."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    def noise() -> str:  # incompressible, so the packed state does not shrink it away
        return base64.b64encode(os.urandom(1200)).decode()

    many = [{"name": f"ops{i}", "sshKeys": [f"{new_key(f'ops{i}')[1]} {noise()}"]} for i in range(24)]
    config["config"]["totp-vps:admins"] += many
    config["config"]["totp-vps:servers"][0]["admins"] = ["alice"]
    config["config"]["totp-vps:servers"][1]["admins"] = ["alice", *(a["name"] for a in many)]
    bad = tmp_path / "Pulumi.big.yaml"
    bad.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    result = vpsctl("render", "--config", str(bad), "--out", str(out))
    assert result.returncode == 2 and "over Hetzner's" in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
