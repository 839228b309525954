"""``lindit diagnose``: where a converted student's error comes from, layer by layer and block by block.

``diagnose(config, plan, student_dir)`` returns the measurements (see ``run.py``); ``report.markdown``
renders them. See docs/DIAGNOSIS.md for what the numbers mean and what they showed on the demo's students.
"""

from .run import builtin_config, diagnose

__all__ = ["builtin_config", "diagnose"]
