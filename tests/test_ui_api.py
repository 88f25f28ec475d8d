"""Every launch action is a named Gradio endpoint: submit through ``gradio_client``, read the
status back, run a run again, validate a problem file, as a script on another machine would."""

from __future__ import annotations

import json
import re

import pytest
from gradio_client import Client, handle_file

from tests.browser import running_dashboard
from tests.conftest import wait_for


def test_submit_and_status_through_gradio_client(tmp_path):
    with running_dashboard(tmp_path / "data") as dashboard:
        client = Client(dashboard.url, verbose=False)
        run_id = client.predict(
            "healthcheck", json.dumps({"steps": 2, "step_seconds": 0.1}), api_name="/submit_job"
        )
        status = wait_for(
            lambda: (
                (s := client.predict(run_id, api_name="/run_status"))["status"] == "succeeded" and s
            ),
            timeout=90,
            what="the run to succeed",
            every=0.5,
        )
        assert status["kind"] == "healthcheck" and status["progress"] == 1.0

        launched = client.predict("via form", 1, 0.0, False, api_name="/launch_healthcheck")
        assert re.search(r"run \d+", launched)
        by_keyword = client.predict(steps=1, step_seconds=0.0, api_name="/launch_healthcheck")
        assert re.search(r"run \d+", by_keyword)
        copy = client.predict(client.predict(run_id, api_name="/run_again"), api_name="/run_status")
        assert copy["parent_id"] == run_id and copy["config"]["steps"] == 2

        with pytest.raises(Exception, match="steps"):
            client.predict("healthcheck", '{"steps": 0}', api_name="/submit_job")
        with pytest.raises(Exception, match="unknown job kind"):
            client.predict("nope", "{}", api_name="/submit_job")

        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"task_id": "a", "prompt": "x"}\n')
        summary, errors = client.predict(handle_file(str(bad)), api_name="/validate_dataset")
        assert "nothing was imported" in summary and errors["data"][0][0] == 1
        with pytest.raises(Exception, match="seeds"):
            client.predict('{"seeds": 0}', api_name="/reproduce_paper")
