"""Grid awareness, in layers: keep every capacity group under its limit by steering sessions.

- ``config``: the ``grid:`` section;
- ``model``: the domain (topology, the limit book, sessions and stations), pure state;
- ``signals`` / ``intake`` / ``sources``: where limits come from (each source a SignalSource) and
  the safe-mode watchdog; ``sources/status`` reports each group's state;
- ``observer``: bus events into the model; ``control``: the scheduling loop;
  ``planning``: plan inputs in, plans out (every decision in profiles/);
- ``effects``: station setup, pushing TxProfiles in waves, verification;
- ``views``, ``journal``, ``metrics``: what the operator sees; ``service``: the assembly.
"""
