"""An OpenADR 3 VEN inside the daemon: the DSO's grid-aware charging ("netbewust laden") limits in.

- ``config``: the ``grid.openadr`` section (VTN, OAuth2 client, VEN name, programs, EAN-18 per group);
- ``events``: pure: an event object to kW intervals (the GAC profile checked), and the intervals of
  a program's events per capacity group merged into one limit signal (strictest wins);
- ``client``: the VTN's REST API over aiohttp (client-credentials token, list with pagination);
- ``source``: the signal source (poll, backoff, fallback to the DSO's safe limit, status, metrics).
"""
