"""sshd_config as OpenSSH's sshd reads it: one parser, ported from servconf.c, misc.c, match.c and
addrmatch.c of the OpenSSH releases the images ship (9.2p1 in Debian 12, 10.0p1 in Debian 13, 10.2p1),
with the keywords Debian's and Ubuntu's patches add (GSSAPI key exchange, DebianBanner).

Pure: no file, DNS or user database access. The caller hands over every file sshd could read (path ->
text); anything sshd would have to ask the running system (a service name in ``Port``, a host name in
``ListenAddress``, a user's groups for ``Match Group``, DNS for ``Match Host``) raises
:class:`Undecidable` instead of being guessed.

API:

- ``load(files, main, version=(9, 2)) -> Config`` parses ``main`` the way ``sshd -t`` does (including
  ``Include`` globs against the keys of ``files``, ``Match`` syntax, and every keyword's argument
  checks); raises :class:`ConfigError` (file, line, reason) where sshd refuses to start.
- ``effective(config, conn) -> dict[str, tuple[str, ...]]``: lowercased keyword -> values as
  ``sshd -T -C user=..,addr=..,host=..,laddr=..,lport=..`` prints them (``conn=None``: plain ``sshd -T``,
  where only ``Match all`` blocks apply). A keyword sshd prints on several lines (``port``,
  ``hostkey``, ``allowusers``, ``listenaddress``, ``acceptenv``, ``setenv``, ``subsystem``) has one
  value per line; one-line lists (``authenticationmethods``, ``authorizedkeysfile``) have one value per
  word.
- ``Connection(user, addr, host=None, laddr="0.0.0.0", lport=22, rdomain=None, groups=None,
  invalid_user=False)``.

The quirks that matter to a gate, all as sshd has them: the first value read wins (later files and
lines cannot override it), except for keywords that accumulate (``Port``, ``HostKey``,
``ListenAddress``, ``AcceptEnv``, ``AllowUsers`` ...); ``Keyword=value`` and TABs separate; keywords
are ASCII case-insensitive; ``Match`` blocks run to the next ``Match`` or the end of the file that
holds them (a ``Match`` in an included file ends with that file), and a matching block's values
override the global ones; a line starting with an unbalanced quote is silently ignored
(:attr:`Config.ignored` lists those lines).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Version = tuple[int, int]
VERSIONS: tuple[Version, ...] = ((9, 2), (10, 0), (10, 2))

SSHDIR = "/etc/ssh"
MAX_DEPTH = 16  # SERVCONF_MAX_DEPTH
MAX_PORTS = 256
MAX_SUBSYSTEMS = 256
# Far beyond any real configuration; keeps hostile input (include bombs, huge files) well under a second.
MAX_BYTES = 1 << 20
MAX_LINES = 50_000

_WS = " \t\r\n"  # misc.c WHITESPACE
_INT_MAX = 2**31 - 1


class ConfigError(Exception):
    """sshd would refuse this configuration (or, from :func:`effective`, this connection)."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(file, line, reason)
        self.file = file
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.line else self.file
        return f"{where}: {self.reason}"


class Undecidable(ConfigError):
    """What sshd does here depends on the running system (DNS, the group database, /etc/services,
    network interfaces, the package's version string), which a pure parser cannot see."""


