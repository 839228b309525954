"""The examples of docs/DIFFUSERS.md run as written (all but those marked "# downloads"), in order."""

import re
import tempfile
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "DIFFUSERS.md"


def test_the_examples_run(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the examples' tempfile.mkdtemp()
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    runnable = [b for b in blocks if not b.startswith("# downloads")]
    assert len(runnable) >= 5
    namespace = {}
    for block in runnable:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert type(namespace["same"]) is type(namespace["student"])
    assert "mine" in namespace["student"].peft_config
