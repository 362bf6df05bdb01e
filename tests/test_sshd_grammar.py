"""cloudinit.sshd_config against the host's real sshd (OpenSSH 9.2p1, Debian 12).

Every case is a set of files under /etc/ssh. Inside a private mount namespace a temp dir holding
them (and a fresh Ed25519 host key at the default path) is bind-mounted over /etc/ssh, and the real
``sshd -T -f /etc/ssh/sshd_config [-C user=..,addr=..,host=..,laddr=..,lport=..]`` prints what it
would apply, once per connection. ``effective()`` must print the same for every keyword it models,
and ``load()`` must refuse exactly what sshd refuses, at the same file and line. The host's /etc/ssh
is never touched.

The configurations are written from servconf.c's grammar (separators, quoting, first value wins,
accumulating keywords, Include, Match) rather than from the configs this project renders.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import require_root, require_tool

from agent import state as st
from cloudinit import sshd_config as S

MAIN = "/etc/ssh/sshd_config"
DEBIAN_12 = (Path(__file__).parent / "data" / "debian12_sshd_config").read_text()
# sshd -T prints these on one line, words separated by spaces.
ONE_LINE = {"authenticationmethods", "authorizedkeysfile", "logverbose", "channeltimeout", "permitopen",
            "permitlisten", "pubkeyauthoptions"}
# The connections every case is asked about (plus plain sshd -T, without -C).
ALICE = S.Connection("alice", "10.1.2.3", host="h1.example.com")
BOB = S.Connection("bob", "192.0.2.7", host="gw.Example.COM", laddr="127.0.0.1", lport=2222)
ROOT = S.Connection("root", "2001:db8::1", host="v6.example.net", laddr="::1")
NOBODY = S.Connection("nobody", "10.9.9.9", host="10.9.9.9", laddr="10.0.0.1", lport=22)
CONNECTIONS: tuple[S.Connection | None, ...] = (None, ALICE, BOB, ROOT, NOBODY)


def with_groups(conn: S.Connection) -> S.Connection:
    """The connection with the user's groups from the host's group database (what sshd would see)."""
    try:
        pw = pwd.getpwnam(conn.user)
    except KeyError:
        groups: tuple[str, ...] = ()
    else:
        groups = tuple(grp.getgrgid(g).gr_name for g in os.getgrouplist(conn.user, pw.pw_gid))
    return S.Connection(conn.user, conn.addr, conn.host, conn.laddr, conn.lport, conn.rdomain, groups)


def spec(conn: S.Connection) -> str:
    return f"user={conn.user},addr={conn.addr},host={conn.host},laddr={conn.laddr},lport={conn.lport}"


@dataclass
class Case:
    name: str
    files: dict[str, str]
    connections: tuple[S.Connection | None, ...] = CONNECTIONS
    expect: dict[str, object] = field(default_factory=dict)
    """A few (connection name, keyword) -> value pairs the case is about, so a case also states its point."""


def debian(*dropins: tuple[str, str], main_extra: str = "") -> dict[str, str]:
    """Debian 12's own sshd_config (it starts with Include /etc/ssh/sshd_config.d/*.conf) plus drop-ins."""
    files = {MAIN: DEBIAN_12 + main_extra}
    files.update({f"/etc/ssh/sshd_config.d/{name}": text for name, text in dropins})
    return files


