"""bench/accuracy.py and bench/stability.py, tiny: each row trains, is saved and reported; `--report` prints the
saved rows again without training; the look-alike merge reads 0/o/O (and the other groups) as one character."""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _bench(script, *argv):
    run = subprocess.run([sys.executable, os.path.join("bench", script), *argv], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    return run.stdout


def _rows(out):
    return re.findall(r"^\| (digits-4-6|d-u-4) \| (per-position|ctc) \|", out, re.MULTILINE)


def test_lookalikes_merge_to_one_character():
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import accuracy

    assert "0oO".translate(accuracy.MERGE) == "OOO" and "xX".translate(accuracy.MERGE) == "XX"
    assert "1lI".translate(accuracy.MERGE) == "1lI"  # not one shape in the captcha fonts: kept apart


def test_accuracy_bench_tiny_saves_rows_and_reports_them_again(tmp_path):
    work = str(tmp_path / "work")
    out = _bench("accuracy.py", "--tiny", "--work", work, "--spaces", "digits-4-6")
    assert _rows(out) == [("digits-4-6", "per-position"), ("digits-4-6", "ctc")], out
    assert "per length: 4: " in out  # a variable-length space reports each length
    assert sorted(os.listdir(os.path.join(work, "rows"))) == ["digits-4-6.ctc.json", "digits-4-6.per-position.json"]
    for head in ("per-position", "ctc"):
        with open(os.path.join(work, f"accuracy-{head}.png"), "rb") as f:
            assert f.read(8) == PNG_SIGNATURE
    table = out[out.index("| label space"):]
    again = _bench("accuracy.py", "--tiny", "--work", work, "--spaces", "digits-4-6", "--report")
    assert "images=" not in again and again[again.index("| label space"):] == table


def test_stability_bench_tiny_scores_each_setting_and_draws_the_figure(tmp_path):
    work = str(tmp_path / "work")
    out = _bench("stability.py", "--tiny", "--work", work)
    rows = re.findall(r"^\| (per-position|ctc) \| ([0-9.e-]+) \|(.*)\|$", out, re.MULTILINE)
    assert [(head, float(rate)) for head, rate, _ in rows] == [("per-position", 3e-3), ("per-position", 1e-3),
                                                               ("ctc", 3e-3)], out
    assert all(len(figures.split("|")) == 6 for _, _, figures in rows)  # 2 pass ends, the fall, train and recomputed around it, last
    with open(os.path.join(work, "stability.png"), "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
