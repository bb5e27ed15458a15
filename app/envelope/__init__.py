"""The workload-envelope what-if (pure): "what if usage doubles, or tasks get 30% harder?"

``record`` folds spans into sessions, ``project`` transforms them (``Envelope``: usage,
complexity, added capabilities), ``evaluate`` checks assumptions, routing risk and load on
today's workload and on the envelope, ``render_text``/``to_json`` present it.
Model and caveats: docs/ENVELOPE.md.
"""

from app.envelope.capability import Capability, parse_capability
from app.envelope.evaluate import Report, evaluate
from app.envelope.model import Envelope, Projected, project
from app.envelope.recording import FORMATS, Intake, Recording, record
from app.envelope.render import render_text, to_json

__all__ = [
    "FORMATS", "Capability", "Envelope", "Intake", "Projected", "Recording", "Report",
    "evaluate", "parse_capability", "project", "record", "render_text", "to_json",
]
