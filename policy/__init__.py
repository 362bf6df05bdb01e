"""The totp-vps CrossGuard policy pack: validators in :mod:`policy.policies`, the offline analyzer run in
:mod:`policy.offline`. Importing the package starts nothing; only ``policy/__main__.py`` serves the pack."""
