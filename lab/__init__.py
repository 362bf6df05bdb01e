"""A local lab: boot a stack config's server in a throwaway Debian VM under qemu, and change it on day two.

``lab.stack`` reads the config and makes the lab stack's (throwaway keys, a Debian guest), ``lab.up`` runs the real
program with it against the state ``lab.state`` keeps between runs, ``lab.image`` builds (and caches) the guest
images from Debian packages, ``lab.vm`` boots one with a NoCloud seed, ``lab.show`` shows enrollments,
``lab.sync`` applies a changed config to the running guest through vpsctl sync. ``python -m lab`` is ``make lab``.
"""
