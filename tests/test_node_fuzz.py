"""A seeded few hundred inputs of benchmarks/fuzz_scp.py against a real node process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_fuzzed_scp_neither_crashes_nor_hangs_nor_loses_valid_instances() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fuzz_scp.py"), "--inputs", "300", "--seed", "11",
                             "--time-limit", "50", "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["inputs"] == 300, figures
    assert figures["valid"] >= 30
    assert figures["crashes"] == 0, figures["crash_samples"]
    assert figures["hangs"] == 0 and figures["no_answer"] == 0, figures
    assert figures["accepted_without_result"] == 0, figures
    assert figures["lost_valid"] == 0, figures
    assert figures["phi_in_log"] == 0 and figures["phi_in_audit"] == 0, figures
    assert figures["refused"] > 0 and figures["accepted"] > 0 and figures["raw_closed"] > 0, figures
