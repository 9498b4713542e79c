"""Property-based fuzz of the three trainers' command lines (scorer, tspo, calibrate), run in process.

Bad tournament logs (truncated lines, wrong types, NaN, missing keys, huge numbers), bad pairs datasets
(missing and extra columns, wrong types, image paths out of the dataset folder) and bad numeric flags
(NaN, inf, negative, huge, out of range). Every outcome must be one of

* a normal result: exit 0, and every file written is finite (no NaN in a JSON file or a tensor);
* exit 2 with one ``[stage] error: ...`` line that names the input (the file, the row or the option),
  and no policy, calibration or heads file written;

never an uncaught exception, never a hang (each run has a time limit; sizes are tiny).
Hypothesis runs derandomized (the same examples every run), without a deadline and without a database.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import math
import signal
from collections import Counter
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tipai_core.auditor import TINY_ARCH
from tipai_core.auditor.data import write_pairs_parquet
from tipai_core.records.tournament_log import append_records
from tipai_core.testing.auditor_synthetic import make_pairs, write_tiny_open_clip
from tipai_core.testing.bandit import calibration_records
from tipai_core.train import calibrate, scorer, tspo

FUZZ = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
RUN_LIMIT_S = 60  # one stage run; a run that takes longer is a hang


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise Hang(f"a run took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_stage(main, argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` with stdout and stderr captured: (exit status, output). Any other exception propagates."""
    buf = io.StringIO()
    with redirect_stdout(buf), redirect_stderr(buf), time_limit(RUN_LIMIT_S):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return int(code or 0), buf.getvalue()


_counter = itertools.count()


def fresh(root: Path, name: str) -> Path:
    folder = root / f"{name}-{next(_counter)}"
    folder.mkdir(parents=True)
    return folder


def _no_constant(text: str):
    raise AssertionError(f"{text} in a JSON file")


def assert_finite_files(folder: Path) -> None:
    """Every JSON file parses without NaN/Infinity; every tensor of every .safetensors file is finite."""
    from safetensors.torch import load_file

    for f in folder.rglob("*"):
        if f.suffix == ".json":
            json.loads(f.read_text(), parse_constant=_no_constant)
        elif f.suffix == ".safetensors":
            for k, v in load_file(str(f)).items():
                assert not v.is_floating_point() or bool(torch.isfinite(v).all()), (f, k)


def outcome(code: int, out: str, tag: str, names: list[str], out_dir: Path, counts: Counter) -> None:
    """The property every run must have (module docstring); counts normal runs and named errors."""
    assert "Traceback" not in out, out
    if code == 0:
        assert_finite_files(out_dir)
        counts["normal"] += 1
        # records or rows left out, and named in the report
        counts["normal, some left out and named"] += f"[{tag}] dropped " in out or "unreadable row(s) of" in out
        return
    assert code == 2, (code, out)
    errors = [line for line in out.splitlines() if line.startswith(f"[{tag}] error: ")]
    assert len(errors) == 1, out
    assert any(n in errors[0] for n in names), (errors[0], names)
    written = [p for p in out_dir.rglob("*") if p.is_file() and ".ckpt" not in str(p.relative_to(out_dir))]
    assert written == [], written  # no half-written outputs (checkpoints of a diverged run aside)
    counts["error"] += 1


# ----------------------------------------------------------------------------- bad logs (tspo offline, calibrate)

BASE_RECORDS = [r.to_dict() for r in calibration_records(12, 3, torch.Generator().manual_seed(0))]
NASTY = [
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    10**400,
    -(10**30),
    -1,
    0,
    1.5,
    "x",
    "",
    None,
    [],
    {},
    True,
    [1, "a"],
    {"a": 1},
]
PATHS = [
    ("t",),
    ("sigma",),
    ("alpha",),
    ("step",),
    ("winner",),
    ("accepted",),
    ("schema",),
    ("log_probs",),
    ("log_probs", 0),
    ("utilities",),
    ("utilities", 1),
    ("scores",),
    ("scores", "S"),
    ("scores", "S", 0),
    ("scores", "S", 1),
    ("scores", "F", 2),
    ("scores", "B", 1),
    ("scores", "P", 1),
    ("scores", "P", 1, 0),
    ("scores", "classes"),
    ("state",),
    ("state", "t"),
    ("state", "sigma"),
    ("state", "max_depth"),
    ("state", "control_P"),
    ("state", "control_S"),
    ("state", "signals"),
    ("state", "region_area"),
    ("actions",),
    ("actions", 0),
    ("actions", 0, "dilation"),
    ("actions", 1, "depth"),
    ("actions", 0, "editor"),
    ("actions", 2, "cfg_inside"),
    ("true_win",),
    ("true_win", 1),
    ("true_win", 2),
    ("costs",),
    ("seeds",),
]