CASES = [
    Case("empty: every default", {MAIN: ""}, expect={(None, "passwordauthentication"): "yes",
         (None, "permitrootlogin"): "without-password", (None, "usepam"): "no", (None, "port"): ("22",)}),
    Case("debian 12 as shipped", debian(), expect={(None, "usepam"): "yes", (None, "kbdinteractiveauthentication"): "no",
         (None, "acceptenv"): ("LANG", "LC_*")}),
    Case("debian 12: 00- drop-in beats cloud-init's 50-", debian(
        ("00-totp.conf", "AuthenticationMethods publickey,keyboard-interactive\nPasswordAuthentication no\n"
                         "KbdInteractiveAuthentication yes\nPermitRootLogin no\nAllowUsers alice bob\n"),
        ("50-cloud-init.conf", "PasswordAuthentication yes\n")),
        expect={(None, "passwordauthentication"): "no", (None, "authenticationmethods"): ("publickey,keyboard-interactive",)}),
    Case("debian 12: 50- sorts after 10- but before 9-", debian(
        ("9-late.conf", "PermitRootLogin yes\n"), ("50-cloud-init.conf", "PermitRootLogin no\n"),
        ("10-early.conf", "PermitRootLogin forced-commands-only\n")),
        expect={(None, "permitrootlogin"): "forced-commands-only"}),
    Case("separators: = TAB and spaces", {MAIN: "PasswordAuthentication=no\nPermitRootLogin\tno\nMaxAuthTries = 3\n"
         "LoginGraceTime\t=\t45\nX11Forwarding =yes\nPermitTTY= no\nClientAliveInterval  \t 30\n"},
         expect={(None, "maxauthtries"): "3", (None, "x11forwarding"): "yes", (None, "permittty"): "no"}),
    Case("keyword and value case", {MAIN: "PASSWORDAUTHENTICATION NO\npermitrootlogin Prohibit-Password\n"
         "kBdInTeRaCtIvEaUtHeNtIcAtIoN YeS\nUsePam yes\nloglevel verbose\n"},
         expect={(None, "passwordauthentication"): "no", (None, "loglevel"): "VERBOSE"}),
    Case("first value wins across lines and files", {
        MAIN: "PasswordAuthentication no\nPasswordAuthentication yes\nInclude /etc/ssh/x.conf\nMaxAuthTries 2\n",
        "/etc/ssh/x.conf": "PasswordAuthentication yes\nMaxAuthTries 9\nPermitEmptyPasswords yes\n"},
        expect={(None, "passwordauthentication"): "no", (None, "maxauthtries"): "9"}),
    Case("alias: ChallengeResponseAuthentication shares KbdInteractiveAuthentication's slot",
         {MAIN: "ChallengeResponseAuthentication no\nKbdInteractiveAuthentication yes\n"},
         expect={(None, "kbdinteractiveauthentication"): "no"}),
    Case("accumulating: Port HostKey ListenAddress AcceptEnv AllowUsers DenyUsers Subsystem", {MAIN:
         "Port 2222\nPort 22\nListenAddress 127.0.0.1\nListenAddress [::1]:2200\nListenAddress 10.1\n"
         "HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/second_key\n"
         "AcceptEnv LANG\nAcceptEnv LC_* TZ\nAllowUsers alice\nAllowUsers bob root\nDenyUsers eve\nDenyUsers mallory\n"
         "AllowGroups root\nAllowGroups adm\nSubsystem sftp /usr/lib/openssh/sftp-server -f AUTH\nSubsystem other /bin/true\n"},
         expect={(None, "port"): ("2222", "22"), (None, "allowusers"): ("alice", "bob", "root")}),
    Case("one line only: AuthenticationMethods AuthorizedKeysFile SetEnv LogVerbose", {MAIN:
         "AuthenticationMethods publickey,keyboard-interactive publickey,password\nAuthenticationMethods publickey\n"
         "AuthorizedKeysFile /etc/ssh/authorized_keys/%u .ssh/authorized_keys\nAuthorizedKeysFile none\n"
         "SetEnv A=1 B=2 A=3\nSetEnv C=4\nLogVerbose kex.c:*:1000\nLogVerbose none\n"},
         expect={(None, "authenticationmethods"): ("publickey,keyboard-interactive", "publickey,password"),
                 (None, "setenv"): ("A=1", "B=2")}),
    Case("quotes and escapes", {MAIN: 'AllowUsers "al ice" \'b ob\' c\\ d "e\\"f"\n"PermitRootLogin" no\n'
         'Po"rt" 2022\nForceCommand "/bin/echo a  b" # not a comment for ForceCommand\n'
         'Subsystem sftp "/usr/lib/openssh/sftp-server" -l INFO\nBanner "/etc/issue.net"\n'},
         expect={(None, "allowusers"): ("al ice", "b ob", "c d", 'e"f'), (None, "port"): ("2022",)}),
    Case("comments: # starts a comment only at the start of a word", {MAIN: "# comment\n  # indented comment\n"
         "AllowUsers alice#bob # carol\nPermitRootLogin no # c\nAcceptEnv X#Y\n"},
         expect={(None, "allowusers"): ("alice#bob",), (None, "acceptenv"): ("X#Y",)}),
    Case("CRLF, leading blanks, form feed at the end", {MAIN: "PasswordAuthentication no\r\n\t  PermitRootLogin no\r\n"
         " \r\nMaxSessions 3\f\n\r\tUsePAM yes\n"},
         expect={(None, "maxsessions"): "3", (None, "usepam"): "yes"}),
    Case("a line opening with an unbalanced quote is ignored", {MAIN: '"PasswordAuthentication no\nPermitRootLogin no\n'
         '="MaxAuthTries 1\n'},
         expect={(None, "passwordauthentication"): "yes", (None, "maxauthtries"): "6"}),
    Case("Include: glob order, hidden files, directories, other suffixes", {
        MAIN: "Include sshd_config.d/*.conf\nMaxAuthTries 5\n",
        "/etc/ssh/sshd_config.d/B.conf": "PermitRootLogin yes\n",
        "/etc/ssh/sshd_config.d/a.conf": "PermitRootLogin no\nMaxSessions 4\n",
        "/etc/ssh/sshd_config.d/.hidden.conf": "PasswordAuthentication no\n",
        "/etc/ssh/sshd_config.d/10-x.conf": "LoginGraceTime 10\n",
        "/etc/ssh/sshd_config.d/2-y.conf": "LoginGraceTime 20\n",
        "/etc/ssh/sshd_config.d/sub.conf/inner": "MaxSessions 1\n",
        "/etc/ssh/sshd_config.d/c.txt": "MaxSessions 7\n"},
        expect={(None, "permitrootlogin"): "yes", (None, "passwordauthentication"): "yes", (None, "logingracetime"): "10"}),
    Case("Include: several patterns, relative and absolute, no match is fine", {
        MAIN: "Include nothere/*.conf /etc/ssh/one.conf two.conf\nInclude [ot]*.conf\n",
        "/etc/ssh/one.conf": "AcceptEnv ONE\n", "/etc/ssh/two.conf": "AcceptEnv TWO\n"},
        expect={(None, "acceptenv"): ("ONE", "TWO", "ONE", "TWO")}),
    Case("Include: nested three deep", {
        MAIN: "Include /etc/ssh/l1.conf\nPermitTTY no\n", "/etc/ssh/l1.conf": "Include l2.conf\nAcceptEnv L1\n",
        "/etc/ssh/l2.conf": "Include /etc/ssh/l3.conf\nAcceptEnv L2\n", "/etc/ssh/l3.conf": "AcceptEnv L3\nPermitTTY yes\n"},
        expect={(None, "acceptenv"): ("L3", "L2", "L1"), (None, "permittty"): "yes"}),
    Case("Match in an included file ends with that file", {
        MAIN: "Include /etc/ssh/m.conf\nPermitRootLogin no\nX11Forwarding yes\n",
        "/etc/ssh/m.conf": "Match User alice\n  PermitRootLogin yes\n  PasswordAuthentication no\n"},
        expect={("alice", "permitrootlogin"): "yes", ("bob", "permitrootlogin"): "no", ("bob", "x11forwarding"): "yes"}),
    Case("Include inside a Match block applies only to that block", {
        MAIN: "PasswordAuthentication yes\nMatch User bob\n  Include /etc/ssh/bob.conf\nMatch all\n  MaxSessions 2\n",
        "/etc/ssh/bob.conf": "PasswordAuthentication no\nPermitTTY no\nMatch Address 192.0.2.0/24\n  AllowTcpForwarding no\n"},
        expect={("bob", "passwordauthentication"): "no", ("alice", "passwordauthentication"): "yes",
                ("bob", "allowtcpforwarding"): "no", (None, "maxsessions"): "2"}),
    Case("Match User lists with negation and wildcards", {MAIN:
         "PermitRootLogin no\nMatch User !root,*\n  X11Forwarding yes\nMatch User al?ce,b*\n  PermitTTY no\n"
         "Match User root\n  PermitRootLogin prohibit-password\nMatch User=nobody\n  MaxAuthTries 1\n"},
         expect={("root", "permitrootlogin"): "without-password", ("root", "x11forwarding"): "no",
                 ("alice", "x11forwarding"): "yes", ("nobody", "maxauthtries"): "1"}),
    Case("Match Address: CIDR, negation, wildcards, IPv6", {MAIN:
         "PasswordAuthentication yes\nMatch Address 10.0.0.0/8,!10.9.0.0/16\n  PasswordAuthentication no\n"
         "Match Address 192.0.2.*\n  PermitTTY no\nMatch Address 2001:db8::/32\n  MaxAuthTries 2\n"
         "Match Address !192.0.2.7,*\n  AllowAgentForwarding no\n"},
         expect={("alice", "passwordauthentication"): "no", ("nobody", "passwordauthentication"): "yes",
                 ("bob", "permittty"): "no", ("root", "maxauthtries"): "2", ("bob", "allowagentforwarding"): "yes"}),
    Case("Match LocalAddress and LocalPort", {MAIN:
         "Port 22\nPort 2222\nMatch LocalPort 2222\n  PasswordAuthentication no\nMatch LocalAddress 127.0.0.0/8,::1\n"
         "  PermitTTY no\nMatch LocalAddress 10.0.0.1 LocalPort 22\n  MaxSessions 1\n"},
         connections=(ALICE, BOB, ROOT, NOBODY),
         expect={("bob", "passwordauthentication"): "no", ("root", "permittty"): "no", ("nobody", "maxsessions"): "1"}),
    Case("Match Host: patterns, case", {MAIN:
         "Match Host *.example.com\n  PermitTTY no\nMatch Host !gw.*,*.EXAMPLE.COM\n  MaxSessions 3\n"},
         expect={("bob", "permittty"): "no", ("bob", "maxsessions"): "10", ("alice", "maxsessions"): "3"}),
    Case("Match Group from the user database", {MAIN:
         "Match Group root\n  PermitRootLogin yes\nMatch Group !root,*\n  PermitTTY no\n"},
         expect={("root", "permitrootlogin"): "yes", ("nobody", "permittty"): "no", ("alice", "permittty"): "yes"}),
    Case("criteria on one Match line are ANDed", {MAIN:
         "Match User alice,bob Address 192.0.2.0/24\n  PasswordAuthentication no\n"},
         expect={("bob", "passwordauthentication"): "no", ("alice", "passwordauthentication"): "yes"}),
    Case("Match all: applies to plain sshd -T too, and lets global keywords through", {MAIN:
         "PasswordAuthentication yes\nMatch User alice\n  MaxSessions 1\nMatch all\n  PasswordAuthentication no\n"
         "  Port 2022\n"},
         expect={(None, "passwordauthentication"): "no", (None, "port"): ("2022",), ("alice", "maxsessions"): "1"}),
    Case("several matching blocks: first value wins, lists add up and replace the global list", {MAIN:
         "AllowUsers carol\nMaxAuthTries 4\nMatch User alice\n  MaxAuthTries 2\n  AllowUsers alice\n"
         "Match Address 10.0.0.0/8\n  MaxAuthTries 3\n  AllowUsers dave\n"},
         expect={("alice", "maxauthtries"): "2", ("alice", "allowusers"): ("alice", "dave"),
                 ("nobody", "allowusers"): ("dave",), ("bob", "allowusers"): ("carol",)}),
    Case("ForceCommand and ChrootDirectory: none in a Match block clears the global one", {MAIN:
         "ForceCommand /usr/bin/restricted --flag  x\nChrootDirectory /srv/%u\nMatch User alice\n  ForceCommand none\n"
         "  ChrootDirectory none\nMatch User bob\n  ForceCommand internal-sftp -d /%u\n"},
         expect={("alice", "forcecommand"): "none", ("bob", "forcecommand"): "internal-sftp -d /%u",
                 ("nobody", "forcecommand"): "/usr/bin/restricted --flag  x", ("alice", "chrootdirectory"): "none"}),
    Case("authentication settings per connection", debian(
        ("00-totp.conf", "AuthenticationMethods publickey,keyboard-interactive\nPasswordAuthentication no\n"
                         "KbdInteractiveAuthentication yes\nUsePAM yes\nPermitRootLogin no\n"),
        ("10-exceptions.conf", "Match User alice\n  AuthenticationMethods publickey\nMatch Address 192.0.2.0/24\n"
                               "  AuthenticationMethods publickey,password\n  PasswordAuthentication yes\n")),
        expect={("alice", "authenticationmethods"): ("publickey",), ("bob", "passwordauthentication"): "yes",
                ("root", "authenticationmethods"): ("publickey,keyboard-interactive",)}),
    Case("keys: AuthorizedKeysFile, AuthorizedKeysCommand, principals, CAs per Match", {MAIN:
         "AuthorizedKeysFile /etc/ssh/authorized_keys/%u\nTrustedUserCAKeys /etc/ssh/ca.pub\n"
         "Match User bob\n  AuthorizedKeysFile .ssh/authorized_keys .ssh/other\n  AuthorizedKeysCommand /usr/bin/keys %u %f\n"
         "  AuthorizedKeysCommandUser nobody\n  AuthorizedPrincipalsFile /etc/ssh/principals/%u\n  TrustedUserCAKeys none\n"},
         expect={("bob", "authorizedkeysfile"): (".ssh/authorized_keys", ".ssh/other")}),
    Case("forwarding and tunnels", {MAIN: "AllowTcpForwarding local\nAllowStreamLocalForwarding no\n"
         "AllowAgentForwarding no\nGatewayPorts clientspecified\nPermitTunnel point-to-point\nX11Forwarding no\n"
         "PermitOpen localhost:80 [::1]:443\nPermitListen 8080 127.0.0.1:9000\nMatch User alice\n  AllowTcpForwarding all\n"
         "  PermitTunnel yes\n  PermitOpen any\n  DisableForwarding yes\n"},
         expect={("alice", "allowtcpforwarding"): "yes", (None, "permitopen"): ("localhost:80", "[::1]:443")}),
    Case("crypto lists: explicit, +, -, ^ and wildcards", {MAIN:
         "KexAlgorithms -ecdh-sha2-*,diffie-hellman-group-exchange-*\nCiphers ^aes256-gcm@openssh.com\nMACs +hmac-sha1-96\n"
         "HostKeyAlgorithms ssh-ed25519*,rsa-sha2-512\nPubkeyAcceptedAlgorithms +ssh-rsa\nCASignatureAlgorithms -rsa*\n"
         "Match User alice\n  PubkeyAcceptedAlgorithms ssh-ed25519,sk-ssh-ed25519*\n"},
         expect={(None, "hostkeyalgorithms"): "ssh-ed25519,ssh-ed25519-cert-v01@openssh.com,rsa-sha2-512"}),
    Case("limits and timers", {MAIN: "LoginGraceTime 1m30s\nClientAliveInterval 5m\nClientAliveCountMax 0\n"
         "MaxStartups 10:30:60\nMaxStartups 20\nMaxAuthTries 8\nUnusedConnectionTimeout 1h\nPerSourceMaxStartups 5\n"
         "PerSourceNetBlockSize 24:48\nRekeyLimit 1G 1h\nMatch User alice\n  ClientAliveInterval 1w\n"},
         expect={(None, "logingracetime"): "90", (None, "maxstartups"): "20:30:20", ("alice", "clientaliveinterval"): "604800"}),
    Case("environment and logging", {MAIN: "PermitUserEnvironment LANG,LC_*\nSetEnv TZ=UTC\nAcceptEnv LANG\n"
         "LogLevel DEBUG1\nSyslogFacility local3\nStrictModes no\nMatch User bob\n  LogLevel QUIET\n  SetEnv X=1\n"
         "  AcceptEnv X Y\n"},
         expect={(None, "loglevel"): "DEBUG", ("bob", "loglevel"): "SILENT", ("bob", "acceptenv"): ("X", "Y")}),
    Case("relative paths are made absolute from sshd's working directory", {MAIN:
         "Banner issue\nTrustedUserCAKeys keys/ca.pub\nHostKey ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ed25519_key\n"
         "PidFile run/sshd.pid\nAuthorizedPrincipalsFile principals/%u\n"},
         expect={(None, "banner"): "//issue"}),
    Case("hostbased and rhosts", {MAIN: "HostbasedAuthentication yes\nIgnoreRhosts shosts-only\n"
         "HostbasedAcceptedAlgorithms ssh-ed25519\nMatch Address 10.0.0.0/8\n  HostbasedAuthentication no\n"
         "  IgnoreRhosts no\n"},
         expect={("alice", "hostbasedauthentication"): "no", ("bob", "ignorerhosts"): "shosts-only"}),
    Case("deprecated and ignored keywords only log", {MAIN: "Protocol 2\nUseLogin no\nUsePrivilegeSeparation sandbox\n"
         "KeyRegenerationInterval 3600\nRSAAuthentication yes\nServerKeyBits 1024\nPasswordAuthentication no\n"},
         expect={(None, "passwordauthentication"): "no"}),
]

