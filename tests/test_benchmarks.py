"""The benchmark runner: its registry and --set checks, the record a case writes, the results page and the README
block. Fast: the one case run is a tiny matmul."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks` is run from the repository root, not installed

from benchmarks import core, report  # noqa: E402
from benchmarks.__main__ import main  # noqa: E402


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_every_suite_and_case(capsys):
    code, out, _ = run(["list"], capsys)
    assert code == 0
    lines = out.splitlines()
    for suite in core.SUITES:
        assert suite in lines
    assert "sampling.identical_digits" in out and "precision.peaks" in out
    assert "n=256 (quick 16)" in out  # parameters with their quick values


@pytest.mark.parametrize(
    "args, words",
    [
        (["run", "precision.peaks", "--set", "size=3"], "has no parameter 'size'; its parameters: matmul_n, rounds"),
        (["run", "precision.peaks", "--set", "rounds=many"], "rounds takes int values"),
        (["run", "precision.peaks", "--set", "rounds"], "write KEY=VALUE"),
        (["run", "quality.sampling", "--set", "labels=some"], "labels is one of 0-9, data"),
        (["run", "sampling", "--set", "nope=1"], "no case of sampling has that parameter"),
        (["run", "nosuch"], "There is no suite 'nosuch'"),
        (["run", "sampling.nosuch"], "Suite sampling has no case 'nosuch'"),
        (["run", "training.time_to_quality", "--set", "setting=ddpm-cond:ddim:x:1"], "write RECIPE:SAMPLER:STEPS"),
        (["run", "training.time_to_quality", "--set", "setting=flow-cond:ddim:8:1"], "flow-cond: The sampler 'ddim'"),
        (["run", "training.time_to_quality", "--set", "every=0"], "every and max_images take positive"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args, words, capsys, tmp_path):
    code, _, err = run(["--results", str(tmp_path), *args], capsys)
    assert code == 2
    assert words in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing ran


def test_list_parameters_parse_each_item():
    p = core.Param(("fp32",), choices=("fp32", "bf16"))
    assert p.parse("variant", "fp32,bf16") == ("fp32", "bf16")
    with pytest.raises(core.BenchError, match="one of fp32, bf16"):
        p.parse("variant", "fp32,fp16")
    assert core.Param(False).parse("compile", "true") is True
    assert core.Param((1, 3)).parse("resample", "2") == (2,)


def test_a_case_run_appends_a_well_formed_record(capsys, tmp_path):
    code, out, _ = run(
        ["--results", str(tmp_path), "run", "precision.peaks", "--set", "matmul_n=32", "--set", "rounds=1"], capsys
    )
    assert code == 0 and "1 records appended" in out
    (line,) = (tmp_path / "precision.jsonl").read_text().splitlines()
    r = json.loads(line)
    assert {"suite", "case", "params", "metrics", "machine", "git", "date", "command"} <= set(r)
    assert (r["suite"], r["case"], r["params"]) == ("precision", "peaks", {"matmul_n": 32, "rounds": 1})
    assert r["metrics"]["matmul_fp32_gflop_per_s"] > 0 and r["metrics"]["auto_sample"].startswith("fp32")
    assert r["machine"]["processor"] and r["machine"]["kind"] and r["machine"]["torch"]
    assert r["command"].endswith("run precision.peaks --set matmul_n=32 --set rounds=1")


def test_time_to_quality_summary_counts_images_and_minutes_to_each_ratio():
    from benchmarks.quality_curve import summary

    points = [
        {"images": 1000, "trained": 1000, "train_s": 10.0, "fid": 50.0, "baseline_fid": 2.0, "eval_s": 1.0},
        {"images": 2000, "trained": 1000, "train_s": 30.0, "fid": 16.0, "baseline_fid": 2.0, "eval_s": 1.0},
        {"images": 3000, "trained": 1000, "train_s": 20.0, "fid": 9.0, "baseline_fid": 2.0, "eval_s": 1.0},
    ]
    got = summary(points, (10.0, 5.0, 2.0))
    assert got["images_per_s"] == 50.0  # 3000 images in 60 s of training, evaluation excluded
    assert (got["images_to_10x"], got["minutes_to_10x"]) == (2000, 2000 / 50 / 60)
    assert (got["images_to_5x"], got["images_to_2x"], got["minutes_to_2x"]) == (3000, None, None)
    assert got["curve"] == [[1000, 50.0], [2000, 16.0], [3000, 9.0]] and got["baseline_fid"] == 2.0


@pytest.mark.slow
def test_time_to_quality_goes_on_from_where_a_stopped_measurement_left(capsys, tmp_path):
    def measure(max_images):
        args = ["--results", str(tmp_path), "run", "training.time_to_quality", "--quick", "--set", "recipe=ddpm-cond"]
        for kv in ("every=128", f"max_images={max_images}", "n=20", "data_limit=256", f"out={tmp_path / 'runs'}"):
            args += ["--set", kv]
        assert run(args, capsys)[0] == 0
        return json.loads((tmp_path / "training.jsonl").read_text().splitlines()[-1])

    first, second = measure(128), measure(256)
    assert [p[0] for p in second["metrics"]["curve"]] == [128, 256]
    assert second["metrics"]["curve"][0] == first["metrics"]["curve"][0]  # read back, not trained again
    assert second["params"]["sampler"] == "dpmpp_2m" and second["params"]["guidance"] == 1.35


def record(case, params, metrics, date, kind="avx2", **extra):
    return {
        "suite": "sampling",
        "case": case,
        "params": params,
        "metrics": metrics,
        "date": date,
        "machine": {"processor": "Test CPU", "kind": kind, "threads": 2},
        "git": {"revision": "abc"},
        "command": "python -m benchmarks run sampling",
        **extra,
    }


def write(path, records):
    path.mkdir(exist_ok=True)
    (path / "sampling.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_report_shows_the_newest_record_per_variant_and_processor(tmp_path):
    write(
        tmp_path / "r",
        [
            record("speed", {"model": "a"}, {"images_per_s": 1.0}, "2026-01-01"),
            record("speed", {"model": "a"}, {"images_per_s": 2.5}, "2026-02-01"),  # supersedes the one above
            record("speed", {"model": "a"}, {"images_per_s": 9.0}, "2026-01-01", kind="amx"),  # another processor
            record("speed", {"model": "old"}, {"images_per_s": 7.0}, "2026-03-01", superseded="no longer packaged"),
        ],
    )
    readme = tmp_path / "README.md"
    said = report.report(tmp_path / "r", tmp_path / "results.md", readme)
    page = (tmp_path / "results.md").read_text()
    assert "## sampling" in page and "| case | parameters | figures | machine |" in page
    assert "images_per_s 2.5" in page and "images_per_s 9" in page
    assert "images_per_s 1;" not in page and "model=old" not in page
    assert "2 of 4 records shown" in said
    assert "no <!-- benchmarks:headline:start -->" in said and not readme.exists()
    report.report(tmp_path / "r", tmp_path / "all.md", readme, show_all=True)
    assert "model=old" in (tmp_path / "all.md").read_text()


def test_readme_block_is_replaced_between_the_markers_only(tmp_path):
    write(tmp_path / "r", [record("x", {}, {"v": 1.0}, "2026-01-01")])
    (tmp_path / "r" / "serve.jsonl").write_text(
        json.dumps(
            {
                **record("latency", {"model": "ddpm-cond"}, {"digit_ms": 61.4, "first_frame_ms": 13.8}, "2026-01-02"),
                "suite": "serve",
            }
        )
        + "\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{report.START}\nold text\n{report.END}\nafter\n")
    report.report(tmp_path / "r", tmp_path / "results.md", readme)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{report.END}\nafter\n")
    assert "old text" not in text
    assert "one `ddpm-cond` digit over HTTP: **61 ms** (first frame 14 ms)" in text
    assert report.replace_block("no markers here", "x") is None


def test_a_malformed_results_line_is_a_sentence(tmp_path, capsys):
    (tmp_path / "sampling.jsonl").write_text("{not json\n")
    code, _, err = run(
        ["--results", str(tmp_path), "report", "--out", str(tmp_path / "o.md"), "--readme", str(tmp_path / "R.md")],
        capsys,
    )
    assert code == 2 and "sampling.jsonl:1 is not a JSON record" in err
