"""The load test's server and client, run as ``python load_programs.py server|client ...``.

Shared by ``tests/test_hardening.py`` and ``benchmarks/bench_load.py`` so the
test and the benchmark put the same load on a sandbox.

* ``server PORT`` answers each connection with the sha256 (hex) of all it
  received, then closes.
* ``client HOST PORT RATE SECONDS LOG NAME`` opens connections on a fixed
  schedule (open loop: it does not slow down when answers are late), each
  sending a payload of its own, half-closing and reading the answer to its
  end (10 s limit for the connect and for the answer). It writes one JSON
  line per connection to LOG: ``[payload, answer, error, started, ended]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from pathlib import Path

PATH = Path(__file__).resolve()


def answer_to(payload: str) -> str:
    """The answer the server gives to ``payload``."""
    return hashlib.sha256(payload.encode()).hexdigest()


def serve(port: int) -> None:
    async def answer(reader, writer):
        data = await reader.read()
        writer.write(hashlib.sha256(data).hexdigest().encode())
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(answer, "0.0.0.0", port, backlog=4096, reuse_address=True)
        await server.serve_forever()

    asyncio.run(main())


def load(host: str, port: int, rate: float, seconds: float, log: str, name: str) -> None:
    total = round(rate * seconds)
    results: list[list] = []

    async def one(number: int) -> None:
        payload = "%s:%d:%s" % (name, number, hashlib.sha256(b"%d" % number).hexdigest()[:32])
        started = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            writer.write(payload.encode())
            writer.write_eof()
            reply = (await asyncio.wait_for(reader.read(), 10)).decode()
            writer.close()
            results.append([payload, reply, None, started, time.monotonic()])
        except Exception as exc:
            results.append([payload, None, repr(exc), started, time.monotonic()])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start, tasks, number = loop.time(), [], 0
        while number < total:
            while number < total and start + number / rate <= loop.time():
                tasks.append(asyncio.create_task(one(number)))
                number += 1
            await asyncio.sleep(max(0.0, start + number / rate - loop.time()))
        await asyncio.gather(*tasks)

    asyncio.run(main())
    with open(log, "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in results)


def server_argv(port: int) -> list[str]:
    return [sys.executable, str(PATH), "server", str(port)]


def client_argv(host: str, port: int, rate: float, seconds: float, log: object, name: str) -> list[str]:
    return [sys.executable, str(PATH), "client", host, str(port), str(rate), str(seconds), str(log), name]


def read_logs(logs: list[Path]) -> list[list]:
    """Every client's lines; a log that is missing (its client died) gives none."""
    return [json.loads(line) for log in logs if log.exists() for line in log.read_text().splitlines()]


if __name__ == "__main__":
    role, args = sys.argv[1], sys.argv[2:]
    if role == "server":
        serve(int(args[0]))
    elif role == "client":
        load(args[0], int(args[1]), float(args[2]), float(args[3]), args[4], args[5])
    else:
        raise SystemExit(f"unknown role {role!r}: server or client")