# Configurations sshd -t refuses; (file, line) is where sshd says the problem is (0: no line).
ERRORS = [
    ("unknown keyword", {MAIN: "PasswordAuthentication no\nPasswdAuthentication no\n"}, (MAIN, 2)),
    ("a keyword that only looks like one: Kelvin sign", {MAIN: "\u212abdInteractiveAuthentication yes\n"}, (MAIN, 1)),
    ("keyword not allowed in Match", {MAIN: "Match User alice\n  Port 2222\n"}, (MAIN, 2)),
    ("UsePAM not allowed in Match", {MAIN: "Match Address 10.0.0.0/8\nUsePAM no\n"}, (MAIN, 2)),
    ("global keyword in a file included from a Match block",
     {MAIN: "Match User alice\n  Include /etc/ssh/x.conf\n", "/etc/ssh/x.conf": "Ciphers aes256-ctr\n"}, ("/etc/ssh/x.conf", 1)),
    ("global keyword after a Match in an included file",
     {MAIN: "Include /etc/ssh/x.conf\n", "/etc/ssh/x.conf": "Match User a\nPermitTTY no\nListenAddress 1.2.3.4\n"},
     ("/etc/ssh/x.conf", 3)),
    ("no argument", {MAIN: "PermitRootLogin\n"}, (MAIN, 1)),
    ("no argument after =", {MAIN: "PermitRootLogin=\n"}, (MAIN, 1)),
    ("only a comment as argument", {MAIN: "Port # 22\n"}, (MAIN, 1)),
    ("invalid quotes", {MAIN: "AllowUsers 'alice\n"}, (MAIN, 1)),
    ("bad value", {MAIN: "PasswordAuthentication maybe\n"}, (MAIN, 1)),
    ("a comment glued to a value", {MAIN: "PermitRootLogin no#really\n"}, (MAIN, 1)),
    ("extra arguments", {MAIN: "PasswordAuthentication no yes\n"}, (MAIN, 1)),
    ("two = signs", {MAIN: "MaxAuthTries==3\n"}, (MAIN, 1)),
    ("Match all combined", {MAIN: "Match all User alice\n"}, (MAIN, 1)),
    ("Match unknown criterion", {MAIN: "Match Tag trusted\n"}, (MAIN, 1)),
    ("Match criterion without value", {MAIN: "Match User\n"}, (MAIN, 1)),
    ("Match Address with host bits", {MAIN: "Match Address 10.0.0.1/8\n  PermitTTY no\n"}, (MAIN, 1)),
    ("Match LocalPort not a port", {MAIN: "Match LocalPort 70000\n"}, (MAIN, 1)),
    ("Include cycle", {MAIN: "Include /etc/ssh/a.conf\n", "/etc/ssh/a.conf": "Include /etc/ssh/sshd_config\n"},
     ("/etc/ssh/a.conf", 0)),
    ("Include without file", {MAIN: "Include # x\n"}, (MAIN, 1)),
    ("unknown authentication method", {MAIN: "AuthenticationMethods publickey,otp\n"}, (MAIN, 1)),
    ("AuthenticationMethods any after a list", {MAIN: "AuthenticationMethods publickey\nMatch User a\n"
     "  AuthenticationMethods any\n"}, (MAIN, 3)),
    ("AuthenticationMethods nobody can satisfy", {MAIN: "PubkeyAuthentication no\nAuthenticationMethods publickey\n"}, (MAIN, 0)),
    ("bad cipher", {MAIN: "Ciphers aes256-ctr,rot13\n"}, (MAIN, 1)),
    ("Subsystem defined twice", {MAIN: "Subsystem sftp /a\nSubsystem sftp /b\n"}, (MAIN, 2)),
    ("AuthorizedKeysCommand not absolute", {MAIN: "AuthorizedKeysCommand keys.sh\n"}, (MAIN, 1)),
    ("AuthorizedKeysCommand without a user", {MAIN: "AuthorizedKeysCommand /bin/keys\n"}, (MAIN, 0)),
    ("AllowUsers with a bad address list", {MAIN: "AllowUsers alice@10.0.0.1/8\n"}, (MAIN, 1)),
    ("ListenAddress with a prefix", {MAIN: "ListenAddress 10.0.0.0/8\n"}, (MAIN, 1)),
    ("Port 0", {MAIN: "Port 0\n"}, (MAIN, 1)),
    ("a NUL joins two lines", {MAIN: "PasswordAuthentication no\0 junk\nPermitRootLogin no\n"}, (MAIN, 1)),
    ("a form feed alone is a keyword", {MAIN: "\f\n"}, (MAIN, 1)),
    ("MaxStartups out of order", {MAIN: "MaxStartups 20:10:10\n"}, (MAIN, 1)),
]

