"""A Faust app with the worker's settings whose one agent iterates a topic's events and does
nothing else; prints ``FLOOR_RESULT <events/s>`` after ``FLOOR_N`` events and exits.
Run as a script by bench_throughput (env: FLOOR_TOPIC, FLOOR_N, FLOOR_BROKER, FLOOR_DIR)."""

from __future__ import annotations

import os
import sys
import time

import faust


def main() -> None:
    topic, n = os.environ["FLOOR_TOPIC"], int(os.environ["FLOOR_N"])
    app = faust.App(f"bench-floor-{os.getpid()}", broker=f"kafka://{os.environ['FLOOR_BROKER']}",
                    store="memory://", web_enabled=False, topic_replication_factor=1,
                    consumer_auto_offset_reset="earliest",
                    datadir=os.path.join(os.environ["FLOOR_DIR"], f"floor-{os.getpid()}"),
                    producer_linger_ms=5, broker_commit_every=1000, broker_commit_interval=1.0,
                    stream_buffer_maxsize=16384)
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")
    state = {"n": 0, "t0": 0.0}

    @app.agent(source)
    async def count(stream):
        async for _event in stream.events():
            if state["n"] == 0:
                state["t0"] = time.perf_counter()
            state["n"] += 1
            if state["n"] >= n:
                rate = n / (time.perf_counter() - state["t0"])
                print(f"FLOOR_RESULT {rate:.0f}", flush=True)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main()
