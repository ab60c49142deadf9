"""The running loop: the pure planner (reconcile), its executor (loop), its memory (state) and its senses (probe, inflight)."""
