"""The version table: every OCPP version the daemon speaks, by websocket subprotocol.

Config validation reads the supported subprotocols from here, the gateway picks a station's
router from it, the command layer its request builders.
"""

from __future__ import annotations

from csms.ocpp import v16, v21, v201
from csms.ocpp.package import VersionPackage

#: In order of preference: the default of websocket.subprotocols (the server picks the first it shares).
VERSIONS: dict[str, VersionPackage] = {package.version.subprotocol: package
                                       for package in (v21.PACKAGE, v201.PACKAGE, v16.PACKAGE)}
SUPPORTED_SUBPROTOCOLS: tuple[str, ...] = tuple(VERSIONS)
#: What an offline station's request is checked against (it has no connection to tell its version).
DEFAULT_VERSION = v201.PACKAGE
