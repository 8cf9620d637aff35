"""Grid awareness: capacity groups, limit signals, safe mode and the planner that keeps them.

`config` parses the `grid:` section, `topology` maps EVSEs to groups, `limits` holds every limit
(pure, clock passed in), `signals` listens to MQTT and runs the safe-mode watchdog, `status`
publishes each group's state, `controller` plans and pushes charging profiles.
"""