def mutate(d: dict, path: tuple, value, delete: bool) -> None:
    """Set (or delete) ``d`` at ``path``; a path through something that is no longer a container is left."""
    node = d
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    last = path[-1]
    try:
        if delete:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    except (KeyError, IndexError, TypeError):
        return


@st.composite
def log_line(draw) -> bytes:
    kind = draw(st.integers(0, 9))
    rec = copy.deepcopy(BASE_RECORDS[draw(st.integers(0, len(BASE_RECORDS) - 1))])
    if kind <= 4:  # a good record
        return json.dumps(rec).encode()
    if kind <= 7:  # 1 to 3 mutations: a wrong type, NaN, a huge number, a missing key
        for _ in range(draw(st.integers(1, 3))):
            mutate(rec, draw(st.sampled_from(PATHS)), draw(st.sampled_from(NASTY)), draw(st.booleans()))
        return json.dumps(rec).encode()
    if kind == 8:  # truncated (a torn line)
        text = json.dumps(rec).encode()
        return text[: draw(st.integers(0, len(text) - 1))]
    return draw(st.binary(max_size=40)).replace(b"\n", b" ")  # garbage


def test_bad_logs(tmp_path, one_thread):
    counts: dict[str, Counter] = {"tspo": Counter(), "calibrate": Counter()}

    @settings(max_examples=40, **FUZZ)
    @given(lines=st.lists(log_line(), min_size=1, max_size=14))
    def check(lines):
        folder = fresh(tmp_path, "logs")
        log = folder / "fuzzlog.records.jsonl"
        log.write_bytes(b"\n".join(lines) + b"\n")
        out = fresh(tmp_path, "out")
        code, text = run_stage(
            tspo.main,
            ["offline", "--logs", str(log), "--out", str(out / "p"), "--iterations", "1", "--batch", "8"]
            + ["--n-classes", "2", "--checkpoint-every", "0"],
        )
        outcome(code, text, "tspo", ["fuzzlog"], out, counts["tspo"])
        out = fresh(tmp_path, "out")
        code, text = run_stage(calibrate.main, ["--logs", str(log), "--out", str(out / "c.json")])
        outcome(code, text, "calibrate", ["fuzzlog"], out, counts["calibrate"])

    check()
    print(f"\nfuzz bad logs: {dict(counts['tspo'])} (tspo offline), {dict(counts['calibrate'])} (calibrate)")
    for c in counts.values():
        assert c["normal"] > 0 and c["error"] > 0  # the fuzz reaches both outcomes


# ----------------------------------------------------------------------------- bad datasets (scorer)

IMAGE_COLUMNS = ("Chosen", "Rejected", "Mask")


@pytest.fixture(scope="module")
def scorer_files(tmp_path_factory):
    """The tiny backbone, the rows of a good pairs set, and a valid image outside every dataset folder."""
    from PIL import Image

    root = tmp_path_factory.mktemp("scorer_fuzz")
    clip = write_tiny_open_clip(root / "clip.safetensors", seed=0)
    good = write_pairs_parquet(root / "good" / "fuzzset.parquet", make_pairs(6, seed=1, size=16))
    outside = root / "outside.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(outside)
    return {"clip": clip, "rows": pd.read_parquet(good), "outside": outside, "root": root}


def image_cell(kind: str, outside: Path) -> dict:
    bad = {
        "garbage": {"bytes": b"\x89PNG not an image", "path": None},
        "dotdot": {"bytes": None, "path": "../outside.png"},
        "deep-dotdot": {"bytes": None, "path": "sub/../../outside.png"},
        "absolute": {"bytes": None, "path": str(outside)},
        "symlink": {"bytes": None, "path": "link.png"},
        "missing": {"bytes": None, "path": "missing.png"},
        "inside": {"bytes": None, "path": "inside.png"},
        "inside-dotted": {"bytes": None, "path": "sub/../inside.png"},
        "empty": {"bytes": None, "path": None},
    }
    return bad[kind]


ESCAPES = {"dotdot", "deep-dotdot", "absolute", "symlink"}
CELL_KINDS = ["garbage", "dotdot", "deep-dotdot", "absolute", "symlink", "missing", "inside", "inside-dotted", "empty"]
TABLE_COLUMNS = ["Prompt", "Chosen", "Rejected", "Category", "Mask"]
COLUMN_OPS = ["drop", "ints", "strings", "nulls", "lower", "extra"]