# Where sshd -T -C fails for some connections only (the second pass over the Match blocks).
CONNECTION_ERRORS = [
    ("AuthenticationMethods any after a matching block set a list",
     {MAIN: "Match User alice\n  AuthenticationMethods publickey\nMatch Address 10.0.0.0/8\n  AuthenticationMethods any\n"},
     {ALICE: True, NOBODY: False, BOB: False}),
    ("plain sshd -T with Match LocalPort", {MAIN: "Match LocalPort 2222\n  PermitTTY no\n"}, {None: True, BOB: False}),
]


def _run_sshd(cases: list[tuple[dict[str, str], list[list[str]]]]) -> list[list[tuple[int, str, str]]]:
    """Run every (files, [sshd args]) with those files as /etc/ssh, in one private mount namespace."""
    require_root()
    sshd = require_tool("sshd")
    keygen = require_tool("ssh-keygen")
    with tempfile.TemporaryDirectory(prefix="sshd-grammar-") as tmp:
        root = Path(tmp)
        key = root / "hostkey"
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        script = ["set -u", "[ -d /run/sshd ] || install -d -m 0755 /run/sshd", "cd /"]
        for n, (files, runs) in enumerate(cases):
            etc = root / f"case{n}"
            etc.mkdir()
            for name in ("ssh_host_ed25519_key", "second_key"):
                (etc / name).write_bytes(key.read_bytes())
                (etc / name).chmod(0o600)
            for path, text in files.items():
                target = etc / path.removeprefix("/etc/ssh/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(text.encode())
            script.append(f"mount --bind {shlex.quote(str(etc))} /etc/ssh")
            for k, args in enumerate(runs):
                out = root / f"out{n}-{k}"
                script.append(f"{shlex.join([sshd, *args])} >{out}.out 2>{out}.err; echo $? >{out}.rc")
            script.append("umount /etc/ssh")
        subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)], check=True, timeout=300)
        results = []
        for n, (_files, runs) in enumerate(cases):
            results.append([
                (int((root / f"out{n}-{k}.rc").read_text()), (root / f"out{n}-{k}.out").read_text(),
                 (root / f"out{n}-{k}.err").read_text())
                for k in range(len(runs))
            ])
        return results


