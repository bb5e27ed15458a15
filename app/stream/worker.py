"""Wire the worker: Faust app + stage 1 (batch service) + stage 2 + metrics endpoint.

Everything is built here from injected settings and registry; nothing global.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from app.core.stage1 import SessionStep
from app.core.stage2 import SegmentStep
from app.loop.misroute import capabilities
from app.metrics import LoadshapeMetrics
from app.settings import Settings
from app.stream.app import make_app, make_topics
from app.stream.lag import register_lag_timer
from app.stream.normalize import Normalize, catalog_windows
from app.stream.recalibrate import Stage3
from app.stream.stage1_batch import BatchStage1
from app.stream.stage2 import Stage2


def build_worker(settings: Settings, registry: CollectorRegistry):
    """(faust app, metrics bundle) with both stages registered."""
    app = make_app(settings)
    topics = make_topics(app, settings)
    metrics = LoadshapeMetrics.create(registry, max_segments=settings.metrics_max_segments)
    # stage 1 reads agent.spans in batches with its own group consumer, as a service of the app
    app.service(BatchStage1(app, settings, metrics, SessionStep.from_settings(settings)))
    stage3 = _stage3(app, settings, topics, metrics)
    Stage2(app, settings, topics, metrics, SegmentStep.from_settings(settings),
           updates=stage3.publish_update if stage3 is not None else None,
           capability=capabilities(stage3.step.initial) if stage3 is not None else None)
    Normalize(app, settings, topics, metrics, catalog_windows(settings))
    register_lag_timer(app, metrics, {settings.topic_sessions, settings.topic_otlp})
    return app, metrics


def _stage3(app, settings: Settings, topics, metrics) -> Stage3 | None:
    """The recalibration stage, when a routing policy is configured."""
    if settings.policy_file is None:
        return None
    from app.loop.policy import load_policy
    from app.loop.recalibration_step import RecalibrationStep

    key = settings.recalibration_key.get_secret_value() if settings.recalibration_key else None
    step = RecalibrationStep(load_policy(settings.policy_file), key=key, mode=settings.recalibration_mode)
    return Stage3(app, settings, topics, metrics, step)
