"""The testee side of scripts/conformance.sh (Python 3).

  drive.py cases URL AGENT -- CMD...   for every case the fuzzing server at
      URL serves, runs CMD with {url} replaced by the case's URL (one process
      per case, e.g. `wsgate tail {url} --echo`), then asks the server to
      write the agent's reports.
  drive.py cases URL AGENT --websockets   the same with the `websockets`
      library's client in this process (the reference).
  drive.py echo-server PORT_FILE   a `websockets` echo server on
      127.0.0.1:0 (the reference for the server side); writes its port to
      PORT_FILE and serves until killed.

Every wait has a deadline: a case that hangs is ended after CASE_TIMEOUT
and the run goes on (the fuzzing server then reports that case).
"""

import asyncio
import subprocess
import sys
import time

import websockets

# Longer than any case's own wait (the slowest 9.x cases take ~20 s on a
# loaded machine).
CASE_TIMEOUT = 120
# Larger than the biggest message of case 9 (16 MiB).
MAX_SIZE = 64 * 1024 * 1024


async def fetch_count(base):
    async with websockets.connect(f"{base}/getCaseCount", open_timeout=30) as ws:
        return int(await asyncio.wait_for(ws.recv(), 30))


async def update_reports(base, agent):
    async with websockets.connect(f"{base}/updateReports?agent={agent}", open_timeout=30) as ws:
        try:
            await asyncio.wait_for(ws.recv(), 120)
        except websockets.ConnectionClosed:
            pass


async def echo_case(url):
    try:
        async with websockets.connect(url, max_size=MAX_SIZE, compression="deflate", open_timeout=30) as ws:
            async for msg in ws:
                await ws.send(msg)
    except websockets.ConnectionClosed:
        pass
    except Exception as e:  # noqa: BLE001 - the case's report tells what failed
        print(f"drive.py: {url}: {e}", file=sys.stderr)


def run_command(cmd, url):
    argv = [a.replace("{url}", url) for a in cmd]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=CASE_TIMEOUT)
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace").strip().splitlines()
            print(f"drive.py: {url}: exit {done.returncode}: {err[-1] if err else ''}", file=sys.stderr)
    except subprocess.TimeoutExpired:
        print(f"drive.py: {url}: ended after {CASE_TIMEOUT}s", file=sys.stderr)


async def cases(base, agent, cmd):
    count = await fetch_count(base)
    started = time.monotonic()
    for n in range(1, count + 1):
        url = f"{base}/runCase?case={n}&agent={agent}"
        if cmd is None:
            await asyncio.wait_for(echo_case(url), CASE_TIMEOUT)
        else:
            await asyncio.to_thread(run_command, cmd, url)
    await update_reports(base, agent)
    print(f"drive.py: {agent}: {count} cases in {time.monotonic() - started:.0f}s", file=sys.stderr)


async def echo_server(port_file):
    async def echo(ws):
        try:
            async for msg in ws:
                await ws.send(msg)
        except websockets.ConnectionClosed:
            pass

    async with websockets.serve(echo, "127.0.0.1", 0, max_size=MAX_SIZE, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        with open(port_file, "w") as f:
            f.write(f"{port}\n")
        await asyncio.Future()


def main(argv):
    if len(argv) >= 4 and argv[1] == "cases":
        base, agent = argv[2].rstrip("/"), argv[3]
        if argv[4:] == ["--websockets"]:
            asyncio.run(cases(base, agent, None))
            return 0
        if len(argv) > 5 and argv[4] == "--":
            asyncio.run(cases(base, agent, argv[5:]))
            return 0
    if len(argv) == 3 and argv[1] == "echo-server":
        asyncio.run(echo_server(argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
