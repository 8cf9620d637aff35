"""Station security: profiles 1-3, credentials, the station CA and the limits of the hardened edge.

:func:`csms.security.component.build_security` makes the part for a config with a ``security``
section; without one the daemon runs in lab mode (plain ws://, no station authentication) and
warns at startup.
"""
