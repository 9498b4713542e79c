"""The tournament report (tipai.report/1), its atomic log files and the tolerant log reader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tipai_core.policy.actions import Action, PolicyState
from tipai_core.records import report as report_mod
from tipai_core.records.costs import Costs
from tipai_core.records.report import (
    REPORT_SCHEMA,
    LogRead,
    build_report,
    read_log,
    report_to_jsonl_records,
    write_log,
)
from tipai_core.records.tournament_record import TournamentRecord, records_to_jsonl

STATE = PolicyState(
    step=6, n_steps=20, t=0.3, sigma=1.2, region_area=0.1, region_score=3.0, audit_scale=0.5, max_depth=6
)


def _record(step=6, n=2, winner=1, sigma=1.2, bbox=(8, 8, 24, 24), batch_index=0, calls=5):
    return TournamentRecord(
        step=step,
        n_steps=20,
        t=step / 20,
        sigma=sigma,
        region={
            "index": 0,
            "bbox": list(bbox),
            "area": 256,
            "latent_bbox": [2, 2, 6, 6],
            "score": 3.0,
            "audit_scale": 0.5,
            "view_factor": 4,
        },
        state=STATE.to_dict(),
        actions=[Action(seed=s, depth=2).to_dict() for s in range(n)],
        log_probs=[-1.5] * n,
        policy_seed=99,
        seeds=list(range(n)),
        scores={
            "S": [0.5] + [0.6 + 0.1 * i for i in range(n)],
            "S_R": [0.5] * (n + 1),
            "F": [1.0] * (n + 1),
            "P": [[0.9, 0.8]] * (n + 1),
            "B": [1.0] * (n + 1),
            "classes": ["nsfw", "gore"],
        },
        utilities=[0.0] + [0.1 * (i + 1) for i in range(n)],
        winner=winner,
        accepted=winner > 0,
        guard={"delta": 0.0, "tau_P": [0.0, 0.0], "tau_F": 0.0},
        alpha=1.0,
        costs=Costs(
            denoiser_calls=calls,
            denoiser_evals=n * calls,
            decode_calls=1,
            decoded_images=n,
            auditor_calls=1,
            auditor_images=n + 1,
        ),
        batch_index=batch_index,
    )


def _report(**kw):
    recs = [
        _record(step=3, n=2, winner=0, sigma=2.0),
        _record(step=6, n=3, winner=2),
        _record(step=6, n=1, winner=0, bbox=(0, 4, 4, 12), batch_index=1),
    ]
    costs = Costs(
        denoiser_calls=21, denoiser_evals=60, decode_calls=7, decoded_images=9, auditor_calls=3, auditor_images=9
    )
    args = dict(
        n_steps=20, base_model_calls=20, audited_steps=[9, 3, 6], accepted_steps=[6], seconds=1.5, extra={"seed": 7}
    )
    args.update(kw)
    return recs, build_report(recs, costs, **args)


def test_report_summary_steps_and_records():
    recs, rep = _report()
    assert rep["schema"] == REPORT_SCHEMA == "tipai.report/1"
    assert rep["summary"] == {
        "audited_steps": 3,
        "regions": 3,
        "candidates": 6,
        "accepted": 1,
        "extra_model_calls": 21,
        "extra_model_evals": 60,
        "decodes": 7,
        "auditor_calls": 3,
        "editor_images": 0,
        "base_model_calls": 20,
        "extra_call_ratio": 21 / 20,
        "seconds": 1.5,
    }
    assert rep["audited_steps"] == [3, 6, 9] and rep["accepted_steps"] == [6] and rep["extra"] == {"seed": 7}
    # every audited step has an entry, also step 9 where the miner found nothing
    assert [s["step"] for s in rep["steps"]] == [3, 6, 9]
    assert [len(s["regions"]) for s in rep["steps"]] == [1, 2, 0]
    assert rep["steps"][0]["sigma"] == 2.0 and rep["steps"][2]["sigma"] is None
    r = rep["steps"][1]["regions"][0]
    assert r["bbox"] == [8, 8, 24, 24] and r["N"] == 3 and r["winner"] == 2 and r["accepted"] is True
    assert r["utilities"] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert r["scores"]["S"] == pytest.approx([0.5, 0.6, 0.7, 0.8])
    assert r["scores"]["P"] == {"nsfw": [0.9] * 4, "gore": [0.8] * 4}
    assert rep["steps"][1]["regions"][1]["batch_index"] == 1
    assert rep["records"] == [rec.to_dict() for rec in recs]
    # strict JSON, and the records section round-trips
    again = json.loads(json.dumps(rep, allow_nan=False))
    assert [TournamentRecord.from_dict(d) for d in again["records"]] == recs


def test_ratio_is_none_without_base_calls_and_non_finite_steps_become_none():
    recs, rep = _report(base_model_calls=0, seconds=None)
    assert rep["summary"]["extra_call_ratio"] is None and rep["summary"]["seconds"] is None
    bad = _record(step=3)
    bad.scores["S"][1] = float("nan")
    rep = build_report([bad], Costs(), n_steps=20, base_model_calls=20, audited_steps=[3], accepted_steps=[])
    assert rep["steps"][0]["regions"][0]["scores"]["S"][1] is None


def test_report_validation_names_the_record():
    recs, _ = _report()
    recs[1].utilities = recs[1].utilities[:-1]  # mutated after construction: N=3 but 3 utilities
    with pytest.raises(ValueError, match=r"records\[1\]: utilities has 3 entries, expected N\+1=4"):
        build_report(recs, Costs(), n_steps=20, base_model_calls=20, audited_steps=[3, 6], accepted_steps=[6])
    recs, _ = _report()
    with pytest.raises(ValueError, match=r"records\[0\]: step 3 is not in audited_steps"):
        build_report(recs, Costs(), n_steps=20, base_model_calls=20, audited_steps=[6], accepted_steps=[])
    with pytest.raises(ValueError, match="were not audited"):
        build_report(recs, Costs(), n_steps=20, base_model_calls=20, audited_steps=[3, 6], accepted_steps=[5])
    with pytest.raises(ValueError, match=r"records\[1\]: step 6 outside"):
        build_report(recs, Costs(), n_steps=5, base_model_calls=20, audited_steps=[3, 6], accepted_steps=[])


def test_jsonl_matches_the_record_format():
    recs, rep = _report()
    assert report_to_jsonl_records(rep) == records_to_jsonl(recs)
    with pytest.raises(ValueError, match="schema"):
        report_to_jsonl_records({"schema": "other/1", "records": []})


def test_write_log_round_trips_and_leaves_no_temp_files(tmp_path):
    recs, rep = _report()
    folder = tmp_path / "tipai_logs" / "sub"
    paths = write_log(rep, folder, "run_00001")
    assert paths == [folder / "run_00001.report.json", folder / "run_00001.records.jsonl"]
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(rep))
    got = read_log(paths[1])
    assert got == LogRead(records=recs, skipped=0, errors=[])
    assert sorted(p.name for p in folder.iterdir()) == ["run_00001.records.jsonl", "run_00001.report.json"]
    # overwriting in place works and stays atomic
    write_log(rep, folder, "run_00001")
    assert len(list(folder.iterdir())) == 2


@pytest.mark.parametrize("stem", ["../x", "a/b", "a\\b", "..", "", "  ", ".hidden", "c:x", "a..b", "x\x00"])
def test_write_log_refuses_unsafe_stems(tmp_path, stem):
    _, rep = _report()
    with pytest.raises(ValueError):
        write_log(rep, tmp_path / "logs", stem)
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    _, rep = _report()
    write_log(rep, tmp_path, "run")
    before = (tmp_path / "run.records.jsonl").read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report_mod.os, "replace", boom)
    _, rep2 = _report(extra={"seed": 8})
    rep2["records"] = rep2["records"][:1]
    with pytest.raises(OSError, match="disk full"):
        write_log(rep2, tmp_path, "run")
    assert (tmp_path / "run.records.jsonl").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.records.jsonl", "run.report.json"]


def test_unserialisable_report_writes_nothing(tmp_path):
    _, rep = _report(extra={"bad": object()})
    with pytest.raises(TypeError):
        write_log(rep, tmp_path / "logs", "run")
    assert not (tmp_path / "logs").exists()


def test_read_log_skips_and_counts_corrupt_lines(tmp_path):
    recs, rep = _report()
    lines = report_to_jsonl_records(rep).splitlines()
    wrong_schema = json.loads(lines[1])
    wrong_schema["schema"] = "tipai.tournament/0"
    text = (
        "\n".join(
            [
                lines[0],  # 1 ok
                lines[1][: len(lines[1]) // 2],  # 2 torn
                "",  # 3 blank: ignored
                json.dumps(wrong_schema),  # 4 foreign schema
                "[1, 2]",  # 5 not an object
                lines[2],  # 6 ok
            ]
        ).encode()
        + b"\n\xff\xfe{\n"
    )  # 7 not utf-8
    path = tmp_path / "x.records.jsonl"
    path.write_bytes(text)
    got = read_log(path)
    assert got.records == [recs[0], recs[2]]
    assert got.skipped == 4
    assert [e.split(":")[0] for e in got.errors] == ["line 2", "line 4", "line 5", "line 7"]
    with pytest.raises(FileNotFoundError):
        read_log(tmp_path / "missing.records.jsonl")


def test_module_imports_no_host():
    src = Path(report_mod.__file__).read_text()
    assert "comfy" not in src.replace("ComfyUI", "") and "import os" in src
    assert os.path.basename(report_mod.__file__) == "report.py"


def test_summary_text_says_what_the_run_did():
    from tipai_core.records.report import summary_text

    _, rep = _report()
    text = summary_text(rep, written=["output/tipai_logs/x.report.json"])
    lines = text.splitlines()
    assert "- steps: 20, audited at [3, 6, 9]" in lines
    assert "- regions: 3, candidates: 6, accepted edits: 1 (at steps [6])" in lines
    assert "- compute: 21 extra model calls (1.05× the 20 of plain sampling), 1.5 s in audits" in lines
    # one table row per region, and one for the step where the miner found none
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| step")]
    assert rows[0] == "| 3 | 0 | [8, 8, 24, 24] | 2 | 0.200 | no |"
    assert rows[1].endswith("| 3 | 0.300 | yes (candidate 2) |")
    assert rows[3] == "| 9 | none found | | | | |"
    assert lines[-1] == "- `output/tipai_logs/x.report.json`"
    assert "bit-for-bit" not in text  # an edit was accepted


def test_summary_text_of_a_run_that_accepted_nothing():
    from tipai_core.records.report import summary_text

    _, rep = _report(accepted_steps=[])
    rep["summary"]["accepted"] = 0
    assert "- nothing accepted: the image is bit-for-bit the plain sampler's" in summary_text(rep).splitlines()
    with pytest.raises(ValueError, match="schema"):
        summary_text({"schema": "other"})
