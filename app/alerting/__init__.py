"""Pager path: loadshape alerts (Kafka) -> Alertmanager API v2.

``payload`` is the pure mapping, ``index`` remembers what was posted so a resolution carries
exactly the labels of the alert it resolves, ``sender`` is the HTTP client and ``forwarder``
the Kafka consumer loop.
"""
