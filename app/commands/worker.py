"""``loadshape worker``: run a stream-processing worker (stage 1 + stage 2)."""

from __future__ import annotations

import logging


def register(sub) -> None:
    p = sub.add_parser("worker", help="run a Faust worker (stage 1 + stage 2)")
    p.add_argument("--loglevel", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--metrics-port", type=int, default=None,
                   help="Prometheus /metrics port (default: settings web_port; 0 disables)")
    p.add_argument("--metrics-addr", default="127.0.0.1",
                   help="address /metrics listens on (0.0.0.0 inside a container)")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    import faust
    from prometheus_client import CollectorRegistry

    from app.metrics import serve
    from app.stream.worker import build_worker

    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    registry = CollectorRegistry()
    app, _metrics = build_worker(settings, registry)
    port = settings.web_port if args.metrics_port is None else args.metrics_port
    if port:
        serve(registry, port, addr=args.metrics_addr)
    worker = faust.Worker(app, loglevel=args.loglevel, quiet=True)
    worker.execute_from_commandline()
    return 0
