"""``loadshape alerts forward``: post alerts from Kafka to Alertmanager (the pager path)."""

from __future__ import annotations

import logging

from app.alerting.payload import DEFAULT_FIRING_TTL_S, DEFAULT_RUNBOOK_BASE


def register(sub) -> None:
    p = sub.add_parser("alerts", help="alert pager path (Kafka -> Alertmanager)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = actions.add_parser("forward", help="consume the alerts topic and post to Alertmanager")
    f.add_argument("--alertmanager-url", default="http://127.0.0.1:9093",
                   help="Alertmanager base URL (alerts go to <url>/api/v2/alerts)")
    f.add_argument("--from-beginning", action="store_true",
                   help="re-read the alerts topic from its first offset")
    f.add_argument("--once", action="store_true", help="exit once caught up with the topic")
    f.add_argument("--max-messages", type=int, default=None, metavar="N",
                   help="exit after N records")
    f.add_argument("--firing-ttl", type=float, default=DEFAULT_FIRING_TTL_S, metavar="SECONDS",
                   help="a firing alert holds this long unless resolved earlier")
    f.add_argument("--runbook-base", default=DEFAULT_RUNBOOK_BASE,
                   help="runbook URL or path; '#section' is appended")
    f.add_argument("--group-id", default=None, help="consumer group (default <app_id>-alerts-forwarder)")
    f.add_argument("--metrics-port", type=int, default=0, help="serve /metrics here (0: off)")
    f.add_argument("--metrics-addr", default="127.0.0.1", help="address for /metrics")
    f.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    f.set_defaults(handler=run)


def run(args, settings) -> int:
    from prometheus_client import CollectorRegistry

    from app.alerting.forwarder import ForwardOptions
    from app.alerting.forwarder import run as forward
    from app.metrics import LoadshapeMetrics, serve

    logging.basicConfig(level=args.loglevel.upper(), format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    registry = CollectorRegistry()
    metrics = LoadshapeMetrics.create(registry, max_segments=settings.metrics_max_segments)
    if args.metrics_port:
        serve(registry, args.metrics_port, addr=args.metrics_addr)
    opts = ForwardOptions(
        alertmanager_url=args.alertmanager_url, from_beginning=args.from_beginning,
        once=args.once, max_messages=args.max_messages, firing_ttl_s=args.firing_ttl,
        runbook_base=args.runbook_base, group_id=args.group_id,
    )
    n = forward(settings, opts, metrics)
    logging.getLogger("loadshape.alerts").info("consumed %d alert records", n)
    return 0
