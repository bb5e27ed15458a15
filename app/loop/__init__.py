"""The closed loop: workload assumptions, routing policy, recalibrator, signing, gateway.

Pure modules (no Kafka, clock, logging or environment): ``assumptions``, ``tracker``,
``observe``, ``policy``, ``guardrails``, ``recalibrator``, ``signing``, ``gateway``, and the
closed-loop simulation ``closed_loop`` / ``loop_report`` (simulated agents behind a gateway).
The thin shell is ``gateway_client`` (persistence, Kafka consumer). See docs/CLOSED_LOOP.md.
"""
