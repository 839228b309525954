"""``lindit demo``: the EDiT / MM-EDiT / LiT pipeline end to end on the built-in shapes world.

Converts each built-in teacher with its family's methods, distils every student with the trainer's
recipe, samples held-out prompts from teacher and students with the same noise, and reports quality
(classifier FID, prompt adherence, agreement with the teacher) and latency. See ``lindit demo --help``.
"""

from .plan import FAMILIES, DemoSettings
from .runner import run_demo

__all__ = ["FAMILIES", "DemoSettings", "run_demo"]