@st.composite
def dataset(draw):
    """(rows kept, image cells changed, prompts changed, column ops, file form, --strict), weighted so
    that about half the sets still train (a few corrupt rows, skipped) and half fail with a named error."""
    n_rows = draw(st.sampled_from([6, 5, 6, 3, 6, 1, 6, 0]))
    cells = draw(
        st.lists(st.tuples(st.integers(0, 5), st.sampled_from(IMAGE_COLUMNS), st.sampled_from(CELL_KINDS)), max_size=4)
    )
    prompts = draw(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["", "   ", "ok prompt"])), max_size=2))
    column_ops = st.tuples(st.sampled_from(TABLE_COLUMNS), st.sampled_from(COLUMN_OPS))
    columns = draw(st.lists(column_ops, max_size=1)) if draw(st.integers(0, 2)) == 0 else []
    form = draw(st.sampled_from(["parquet"] * 8 + ["garbage", "txt"]))
    return n_rows, cells, prompts, columns, form, draw(st.integers(0, 3)) == 0


REPLACING = ("drop", "ints", "strings", "nulls")  # the column ops that replace a column's images


def apply_column(df: pd.DataFrame, col: str, op: str) -> pd.DataFrame:
    if op == "drop":
        return df.drop(columns=[col])
    if op == "lower":
        return df.rename(columns={col: col.lower()})
    if op == "extra":
        df[col + "_extra"] = list(range(len(df)))
    else:
        df[col] = {"ints": list(range(len(df))), "strings": ["img.png"] * len(df), "nulls": [None] * len(df)}[op]
    return df


def write_dataset(spec, files, folder: Path) -> tuple[Path, set[int]]:
    """The dataset of ``spec`` in ``folder``; returns its path and the rows whose images point outside it."""
    from PIL import Image

    n_rows, cells, prompts, columns, form, _ = spec
    (folder / "sub").mkdir()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(folder / "inside.png")
    (folder / "link.png").symlink_to(files["outside"])
    df = files["rows"].iloc[:n_rows].copy()
    escapes: set[tuple[int, str]] = set()  # (row, image column) that points out of the folder
    for row, col, kind in cells:
        if row < len(df):
            df.at[df.index[row], col] = image_cell(kind, files["outside"])
            escapes.discard((row, col))
            if kind in ESCAPES:
                escapes.add((row, col))
    for row, text in prompts:
        if row < len(df):
            df.at[df.index[row], "Prompt"] = text
    for col, op in columns:
        if col in df.columns:
            df = apply_column(df, col, op)
            if op in REPLACING:
                escapes = {(r, c) for r, c in escapes if c != col}
    path = folder / "fuzzset.parquet"
    if form == "garbage":
        path.write_bytes(b"this is not a parquet file")
    elif form == "txt":
        path = folder / "fuzzset.txt"
        path.write_text("Prompt,Chosen\n")
    else:
        df.to_parquet(path)
    return path, {r for r, _ in escapes}


def test_bad_datasets(scorer_files, tmp_path, one_thread, monkeypatch):
    from PIL import Image

    counts: Counter = Counter()
    opened: list[Path] = []
    real_open = Image.open

    def spy_open(fp, *args, **kwargs):
        if isinstance(fp, (str, Path)):
            opened.append(Path(fp).resolve())
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy_open)

    @settings(max_examples=30, **FUZZ)
    @given(spec=dataset())
    def check(spec):
        folder = fresh(tmp_path, "data")
        path, escapes = write_dataset(spec, scorer_files, folder)
        out = fresh(tmp_path, "out")
        opened.clear()
        argv = ["--data", str(path), "--backbone", str(scorer_files["clip"]), "--arch", TINY_ARCH]
        argv += ["--out", str(out / "h.safetensors"), "--epochs", "1", "--batch-size", "4", "--hidden", "8"]
        argv += ["--checkpoint-every", "0", "--val-fraction", "0.5"] + (["--strict"] if spec[-1] else [])
        code, text = run_stage(scorer.main, argv)
        outcome(code, text, "scorer", ["fuzzset", "row "], out, counts)
        # an image path out of the dataset folder is never opened: no file outside it was read
        assert all(folder.resolve() in p.parents for p in opened), opened
        if code == 0 and escapes:
            metrics = json.loads((out / "h.metrics.json").read_text())
            skipped = {r["index"] for part in metrics["skipped_rows"].values() for r in part}
            assert escapes <= skipped, (escapes, skipped)
            counts["escapes skipped"] += 1

    check()
    print(f"\nfuzz bad datasets (scorer): {dict(counts)}")
    assert counts["normal"] > 0 and counts["error"] > 0


# ----------------------------------------------------------------------------- bad numeric flags (every stage)

CHEAP_INT_SPAN = 3  # in-range integer values are drawn from [lo, lo + 3] (seeds: anywhere): runs stay tiny


def numeric_options(parser) -> dict[str, object]:
    """--flag -> its ``cli.bounded`` type, for every numeric option of a stage's parser."""
    return {a.option_strings[0]: a.type for a in parser._actions if getattr(a.type, "range", None) is not None}


