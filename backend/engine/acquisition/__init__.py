"""Choosing what to label: query strategies (`strategies`) score model outputs for uncertainty,
and the pool samplers (`sampling`) decide which tasks are re-scored at all; UPS re-scores about
11% of the pool per iteration, the rest keep their last score.
"""
