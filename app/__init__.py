"""loadshape: the service package (stream processing, CLI, emitter, broker management)."""
