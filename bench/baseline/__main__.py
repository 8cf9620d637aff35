"""`python -m bench.baseline --port 9100 [--mqtt-prefix PREFIX]`: run the baseline central system."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from bench.baseline.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--mqtt-prefix", help="listen for limit signals on <prefix>/grid/+/limit (127.0.0.1:1883)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1..65535, got {args.port}")
    # The package's examples log every message at INFO; that alone would halve the baseline, so
    # it runs at WARNING like our daemon does in the benchmark.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    async def run() -> None:
        task = asyncio.ensure_future(serve(args.port, args.mqtt_prefix))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
