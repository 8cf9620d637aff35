"""CSMS-initiated requests as OCPP 2.1 spells them: 2.0.1's, plus what 2.1 adds for V2X."""

from __future__ import annotations

from collections.abc import Sequence

from csms.ocpp.package import Request
from csms.ocpp.v201.commands import V201Commands


class V21Commands(V201Commands):
    """The :class:`csms.ocpp.package.CommandSet` of OCPP 2.1 (every 2.0.1 request is spelt alike)."""

    def notify_allowed_energy_transfer(self, transaction_id: str, allowed: Sequence[str]) -> Request:
        """Q: which energy transfer modes (e.g. without ``AC_BPT``: no discharging) a transaction may use."""
        return Request("NotifyAllowedEnergyTransfer", {"transactionId": transaction_id,
                                                       "allowedEnergyTransfer": list(allowed)})
