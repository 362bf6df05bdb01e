"""A local lab: boot the project's rendered user-data in a throwaway Debian VM under qemu.

``lab.image`` builds (and caches) the guest images from Debian packages, ``lab.vm`` boots one with a
NoCloud seed, ``lab.ssh`` logs in with key + TOTP, ``python -m lab`` is ``make lab``.
"""
