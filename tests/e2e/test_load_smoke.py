"""A short `python -m bench.load` run against the embedded `contrackt serve`: the load test
itself works, every HTTP answer to POST /v1/extract is 202, 429 or 503 even at twice the
measured capacity and with 32 clients at once, every accepted job completes, and the server
holds no job the client was not told about. The figures are not asserted (a shared 2-core
machine); the real runs and their numbers are in docs/benchmarks.md ("Load").

Known defect, counted but not asserted here: with many clients at once a few refused POSTs get
no answer at all (connection reset: the refusal closes the connection before the body is read,
and the kernel resets a socket closed with unread data). `transport_errors` counts them; the
fix belongs to the edge (docs/capacity.md, "Follow-ups"). The check on ``server_jobs`` shows they
were refusals, not lost acceptances.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.load.run import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_short_load_run_against_serve_reports_its_figures_and_loses_no_job(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    argv = ["--target", "serve", "--duration", "3", "--steps", "0.5,2", "--batch", "20", "--scan-batch", "0"]
    argv += ["--scans", "0", "--overhead-blocks", "2", "--burst", "2", "--drain-timeout", "60", "--json", str(out)]
    argv += ["--overload-clients", "32", "--overload-duration", "2"]
    assert main(argv) == 0

    result = json.loads(out.read_text())
    serve = result["targets"]["serve"]
    assert serve["capacity_jobs_per_s"] > 0
    assert [s["factor"] for s in serve["steps"]] == [0.5, 2.0]
    for step in serve["steps"]:
        assert step["sent"] > 0
        assert step["accepted"] == step["statuses"].get("202", 0)
        assert step["ingest_p50_ms"] is not None and step["e2e_p50_ms"] is not None
    assert serve["overload"]["sent"] > 0 and serve["overload"]["clients"] == 32
    [throughput] = serve["throughput"]
    assert throughput["kind"] == "born_1p" and throughput["completed"] == 20
    overhead = serve["overhead"]
    assert overhead["bare"]["p50_ms"] > 0 and overhead["contrackt"]["p50_ms"] > 0 and overhead["p50_ratio"] > 0

    answered = {k for k in serve["post_statuses"] if not k.startswith("error:")}
    assert answered <= {"202", "429", "503"}, serve["post_statuses"]
    assert serve["unexpected_post_statuses"] == {}
    verify = serve["verify"]
    accepted = verify["accepted"]
    assert accepted > 0
    assert (verify["completed"], verify["failed"], verify["unfinished"]) == (accepted, 0, 0)
    # the server holds exactly the jobs the driver saw accepted, all completed: a POST that got no
    # answer (a connection reset, see the module docstring) created no job
    assert verify["server_jobs"] == {"completed": accepted}
