"""OCPP 2.0.1 central-system conformance, one file per functional block (A-P).

Each test names the use case and the functional requirements (e.g. ``K15.FR.12``) it checks, the
way the OCA's test tool (OCTT) names its central-system test cases (``TC_K_55``).
"""
