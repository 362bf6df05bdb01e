"""The totp-vps agent: the one server-side step that applies a desired state, at the first boot and at
every later change. Standard library only (Python >= 3.10): these files are shipped to the servers in the
user-data and installed as /usr/local/lib/totp-vps/agent, run as /usr/local/sbin/totp-vps-activate."""
