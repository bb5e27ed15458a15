"""Default bounds on what the pipeline keeps per partition, whatever producers send.

``app.settings`` exposes them (``LOADSHAPE_SESSION_MAX_STATE_BYTES``, ...); the steps take them
as defaults when built without settings (tests, the closed loop).
"""

# an open session's stage-1 state: one record of the state topic, and a Kafka record is <= 1 MB
SESSION_MAX_STATE_BYTES = 512 * 1024
# sessions (and tombstones) stage 1 keeps per span partition (~2.4 KB each)
SESSION_MAX_OPEN = 200_000
# sessions a segment's reorder buffer holds (its state is one table value: one Kafka message)
REORDER_MAX_HELD = 4096
