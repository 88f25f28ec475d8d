"""``python -m bench`` on a folder of fake benchmarks: every script found and run, its last-line
JSON parsed into BENCHMARKS.md beside the machine, failures reported, ``--only`` keeping the
earlier results of the others. The real benchmarks take minutes and never run here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import discover, last_json, main, previous_results
from tests.conftest import REPO

FAST = '''"""Fast against slow, on nothing at all.

More detail that the report leaves out.
"""
import json

print("warming up")
print(json.dumps({"bench": "fast", "ours_per_s": 812.0, "ratio": 2.69, "p95": {"ms": 41},
                  "generations": 4}))
'''
BROKEN = '''"""A benchmark that crashes."""
print("about to fail")
raise SystemExit(3)
'''
SILENT = '''"""A benchmark that forgets its JSON."""
print("done, but no figures")
'''


@pytest.fixture
def benches(tmp_path: Path) -> Path:
    folder = tmp_path / "fakebench"
    folder.mkdir()
    for name, text in {"fast": FAST, "broken": BROKEN, "silent": SILENT}.items():
        (folder / f"{name}.py").write_text(text)
    (folder / "__main__.py").write_text("raise SystemExit('not a benchmark')\n")
    return folder


def test_every_script_runs_and_benchmarks_md_holds_its_figures(benches, tmp_path, capsys):
    out = tmp_path / "BENCHMARKS.md"
    assert discover(benches) == ["broken", "fast", "silent"]
    assert main(["--out", str(out)], folder=benches) == 1  # one failed, one gave no JSON
    text = out.read_text()
    assert "## Machines" in text and "| cores |" in text and "| torch |" in text
    assert "| GPU |" in text
    assert "| fast | A | ok | 0.0 | ratio 2.69 |" in text  # "generations" is not a ratio
    assert "Fast against slow, on nothing at all." in text
    assert "More detail" not in text
    assert "| **ratio** | **2.69** |" in text
    assert "| ours_per_s | 812 |" in text and "| p95.ms | 41 |" in text
    assert "**Failed** (exit 3)" in text and "about to fail" in text
    assert "**Failed** (no JSON last line)" in text
    progress = capsys.readouterr().err
    assert "== [2/3] fast" in progress
    assert "[fast     0s] warming up" in progress


def test_only_runs_the_named_ones_and_keeps_the_others_results(benches, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    assert main(["--out", str(out)], folder=benches) == 1
    (benches / "silent.py").write_text('import json\nprint(json.dumps({"ratio": 1.5}))\n')
    assert main(["--only", "silent", "--out", str(out)], folder=benches) == 0
    results = previous_results(out)
    assert sorted(results) == ["broken", "fast", "silent"]
    assert results["silent"].figures == {"ratio": 1.5}
    assert results["fast"].figures["ours_per_s"] == 812.0


def test_a_result_keeps_the_machine_it_ran_on_when_another_host_adds_its_own(
    benches, tmp_path, monkeypatch
):
    """A GPU benchmark run on a GPU host with ``--only`` sits beside the CPU host's results,
    each labelled with its own machine."""
    out = tmp_path / "BENCHMARKS.md"
    cpu_host = {"CPU": "AMD EPYC", "cores": "2", "GPU": "none", "load average": "0.5"}
    gpu_host = {"CPU": "Intel Xeon", "cores": "16", "GPU": "NVIDIA H100", "load average": "3"}
    monkeypatch.setattr("bench.__main__.machine", lambda: cpu_host)
    main(["--out", str(out)], folder=benches)
    monkeypatch.setattr("bench.__main__.machine", lambda: gpu_host)
    main(["--only", "fast", "--out", str(out)], folder=benches)
    results = previous_results(out)
    assert results["fast"].machine == gpu_host
    assert results["broken"].machine == cpu_host
    text = out.read_text()
    assert "| GPU | none | NVIDIA H100 |" in text  # machine A is the first result's (broken)
    assert "| fast | B | ok |" in text and "| silent | A | failed |" in text
    assert "on machine B." in text


def test_unknown_only_name_is_a_usage_error(benches, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--only", "fast,nope", "--out", str(tmp_path / "B.md")], folder=benches)
    assert exit_.value.code == 2
    assert "no benchmark named nope" in capsys.readouterr().err
    assert not (tmp_path / "B.md").exists()


def test_last_json_reads_only_the_last_line():
    assert last_json(["x", '{"a": 1}', ""]) == {"a": 1}
    assert last_json(['{"a": 1}', "trailing words"]) is None
    assert last_json(["[1, 2]"]) is None


def test_the_runner_finds_the_repository_benches():
    names = discover(REPO / "bench")
    assert {"sandbox", "labeling", "models", "dashboard"} <= set(names)
    assert "__main__" not in names
    usage = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert usage.returncode == 0 and "--only" in usage.stdout
