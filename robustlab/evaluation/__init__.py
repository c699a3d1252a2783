"""The evaluation stage, above the attack library: engine, evaluator, summary, sanity flags, the Lightning callback and natural shifts."""
