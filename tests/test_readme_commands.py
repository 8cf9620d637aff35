"""The README's "Using it" commands, run verbatim (piped, 80 columns) against `csms serve` with the
shipped config.yaml and a station CP-1: every one must succeed and show what the README says.

Only the ports and the directory differ (config.yaml copied with free ports); `csms tail` follows
forever, so it runs under `timeout 3` and must still be following when stopped. The markdown
links of README.md and docs/ must stay inside the repository (the docs stand alone).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import yaml

from tests.api_fixture import STATION_ANSWERS
from tests.grid_outside import ENV, REPO
from tests.ocpp_client import RawStation
from tests.test_readme_path import BIN, _drain, _wait_for_line, readme_config

MARK = "@@rc="


def readme_commands() -> list[str]:
    """The commands of the README's "Using it" block, a quoted argument spanning lines kept whole."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Using it\n.*?```sh\n(.*?)```", text, re.S)
    assert block, "README.md has no 'Using it' sh block"
    commands: list[str] = []
    pending = ""
    for line in block[1].splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line + "\n"
        if pending.count("'") % 2 == 0:
            commands.append(pending.rstrip("\n"))
            pending = ""
    assert not pending, f"unbalanced quote in the README block: {pending!r}"
    return commands


def test_readme_lists_the_operator_commands() -> None:
    heads = [" ".join(c.split()[:2]) for c in readme_commands()]
    for needed in ("csms stations", "csms show", "csms transactions", "csms send", "csms call", "csms limit",
                   "csms grid", "csms tail", "csms station"):
        assert needed in heads, needed


async def test_readme_commands_verbatim(tmp_path: Path) -> None:
    commands = readme_commands()
    config, ws_port = readme_config(tmp_path)
    script = "set -u\n" + "".join(
        ("{ timeout 3 " if c.startswith("csms tail") else "{ ") + c + f"\n}} 2>&1; echo \"{MARK}$?\"\n"
        for c in commands)
    env = {k: v for k, v in ENV.items() if not k.startswith("CSMS_")}
    env.update({"PATH": f"{BIN}:{env.get('PATH', '')}", "COLUMNS": "80"})
    serve_log: list[str] = []
    serve = await asyncio.create_subprocess_exec(str(BIN / "csms"), "serve", "--config", str(config), cwd=tmp_path,
                                                 env=env, stdout=asyncio.subprocess.DEVNULL,
                                                 stderr=asyncio.subprocess.PIPE)
    drain = None
    station = None
    try:
        await _wait_for_line(serve, "operator API", serve_log, 30)
        drain = asyncio.create_task(_drain(serve, serve_log))
        station = await RawStation.connect(f"ws://127.0.0.1:{ws_port}/ocpp", "CP-1")
        station.auto_answer.update(STATION_ANSWERS)
        await station.boot()
        await station.result("StatusNotification", {"timestamp": "2025-01-01T00:00:00Z",
                                                    "connectorStatus": "Available", "evseId": 1, "connectorId": 1})
        proc = await asyncio.create_subprocess_exec("bash", "-c", script, cwd=tmp_path, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    finally:
        if station is not None:
            await station.close()
        if serve.returncode is None:
            serve.terminate()
        try:
            await asyncio.wait_for(serve.wait(), 20)
        except TimeoutError:
            serve.kill()
            await serve.wait()
        if drain is not None:
            drain.cancel()
    text = out.decode()
    parts = text.split(MARK)
    assert len(parts) == len(commands) + 1, text
    outputs = [parts[0]] + [p.split("\n", 1)[1] if "\n" in p else "" for p in parts[1:-1]]
    codes = [int(p.split("\n", 1)[0]) for p in parts[1:]]
    results = {}
    for command, output, rc in zip(commands, outputs, codes, strict=True):
        expected = 124 if command.startswith("csms tail") else 0  # tail still following when stopped
        assert rc == expected, f"{command!r} exited {rc}:\n{output}"
        results[command.split("#")[0].strip()] = output

    def said(prefix: str) -> str:
        return next(o for c, o in results.items() if c.startswith(prefix))

    assert said("csms stations").startswith("# 1 station\nstation\tconnected\t")
    assert said("csms stations | grep CP-1").startswith("CP-1\tyes\t")
    assert "active transaction: none" in said("csms show CP-1")
    assert "0 transactions" in said("csms transactions")
    assert "answered Reset" in said("csms send CP-1 reset") and "Unlocked" in said("csms send CP-1 unlock")
    assert "answered GetVariables" in said("csms call CP-1")
    limit = re.search(r"csms limit T1 (\d+)", "\n".join(commands))
    assert limit, "the README posts a limit"
    grid = said("csms grid")
    assert f"T1: limit {float(limit[1]):.1f} kW, set by operator" in grid and "INFEASIBLE" not in grid
    assert "margin" in grid and "measured" in grid
    # the README's example limit is above the non-EV load of config.yaml at every hour: feasible
    base = yaml.safe_load((REPO / "config.yaml").read_text())["grid"]["transformers"]["T1"]["base_load"]
    assert float(limit[1]) > max(kw for _, kw in base["profile"])
    assert "cleared" in said("csms limit T1 --clear")
    register = said("csms station register CP-9")
    assert "registered CP-9 at security profile 2" in register and "not enforced" in register


def test_docs_link_only_inside_the_repository() -> None:
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        assert "../shared" not in text and "/work/" not in text, doc
        for target in link.findall(text):
            if re.match(r"[a-z]+://", target):
                continue
            assert not target.startswith("/"), f"{doc.name}: absolute link {target}"
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(REPO), f"{doc.name}: {target} points outside the repository"
            assert path.exists(), f"{doc.name}: {target} does not exist"
