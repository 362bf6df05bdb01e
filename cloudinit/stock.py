"""The images' own files the gates read next to ours: what sshd and PAM find on a fresh server.

Copied from Debian 12 (openssh-server 9.2p1, libpam-runtime 1.5.2 after pam-auth-update), comments
dropped; Debian 13 and Ubuntu 22.04-26.04 ship the same lines where it matters here: sshd_config starts
with the Include of sshd_config.d (so our 00- drop-in is read first) and sets nothing our drop-in does not
set first; the common-* PAM files hold no auth rule, so the auth stacks the gates judge are ours alone.
cloud-init's 50-cloud-init.conf (ssh_pwauth: false) is included after our drop-in.
"""

from __future__ import annotations

SSHD_CONFIG = "/etc/ssh/sshd_config"
SSHD_FILES = {
    SSHD_CONFIG: """\
Include /etc/ssh/sshd_config.d/*.conf
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem\tsftp\t/usr/lib/openssh/sftp-server
""",
    "/etc/ssh/sshd_config.d/50-cloud-init.conf": "PasswordAuthentication no\n",
}

PAM_FILES = {
    "/etc/pam.d/common-account": """\
account\t[success=1 new_authtok_reqd=done default=ignore]\tpam_unix.so
account\trequisite\t\t\tpam_deny.so
account\trequired\t\t\tpam_permit.so
""",
    "/etc/pam.d/common-session": """\
session\t[default=1]\t\t\tpam_permit.so
session\trequisite\t\t\tpam_deny.so
session\trequired\t\t\tpam_permit.so
session\trequired\tpam_unix.so
session\toptional\tpam_systemd.so
""",
    "/etc/pam.d/common-session-noninteractive": """\
session\t[default=1]\t\t\tpam_permit.so
session\trequisite\t\t\tpam_deny.so
session\trequired\t\t\tpam_permit.so
session\trequired\tpam_unix.so
""",
    "/etc/pam.d/common-password": """\
password\t[success=1 default=ignore]\tpam_unix.so obscure yescrypt
password\trequisite\t\t\tpam_deny.so
password\trequired\t\t\tpam_permit.so
""",
    "/etc/pam.d/common-auth": """\
auth\t[success=1 default=ignore]\tpam_unix.so nullok
auth\trequisite\t\t\tpam_deny.so
auth\trequired\t\t\tpam_permit.so
""",
    "/etc/pam.d/other": """\
@include common-auth
@include common-account
@include common-password
@include common-session
""",
}
