"""diffusers' generic model checks, this project's own versions, run on each family's teacher and students."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/tiny_models.py, tiny_pipelines.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # diffusers_cases.py