def _args(conn: S.Connection | None) -> list[str]:
    return ["-T", "-f", MAIN] + ([] if conn is None else ["-C", spec(conn)])


HOST_SSH: dict[str, dict[str, str]] = {}


def _fingerprint(top: str) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(top).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def real() -> dict[str, list[tuple[int, str, str]]]:
    """sshd's answers for every case, error case and connection error case, keyed by name."""
    HOST_SSH["before"] = _fingerprint("/etc/ssh")
    try:
        return _all_answers()
    finally:
        HOST_SSH["after"] = _fingerprint("/etc/ssh")


def test_host_etc_ssh_untouched(real: dict[str, list[tuple[int, str, str]]]) -> None:
    assert real and HOST_SSH["before"] and HOST_SSH["after"] == HOST_SSH["before"]


def _all_answers() -> dict[str, list[tuple[int, str, str]]]:
    jobs: list[tuple[str, dict[str, str], list[list[str]]]] = []
    jobs += [(c.name, c.files, [_args(conn) for conn in c.connections]) for c in CASES]
    jobs += [(name, files, [["-t", "-f", MAIN]]) for name, files, _where in ERRORS]
    jobs += [(name, files, [_args(conn) for conn in conns]) for name, files, conns in CONNECTION_ERRORS]
    answers = _run_sshd([(files, runs) for _name, files, runs in jobs])
    return {name: answer for (name, _f, _r), answer in zip(jobs, answers, strict=True)}


