"""OCPP versions: one package per version (handlers and command builders), listed in versions.py.

Adding a version (1.6J, 2.1) is a package like ``v201`` — a ``routes(deps)`` per functional block
that translates the version's payloads into the domain model (csms/domain), a
:class:`csms.ocpp.package.CommandSet` that builds its requests — and an entry in
:data:`csms.ocpp.versions.VERSIONS`. The transport, the store, the grid and the API stay as they are.
"""
