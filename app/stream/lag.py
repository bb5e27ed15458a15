"""Consumer lag of the worker's own source partitions, published as a gauge."""

from __future__ import annotations


def register_lag_timer(app, metrics, topics: set[str], interval: float = 5.0) -> None:
    """Every ``interval`` s: lag = high-water mark - consumer position, per assigned partition."""

    @app.timer(interval=interval, name="loadshape-consumer-lag")
    async def _lag() -> None:
        consumer = app.consumer
        for tp in sorted(consumer.assignment()):
            if tp.topic not in topics:
                continue
            try:
                position = await consumer.position(tp)
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - a partition moving away mid-rebalance
                continue
            if position is not None and highwater is not None:
                metrics.set_consumer_lag(tp.topic, tp.partition, max(0, highwater - position))

    async def _revoked(sender, revoked, **kwargs) -> None:
        metrics.reset_assignment_gauges()

    app.on_partitions_revoked.connect(_revoked)