def parse_dump(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        keyword, _, value = line.partition(" ")
        out.setdefault(keyword, []).append(value)
    return out


def _as_printed(keyword: str, values: tuple[str, ...]) -> list[str]:
    return [" ".join(values)] if keyword in ONE_LINE else list(values)


def test_battery_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert sum(len(c.connections) for c in CASES) >= 120


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_effective_matches_sshd(case: Case, real: dict[str, list[tuple[int, str, str]]]) -> None:
    config = S.load(case.files, MAIN)
    compared = 0
    for conn, (rc, out, err) in zip(case.connections, real[case.name], strict=True):
        assert rc == 0, f"sshd -T {spec(conn) if conn else ''} failed: {err}"
        printed = parse_dump(out)
        mine = S.effective(config, None if conn is None else with_groups(conn))
        for keyword, values in mine.items():
            assert _as_printed(keyword, values) == printed.get(keyword), f"{keyword} for {conn}"
            compared += 1
        # Everything sshd prints is modelled, but IPQoS (validated only).
        assert set(printed) - set(mine) <= {"ipqos"}, sorted(set(printed) - set(mine))
    for (who, keyword), value in case.expect.items():
        conn = next(c for c in case.connections if (c.user if c else None) == who)
        got = S.effective(config, None if conn is None else with_groups(conn))[keyword]
        assert got == (value if isinstance(value, tuple) else (value,)), f"{who} {keyword}"
    assert compared >= 80 * len(case.connections)


def test_listed_keywords_are_modelled() -> None:
    """The settings the policy pack, the agent and vpsctl verify read (the task's list)."""
    listed = {
        "authenticationmethods", "pubkeyauthentication", "kbdinteractiveauthentication", "usepam", "passwordauthentication",
        "permitemptypasswords", "permitrootlogin", "allowusers", "denyusers", "allowgroups", "denygroups", "port",
        "listenaddress", "hostkey", "authorizedkeysfile", "authorizedkeyscommand", "authorizedprincipalsfile",
        "trustedusercakeys", "forcecommand", "permittty", "allowtcpforwarding", "allowagentforwarding",
        "allowstreamlocalforwarding", "x11forwarding", "permittunnel", "gatewayports", "permituserenvironment", "strictmodes",
        "loglevel", "maxauthtries", "logingracetime", "maxstartups", "clientaliveinterval", "clientalivecountmax",
        "kexalgorithms", "ciphers", "macs", "hostkeyalgorithms", "pubkeyacceptedalgorithms", "hostbasedauthentication",
        "ignorerhosts", "acceptenv", "setenv", "subsystem"
    }
    full = S.load({MAIN: "AllowUsers a\nDenyUsers b\nAllowGroups c\nDenyGroups d\nAcceptEnv E\nSetEnv F=1\n"
                         "Subsystem sftp /x\n"}, MAIN)
    got = S.effective(full, None)
    assert set(listed) <= set(got)
    v10 = S.effective(S.load({MAIN: ""}, MAIN, (10, 0)), None)
    assert v10["persourcepenaltyexemptlist"] == ("none",)
    assert S.canonical("ChallengeResponseAuthentication") == "kbdinteractiveauthentication"


@pytest.mark.parametrize(("name", "files", "where"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_match_sshd(name: str, files: dict[str, str], where: tuple[str, int], real: dict) -> None:
    [(rc, _out, err)] = real[name]
    assert rc != 0, f"sshd -t accepted it: {err}"
    with pytest.raises(S.ConfigError) as caught:
        S.load(files, MAIN)
    assert not isinstance(caught.value, S.Undecidable)
    file, line = where
    assert (caught.value.file, caught.value.line) == (file, line), str(caught.value)
    if line:  # sshd names the line (and mostly the file: "FILE line N:", "at line N")
        assert str(line) in re.findall(r"line (\d+)", err), err
    assert str(caught.value).startswith(f"{file} line {line}: " if line else f"{file}: ")


@pytest.mark.parametrize(("name", "files", "fails"), CONNECTION_ERRORS, ids=[e[0] for e in CONNECTION_ERRORS])
def test_connection_errors_match_sshd(name: str, files: dict[str, str], fails: dict, real: dict) -> None:
    config = S.load(files, MAIN)
    for conn, (rc, _out, err) in zip(fails, real[name], strict=True):
        assert (rc != 0) == fails[conn], err
        if fails[conn]:
            with pytest.raises(S.ConfigError):
                S.effective(config, conn)
        else:
            S.effective(config, conn)


def test_ignored_lines_are_reported() -> None:
    config = S.load({MAIN: 'PermitRootLogin no\n"PasswordAuthentication no\n'}, MAIN)
    assert config.ignored == ((MAIN, 2, '"PasswordAuthentication no'),)
    assert S.effective(config, None)["passwordauthentication"] == ("yes",)


def test_include_order_and_files() -> None:
    config = S.load(debian(("b.conf", "X11Forwarding yes\n"), ("a.conf", "X11Forwarding no\n")), MAIN)
    assert config.files == (MAIN, "/etc/ssh/sshd_config.d/a.conf", "/etc/ssh/sshd_config.d/b.conf")
    assert S.effective(config, None)["x11forwarding"] == ("no",)


# ---------------------------------------------------------------- what a pure parser cannot know


@pytest.mark.parametrize(
    ("text", "conn", "why"),
    [
        ("Match Group wheel\n  PermitTTY no\n", S.Connection("alice", "10.0.0.1"), "groups"),
        ("Match Host *.example.com\n  PermitTTY no\n", S.Connection("alice", "10.0.0.1"), "host name"),
        ("Port ssh\n", None, "/etc/services"),
        ("ListenAddress localhost\n", None, "resolve"),
        ("Banner ~/banner\n", None, "user database"),
        ("PerSourceNetBlockSize 24\n", None, "uninitialised"),
        ("Match Address fe80::1%eth0\n  PermitTTY no\n", S.Connection("a", "fe80::1"), "interface"),
    ],
)
def test_undecidable(text: str, conn: S.Connection | None, why: str) -> None:
    with pytest.raises(S.Undecidable, match=why):
        S.effective(S.load({MAIN: text}, MAIN), conn)


def test_groups_decide_match_group() -> None:
    config = S.load({MAIN: "Match Group wheel,!banned\n  PermitTTY no\n"}, MAIN)
    tty = {g: S.effective(config, S.Connection("a", "10.0.0.1", groups=g))["permittty"] for g in
           [("wheel",), ("users",), ("wheel", "banned"), ()]}
    assert tty == {("wheel",): ("no",), ("users",): ("yes",), ("wheel", "banned"): ("yes",), (): ("yes",)}


# ------------------------------------------------------------------------- OpenSSH 10.x, from source


def test_v10_keywords_and_defaults() -> None:
    """Keywords 9.2 lacks (PerSourcePenalties: 9.8; RefuseConnection: 10.0) and 10.x defaults."""
    with pytest.raises(S.ConfigError, match="Bad configuration option: PerSourcePenalties"):
        S.load({MAIN: "PerSourcePenalties authfail:10\n"}, MAIN, (9, 2))
    text = "PerSourcePenalties authfail:10 max:1h\nPerSourcePenaltyExemptList 10.0.0.0/8,192.0.2.1\nRefuseConnection no\n"
    got = S.effective(S.load({MAIN: text}, MAIN, (10, 0)), None)
    assert got["persourcepenalties"] == (
        "crash:90 authfail:10 noauth:1 grace-exceeded:10 refuseconnection:10 max:3600 min:15 "
        "max-sources4:65536 max-sources6:65536 overflow:permissive overflow6:permissive",
    )
    assert got["persourcepenaltyexemptlist"] == ("10.0.0.0/8,192.0.2.1",)
    assert got["kexalgorithms"][0].startswith("mlkem768x25519-sha256,")
    assert S.effective(S.load({MAIN: "PerSourcePenalties no\n"}, MAIN, (10, 2)), None)["persourcepenalties"] == ("no",)
    with pytest.raises(S.ConfigError, match="invalid address"):
        S.load({MAIN: "PerSourcePenaltyExemptList 10.0.0.1/8\n"}, MAIN, (10, 0))


def test_v10_match_grammar() -> None:
    """10.x reads Match words with argv_split, accepts 'User=alice' and 'invalid-user', and allows
    Subsystem in Match blocks (whose Subsystems then replace the global ones)."""
    text = ("Subsystem sftp /usr/lib/openssh/sftp-server\nMatch user=alice\n  Subsystem sftp internal-sftp\n"
            "Match invalid-user\n  PasswordAuthentication no\nMatch User 'b ob'\n  PermitTTY no\n")
    config = S.load({MAIN: text}, MAIN, (10, 0))
    assert S.effective(config, S.Connection("alice", "10.0.0.1"))["subsystem"] == ("sftp internal-sftp",)
    assert S.effective(config, S.Connection("carol", "10.0.0.1"))["subsystem"] == ("sftp /usr/lib/openssh/sftp-server",)
    assert S.effective(config, S.Connection("x", "10.0.0.1", invalid_user=True))["passwordauthentication"] == ("no",)
    assert S.effective(config, S.Connection("b ob", "10.0.0.1"))["permittty"] == ("no",)
    with pytest.raises(S.ConfigError, match="not allowed within a Match block"):
        S.load({MAIN: text}, MAIN, (9, 2))


def test_v10_first_value_wins_for_maxstartups() -> None:
    """9.2 and 10.0 let the last MaxStartups win; 10.1 made it first-wins like everything else."""
    text = "MaxStartups 10:30:60\nMaxStartups 20\n"
    assert S.effective(S.load({MAIN: text}, MAIN, (9, 2)), None)["maxstartups"] == ("20:30:20",)
    assert S.effective(S.load({MAIN: text}, MAIN, (10, 0)), None)["maxstartups"] == ("20:30:20",)
    assert S.effective(S.load({MAIN: text}, MAIN, (10, 2)), None)["maxstartups"] == ("10:30:60",)


def test_unknown_version() -> None:
    with pytest.raises(ValueError, match="no sshd_config grammar for OpenSSH 8.9"):
        S.load({MAIN: ""}, MAIN, (8, 9))


# ------------------------------------------------------------------------------------ hostile input


@pytest.mark.parametrize(
    ("name", "files", "error"),
    [
        ("10 MB file", {MAIN: "# padding\n" * 1_000_000}, "larger than"),
        ("1 MB of comments", {MAIN: "# x\n" * 250_000}, None),
        ("100k directives", {MAIN: "AcceptEnv X\n" * 100_000}, "refusing to judge"),
        ("10,000 Include lines", {MAIN: "Include /etc/ssh/a\n" * 10_000, "/etc/ssh/a": "AcceptEnv A\nMaxSessions 2\n"}, None),
        ("10,000 Match blocks", {MAIN: "".join(f"Match User u{i}\n PermitTTY no\n" for i in range(10_000))}, None),
        ("include chain 30 deep", {MAIN: "Include /etc/ssh/f0\n", **{f"/etc/ssh/f{i}": f"Include /etc/ssh/f{i + 1}\n"
                                                                    for i in range(30)}}, "Too many recursive"),
        ("include bomb", {MAIN: "Include /etc/ssh/b0\n", **{f"/etc/ssh/b{i}": f"Include /etc/ssh/b{i + 1}\n" * 2
                                                             for i in range(15)}}, "refusing to judge"),
        ("pathological pattern", {MAIN: "Match User " + "*a" * 400 + "b\n  PermitTTY no\n"}, None),
        ("one huge line", {MAIN: "AllowUsers " + " ".join(f'"u{i}"' for i in range(80_000)) + "\n"}, None),
    ],
)
def test_hostile_input_is_fast(name: str, files: dict[str, str], error: str | None) -> None:
    start = time.perf_counter()
    try:
        S.effective(S.load(files, MAIN), S.Connection("a" * 300, "10.0.0.1"))
    except S.ConfigError as e:
        assert error is not None and error in str(e), str(e)
    else:
        assert error is None, f"{name} should have been refused"
    assert time.perf_counter() - start < 0.8, name


# ------------------------------------------------- the agent's shortcut: one question per address


# The same connection for different users, as the agent asks (activate.effective); root and nobody exist here.
TWINS = tuple(S.Connection(user, addr, host="totp-vps.invalid", laddr="0.0.0.0", lport=22)
              for addr in (st.PROBES[0], "10.9.9.9") for user in ("alice", "root", "nobody"))
SHORTCUT_CASES = [c.files for c in CASES] + [
    debian(("00-totp-vps.conf", "PermitRootLogin no\nMatch all\n  PasswordAuthentication no\n")),
    debian(("10-x.conf", "Match Address 10.0.0.0/8 LocalPort 22\n  PermitTTY no\n")),
    debian(("10-x.conf", "Match Address 10.0.0.0/8\n  PermitTTY no\nMatch user root\n  PermitRootLogin yes\n")),
    debian(("10-x.conf", 'Match Address 10.0.0.0/8 "User" root\n  PermitTTY no\n')),
    debian(("10-x.conf", "Match Group root\n  PermitTTY no\n")),
    {MAIN: DEBIAN_12 + "Include /etc/ssh/other.conf\n", "/etc/ssh/other.conf": "Match User nobody\n  PermitTTY no\n"},
]


def agent_texts(files: dict[str, str]) -> list[str]:
    """What the agent reads (activate.sshd_files): the main file and the drop-ins, whatever else sshd includes."""
    dropins = sorted(p for p in files if re.fullmatch(r"/etc/ssh/sshd_config\.d/[^/]*\.conf", p))
    return [files.get(MAIN, ""), *(files[p] for p in dropins)]


def test_where_the_agent_asks_once_per_address_sshd_answers_alike_for_every_user() -> None:
    answers = _run_sshd([(files, [_args(conn) for conn in TWINS]) for files in SHORTCUT_CASES])
    verdicts = []
    for files, answer in zip(SHORTCUT_CASES, answers, strict=True):
        shortcut = st.same_for_every_user(agent_texts(files))
        per_address = [{out for rc, out, _err in answer[i: i + 3] if rc == 0} for i in (0, 3)]
        alike = all(len(outs) == 1 for outs in per_address) and all(rc == 0 for rc, _out, _err in answer)
        assert alike or not shortcut, f"the agent would ask once per address, but users differ: {files}"
        verdicts.append((shortcut, alike))
    # Both kinds are in the battery, and users really differ where the shortcut is not taken.
    assert sum(s for s, _a in verdicts) >= 8 and sum(not a for _s, a in verdicts) >= 8, verdicts
    assert [s for s, _a in verdicts[-6:]] == [True, True, False, False, False, False]