@dataclass(frozen=True)
class Connection:
    """What ``sshd -T -C`` is told about a connection (``user=``, ``addr=``, ``host=``, ``laddr=``,
    ``lport=``, ``rdomain=``, and 10.x's ``invalid-user``). ``host`` is the name sshd would match
    ``Match Host`` against (the address itself unless UseDNS); ``groups`` are the user's group names
    for ``Match Group`` (None: unknown)."""

    user: str
    addr: str
    host: str | None = None
    laddr: str = "0.0.0.0"  # noqa: S104 - an address to match against, nothing binds to it
    lport: int = 22
    rdomain: str | None = None
    groups: tuple[str, ...] | None = None
    invalid_user: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.lport <= 65535:
            raise ValueError(f"lport must be 1..65535 (got {self.lport})")
        for name in ("user", "addr", "laddr"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")


@dataclass(frozen=True)
class _CI:
    """servconf.h struct connection_info as pass 2 sees it: a real Connection (``strict``: a
    criterion it cannot answer is Undecidable) or sshd -T's blank test connection (nothing but
    'all' matches)."""

    user: str | None = None
    addr: str | None = None
    host: str | None = None
    laddr: str | None = None
    lport: int = 0  # the static connection_info sshd -T starts from: 0, not "unset" (-1)
    rdomain: str | None = None
    groups: tuple[str, ...] | None = None
    invalid_user: bool = False
    strict: bool = False

    @classmethod
    def of(cls, conn: Connection | None) -> _CI:
        if conn is None:
            return cls()
        return cls(conn.user, conn.addr, conn.host, conn.laddr, conn.lport, conn.rdomain, conn.groups,
                   conn.invalid_user, strict=True)


# ------------------------------------------------------------------------------------- the tables

# Keyword flags (servconf.c SSHCFG_*).
_G = 0x01  # allowed in the main section
_M = 0x02  # allowed inside a Match block
_ALL = _G | _M
_NEVERMATCH = 0x04
_MATCH_ONLY = 0x08

# keyword -> (opcode, flags), in servconf.c's table order (the first keyword of an opcode is the
# name sshd -T prints). Opcodes starting with "!" take any arguments and change nothing.
_KEYWORDS_92: tuple[tuple[str, str, int], ...] = (
    ("usepam", "usepam", _G), ("pamauthenticationviakbdint", "!deprecated", _G),
    ("port", "port", _G), ("hostkey", "hostkey", _G), ("hostdsakey", "hostkey", _G),
    ("hostkeyagent", "hostkeyagent", _G), ("pidfile", "pidfile", _G), ("modulifile", "modulifile", _G),
    ("serverkeybits", "!deprecated", _G), ("logingracetime", "logingracetime", _G),
    ("keyregenerationinterval", "!deprecated", _G), ("permitrootlogin", "permitrootlogin", _ALL),
    ("syslogfacility", "syslogfacility", _G), ("loglevel", "loglevel", _ALL), ("logverbose", "logverbose", _ALL),
    ("rhostsauthentication", "!deprecated", _G), ("rhostsrsaauthentication", "!deprecated", _ALL),
    ("hostbasedauthentication", "hostbasedauthentication", _ALL),
    ("hostbasedusesnamefrompacketonly", "hostbasedusesnamefrompacketonly", _ALL),
    ("hostbasedacceptedalgorithms", "hostbasedacceptedalgorithms", _ALL),
    ("hostbasedacceptedkeytypes", "hostbasedacceptedalgorithms", _ALL),
    ("hostkeyalgorithms", "hostkeyalgorithms", _G), ("rsaauthentication", "!deprecated", _ALL),
    ("pubkeyauthentication", "pubkeyauthentication", _ALL),
    ("pubkeyacceptedalgorithms", "pubkeyacceptedalgorithms", _ALL),
    ("pubkeyacceptedkeytypes", "pubkeyacceptedalgorithms", _ALL), ("pubkeyauthoptions", "pubkeyauthoptions", _ALL),
    ("dsaauthentication", "pubkeyauthentication", _G),
    ("kerberosauthentication", "kerberosauthentication", _ALL), ("kerberosorlocalpasswd", "kerberosorlocalpasswd", _G),
    ("kerberosticketcleanup", "kerberosticketcleanup", _G), ("kerberosgetafstoken", "!unsupported", _G),
    ("kerberostgtpassing", "!unsupported", _G), ("afstokenpassing", "!unsupported", _G),
    ("gssapiauthentication", "gssapiauthentication", _ALL),
    ("gssapicleanupcredentials", "gssapicleanupcredentials", _G), ("gssapicleanupcreds", "gssapicleanupcredentials", _G),
    ("gssapistrictacceptorcheck", "gssapistrictacceptorcheck", _G), ("gssapikeyexchange", "gssapikeyexchange", _G),
    ("gssapistorecredentialsonrekey", "gssapistorecredentialsonrekey", _G),
    ("gssapikexalgorithms", "gssapikexalgorithms", _G), ("gssusesessionccache", "!unsupported", _G),
    ("gssapiusesessioncredcache", "!unsupported", _G), ("passwordauthentication", "passwordauthentication", _ALL),
    ("kbdinteractiveauthentication", "kbdinteractiveauthentication", _ALL),
    ("challengeresponseauthentication", "kbdinteractiveauthentication", _ALL),
    ("skeyauthentication", "kbdinteractiveauthentication", _ALL), ("checkmail", "!deprecated", _G),
    ("listenaddress", "listenaddress", _G), ("addressfamily", "addressfamily", _G), ("printmotd", "printmotd", _G),
    ("printlastlog", "printlastlog", _G), ("ignorerhosts", "ignorerhosts", _ALL),
    ("ignoreuserknownhosts", "ignoreuserknownhosts", _G), ("x11forwarding", "x11forwarding", _ALL),
    ("x11displayoffset", "x11displayoffset", _ALL), ("x11uselocalhost", "x11uselocalhost", _ALL),
    ("xauthlocation", "xauthlocation", _G), ("strictmodes", "strictmodes", _G),
    ("permitblacklistedkeys", "!deprecated", _G), ("permitemptypasswords", "permitemptypasswords", _ALL),
    ("permituserenvironment", "permituserenvironment", _G), ("uselogin", "!deprecated", _G),
    ("compression", "compression", _G), ("rekeylimit", "rekeylimit", _ALL), ("tcpkeepalive", "tcpkeepalive", _G),
    ("keepalive", "tcpkeepalive", _G), ("allowtcpforwarding", "allowtcpforwarding", _ALL),
    ("allowagentforwarding", "allowagentforwarding", _ALL), ("allowusers", "allowusers", _ALL),
    ("denyusers", "denyusers", _ALL), ("allowgroups", "allowgroups", _ALL), ("denygroups", "denygroups", _ALL),
    ("ciphers", "ciphers", _G), ("macs", "macs", _G), ("protocol", "!ignore", _G),
    ("gatewayports", "gatewayports", _ALL), ("subsystem", "subsystem", _G), ("maxstartups", "maxstartups", _G),
    ("persourcemaxstartups", "persourcemaxstartups", _G), ("persourcenetblocksize", "persourcenetblocksize", _G),
    ("maxauthtries", "maxauthtries", _ALL), ("maxsessions", "maxsessions", _ALL), ("banner", "banner", _ALL),
    ("usedns", "usedns", _G), ("verifyreversemapping", "!deprecated", _G), ("reversemappingcheck", "!deprecated", _G),
    ("clientaliveinterval", "clientaliveinterval", _ALL), ("clientalivecountmax", "clientalivecountmax", _ALL),
    ("authorizedkeysfile", "authorizedkeysfile", _ALL), ("authorizedkeysfile2", "!deprecated", _ALL),
    ("useprivilegeseparation", "!deprecated", _G), ("acceptenv", "acceptenv", _ALL), ("setenv", "setenv", _ALL),
    ("permittunnel", "permittunnel", _ALL), ("permittty", "permittty", _ALL), ("permituserrc", "permituserrc", _ALL),
    ("match", "match", _ALL), ("permitopen", "permitopen", _ALL), ("permitlisten", "permitlisten", _ALL),
    ("forcecommand", "forcecommand", _ALL), ("chrootdirectory", "chrootdirectory", _ALL),
    ("hostcertificate", "hostcertificate", _G), ("revokedkeys", "revokedkeys", _ALL),
    ("trustedusercakeys", "trustedusercakeys", _ALL), ("authorizedprincipalsfile", "authorizedprincipalsfile", _ALL),
    ("kexalgorithms", "kexalgorithms", _G), ("include", "include", _ALL), ("ipqos", "ipqos", _ALL),
    ("authorizedkeyscommand", "authorizedkeyscommand", _ALL),
    ("authorizedkeyscommanduser", "authorizedkeyscommanduser", _ALL),
    ("authorizedprincipalscommand", "authorizedprincipalscommand", _ALL),
    ("authorizedprincipalscommanduser", "authorizedprincipalscommanduser", _ALL),
    ("versionaddendum", "versionaddendum", _G), ("authenticationmethods", "authenticationmethods", _ALL),
    ("streamlocalbindmask", "streamlocalbindmask", _ALL), ("streamlocalbindunlink", "streamlocalbindunlink", _ALL),
    ("allowstreamlocalforwarding", "allowstreamlocalforwarding", _ALL), ("fingerprinthash", "fingerprinthash", _G),
    ("disableforwarding", "disableforwarding", _ALL), ("exposeauthinfo", "exposeauthinfo", _ALL),
    ("rdomain", "rdomain", _ALL), ("casignaturealgorithms", "casignaturealgorithms", _ALL),
    ("securitykeyprovider", "securitykeyprovider", _G), ("requiredrsasize", "requiredrsasize", _ALL),
    ("channeltimeout", "channeltimeout", _ALL), ("unusedconnectiontimeout", "unusedconnectiontimeout", _ALL),
    ("debianbanner", "debianbanner", _G),
)


def _keywords_10(table: tuple[tuple[str, str, int], ...]) -> tuple[tuple[str, str, int], ...]:
    """10.0 and 10.2: PAMServiceName (9.8), PerSourcePenalties* (9.8), SshdSessionPath (9.8),
    SshdAuthPath and RefuseConnection (10.0); Subsystem allowed in Match (9.5)."""
    out: list[tuple[str, str, int]] = []
    for name, op, flags in table:
        if name == "subsystem":
            out.append((name, op, _ALL))
            out.append(("persourcepenalties", "persourcepenalties", _G))
            out.append(("persourcepenaltyexemptlist", "persourcepenaltyexemptlist", _G))
            continue
        out.append((name, op, flags))
        if name == "usepam":
            out.append(("pamservicename", "pamservicename", _ALL))
        if name == "unusedconnectiontimeout":
            out += [("sshdsessionpath", "sshdsessionpath", _G), ("sshdauthpath", "sshdauthpath", _G),
                    ("refuseconnection", "refuseconnection", _ALL)]
    return tuple(out)


# Algorithm names in the order of each release's tables (cipher.c, mac.c, kex-names.c, the
# sshkey implementations), as built by Debian (OpenSSL with ECC, security keys, GSSAPI).
_CIPHERS_92 = (
    "3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc", "aes128-ctr", "aes192-ctr", "aes256-ctr",
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
)
_MACS = (
    "hmac-sha1", "hmac-sha1-96", "hmac-sha2-256", "hmac-sha2-512", "hmac-md5", "hmac-md5-96", "umac-64@openssh.com",
    "umac-128@openssh.com", "hmac-sha1-etm@openssh.com", "hmac-sha1-96-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-md5-etm@openssh.com",
    "hmac-md5-96-etm@openssh.com", "umac-64-etm@openssh.com", "umac-128-etm@openssh.com",
)
_KEX_92 = (
    "diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512", "diffie-hellman-group-exchange-sha1",
    "diffie-hellman-group-exchange-sha256", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
    "curve25519-sha256", "curve25519-sha256@libssh.org", "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
)
_KEX_10 = (*_KEX_92, "mlkem768x25519-sha256")
# Debian's GSSAPI key exchange names: kex_alg_by_name matches them as prefixes.
_GSS_KEX = (
    "gss-gex-sha1-", "gss-group1-sha1-", "gss-group14-sha1-", "gss-group14-sha256-", "gss-group16-sha512-",
    "gss-nistp256-sha256-", "gss-curve25519-sha256-",
)
_GSS_KEX_DEFAULT = (
    "gss-group14-sha256-,gss-group16-sha512-,gss-nistp256-sha256-,gss-curve25519-sha256-,gss-group14-sha1-,gss-gex-sha1-"
)

# (name, shortname, is_cert, sig_only) in keyimpls[] order; 10.x dropped DSA.
_KEYTYPES_92: tuple[tuple[str, str, bool, bool], ...] = (
    ("ssh-ed25519", "ED25519", False, False), ("ssh-ed25519-cert-v01@openssh.com", "ED25519-CERT", True, False),
    ("sk-ssh-ed25519@openssh.com", "ED25519-SK", False, False),
    ("sk-ssh-ed25519-cert-v01@openssh.com", "ED25519-SK-CERT", True, False),
    ("ecdsa-sha2-nistp256", "ECDSA", False, False), ("ecdsa-sha2-nistp256-cert-v01@openssh.com", "ECDSA-CERT", True, False),
    ("ecdsa-sha2-nistp384", "ECDSA", False, False), ("ecdsa-sha2-nistp384-cert-v01@openssh.com", "ECDSA-CERT", True, False),
    ("ecdsa-sha2-nistp521", "ECDSA", False, False), ("ecdsa-sha2-nistp521-cert-v01@openssh.com", "ECDSA-CERT", True, False),
    ("sk-ecdsa-sha2-nistp256@openssh.com", "ECDSA-SK", False, False),
    ("sk-ecdsa-sha2-nistp256-cert-v01@openssh.com", "ECDSA-SK-CERT", True, False),
    ("webauthn-sk-ecdsa-sha2-nistp256@openssh.com", "ECDSA-SK", False, True),
    ("ssh-dss", "DSA", False, False), ("ssh-dss-cert-v01@openssh.com", "DSA-CERT", True, False),
    ("ssh-rsa", "RSA", False, False), ("ssh-rsa-cert-v01@openssh.com", "RSA-CERT", True, False),
    ("rsa-sha2-256", "RSA", False, True), ("rsa-sha2-256-cert-v01@openssh.com", "RSA-CERT", True, True),
    ("rsa-sha2-512", "RSA", False, True), ("rsa-sha2-512-cert-v01@openssh.com", "RSA-CERT", True, True),
    ("null", "null", False, False),  # Debian's GSSAPI patch: a key type with no algorithm (never listed)
)
_KEYTYPES_10 = tuple(k for k in _KEYTYPES_92 if not k[0].startswith("ssh-dss"))

_DEFAULT_PK = (
    "ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,ecdsa-sha2-nistp384-cert-v01@openssh.com,"
    "ecdsa-sha2-nistp521-cert-v01@openssh.com,sk-ssh-ed25519-cert-v01@openssh.com,"
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,"
    "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,sk-ssh-ed25519@openssh.com,"
    "sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256"
)
_DEFAULT_CA = (
    "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,sk-ssh-ed25519@openssh.com,"
    "sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256"
)
_DEFAULT_MAC = (
    "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,"
    "hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1"
)


@dataclass(frozen=True)
class _Dialect:
    version: Version
    keywords: dict[str, tuple[str, int]]
    printed: dict[str, str]  # opcode -> name sshd -T prints
    ciphers: tuple[str, ...]
    kex: tuple[str, ...]
    keytypes: tuple[tuple[str, str, bool, bool], ...]
    default_cipher: str
    default_kex: str
    authmethods: tuple[str, ...] = ("none", "publickey", "gssapi-keyex", "gssapi-with-mic", "password",
                                    "keyboard-interactive", "hostbased")

    @property
    def v10(self) -> bool:
        return self.version >= (10, 0)

    def all_keys(self) -> tuple[str, ...]:  # sshkey_alg_list(0, 0, 1): every name, signature-only too
        return tuple(n for n, _s, _c, _o in self.keytypes if n != "null")

    def all_sigs(self) -> tuple[str, ...]:  # sshkey_alg_list(0, 1, 1): plain keys and signatures
        return tuple(n for n, _s, cert, _o in self.keytypes if n != "null" and not cert)


def _dialect(version: Version) -> _Dialect:
    if version not in VERSIONS:
        known = ", ".join(f"{a}.{b}" for a, b in VERSIONS)
        raise ValueError(f"no sshd_config grammar for OpenSSH {version[0]}.{version[1]} (known: {known})")
    table = _KEYWORDS_92 if version < (10, 0) else _keywords_10(_KEYWORDS_92)
    keywords = {name: (op, flags) for name, op, flags in table}
    printed: dict[str, str] = {}
    for name, op, _flags in table:
        printed.setdefault(op, name)
    if version < (10, 0):
        return _Dialect(
            version, keywords, printed, _CIPHERS_92, _KEX_92, _KEYTYPES_92,
            default_cipher="chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,"
            "aes256-gcm@openssh.com",
            default_kex="sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256,"
            "curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,"
            "diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,"
            "diffie-hellman-group14-sha256",
        )
    return _Dialect(
        version, keywords, printed, _CIPHERS_92, _KEX_10, _KEYTYPES_10,
        default_cipher="chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr,"
        "aes192-ctr,aes256-ctr",
        default_kex="mlkem768x25519-sha256,sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,"
        "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521",
    )


# ----------------------------------------------------------------------------- lexing (misc.c)


def _lower(s: str) -> str:
    """strcasecmp's folding: ASCII only (str.lower() would also fold e.g. the Kelvin sign to 'k')."""
    return s.translate(_ASCII_LOWER) if not s.isascii() else s.lower()


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _strdelim(s: str | None, split_equals: bool = True) -> tuple[str | None, str | None]:
    """misc.c strdelim_internal: (token, rest). A token may be wrapped in double quotes; one '=' may
    separate like whitespace. An unbalanced quote yields (None, None)."""
    if s is None:
        return None, None
    m = (_DELIMS_EQ if split_equals else _DELIMS).search(s)
    if m is None:
        return s, None
    i = m.start()
    if s[i] == '"':
        s = s[:i] + s[i + 1 :]
        j = s.find('"', i)
        if j < 0:
            return None, None
        return s[:j], s[j + 1 :].lstrip(_WS)
    wspace = split_equals and s[i] == "="
    token, rest = s[:i], s[i + 1 :].lstrip(_WS)
    if split_equals and rest.startswith("=") and not wspace:
        rest = rest[1:].lstrip(_WS)
    return token, rest


_DELIMS = re.compile(r'[ \t\r\n"]')
_DELIMS_EQ = re.compile(r'[ \t\r\n"=]')
_SIMPLE_ARGS = re.compile(r"[^\\\"'#]*")


def _argv_split(s: str) -> list[str] | None:
    """misc.c argv_split(s, terminate_on_comment=1): words separated by spaces/TABs, single or double
    quotes, backslash escapes of quotes, backslash and (outside quotes) space; '#' at the start of a
    word ends the line. None for an unterminated quote."""
    if _SIMPLE_ARGS.fullmatch(s):
        return [w for w in re.split(r"[ \t]+", s) if w]
    argv: list[str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in " \t":
            i += 1
            continue
        if c == "#":
            break
        quote = ""
        arg: list[str] = []
        while i < n:
            c = s[i]
            if c == "\\":
                nxt = s[i + 1] if i + 1 < n else ""
                if nxt in ("'", '"', "\\") or (not quote and nxt == " "):
                    i += 1
                    arg.append(s[i])
                else:
                    arg.append(c)
            elif not quote and c in " \t":
                break
            elif not quote and c in "\"'":
                quote = c
            elif quote and c == quote:
                quote = ""
            else:
                arg.append(c)
            i += 1
        argv.append("".join(arg))
        if i >= n:
            if quote:
                return None
            break
        i += 1
    return argv


def _argv_assemble(args: Iterable[str]) -> str:
    """misc.c argv_assemble: words back into one string, quoted where they hold spaces."""
    out = []
    for a in args:
        body = "".join("\\" + c if c in "\\'\"" else c for c in a)
        out.append(f'"{body}"' if (" " in a or "\t" in a) else body)
    return " ".join(out)


def _strtonum(s: str | None, lo: int, hi: int) -> int | None:
    """OpenBSD strtonum: optional leading space and sign, decimal, whole string, within [lo, hi]."""
    if s is None:
        return None
    m = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", s)
    if m is None:
        return None
    v = int(m.group(1))
    return v if lo <= v <= hi else None


def _atoi_err(s: str | None) -> tuple[int, str | None]:
    if s is None or s == "":
        return 0, "missing"
    m = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", s)
    if m is None:
        return 0, "invalid"
    v = int(m.group(1))
    if v < 0:
        return 0, "too small"
    if v > _INT_MAX:
        return 0, "too large"
    return v, None


def _convtime(s: str | None) -> int:
    """misc.c convtime: '90', '1h30m', '2d' ... -> seconds; -1 if invalid."""
    if not s:
        return -1
    total = 0
    mult = {"": 1, "s": 1, "S": 1, "m": 60, "M": 60, "h": 3600, "H": 3600, "d": 86400, "D": 86400, "w": 604800,
            "W": 604800}
    pos = 0
    while pos < len(s):
        m = re.match(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", s[pos:])  # strtol
        if m is None:
            return -1
        secs = int(m.group(1))
        if secs < 0 or secs >= 2**63 - 1:
            return -1
        pos += m.end()
        unit = s[pos] if pos < len(s) else ""
        if unit not in mult:
            return -1
        if unit:
            pos += 1
        if secs > _INT_MAX // mult[unit]:
            return -1
        secs *= mult[unit]
        if total > _INT_MAX - secs:
            return -1
        total += secs
    return total


def _scan_scaled(s: str) -> int | None:
    """openbsd-compat scan_scaled: '1G', '512M', '1.5K' ... (RekeyLimit). None if invalid."""
    llong_max, max_digits = 2**63 - 1, 21
    p = 0
    while p < len(s) and s[p] in " \t\n\v\f\r":
        p += 1
    sign = 0
    while p < len(s) and s[p] in "+-":
        if sign:
            return None
        sign = -1 if s[p] == "-" else 1
        p += 1
    whole = fpart = ndigits = fract = 0
    while p < len(s) and (s[p] in "0123456789."):
        c = s[p]
        p += 1
        if c == ".":
            if fract:
                return None
            fract = 1
            continue
        i = ord(c) - 48
        if fract:
            if fract >= max_digits - 1:
                continue
            fract += 1
            fpart = fpart * 10 + i
            if fpart > llong_max:
                return None
        else:
            ndigits += 1
            if ndigits >= max_digits:
                return None
            whole = whole * 10 + i
            if whole > llong_max:
                return None
    if sign:
        whole *= sign
    if p >= len(s):
        return whole
    scales = "BKMGTPE"
    k = scales.find(s[p].upper()) if s[p] in scales or s[p] in scales.lower() else -1
    if k < 0:
        return None
    if p + 1 < len(s) and s[p + 1].isascii() and s[p + 1].isalnum():
        return None
    fact = 1024**k
    if whole > llong_max // fact or whole < -(llong_max + 1) // fact:
        return None
    whole *= fact
    while fpart >= llong_max // fact:
        fpart //= 10
        fract -= 1
    fpart *= fact
    for _ in range(max(0, fract - 1)):
        fpart //= 10
    return whole - fpart if sign == -1 else whole + fpart


# --------------------------------------------------------------------------- patterns (match.c)


def _match_pattern(s: str, pattern: str) -> bool:
    """match.c match_pattern ('*' and '?'), without its exponential backtracking."""
    si = pi = 0
    star_p, star_s = -1, 0
    while si < len(s):
        if pi < len(pattern) and (pattern[pi] == "?" or pattern[pi] == s[si]):
            si += 1
            pi += 1
        elif pi < len(pattern) and pattern[pi] == "*":
            star_p, star_s = pi, si
            pi += 1
        elif star_p >= 0:
            pi = star_p + 1
            star_s += 1
            si = star_s
        else:
            return False
    while pi < len(pattern) and pattern[pi] == "*":
        pi += 1
    return pi == len(pattern)


def _match_pattern_list(s: str, patterns: str, dolower: bool = False) -> int:
    """match.c match_pattern_list: 1 if a pattern matches, -1 if a negated one does, 0 otherwise. A
    sub-pattern of 1023 characters or more makes the whole list fail (0)."""
    got_positive = 0
    for sub in patterns.split(","):
        negated = sub.startswith("!")
        if negated:
            sub = sub[1:]
        if len(sub) >= 1023:
            return 0
        if dolower:
            sub = _lower(sub)
        if _match_pattern(s, sub):
            if negated:
                return -1
            got_positive = 1
    # A list ending in ',' yields no extra empty sub-pattern in C (the loop stops at the end).
    return got_positive


def _match_hostname(host: str, patterns: str) -> int:
    return _match_pattern_list(_lower(host), patterns, True)


def _inet_aton_exact(s: str) -> int | None:
    """glibc inet_aton as getaddrinfo(AI_NUMERICHOST) uses it: 1-4 parts, each decimal, 0-octal or
    0x-hex ('10.1' is 10.0.0.1), nothing after. Returns the address as an integer."""
    parts: list[int] = []
    for i, part in enumerate(s.split(".")):
        if not part or not part[0].isdigit() or i > 3:
            return None
        if part[:2] in ("0x", "0X"):
            digits = part[2:]
            if not digits or not all(c in "0123456789abcdefABCDEF" for c in digits):
                return None
            v = int(digits, 16)
        elif part[0] == "0":
            if not all(c in "01234567" for c in part):
                return None
            v = int(part, 8)
        else:
            if not part.isdigit() or not part.isascii():
                return None
            v = int(part)
        parts.append(v)
    if not parts:
        return None
    *head, last = parts
    if any(p > 0xFF for p in head):
        return None
    if last > (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)[len(head)]:
        return None
    value = 0
    for k, p in enumerate(head):
        value |= p << (24 - 8 * k)
    return value | last


@dataclass(frozen=True)
class _Addr:
    af: int  # 4 or 6
    value: int
    scope: int = 0


def _addr_pton(s: str) -> _Addr | None:
    """addr.c addr_pton: a numeric IPv4 (inet_aton forms) or IPv6 address (with a numeric %scope)."""
    v4 = _inet_aton_exact(s)
    if v4 is not None:
        return _Addr(4, v4)
    text, _, scope = s.partition("%")
    if ":" not in text:
        return None
    try:
        a6 = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    if "%" not in s:
        return _Addr(6, int(a6))
    if not scope:
        return None
    if not scope.isdigit() or not scope.isascii():
        # An interface name: getaddrinfo asks the kernel for its index.
        raise Undecidable("", 0, f"address {s!r} names a network interface")
    return _Addr(6, int(a6), int(scope))


def _addr_pton_cidr(s: str, v10: bool) -> tuple[_Addr, int] | int:
    """addr.c addr_pton_cidr: (network, masklen), -1 if not an address, -2 if the mask is wrong."""
    if len(s) >= 64:
        return -1
    text, slash, mask_s = s.partition("/")
    masklen = -1
    if slash:
        if v10:
            m = _strtonum(mask_s, 0, _INT_MAX)
            if m is None:
                return -1
            masklen = m
        else:
            mm = re.match(r"[0-9]+", mask_s)
            if mm is None or mm.end() != len(mask_s) or int(mask_s) > 128:
                return -1
            masklen = int(mask_s)
    addr = _addr_pton(text)
    if addr is None:
        return -1
    bits = 32 if addr.af == 4 else 128
    if masklen < 0:
        masklen = bits
    if masklen > bits:
        return -2
    if addr.value & ((1 << (bits - masklen)) - 1):
        return -2  # host bits set
    return addr, masklen


def _addr_match_list(addr: str | None, patterns: str, v10: bool) -> int:
    """addrmatch.c addr_match_list: 1 match, 0 none, -1 negated match, -2 bad list. With addr None
    the list is only checked."""
    try_addr: _Addr | None = None
    if addr is not None:
        try_addr = _addr_pton(addr)
        if try_addr is None:
            return 0
    ret = 0
    for cp in patterns.split(","):
        neg = cp.startswith("!")
        if neg:
            cp = cp[1:]
        if cp == "":
            return -2
        r = _addr_pton_cidr(cp, v10)
        if r == -2:
            return -2
        if isinstance(r, tuple):
            net, masklen = r
            found = try_addr is not None and _addr_netmatch(try_addr, net, masklen)
        else:
            found = try_addr is not None and addr is not None and _match_pattern(addr, cp)
        if found:
            if neg:
                return -1
            ret = 1
    return ret


def _addr_netmatch(host: _Addr, net: _Addr, masklen: int) -> bool:
    if host.af != net.af:
        return False
    bits = 32 if host.af == 4 else 128
    mask = ((1 << masklen) - 1) << (bits - masklen) if masklen else 0
    return host.value & mask == net.value and host.scope == net.scope


def _match_user_check(pattern: str, v10: bool) -> bool:
    """match.c match_user(NULL, NULL, NULL, pattern): False if 'user@hosts' has a bad address list."""
    at = pattern.rfind("@") if v10 else pattern.find("@")
    if at < 0:
        return True
    return _addr_match_list(None, pattern[at + 1 :], v10) != -2


# ---------------------------------------------------------------------------- the configuration


@dataclass(frozen=True)
class _Line:
    file: str
    num: int
    keyword: str  # as written
    opcode: str
    flags: int
    args: tuple[str, ...]  # argv_split of the rest
    rest: str  # the rest of the line after the keyword (ForceCommand, Match ...)


@dataclass(frozen=True)
class _Include:
    file: str
    num: int
    # one entry per pattern on the line: the files it expanded to (in glob order)
    targets: tuple[tuple[str, ...], ...]


_Item = _Line | _Include


@dataclass(frozen=True)
class Config:
    """A configuration that ``sshd -t`` accepts (see :func:`load`)."""

    version: Version
    main: str
    files: tuple[str, ...]
    """Every file read, in the order sshd first reads it."""
    ignored: tuple[tuple[str, int, str], ...]
    """(file, line, text) of lines sshd skips without a word (a line opening with an unbalanced quote)."""
    _programs: Mapping[str, tuple[_Item, ...]] = field(repr=False)
    _global: Mapping[str, Any] = field(repr=False)


def canonical(keyword: str, version: Version = (9, 2)) -> str:
    """The name ``sshd -T`` prints for ``keyword`` (e.g. challengeresponseauthentication ->
    kbdinteractiveauthentication); KeyError if sshd does not know it."""
    d = _dialect(version)
    op, _flags = d.keywords[_lower(keyword)]
    if op.startswith("!"):
        raise KeyError(keyword)
    return d.printed[op]


def _read_lines(text: str) -> list[str]:
    """load_server_config: drop leading spaces/TABs/CRs of every line; a NUL ends what C sees of a
    line, its newline included (so the next line joins it)."""
    pieces = text.split("\n")
    if "\0" not in text:
        return [p.lstrip(" \t\r") for p in pieces]
    buf: list[str] = []
    for k, p in enumerate(pieces):
        p = p.lstrip(" \t\r")
        if "\0" in p:
            buf.append(p.split("\0", 1)[0])
        else:
            buf.append(p + ("\n" if k < len(pieces) - 1 else ""))
    return "".join(buf).split("\n")


class _Glob:
    """glob(3) (flags 0: sorted, no brace or tilde expansion, a leading '.' needs an explicit '.')
    over the paths of ``files`` and the directories they imply."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = files
        entries: dict[str, set[str]] = {}
        self.dirs: set[str] = {"/"}
        for path in files:
            parts = path.split("/")
            for k in range(1, len(parts)):
                parent = "/".join(parts[:k]) or "/"
                entries.setdefault(parent, set()).add(parts[k])
                if k < len(parts) - 1:
                    self.dirs.add("/".join(parts[: k + 1]))
        self.entries = entries

    @staticmethod
    def _magic(s: str) -> bool:
        return any(c in s for c in "*?[")

    def __call__(self, pattern: str) -> list[str]:
        if not pattern.startswith("/"):
            return []  # sshd prefixes relative paths with /etc/ssh; '~' is not expanded without GLOB_TILDE
        results = [""]
        parts = pattern.split("/")[1:]
        for k, part in enumerate(parts):
            last = k == len(parts) - 1
            nxt: list[str] = []
            for base in results:
                parent = base or "/"
                if not self._magic(part):
                    name = part.replace("\\", "") if "\\" in part else part
                    cand = f"{base}/{name}"
                    if cand in self.files or cand in self.dirs:
                        nxt.append(cand)
                    continue
                rx = _glob_regex(part)
                for name in sorted(self.entries.get(parent, ())):
                    if rx.fullmatch(name) and not (name.startswith(".") and not part.startswith(".")):
                        cand = f"{base}/{name}"
                        if last or cand in self.dirs:
                            nxt.append(cand)
            results = nxt
        return sorted(results)


def _glob_regex(part: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "\\" and i + 1 < len(part):
            out.append(re.escape(part[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < len(part) and part[j] in "!^":
                j += 1
            if j < len(part) and part[j] == "]":
                j += 1
            j = part.find("]", j)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = part[i + 1 : j]
                neg = body[:1] in ("!", "^")
                if neg:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("[", "\\[")
                if body.startswith("]"):
                    body = "\\" + body
                out.append(f"[{'^' if neg else ''}{body}]")
                i = j + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.S)


class _Loader:
    """Tokenises each file once and resolves its Include lines (the glob results are fixed)."""

    def __init__(self, files: Mapping[str, str], dialect: _Dialect) -> None:
        self.files = files
        self.d = dialect
        self.glob = _Glob(files)
        self.programs: dict[str, tuple[_Item, ...]] = {}
        self.order: list[str] = []
        self.ignored: list[tuple[str, int, str]] = []
        self.bytes = 0

    def program(self, path: str, depth: int) -> tuple[_Item, ...]:
        if path in self.programs:
            return self.programs[path]
        if depth > MAX_DEPTH:
            raise ConfigError(path, 0, "Too many recursive configuration includes")
        text = self.files.get(path)
        if text is None:
            if path in self.glob.dirs:
                text = ""  # glob matched a directory: fopen succeeds, reading it yields nothing
            else:
                raise ConfigError(path, 0, "No such file or directory")
        self.bytes += len(text)
        if self.bytes > MAX_BYTES:
            raise ConfigError(path, 0, f"configuration larger than {MAX_BYTES} bytes: refusing to judge it")
        self.order.append(path)
        self.programs[path] = ()  # a file including itself is caught by the depth limit when replayed
        items: list[_Item] = []
        for num, raw in enumerate(_read_lines(text), start=1):
            if not raw or raw[0] == "#":  # what strdelim makes of these: nothing, or a comment
                continue
            if len(items) >= MAX_LINES:
                raise ConfigError(path, num, f"more than {MAX_LINES} directives: refusing to judge it")
            item = self._line(path, num, raw)
            if item is None:
                continue
            if item.opcode == "include":
                items.append(self._include(item, depth))
            else:
                items.append(item)
        self.programs[path] = tuple(items)
        return self.programs[path]

    def _line(self, path: str, num: int, line: str) -> _Line | None:
        # Trailing whitespace and form feeds; C never looks at the first character here.
        end = len(line)
        while end > 1 and line[end - 1] in _WS + "\f":
            end -= 1
        line = line[:end]
        keyword, rest = _strdelim(line)
        if keyword == "":  # the line starts with '=' or '""'
            keyword, rest = _strdelim(rest)
        if keyword is None:  # an unbalanced quote
            self.ignored.append((path, num, line))
            return None
        if not keyword or keyword.startswith("#"):
            return None
        if rest is None or rest == "":
            raise ConfigError(path, num, f'no argument after keyword "{keyword}"')
        entry = self.d.keywords.get(_lower(keyword))
        if entry is None:
            raise ConfigError(path, num, f"Bad configuration option: {keyword}")
        args = _argv_split(rest)
        if args is None:
            raise ConfigError(path, num, "invalid quotes")
        return _Line(path, num, keyword, entry[0], entry[1], tuple(args), rest)

    def _include(self, line: _Line, depth: int) -> _Include:
        targets: list[tuple[str, ...]] = []
        if not line.args:
            raise ConfigError(line.file, line.num, f"{line.keyword} missing filename argument")
        for arg in line.args:
            if arg == "":
                raise ConfigError(line.file, line.num, f"keyword {line.keyword} empty argument")
            pattern = arg if arg.startswith(("/", "~")) else f"{SSHDIR}/{arg}"
            if pattern.startswith("~"):
                raise Undecidable(line.file, line.num, f"Include {arg!r}: glob(3) without GLOB_TILDE")
            found = tuple(self.glob(pattern))
            for path in found:
                self.program(path, depth + 1)
            targets.append(found)
        return _Include(line.file, line.num, tuple(targets))


def load(files: Mapping[str, str], main: str, version: Version = (9, 2)) -> Config:
    """Parse ``main`` (a key of ``files``) as sshd ``version`` would with ``sshd -t -f main``.

    Raises :class:`ConfigError` where sshd refuses the configuration, :class:`Undecidable` where its
    answer depends on the running system, ValueError for an unknown version."""
    d = _dialect(version)
    loader = _Loader(files, d)
    loader.program(main, 0)
    cfg = Config(version, main, tuple(loader.order), tuple(loader.ignored), dict(loader.programs), {})
    opts = _Parser(cfg, d, None).run()
    try:
        _fill_defaults(opts, d)
    except ConfigError as e:
        if e.file:
            raise
        raise ConfigError(main, 0, e.reason) from None
    _sanity(opts, d, main)
    return Config(version, main, tuple(loader.order), tuple(loader.ignored), dict(loader.programs), opts)


# ------------------------------------------------------------------------------ the two passes


class _State:
    """*activep and the line budget, shared by a file and the files it includes."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.lines = 0


_ARRAYS = (
    "ports", "listen", "host_key_files", "host_cert_files", "allow_users", "deny_users", "allow_groups",
    "deny_groups", "accept_env", "setenv", "authorized_keys_files", "auth_methods", "log_verbose",
    "channel_timeouts", "permitted_opens", "permitted_listens", "subsystems",
)


def _new_options() -> dict[str, Any]:
    """initialize_server_options: every scalar unset (absent), every list empty."""
    return {name: [] for name in _ARRAYS}


class _Parser:
    """process_server_config_line_depth over a loaded configuration: pass 1 (``ci`` None, global
    section active) or pass 2 (``ci`` given, only matching Match blocks active)."""

    def __init__(self, cfg: Config, d: _Dialect, ci: _CI | None) -> None:
        self.cfg = cfg
        self.d = d
        self.ci = ci
        self.o = _new_options()

    def run(self) -> dict[str, Any]:
        state = _State(active=self.ci is None)
        flags = [_MATCH_ONLY if self.ci is not None else 0]
        self._file(self.cfg.main, state, flags, 0)
        return self.o

    def _file(self, path: str, state: _State, flags: list[int], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ConfigError(path, 0, "Too many recursive configuration includes")
        for item in self.cfg._programs[path]:
            state.lines += 1
            if state.lines > MAX_LINES:
                raise ConfigError(path, item.num, f"more than {MAX_LINES} lines after Include expansion: refusing to judge it")
            if isinstance(item, _Include):
                self._include(item, state, flags, depth)
            else:
                self._line(item, state, flags)

    def _include(self, inc: _Include, state: _State, flags: list[int], depth: int) -> None:
        for targets in inc.targets:
            oactive = state.active
            for path in targets:
                sub = _MATCH_ONLY if flags[0] & _MATCH_ONLY else (0 if oactive else _NEVERMATCH)
                self._file(path, state, [sub], depth + 1)
                state.active = oactive

    # -- helpers

    def _fail(self, ln: _Line, reason: str) -> ConfigError:
        return ConfigError(ln.file, ln.num, reason)

    def _set(self, name: str, value: Any, active: bool) -> None:
        if active and self.o.get(name) is None:
            self.o[name] = value

    def _line(self, ln: _Line, state: _State, flags: list[int]) -> None:
        if not state.active and not ln.flags & _M:
            if self.ci is None:
                raise self._fail(ln, f"Directive '{ln.keyword}' is not allowed within a Match block")
            return  # pass 2: a global directive, already processed
        handler = getattr(self, "_op_" + ln.opcode.lstrip("!"))
        av = list(ln.args)
        leftover = handler(ln, av, state, flags)
        if leftover:
            raise self._fail(ln, f"keyword {ln.keyword} extra arguments at end of line")

    # Each handler consumes the words it uses from av and returns what is left (extra arguments are
    # an error), as the C code does with argv_next.

    def _op_deprecated(self, ln: _Line, av: list[str], state: _State, flags: list[int]) -> list[str]:
        return []

    _op_unsupported = _op_deprecated
    _op_ignore = _op_deprecated

    def _flag(self, ln: _Line, av: list[str], state: _State, name: str, table: Mapping[str, Any]) -> list[str]:
        arg = av.pop(0) if av else None
        if arg is None or arg == "":
            raise self._fail(ln, "missing argument.")
        value = table.get(_lower(arg))
        if value is None:
            raise self._fail(ln, f'unsupported option "{arg}".')
        self._set(name, value, state.active)
        return av

    def _int(self, ln: _Line, av: list[str], state: _State, name: str) -> list[str]:
        arg = av.pop(0) if av else None
        value, err = _atoi_err(arg)
        if err:
            raise self._fail(ln, f"{ln.keyword} integer value {err}.")
        self._set(name, value, state.active)
        return av

    def _time(self, ln: _Line, av: list[str], state: _State, name: str) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, "missing time value.")
        value = _convtime(arg)
        if value == -1:
            raise self._fail(ln, "invalid time value.")
        self._set(name, value, state.active)
        return av

    def _path(self, arg: str, ln: _Line) -> str:
        """derelativise_path: tilde expansion (the user database: undecidable) and the daemon's
        working directory, which is / when init starts it."""
        if _lower(arg) == "none":
            return "none"
        if arg.startswith("~"):
            raise Undecidable(ln.file, ln.num, f"{ln.keyword} {arg!r}: '~' needs the user database")
        return arg if arg.startswith("/") else "//" + arg  # getcwd() "/" + "/" + path

    def _filename(self, ln: _Line, av: list[str], state: _State, name: str) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, "missing file name.")
        if state.active and self.o.get(name) is None:
            self.o[name] = self._path(arg, ln)
        return av

    def _string(self, ln: _Line, av: list[str], state: _State, name: str, what: str = "argument") -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"{ln.keyword} missing {what}.")
        self._set(name, arg, state.active)
        return av

    def _tilde(self, arg: str, ln: _Line) -> str:
        if arg.startswith("~"):
            raise Undecidable(ln.file, ln.num, f"{ln.keyword} {arg!r}: '~' needs the user database")
        return arg

    # -- simple flags and choices

    _FLAG = {"yes": 1, "no": 0}

    def _op_usepam(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        return self._flag(ln, av, s, ln.opcode, self._FLAG)

    (
        _op_ignoreuserknownhosts, _op_hostbasedauthentication, _op_hostbasedusesnamefrompacketonly,
        _op_pubkeyauthentication, _op_kerberosauthentication, _op_kerberosorlocalpasswd, _op_kerberosticketcleanup,
        _op_gssapiauthentication, _op_gssapicleanupcredentials, _op_gssapistrictacceptorcheck, _op_gssapikeyexchange,
        _op_gssapistorecredentialsonrekey, _op_passwordauthentication, _op_kbdinteractiveauthentication,
        _op_printmotd, _op_printlastlog, _op_x11forwarding, _op_x11uselocalhost, _op_permittty, _op_permituserrc,
        _op_strictmodes, _op_tcpkeepalive, _op_permitemptypasswords, _op_usedns, _op_allowagentforwarding,
        _op_disableforwarding, _op_streamlocalbindunlink, _op_exposeauthinfo, _op_debianbanner, _op_refuseconnection,
    ) = (_op_usepam,) * 30

    _CHOICES: dict[str, dict[str, str]] = {
        "addressfamily": {"inet": "inet", "inet6": "inet6", "any": "any"},
        "permitrootlogin": {"without-password": "without-password", "prohibit-password": "without-password",
                            "forced-commands-only": "forced-commands-only", "yes": "yes", "no": "no"},
        "ignorerhosts": {"yes": "yes", "no": "no", "shosts-only": "shosts-only"},
        "compression": {"yes": "yes", "delayed": "yes", "no": "no"},
        "gatewayports": {"clientspecified": "clientspecified", "yes": "yes", "no": "no"},
        "allowtcpforwarding": {"yes": "yes", "all": "yes", "no": "no", "remote": "remote", "local": "local"},
    }
    _CHOICES["allowstreamlocalforwarding"] = _CHOICES["allowtcpforwarding"]

    def _op_addressfamily(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        return self._flag(ln, av, s, ln.opcode, self._CHOICES[ln.opcode])

    _op_permitrootlogin = _op_ignorerhosts = _op_compression = _op_gatewayports = _op_addressfamily
    _op_allowtcpforwarding = _op_allowstreamlocalforwarding = _op_addressfamily

    def _op_x11displayoffset(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        return self._int(ln, av, s, ln.opcode)

    _op_maxauthtries = _op_maxsessions = _op_clientalivecountmax = _op_requiredrsasize = _op_x11displayoffset

    def _op_logingracetime(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        return self._time(ln, av, s, ln.opcode)

    _op_clientaliveinterval = _op_logingracetime

    def _op_unusedconnectiontimeout(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        if av and _lower(av[0]) == "none":
            av.pop(0)
            if s.active:
                self.o[ln.opcode] = 0
            return av
        return self._time(ln, av, s, ln.opcode)

    def _op_pidfile(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        return self._filename(ln, av, s, ln.opcode)

    _op_modulifile = _op_xauthlocation = _op_banner = _op_trustedusercakeys = _op_revokedkeys = _op_pidfile
    _op_sshdsessionpath = _op_sshdauthpath = _op_pidfile

    def _op_hostkeyagent(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, "missing socket name.")
        if s.active and self.o.get(ln.opcode) is None:
            self.o[ln.opcode] = arg if arg == "SSH_AUTH_SOCK" else self._path(arg, ln)
        return av

    def _op_securitykeyprovider(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        if s.active and self.o.get(ln.opcode) is None:
            self.o[ln.opcode] = arg if _lower(arg) == "internal" else self._path(arg, ln)
        return av

    def _op_chrootdirectory(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        return self._string(ln, av, s, ln.opcode)

    def _op_authorizedkeyscommanduser(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"missing {ln.keyword} argument.")
        self._set(ln.opcode, arg, s.active)
        return av

    _op_authorizedprincipalscommanduser = _op_authorizedkeyscommanduser

    def _op_pamservicename(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, "missing argument.")
        self._set(ln.opcode, arg, s.active)
        return av

    def _op_authorizedprincipalsfile(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        if s.active and self.o.get(ln.opcode) is None:
            self.o[ln.opcode] = self._tilde(arg, ln)
        return av

    def _op_rdomain(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        # Debian builds without routing-domain support on Linux.
        raise self._fail(ln, "setting RDomain not supported on this platform.")

    # -- algorithms

    def _names_valid(self, names: str, kind: str) -> bool:
        if names == "":
            return False
        for p in names.split(","):
            if p == "":
                break  # strsep loops stop at the first empty name
            if kind == "cipher" and p not in self.d.ciphers:
                return False
            if kind == "mac" and p not in _MACS:
                return False
            if kind == "kex" and p not in self.d.kex and not any(p.startswith(g) for g in _GSS_KEX):
                return False
            if kind == "gsskex" and not (p.startswith("gss-") and any(p.startswith(g) for g in _GSS_KEX)):
                return False
            if kind in ("key", "plainkey") and not self._keytype_valid(p, kind == "plainkey"):
                return False
        return True

    def _keytype_valid(self, p: str, plain_only: bool) -> bool:
        for name, short, cert, _sig in self.d.keytypes:
            if p == name or (not cert and _lower(short) == _lower(p)):
                return not (plain_only and cert)
        return any(_match_pattern_list(name, p) != 0 for name, _s, _c, _o in self.d.keytypes)

    def _algos(self, ln: _Line, av: list[str], s: _State, name: str, kind: str, msg: str) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, "Missing argument." if kind in ("key", "plainkey") else f"{ln.keyword} missing argument.")
        if not arg.startswith("-") and not self._names_valid(arg[1:] if arg[:1] in "+^" else arg, kind):
            raise self._fail(ln, msg.format(arg))
        if kind in ("key", "plainkey"):
            self._set(name, arg, s.active)
        elif self.o.get(name) is None:  # Ciphers, MACs, KexAlgorithms ignore *activep (global only)
            self.o[name] = arg
        return av

    def _op_ciphers(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        return self._algos(ln, av, s, "ciphers", "cipher", "Bad SSH2 cipher spec '{}'.")

    def _op_macs(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        return self._algos(ln, av, s, "macs", "mac", "Bad SSH2 mac spec '{}'.")

    def _op_kexalgorithms(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        return self._algos(ln, av, s, "kexalgorithms", "kex", "Bad SSH2 KexAlgorithms '{}'.")

    def _op_hostkeyalgorithms(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        # 10.x: CA signature algorithms must be plain key types, not certificates.
        kind = "plainkey" if self.d.v10 and ln.opcode == "casignaturealgorithms" else "key"
        return self._algos(ln, av, s, ln.opcode, kind, "Bad key types '{}'.")

    _op_hostbasedacceptedalgorithms = _op_pubkeyacceptedalgorithms = _op_casignaturealgorithms = _op_hostkeyalgorithms

    def _op_gssapikexalgorithms(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, "Missing argument.")
        if not self._names_valid(arg, "gsskex"):
            raise self._fail(ln, f"Bad GSSAPI KexAlgorithms '{arg}'.")
        self._set(ln.opcode, arg, s.active)
        return av

    # -- lists

    def _op_port(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        if len(self.o["ports"]) >= MAX_PORTS:
            raise self._fail(ln, "too many ports.")
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, "missing port number.")
        port = _a2port(arg, ln)
        if port <= 0:
            raise self._fail(ln, "Badly formatted port number.")
        self.o["ports"].append(port)
        return av

    def _op_listenaddress(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, "missing address")
        port = 0
        if "[" not in arg and arg.count(":") >= 2:
            host = arg
        else:
            parsed = _hpdelim(arg)
            if parsed is None:
                raise self._fail(ln, "bad address:port usage")
            host, port_s = parsed
            host = _cleanhostname(host)
            if port_s is not None:
                port = _a2port(port_s, ln)
                if port <= 0:
                    raise self._fail(ln, "bad port number")
        if av:
            if av[0] != "rdomain" or len(av) < 2:
                raise self._fail(ln, "bad ListenAddress syntax")
            raise self._fail(ln, "bad routing domain")
        self.o["listen"].append((host, port, ln))
        return av

    def _op_hostkey(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, "missing file name.")
        if s.active:
            self.o["host_key_files"].append(self._path(arg, ln))
        return av

    def _op_hostcertificate(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, "missing file name.")
        if s.active:
            self.o["host_cert_files"].append(self._path(arg, ln))
        return av

    def _op_allowusers(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        field_ = {"allowusers": "allow_users", "denyusers": "deny_users", "allowgroups": "allow_groups",
                  "denygroups": "deny_groups"}[ln.opcode]
        users = ln.opcode.endswith("users")
        for arg in av:
            if arg == "" or (users and not _match_user_check(arg, self.d.v10)):
                if users:
                    raise self._fail(ln, f'invalid {ln.keyword} pattern: "{arg}"')
                raise self._fail(ln, f"empty {ln.keyword} pattern")
            if s.active:
                self.o[field_].append(arg)
        if not av and self.d.v10:
            raise self._fail(ln, f"no {ln.keyword} specified")
        return []

    _op_denyusers = _op_allowgroups = _op_denygroups = _op_allowusers

    def _op_acceptenv(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        for arg in av:
            if arg == "" or "=" in arg:
                raise self._fail(ln, "Invalid environment name.")
            if s.active:
                self.o["accept_env"].append(arg)
        if not av and self.d.v10:
            raise self._fail(ln, f"no {ln.keyword} specified")
        return []

    def _op_setenv(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        first = not self.o["setenv"]
        strs: list[str] = []
        for arg in av:
            if arg == "" or "=" not in arg:
                raise self._fail(ln, "Invalid environment.")
            target = strs if self.d.v10 else self.o["setenv"]
            if not self.d.v10 and (not s.active or not first):
                continue
            name = arg.split("=", 1)[0]
            if any(e.startswith(name + "=") for e in target):
                continue  # a duplicate name: the first one wins
            target.append(arg)
        if self.d.v10:
            if not strs:
                raise self._fail(ln, f"no {ln.keyword} specified")
            if first and s.active:
                self.o["setenv"] = strs
        return []

    def _op_authorizedkeysfile(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        first = not self.o["authorized_keys_files"]
        strs = []
        for arg in av:
            if arg == "":
                raise self._fail(ln, f"keyword {ln.keyword} empty argument")
            strs.append(self._tilde(arg, ln))
        if self.d.v10 and not strs:
            raise self._fail(ln, f"no {ln.keyword} specified")
        if first and s.active:
            self.o["authorized_keys_files"] = strs
        return []

    def _op_authenticationmethods(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        first = not self.o["auth_methods"]
        strs: list[str] = []
        seen_any = False
        for arg in av:
            prior = len(strs) if self.d.v10 else len(self.o["auth_methods"])
            if arg == "any":
                if prior > 0:
                    raise self._fail(ln, f'"any" must appear alone in {ln.keyword}')
                seen_any = True
            elif seen_any:
                raise self._fail(ln, f'"any" must appear alone in {ln.keyword}')
            elif not _methods_valid(self.d, arg, None):
                raise self._fail(ln, f"invalid {ln.keyword} method list.")
            if self.d.v10:
                strs.append(arg)
            else:
                strs.append(arg)
                if first and s.active:
                    self.o["auth_methods"].append(arg)
        if not strs:
            raise self._fail(ln, f"no {ln.keyword} specified")
        if self.d.v10 and first and s.active:
            self.o["auth_methods"] = strs
        return []

    def _op_logverbose(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        first = not self.o["log_verbose"]
        for k, arg in enumerate(av):
            if arg == "":
                raise self._fail(ln, f"keyword {ln.keyword} empty argument")
            if _lower(arg) == "none" and (k > 0 or len(av) > 1):
                raise self._fail(ln, f'keyword {ln.keyword} "none" argument must appear alone.')
        if self.d.v10 and not av:
            raise self._fail(ln, f"no {ln.keyword} specified")
        if first and s.active:
            self.o["log_verbose"] = list(av)
        return []

    def _op_channeltimeout(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        first = not self.o["channel_timeouts"]
        for k, arg in enumerate(av):
            if _lower(arg) == "none":
                if k > 0 or len(av) > 1:
                    raise self._fail(ln, f'keyword {ln.keyword} "none" argument must appear alone.')
            else:
                typ, eq, secs = arg.partition("=")
                if not eq or typ == "" or _convtime(secs) < 0:
                    raise self._fail(ln, f"invalid channel timeout {arg}")
        if self.d.v10 and not av:
            raise self._fail(ln, f"no {ln.keyword} specified")
        if first and s.active:
            self.o["channel_timeouts"] = list(av)
        return []

    def _op_permitopen(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        field_ = "permitted_listens" if ln.opcode == "permitlisten" else "permitted_opens"
        first = not self.o[field_]
        if not av or (av[0] == "" and not self.d.v10):
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        strs: list[str] = []
        rest = list(av)
        if not self.d.v10 and av[0] in ("any", "none"):
            if s.active and first:
                self.o[field_] = [av[0]]
            return av[1:]
        while rest:
            arg = rest.pop(0)
            if arg == "" and not self.d.v10:
                break
            if self.d.v10 and arg in ("any", "none"):
                if strs:
                    raise self._fail(ln, f"{arg} must appear alone on a {ln.keyword} line.")
                strs.append(arg)
                continue
            port_s: str | None
            if ln.opcode == "permitlisten" and ":" not in arg:
                arg2, port_s = "*:" + arg, arg
            else:
                arg2 = arg
                parsed = _hpdelim(arg)
                if parsed is None:
                    raise self._fail(ln, f"{ln.keyword} missing host")
                port_s = parsed[1]
            if port_s is None or (port_s != "*" and _a2port(port_s, ln) <= 0):
                raise self._fail(ln, f"{ln.keyword} bad port number")
            strs.append(arg2)
        if self.d.v10 and not strs:
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        if s.active and first:
            self.o[field_] = strs
        return rest

    _op_permitlisten = _op_permitopen

    def _op_subsystem(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        if not self.d.v10 and len(self.o["subsystems"]) >= MAX_SUBSYSTEMS:
            raise self._fail(ln, "too many subsystems defined.")
        if not av or av[0] == "":
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        name, rest = av[0], av[1:]
        if not s.active:
            return []
        if any(sub[0] == name for sub in self.o["subsystems"]):
            if not self.d.v10:
                raise self._fail(ln, f"Subsystem '{name}' already defined.")
            return []  # 10.x: the first definition wins
        if not rest or rest[0] == "":
            raise self._fail(ln, "Missing subsystem command.")
        if self.d.v10:
            tail = _argv_assemble(rest[1:])
            args = _argv_assemble(rest[:1]) + (" " + tail if tail else "")
        else:
            args = " ".join(rest)
        self.o["subsystems"].append((name, rest[0], args))
        return []

    # -- special cases

    def _op_pubkeyauthoptions(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        value = 0
        for arg in av:
            low = _lower(arg)
            if low == "none":
                continue
            if low == "touch-required":
                value |= 1
            elif low == "verify-required":
                value |= 2
            else:
                raise self._fail(ln, f"unsupported {ln.keyword} option {arg}")
        self._set(ln.opcode, value, s.active)
        return []

    def _op_permituserenvironment(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        value: str = {"yes": "yes", "no": "no"}.get(arg, arg)  # case-sensitive: anything else is a pattern list
        self._set(ln.opcode, value, s.active)
        return av

    def _op_rekeylimit(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        if arg == "default":
            val = 0
        else:
            scaled = _scan_scaled(arg)
            if scaled is None:
                raise self._fail(ln, f"Bad {ln.keyword} number '{arg}'")
            if scaled != 0 and scaled < 16:
                raise self._fail(ln, f"{ln.keyword} too small")
            val = scaled
        self._set("rekeylimit", val, s.active)
        if av:
            if av[0] == "none":
                return av[1:]
            return self._time(ln, av, s, "rekeyinterval")
        return av

    def _op_syslogfacility(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        names = ("DAEMON", "USER", "AUTH", "AUTHPRIV", *(f"LOCAL{k}" for k in range(8)))
        value = next((n for n in names if arg is not None and _lower(n) == _lower(arg)), None)
        if value is None:
            raise self._fail(ln, f"unsupported log facility '{arg if arg is not None else '<NONE>'}'")
        if self.o.get("syslogfacility") is None:  # sshd ignores *activep here (a global keyword)
            self.o["syslogfacility"] = value
        return av

    _LOGLEVELS = {"silent": "QUIET", "quiet": "QUIET", "fatal": "FATAL", "error": "ERROR", "info": "INFO",
                  "verbose": "VERBOSE", "debug": "DEBUG1", "debug1": "DEBUG1", "debug2": "DEBUG2",
                  "debug3": "DEBUG3"}

    def _op_loglevel(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        value = self._LOGLEVELS.get(_lower(arg)) if arg is not None else None
        if value is None:
            raise self._fail(ln, f"unsupported log level '{arg if arg is not None else '<NONE>'}'")
        self._set("loglevel", value, s.active)
        return av

    def _op_maxstartups(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        nums = _sscanf_ints(arg, 3)
        bad = self._fail(ln, f"Invalid {ln.keyword} spec.")
        if len(nums) == 3:
            begin, rate, full = nums
            if begin > full or rate > 100 or rate < 1:
                raise bad
        elif len(nums) == 1:
            begin, rate, full = nums[0], -1, nums[0]
        else:
            raise bad
        if full <= 0 or begin <= 0:
            raise bad
        if self.d.version >= (10, 1):  # first value wins; a bare number leaves begin:rate at their defaults
            if s.active and self.o.get("maxstartups") is None:
                self.o["maxstartups"] = (begin if rate != -1 else -1, rate, full)
        else:  # sshd writes straight into its options: the last line wins, a bare number keeps the rate
            prev = self.o.get("maxstartups") or (-1, -1, -1)
            self.o["maxstartups"] = (begin, rate if rate != -1 else prev[1], full)
        return av

    def _op_persourcenetblocksize(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        nums = _sscanf_ints(arg, 2, sep=":")
        ok = len(nums) in (1, 2) and 0 <= nums[0] <= 32 and (len(nums) == 1 or 0 <= nums[1] <= 128)
        if not ok:
            raise self._fail(ln, f"Invalid {ln.keyword} spec.")
        if s.active and (self.d.version < (10, 1) or self.o.get("persourcenetblocksize") is None):
            if len(nums) == 1:
                raise Undecidable(ln.file, ln.num, f"{ln.keyword} {arg}: sshd stores an uninitialised IPv6 prefix length")
            self.o["persourcenetblocksize"] = (nums[0], nums[1])
        return av

    def _op_persourcemaxstartups(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        if arg == "none":
            value = _INT_MAX
        else:
            value, err = _atoi_err(arg)
            if err:
                raise self._fail(ln, f"{ln.keyword} integer value {err}.")
        if s.active and (self.d.version < (10, 1) or self.o.get("persourcemaxstartups") is None):
            self.o["persourcemaxstartups"] = value
        return av

    def _op_persourcepenaltyexemptlist(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, "missing argument.")
        if _addr_match_list(None, arg, True) != 0:
            raise self._fail(ln, f"keyword {ln.keyword} invalid address argument.")
        self._set(ln.opcode, arg, s.active)
        return av

    _PENALTY_KEYS = ("crash", "authfail", "noauth", "grace-exceeded", "refuseconnection", "max", "min")

    def _op_persourcepenalties(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        pen = self.o.setdefault("persourcepenalties", {})
        if not av:
            raise self._fail(ln, f"no {ln.keyword} specified")
        for k, arg in enumerate(av):
            low = _lower(arg)
            if low in ("no", "yes"):
                if k < len(av) - 1:
                    raise self._fail(ln, f'keyword {ln.keyword} "{arg}" argument must appear alone.')
                if s.active and "enabled" not in pen:
                    pen["enabled"] = 1 if low == "yes" else 0
                continue
            key, sep, val = arg.partition(":")
            if not sep:
                raise self._fail(ln, f"unsupported {ln.keyword} keyword {arg}")
            if key in self._PENALTY_KEYS:
                value = _convtime(val)
                if value == -1:
                    raise self._fail(ln, f"invalid {ln.keyword} time value.")
            elif key in ("max-sources4", "max-sources6"):
                value, err = _atoi_err(val)
                if err:
                    raise self._fail(ln, f"{ln.keyword} value {err}.")
            elif key in ("overflow", "overflow6") and val in ("deny-all", "permissive"):
                value = val  # type: ignore[assignment]
            else:
                raise self._fail(ln, f"unsupported {ln.keyword} keyword {arg}")
            if s.active and key not in pen:
                pen[key] = value
                pen["enabled"] = 1
        return []

    def _op_forcecommand(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        self._set("forcecommand", ln.rest.lstrip(_WS), s.active)
        return []

    def _op_versionaddendum(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        text = ln.rest.lstrip(_WS)
        if "\r" in text:
            raise self._fail(ln, f"Invalid {ln.keyword} argument")
        # sshd means to cut a '#' comment here, but searches the line from the keyword, which
        # strdelim has already NUL-terminated: the comment stays part of the value.
        if s.active and self.o.get("versionaddendum") is None:
            self.o["versionaddendum"] = "" if _lower(text) == "none" else text
        return []

    def _op_authorizedkeyscommand(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        text = ln.rest.lstrip(_WS)
        if not text.startswith("/") and _lower(text) != "none":
            raise self._fail(ln, f"{ln.keyword} must be an absolute path")
        # 9.2 tests AuthorizedKeysCommand even for AuthorizedPrincipalsCommand (a bug fixed in 9.x).
        guard = ln.opcode if self.d.v10 else "authorizedkeyscommand"
        if s.active and self.o.get(guard) is None:
            self.o[ln.opcode] = text
        return []

    _op_authorizedprincipalscommand = _op_authorizedkeyscommand

    def _op_streamlocalbindmask(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        m = re.match(r"[ \t\n\v\f\r]*([+-]?[0-7]+)", arg)
        if m is None or not 0 <= int(m.group(1), 8) <= 0o777:
            raise self._fail(ln, f"Invalid {ln.keyword}.")
        if s.active:
            self.o["streamlocalbindmask"] = int(m.group(1), 8)
        return av

    def _op_fingerprinthash(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        value = next((n for n in ("MD5", "SHA1", "SHA256", "SHA384", "SHA512") if _lower(n) == _lower(arg)), None)
        if value is None:
            raise self._fail(ln, f'Invalid {ln.keyword} algorithm "{arg}".')
        if s.active:
            self.o["fingerprinthash"] = value
        return av

    def _op_permittunnel(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        if arg not in ("no", "point-to-point", "ethernet", "yes"):  # strcmp: case matters
            raise self._fail(ln, f"bad {ln.keyword} argument {arg}")
        self._set("permittunnel", arg, s.active)
        return av

    def _op_ipqos(self, ln: _Line, av: list[str], s: _State, f: list[int]) -> list[str]:
        arg = av.pop(0) if av else None
        if not arg:
            raise self._fail(ln, f"{ln.keyword} missing argument.")
        for a in [arg, *av[:1]]:
            if not _ipqos_valid(a):
                raise self._fail(ln, f"Bad {ln.keyword} value: {a}")
        return av[1:]

    # -- structure

    def _op_match(self, ln: _Line, av: list[str], state: _State, flags: list[int]) -> list[str]:
        ci = None if flags[0] & _NEVERMATCH else self.ci
        value = self._match_line(ln, ci)
        state.active = False if flags[0] & _NEVERMATCH else value
        flags[0] &= ~_MATCH_ONLY
        return []

    def _match_line(self, ln: _Line, ci: _CI | None) -> bool:
        """match_cfg_line: all criteria on the line must hold. Pass 1 (ci None) only checks the
        syntax (and 'all' matches); sshd -T's blank connection matches nothing but 'all'."""
        words = self._match_words(ln)
        result = True
        attributes = 0
        while words:
            attrib = words.pop(0)
            if attrib.startswith("#"):
                break
            attributes += 1
            low = _lower(attrib)
            if low == "all":
                if attributes > 1 or (words and words[0] != "" and not words[0].startswith("#")):
                    raise self._fail(ln, "'all' cannot be combined with other Match attributes")
                return True
            if self.d.v10 and low == "invalid-user":
                if ci is None or not ci.invalid_user:
                    result = False
                continue
            arg: str | None
            key, eq, val = attrib.partition("=")
            if self.d.v10 and eq and _lower(key) in _MATCH_ATTRS:
                low, arg = _lower(key), val
            else:
                arg = words.pop(0) if words else None
            if arg is None or arg == "" or arg.startswith("#"):
                raise self._fail(ln, f"Missing Match criteria for {attrib}")
            if not self._criterion(ln, low, attrib, arg, ci):
                result = False
        if attributes == 0:
            raise self._fail(ln, "One or more attributes required for Match")
        return result

    def _criterion(self, ln: _Line, low: str, attrib: str, arg: str, ci: _CI | None) -> bool:
        if low in ("user", "group", "host"):
            value = None if ci is None else ci.user if low != "host" else ci.host
            if value is None:
                if ci is not None and ci.strict:  # only host can be missing from a Connection
                    raise Undecidable(ln.file, ln.num, "Match Host: the client's host name is not known (pass Connection.host)")
                return False
            if low == "user":
                return _match_pattern_list(value, arg) == 1
            if low == "host":
                return _match_hostname(value, arg) == 1
            if ci is None or ci.groups is None:
                if ci is None or not ci.strict:
                    return False
                raise Undecidable(ln.file, ln.num, "Match Group: the user's groups are not known (pass Connection.groups)")
            return _groups_match(ci.groups, arg)
        if low in ("address", "localaddress"):
            target = None if ci is None else ci.addr if low == "address" else ci.laddr
            try:
                r = _addr_match_list(target, arg, self.d.v10)
            except Undecidable as e:
                raise Undecidable(ln.file, ln.num, e.reason) from None
            if target is None:
                if r != 0:
                    raise self._fail(ln, f"Invalid Match {low} argument '{arg}'")
                return False
            if r == -2:
                raise self._fail(ln, "Bad Match condition")
            return r == 1
        if low == "localport":
            port = _a2port(arg, ln)
            if port == -1:
                raise self._fail(ln, f"Invalid LocalPort '{arg}' on Match line")
            if ci is None:
                return False
            if ci.lport == 0:
                # plain sshd -T: its blank connection has lport 0, which sshd treats as missing
                raise self._fail(ln, "'Match LocalPort' in configuration but 'lport' not in connection test specification.")
            return port == ci.lport
        if low == "rdomain":
            return ci is not None and ci.rdomain is not None and _match_pattern_list(ci.rdomain, arg) == 1
        if self.d.v10 and low == "version":
            raise Undecidable(ln.file, ln.num, "Match Version compares the package's exact release string")
        raise self._fail(ln, f"Unsupported Match attribute {attrib}")

    def _match_words(self, ln: _Line) -> list[str]:
        """10.x reads the Match words with argv_split; 9.2 with strdelim (double quotes only, '='
        separates, stops at an unbalanced quote)."""
        if self.d.v10:
            return list(ln.args)
        words: list[str] = []
        rest: str | None = ln.rest
        while True:
            word, rest = _strdelim(rest)
            if word is None or word == "":
                break
            if word.startswith("#"):
                break
            words.append(word)
        return words


_MATCH_ATTRS = ("user", "group", "host", "address", "localaddress", "localport", "rdomain", "version")


def _methods_valid(d: _Dialect, methods: str, enabled: Mapping[str, bool] | None) -> bool:
    """auth2.c auth2_methods_valid: every comma-separated method is known (and, with ``enabled``,
    switched on); anything after a ':' (a submethod) is not checked."""
    if methods == "":
        return False
    for method in methods.split(","):
        name = method.split(":", 1)[0]
        if name not in d.authmethods:
            return False
        if enabled is not None and not enabled.get(name, False):
            return False
    return True


def _groups_match(groups: tuple[str, ...], patterns: str) -> bool:
    """groupaccess.c ga_match_pattern_list: a negated match on any group wins."""
    found = False
    for g in groups:
        r = _match_pattern_list(g, patterns)
        if r == -1:
            return False
        if r == 1:
            found = True
    return found


def _a2port(s: str, ln: _Line) -> int:
    """misc.c a2port: 0..65535, or a service name (which needs /etc/services)."""
    v = _strtonum(s, 0, 65535)
    if v is not None:
        return v
    if s == "" or re.fullmatch(r"[ \t\n\v\f\r]*[+-]?[0-9]+", s):
        return -1
    raise Undecidable(ln.file, ln.num, f"port {s!r} is a service name: sshd looks it up in /etc/services")


def _hpdelim(s: str) -> tuple[str, str | None] | None:
    """misc.c hpdelim: 'host:port' or '[v6]:port' -> (host, port or None); None if malformed."""
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            return None
        k = end + 1
    else:
        k = next((i for i, c in enumerate(s) if c in ":/"), len(s))
    if k >= len(s):
        return s, None
    if s[k] == ":":
        return s[:k], s[k + 1 :]
    return None  # '/' (hpdelim2's other delimiter) or junk after ']'


def _cleanhostname(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _sscanf_ints(s: str, count: int, sep: str = ":") -> list[int]:
    """sscanf("%d:%d:%d"): as many leading integers as parse, separated by exactly ``sep``."""
    out: list[int] = []
    pos = 0
    for k in range(count):
        m = re.match(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", s[pos:])
        if m is None:
            break
        out.append(max(min(int(m.group(1)), _INT_MAX), -_INT_MAX - 1))
        pos += m.end()
        if k < count - 1:
            if s[pos : pos + 1] != sep:
                break
            pos += 1
    return out


_IPQOS = (
    "none", "af11", "af12", "af13", "af21", "af22", "af23", "af31", "af32", "af33", "af41", "af42", "af43",
    "cs0", "cs1", "cs2", "cs3", "cs4", "cs5", "cs6", "cs7", "ef", "le", "lowdelay", "throughput", "reliability",
)


def _ipqos_valid(s: str) -> bool:
    if _lower(s) in _IPQOS:
        return True
    m = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", s)
    if m is None:
        return False
    text = m.group(2)
    value = int(text, 16) if text[:2] in ("0x", "0X") else int(text, 8) if text.startswith("0") else int(text)
    if m.group(1) == "-":
        value = -value
    return 0 <= value <= 255


# ------------------------------------------------------------------------- defaults and output


@functools.lru_cache(maxsize=256)  # pure, and asked the same lists for every connection a gate probes
def _assemble(value: str | None, default: str, all_names: tuple[str, ...], what: str) -> str:
    """kex.c kex_assemble_names: '+' appends to, '-' removes from, '^' puts at the head of the
    default list; wildcards expand over the supported names; unsupported names drop out."""
    if not value:
        return default
    if value[0] == "-":
        return ",".join(n for n in default.split(",") if _match_pattern_list(n, value[1:]) != 1)
    if value[0] == "+":
        value = _names_cat(default, value[1:])
    elif value[0] == "^":
        value = _names_cat(value[1:], default)
    ret: list[str] = []
    for cp in value.split(","):
        if cp.startswith("!"):
            raise ConfigError("", 0, f"{what}: negated names are not allowed")
        for name in all_names:
            if _match_pattern_list(name, cp) == 1 and name not in ret:
                ret.append(name)
    if not ret:
        raise ConfigError("", 0, f"{what}: no supported algorithm left")
    return ",".join(ret)


def _names_cat(a: str, b: str) -> str:
    """kex.c kex_names_cat: a followed by the names of b not already in a."""
    out = [n for n in a.split(",") if n] if a else []
    for n in b.split(","):
        if n and n not in out:
            out.append(n)
    return ",".join(out)


_FLAG_DEFAULTS = {
    "usepam": 0, "ignoreuserknownhosts": 0, "x11forwarding": 0, "x11uselocalhost": 1, "permittty": 1,
    "permituserrc": 1, "strictmodes": 1, "tcpkeepalive": 1, "hostbasedauthentication": 0,
    "hostbasedusesnamefrompacketonly": 0, "pubkeyauthentication": 1, "kerberosauthentication": 0,
    "kerberosorlocalpasswd": 1, "kerberosticketcleanup": 1, "gssapiauthentication": 0, "gssapicleanupcredentials": 1,
    "gssapistrictacceptorcheck": 1, "gssapikeyexchange": 0, "gssapistorecredentialsonrekey": 0,
    "passwordauthentication": 1, "kbdinteractiveauthentication": 1, "permitemptypasswords": 0, "printmotd": 1,
    "printlastlog": 1, "usedns": 0, "allowagentforwarding": 1, "disableforwarding": 0, "streamlocalbindunlink": 0,
    "exposeauthinfo": 0, "debianbanner": 1,
}
_VALUE_DEFAULTS: dict[str, Any] = {
    "addressfamily": "any", "permitrootlogin": "without-password", "ignorerhosts": "yes", "compression": "yes",
    "gatewayports": "no", "allowtcpforwarding": "yes", "allowstreamlocalforwarding": "yes",
    "logingracetime": 120, "x11displayoffset": 10, "maxauthtries": 6, "maxsessions": 10,
    "clientaliveinterval": 0, "clientalivecountmax": 3, "requiredrsasize": 1024, "unusedconnectiontimeout": 0,
    "pidfile": "/run/sshd.pid", "modulifile": "/etc/ssh/moduli", "xauthlocation": "/usr/bin/xauth",
    "securitykeyprovider": "internal", "loglevel": "INFO", "syslogfacility": "AUTH", "permittunnel": "no",
    "permituserenvironment": "no", "pubkeyauthoptions": 0, "fingerprinthash": "SHA256", "versionaddendum": "",
    "persourcemaxstartups": _INT_MAX, "streamlocalbindmask": 0o177, "rekeylimit": 0, "rekeyinterval": 0,
}
# String options sshd clears when they say "none" (CLEAR_ON_NONE).
_CLEAR_ON_NONE = ("pidfile", "xauthlocation", "banner", "trustedusercakeys", "revokedkeys", "securitykeyprovider",
                  "authorizedprincipalsfile", "forcecommand", "chrootdirectory", "hostkeyagent",
                  "persourcepenaltyexemptlist")


def _fill_defaults(o: dict[str, Any], d: _Dialect) -> None:
    """fill_default_server_options (what sshd does after pass 1)."""
    if not o["host_key_files"]:
        o["host_key_files"] = ["/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ecdsa_key", "/etc/ssh/ssh_host_ed25519_key"]
    if not o["ports"]:
        o["ports"] = [22]
    for name, value in {**_FLAG_DEFAULTS, **_VALUE_DEFAULTS}.items():
        if o.get(name) is None:
            o[name] = value
    if d.v10:
        o.setdefault("pamservicename", None)
        if o["pamservicename"] is None:
            o["pamservicename"] = "sshd"
        if o.get("refuseconnection") is None:
            o["refuseconnection"] = 0
    begin, rate, full = o.get("maxstartups") or (-1, -1, -1)
    o["maxstartups"] = (10 if begin == -1 else begin, 30 if rate == -1 else rate, 100 if full == -1 else full)
    nb = o.get("persourcenetblocksize")
    o["persourcenetblocksize"] = (32, 128) if nb is None else nb
    if not o["authorized_keys_files"]:
        o["authorized_keys_files"] = [".ssh/authorized_keys", ".ssh/authorized_keys2"]
    for name in _CLEAR_ON_NONE:
        if o.get(name) is not None and _lower(o[name]) == "none":
            o[name] = None
    o["host_key_files"] = [None if _lower(p) == "none" else p for p in o["host_key_files"]]
    if len(o["auth_methods"]) == 1 and _lower(o["auth_methods"][0]) == "any":
        o["auth_methods"] = []
    if len(o["channel_timeouts"]) == 1 and _lower(o["channel_timeouts"][0]) == "none":
        o["channel_timeouts"] = []
    _assemble_algorithms(o, d)
    o["listenaddress"] = _listen_addrs(o)


def _assemble_algorithms(o: dict[str, Any], d: _Dialect) -> None:
    o["ciphers"] = _assemble(o.get("ciphers"), d.default_cipher, d.ciphers, "Ciphers")
    o["macs"] = _assemble(o.get("macs"), _DEFAULT_MAC, _MACS, "MACs")
    o["kexalgorithms"] = _assemble(o.get("kexalgorithms"), d.default_kex, d.kex, "KexAlgorithms")
    keys = d.all_keys()
    for name in ("hostkeyalgorithms", "hostbasedacceptedalgorithms", "pubkeyacceptedalgorithms"):
        o[name] = _assemble(o.get(name), _DEFAULT_PK, keys, name)
    o["casignaturealgorithms"] = _assemble(o.get("casignaturealgorithms"), _DEFAULT_CA, d.all_sigs(), "CASignatureAlgorithms")


def _listen_addrs(o: dict[str, Any]) -> list[str]:
    """What sshd -T prints for ListenAddress: each queued address with its own port or, without
    one, with every Port (numeric addresses only: a name would need the resolver). Without
    ListenAddress, the wildcard addresses of the AddressFamily on every Port."""
    family = o["addressfamily"]
    out: list[str] = []
    if not o["listen"]:
        for port in o["ports"]:
            # getaddrinfo(NULL, AI_PASSIVE) lists 0.0.0.0 before ::, and sshd prints each
            # resolved group in reverse.
            out += [f"[::]:{port}"] if family in ("any", "inet6") else []
            out += [f"0.0.0.0:{port}"] if family in ("any", "inet") else []
        return out
    for host, port, ln in o["listen"]:
        if "%" in host:
            raise Undecidable(ln.file, ln.num, f"ListenAddress {host!r} names a network interface")
        a = _addr_pton(host)
        if a is None:
            raise Undecidable(ln.file, ln.num, f"ListenAddress {host!r} is not a numeric address: sshd would resolve it")
        if (family == "inet" and a.af == 6) or (family == "inet6" and a.af == 4):
            raise ConfigError(ln.file, ln.num, f"bad addr or host: {host} (Address family for hostname not supported)")
        text = str(ipaddress.IPv4Address(a.value)) if a.af == 4 else f"[{_ntop6(a.value)}]"
        out += [f"{text}:{p}" for p in ([port] if port else o["ports"])]
    return out


def _ntop6(value: int) -> str:
    """inet_ntop(AF_INET6): like Python's compressed form, but IPv4-mapped and -compatible
    addresses keep a dotted quad."""
    a = ipaddress.IPv6Address(value)
    if a.ipv4_mapped is not None:
        return f"::ffff:{a.ipv4_mapped}"
    if value >> 32 == 0 and value > 0xFFFF:
        return f"::{ipaddress.IPv4Address(value)}"
    return a.compressed


def _sanity(o: dict[str, Any], d: _Dialect, main: str) -> None:
    """The checks sshd.c makes after reading the configuration (part of ``sshd -t``)."""
    for what in ("Keys", "Principals"):
        command = o.get(f"authorized{what.lower()}command")
        if command is not None and _lower(command) != "none" and o.get(f"authorized{what.lower()}commanduser") is None:
            raise ConfigError(main, 0, f"Authorized{what}Command set without Authorized{what}CommandUser")
    if o["auth_methods"]:
        enabled = {
            "none": True, "publickey": bool(o["pubkeyauthentication"]), "gssapi-keyex": bool(o["gssapikeyexchange"]),
            "gssapi-with-mic": bool(o["gssapiauthentication"]), "password": bool(o["passwordauthentication"]),
            "keyboard-interactive": bool(o["kbdinteractiveauthentication"]),
            "hostbased": bool(o["hostbasedauthentication"]),
        }
        if not any(_methods_valid(d, m, enabled) for m in o["auth_methods"]):
            raise ConfigError(main, 0, "AuthenticationMethods cannot be satisfied by enabled authentication methods")


# copy_set_server_options: what a matching Match block's values replace.
_COPY_INT = (
    "passwordauthentication", "gssapiauthentication", "pubkeyauthentication", "pubkeyauthoptions",
    "kerberosauthentication", "hostbasedauthentication", "hostbasedusesnamefrompacketonly",
    "kbdinteractiveauthentication", "permitrootlogin", "permitemptypasswords", "ignorerhosts",
    "allowtcpforwarding", "allowstreamlocalforwarding", "allowagentforwarding", "disableforwarding",
    "exposeauthinfo", "permittunnel", "gatewayports", "streamlocalbindunlink", "x11displayoffset",
    "x11forwarding", "x11uselocalhost", "permittty", "permituserrc", "maxsessions", "maxauthtries",
    "clientalivecountmax", "clientaliveinterval", "rekeylimit", "rekeyinterval", "loglevel",
    "requiredrsasize", "unusedconnectiontimeout", "streamlocalbindmask", "refuseconnection",
)
_COPY_STR = (
    "banner", "trustedusercakeys", "revokedkeys", "authorizedkeyscommand", "authorizedkeyscommanduser",
    "authorizedprincipalsfile", "authorizedprincipalscommand", "authorizedprincipalscommanduser",
    "hostbasedacceptedalgorithms", "pubkeyacceptedalgorithms", "casignaturealgorithms", "pamservicename",
)
_COPY_ARRAY = (
    "authorized_keys_files", "allow_users", "deny_users", "allow_groups", "deny_groups", "accept_env", "setenv",
    "auth_methods", "permitted_opens", "permitted_listens", "channel_timeouts", "log_verbose",
)


def effective(config: Config, conn: Connection | None) -> dict[str, tuple[str, ...]]:
    """The settings sshd applies to ``conn``, as ``sshd -T -C`` prints them (``conn`` None: ``sshd
    -T`` alone, where only ``Match all`` blocks apply). Raises :class:`ConfigError` where sshd would
    fail for this connection, :class:`Undecidable` where a Match criterion needs data ``conn`` lacks."""
    d = _dialect(config.version)
    o: dict[str, Any] = {k: (list(v) if isinstance(v, list) else v) for k, v in config._global.items()}
    # parse_server_match_config: the whole file again into fresh options, only matching Match
    # blocks active, then copy_set_server_options over the global result.
    mo = _Parser(config, d, _CI.of(conn)).run()
    for name in _COPY_INT + _COPY_STR:
        if mo.get(name) is not None:
            o[name] = mo[name]
    for name in _COPY_ARRAY + (("subsystems",) if d.v10 else ()):  # 10.x: a Match block's Subsystems replace
        if mo[name]:
            o[name] = list(mo[name])
    try:
        _assemble_algorithms(o, d)
    except ConfigError as e:
        raise ConfigError(config.main, 0, e.reason) from None
    for name in ("forcecommand", "chrootdirectory"):
        if mo.get(name) is not None:
            o[name] = None if _lower(mo[name]) == "none" else mo[name]
    return _dump(o, d)


def admits(config: Config, conn: Connection, values: Mapping[str, tuple[str, ...]] | None = None) -> bool:
    """Whether sshd lets ``conn.user`` log in from ``conn.addr`` at all: auth.c allowed_user's
    DenyUsers, AllowUsers, DenyGroups and AllowGroups checks (not the account's shell or expiry, which
    live on the server). ``values``: ``effective(config, conn)`` if already computed. With UseDNS no,
    sshd matches the host part of ``user@host`` against the address for both names and networks."""
    v = effective(config, conn) if values is None else values
    v10 = config.version >= (10, 0)
    host = conn.host or conn.addr

    def match_user(pattern: str) -> int:  # match.c match_user
        at = pattern.rfind("@") if v10 else pattern.find("@")
        if at < 0:
            return int(_match_pattern(conn.user, pattern))
        if not _match_pattern(conn.user, pattern[:at]):
            return 0
        patterns = pattern[at + 1 :]
        mip = _addr_match_list(conn.addr, patterns, v10)  # match_host_and_ip
        if mip == -2:
            return -1
        if mip == -1 or _match_hostname(host, patterns) == -1:
            return 0
        return int(mip == 1 or _match_hostname(host, patterns) == 1)

    if any(match_user(p) != 0 for p in v.get("denyusers", ())):
        return False  # a bad pattern is fatal for the connection: not admitted either
    allow = v.get("allowusers", ())
    if allow and not any(match_user(p) == 1 for p in allow):
        return False
    deny_groups, allow_groups = v.get("denygroups", ()), v.get("allowgroups", ())
    if deny_groups or allow_groups:
        if conn.groups is None:
            raise Undecidable(config.main, 0, "AllowGroups/DenyGroups need the user's groups")
        if any(_match_pattern(g, p) for g in conn.groups for p in deny_groups):
            return False
        if allow_groups and not any(_match_pattern(g, p) for g in conn.groups for p in allow_groups):
            return False
    return True


def _fmt_flag(v: int) -> str:
    return {0: "no", 1: "yes"}.get(v, "UNKNOWN")


def _dump(o: dict[str, Any], d: _Dialect) -> dict[str, tuple[str, ...]]:
    """dump_config, for the keywords modelled here (all but ipqos and the 10.x helper paths)."""
    out: dict[str, tuple[str, ...]] = {}

    def one(name: str, value: object) -> None:
        out[name] = (str(value),)

    out["port"] = tuple(str(p) for p in o["ports"])
    one("addressfamily", o["addressfamily"])
    out["listenaddress"] = tuple(o["listenaddress"])
    for name in ("logingracetime", "x11displayoffset", "maxauthtries", "maxsessions", "clientaliveinterval",
                 "clientalivecountmax", "requiredrsasize"):
        one(name, o[name])
    one("streamlocalbindmask", f"0{o['streamlocalbindmask']:o}")
    one("unusedconnectiontimeout", "none" if o["unusedconnectiontimeout"] == 0 else o["unusedconnectiontimeout"])
    for name in ("permitrootlogin", "ignorerhosts", "compression", "gatewayports", "allowtcpforwarding",
                 "allowstreamlocalforwarding", "fingerprinthash", "modulifile", "loglevel", "syslogfacility",
                 "permittunnel", "permituserenvironment", "ciphers", "macs", "kexalgorithms", "casignaturealgorithms",
                 "hostbasedacceptedalgorithms", "hostkeyalgorithms", "pubkeyacceptedalgorithms"):
        one(name, o[name])
    # log_level_name prints the first name the table has for a level.
    out["loglevel"] = ({"DEBUG1": "DEBUG", "QUIET": "SILENT"}.get(o["loglevel"], o["loglevel"]),)
    for name in _FLAG_DEFAULTS:
        if name != "debianbanner" or d.v10:
            one(name, _fmt_flag(o[name]))
    one("gssapikexalgorithms", o.get("gssapikexalgorithms") or _GSS_KEX_DEFAULT)
    if d.v10:
        one("refuseconnection", _fmt_flag(o["refuseconnection"]))
        one("pamservicename", o["pamservicename"])
        one("persourcepenaltyexemptlist", o.get("persourcepenaltyexemptlist") or "none")
        one("persourcepenalties", _penalties(o.get("persourcepenalties") or {}))
    for name in ("pidfile", "xauthlocation", "banner", "forcecommand", "chrootdirectory", "trustedusercakeys",
                 "revokedkeys", "securitykeyprovider", "authorizedprincipalsfile", "authorizedkeyscommand",
                 "authorizedkeyscommanduser", "authorizedprincipalscommand", "authorizedprincipalscommanduser",
                 "hostkeyagent"):
        one(name, "none" if o.get(name) is None else o[name])
    one("versionaddendum", o["versionaddendum"] or "none")
    # printf("%s", NULL) in glibc: a HostKey of "none" is printed as "(null)".
    out["hostkey"] = tuple("(null)" if p is None else p for p in o["host_key_files"])
    for name, key in (("authorizedkeysfile", "authorized_keys_files"), ("hostcertificate", "host_cert_files"),
                      ("allowusers", "allow_users"), ("denyusers", "deny_users"), ("allowgroups", "allow_groups"),
                      ("denygroups", "deny_groups"), ("acceptenv", "accept_env"), ("setenv", "setenv"),
                      ("logverbose", "log_verbose")):
        if o[key]:
            out[name] = tuple(o[key])
    out["authenticationmethods"] = tuple(o["auth_methods"]) or ("any",)
    if o["channel_timeouts"] or d.v10:
        out["channeltimeout"] = tuple(o["channel_timeouts"]) or ("none",)
    if o["subsystems"]:
        out["subsystem"] = tuple(f"{name} {args}" for name, _cmd, args in o["subsystems"])
    begin, rate, full = o["maxstartups"]
    one("maxstartups", f"{begin}:{rate}:{full}")
    one("persourcemaxstartups", "none" if o["persourcemaxstartups"] == _INT_MAX else o["persourcemaxstartups"])
    one("persourcenetblocksize", "{}:{}".format(*o["persourcenetblocksize"]))
    one("rekeylimit", f"{o['rekeylimit']} {o['rekeyinterval']}")
    out["permitopen"] = tuple(o["permitted_opens"]) or ("any",)
    out["permitlisten"] = tuple(o["permitted_listens"]) or ("any",)
    opts = o["pubkeyauthoptions"]
    words = tuple(w for bit, w in ((1, "touch-required"), (2, "verify-required")) if opts & bit)
    out["pubkeyauthoptions"] = words or ("none",)
    return out


def _penalties(p: Mapping[str, Any]) -> str:
    if not p.get("enabled", 1):
        return "no"
    values: dict[str, Any] = {"crash": 90, "authfail": 5, "noauth": 1, "grace-exceeded": 10, "refuseconnection": 10,
                              "max": 600, "min": 15, "max-sources4": 65536, "max-sources6": 65536,
                              "overflow": "permissive"}
    values.update({k: v for k, v in p.items() if k != "enabled"})
    values.setdefault("overflow6", values["overflow"])
    order = ("crash", "authfail", "noauth", "grace-exceeded", "refuseconnection", "max", "min", "max-sources4",
             "max-sources6", "overflow", "overflow6")
    return " ".join(f"{k}:{values[k]}" for k in order)