@st.composite
def flag_value(draw, flag: str, parse) -> tuple[str, bool]:
    """(text, whether the option accepts it): half values out of range, half small values in range."""
    lo, hi, kind = parse.lo, parse.hi, parse.kind
    if draw(st.booleans()):
        bad = ["nan", "NaN", "inf", "-inf", "1e999", "abc", "", "0x10", "--", "1e400"]
        if kind is int:
            bad += ["1.5", "1e3"]
        if lo is not None:
            bad.append(repr(kind(lo) - draw(st.sampled_from([1, 7, 10**6, 10**30]))))
            if parse.lo_open:
                bad.append(str(kind(lo)))
        if hi is not None:
            bad.append(repr(kind(hi) + draw(st.sampled_from([1, 7, 10**6, 10**30]))))
            if parse.hi_open:
                bad.append(str(kind(hi)))
        return draw(st.sampled_from(bad)), False
    if kind is int:
        top = hi if flag == "--seed" else min(hi, lo + CHEAP_INT_SPAN)
        return str(draw(st.integers(lo, top))), True
    value = draw(
        st.floats(lo, hi, exclude_min=parse.lo_open, exclude_max=parse.hi_open, allow_nan=False, allow_infinity=False)
    )
    return repr(value), True


@pytest.fixture(scope="module")
def stage_inputs(scorer_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("flag_fuzz")
    log = root / "fuzzlog.records.jsonl"
    append_records(log, calibration_records(12, 3, torch.Generator().manual_seed(0)))
    data = write_pairs_parquet(root / "fuzzset.parquet", make_pairs(6, seed=1, size=16))
    return {"log": log, "data": data, "clip": scorer_files["clip"]}


def stage_argv(stage: str, inputs: dict, out: Path) -> tuple[object, list[str], str, list[str]]:
    """(main, the tiny base argv, tag, the names an input error line may give) of one stage."""
    if stage == "scorer":
        argv = ["--data", str(inputs["data"]), "--backbone", str(inputs["clip"]), "--arch", TINY_ARCH]
        argv += ["--out", str(out / "h.safetensors"), "--epochs", "1", "--batch-size", "4", "--hidden", "8"]
        return scorer.main, argv + ["--val-fraction", "0.5", "--checkpoint-every", "0"], "scorer", ["fuzzset"]
    if stage == "bandit":
        argv = ["bandit", "--out", str(out / "p"), "--iterations", "2", "--tournaments", "4", "--n-classes", "1"]
        return tspo.main, argv + ["--checkpoint-every", "0"], "tspo", []
    if stage == "offline":
        argv = ["offline", "--logs", str(inputs["log"]), "--out", str(out / "p"), "--iterations", "2"]
        return tspo.main, argv + ["--batch", "8", "--n-classes", "2"], "tspo", ["fuzzlog"]
    return calibrate.main, ["--logs", str(inputs["log"]), "--out", str(out / "c.json")], "calibrate", ["fuzzlog"]


STAGE_PARSERS = {
    "scorer": scorer.build_parser(),
    "bandit": tspo.build_parser(),
    "offline": tspo.build_parser(),
    "calibrate": calibrate.build_parser(),
}


@st.composite
def stage_flags(draw):
    stage = draw(st.sampled_from(list(STAGE_PARSERS)))
    options = numeric_options(STAGE_PARSERS[stage])
    chosen = draw(st.lists(st.sampled_from(sorted(options)), min_size=1, max_size=2, unique=True))
    return stage, [(flag, *draw(flag_value(flag, options[flag]))) for flag in chosen]


def test_bad_flags(stage_inputs, tmp_path, one_thread):
    counts: Counter = Counter()

    @settings(max_examples=45, **FUZZ)
    @given(case=stage_flags())
    def check(case):
        stage, flags = case
        out = fresh(tmp_path, "out")
        main, argv, tag, names = stage_argv(stage, stage_inputs, out)
        for flag, text, _ in flags:
            argv += [f"{flag}={text}"]  # "--lr=-1": a negative number is the value, not another option
        code, output = run_stage(main, argv)
        refused = [flag for flag, _, ok in flags if not ok]
        if refused:
            assert code == 2, (flags, output)
            line = next(x for x in output.splitlines() if x.startswith(f"[{tag}] error: "))
            # the first refused option is named, with its allowed range
            options = numeric_options(STAGE_PARSERS[stage])
            assert any(f"argument {f}: " in line and options[f].range in line for f in refused), line
        # an error after parsing names the input file or an option (e.g. "Lower --lr")
        outcome(code, output, tag, names + list(numeric_options(STAGE_PARSERS[stage])), out, counts)
        counts[f"{stage} {'refused' if refused else 'accepted'}"] += 1

    check()
    print(f"\nfuzz bad flags: {dict(sorted(counts.items()))}")
    assert counts["normal"] > 0 and counts["error"] > 0
