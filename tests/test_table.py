"""Vectors from text tables (.csv, .tsv, .txt): values, headers, label columns and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import on_a_terminal

from vaekit import budget
from vaekit.config import DataConfig
from vaekit.data import load_dataset
from vaekit.data.table import read_label_column, read_table
from vaekit.errors import BudgetError, DataError


def _write(path, text: str | bytes):
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def test_csv_with_a_header_and_named_classes_matches_the_numbers(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    names = np.array(["virginica", "setosa", "versicolor"])[rng.integers(0, 3, 60)]
    rows = "\n".join(",".join(f"{v!r}" for v in row.tolist()) + f",{n}" for row, n in zip(x, names))
    _write(tmp_path / "t.csv", "\ufeffa,b,c,d,e,Class\n" + rows + "\n")
    got, y, classes = read_table(tmp_path / "t.csv")
    assert np.array_equal(got, x) and classes == ["setosa", "versicolor", "virginica"]
    assert [classes[i] for i in y] == names.tolist()
    ds = load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 't.csv'}"))
    assert ds.shape == (5,) and ds.class_names == classes and len(ds.train_x) + len(ds.test_x) == 60


def test_label_column_anywhere_and_integer_classes_kept(tmp_path):
    _write(tmp_path / "t.csv", "label,x1,x2\n3,1.5,2\n0,-1,4e-3\n")
    x, y, classes = read_table(tmp_path / "t.csv")
    assert x.tolist() == [[1.5, 2.0], [-1.0, np.float32(4e-3)]] and y.tolist() == [3, 0] and classes is None
    # a float column of class numbers (pandas writes one when a label was missing): numbers, not names
    # sorted as text, where "10.0" came before "2.0" and --holdout-class 2 meant the class named "10.0"
    _write(tmp_path / "f.csv", "x,label\n" + "".join(f"{i},{i % 12}.0\n" for i in range(24)))
    _, y, classes = read_table(tmp_path / "f.csv")
    assert y.tolist() == [i % 12 for i in range(24)] and classes is None


@pytest.mark.parametrize("name,text", [
    ("a.tsv", "1\t2\t3\n4\t5\t6\n"),
    ("a.txt", "# made by hand\n1 2   3\n\n4\t5 6\n"),
    ("a.txt", "1,2,3\n4,5,6\n"),
    ("a.csv", '"1","2","3"\r\n"4","5","6"\r\n'),
    ("a.CSV", "x,y,z\n1,2,3\n\n# a note\n4,5,6\n"),
    ("a.csv", "x;y;z\n1;2;3\n4;5e0;6\n"),
    ("a.txt", "1;2;3\n4;5;6\n"),
])
def test_separators_quotes_comments_and_blank_lines(tmp_path, name, text):
    x, y, _ = read_table(_write(tmp_path / name, text))
    assert x.tolist() == [[1, 2, 3], [4, 5, 6]] and y is None


@pytest.mark.parametrize("text,match", [
    ("1,2,3\n4,5,6\n\n# note\n7,8\n", "line 5 has 2 columns, the first row has 3"),
    ("a,b\n1,2\n3,four\n", "line 3, column 2: four is not a number"),
    ("a;b\n1;2\n3;4,5\n", "line 3, column 2: 4,5 is not a number \\(decimal commas are not read"),
    ("1,,3\n", "line 1, column 2 is empty"),
    ("a,b,label\n1,2,x\n3,4,y,5\n", "line 3 has 4 columns, the header 3"),
    ("", "holds no rows"),
    ("# only a comment\n\n", "holds no rows"),
    ("label\ncat\ndog\n", "only column is the label column"),
    (b"1,2\n3,\xe94\n", "not UTF-8 text"),
    ("a,b\n", "holds a header row but no rows of numbers"),
    ("1,2\nnan,3\n", "line 2, column 1: nan is not a finite float32 number \\(1 such value in all"),
    ("1,1e999\n2,-inf\n", "line 1, column 2: 1e999 is not a finite float32 number \\(2 such values"),
    ("v,w,label\n1,2,a\n\n3,4e38,b\n", "line 4, column 2: 4e38 is not a finite float32"),
    ("a,b\n1,2\n1_000,3\n", "line 3, column 1: 1_000 is not a number"),
    ("label,v\n-1,2\n1,3\n", "class numbers 0, 1, 2"),
    ("v,label,Target\n1,0,1\n2,1,0\n", r"columns 2 and 3 \(label, Target\) could both be the labels"),
])
def test_bad_tables_name_the_line_and_the_fault(tmp_path, text, match):
    _write(tmp_path / "t.csv", text)
    with pytest.raises(DataError, match=match):
        load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 't.csv'}"))


def test_label_file_as_text_names_with_spaces_and_a_header(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.save(tmp_path / "x.npy", x)
    _write(tmp_path / "y.txt", "label\ngolden retriever\npug\npug\ngolden retriever\npug\npug\n")
    y, classes = read_label_column(tmp_path / "y.txt")
    assert classes == ["golden retriever", "pug"] and y.tolist() == [0, 1, 1, 0, 1, 1]
    ds = load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'x.npy'}", labels=str(tmp_path / "y.txt"),
                                 test_fraction=0.5))
    assert ds.class_names == classes and torch.equal(torch.sort(torch.cat([ds.train_y, ds.test_y])).values,
                                                     torch.tensor([0, 0, 1, 1, 1, 1]))
    _write(tmp_path / "y.csv", "1,2\n3,4\n")
    with pytest.raises(DataError, match="one label per line, line 1 has 2 fields"):
        read_label_column(tmp_path / "y.csv")


def test_too_many_distinct_class_names_is_refused(tmp_path):
    rows = "".join(f"{i},id{i}\n" for i in range(10_001))
    with pytest.raises(DataError, match="over 10000 distinct values"):
        read_table(_write(tmp_path / "t.csv", "v,label\n" + rows))


def test_size_is_checked_against_the_budget_before_parsing(tmp_path):
    path = _write(tmp_path / "t.csv", "1,2\n" * 1000)
    with budget.limits(max_bytes=4000), pytest.raises(BudgetError, match="t.csv"):
        read_table(path)
    with budget.limits(max_bytes=1 << 20):
        assert read_table(path)[0].shape == (1000, 2)


def test_a_fifo_table_is_refused_at_once(tmp_path):
    import os

    os.mkfifo(tmp_path / "t.csv")
    with pytest.raises(Exception, match="FIFO"):
        read_table(tmp_path / "t.csv")


def test_a_pandas_row_index_is_left_out(tmp_path):
    _write(tmp_path / "t.csv", ",a,b,label\n0,1.5,2,cat\n1,3,4,dog\n2,5,6,cat\n")
    x, y, classes = read_table(tmp_path / "t.csv")
    assert x.tolist() == [[1.5, 2], [3, 4], [5, 6]] and y.tolist() == [0, 1, 0] and classes == ["cat", "dog"]


def test_a_delimiter_ending_every_line_is_an_export_habit_not_an_empty_column(tmp_path):
    """Spreadsheets and some exporters end each line with a delimiter: "line 2, column 4 is empty" refused
    the file. The nameless last column is left out when it is empty on every line, and named when not."""
    _write(tmp_path / "t.csv", "a,b,label,\n1.5,2,cat,\n3,4,dog,\n5,6,cat,\n")
    x, y, classes = read_table(tmp_path / "t.csv")
    assert x.tolist() == [[1.5, 2], [3, 4], [5, 6]] and y.tolist() == [0, 1, 0] and classes == ["cat", "dog"]
    _write(tmp_path / "n.csv", "1.5;2;\n3;4;\n")
    assert read_table(tmp_path / "n.csv")[0].tolist() == [[1.5, 2], [3, 4]]
    _write(tmp_path / "v.csv", "a,b,\n1,2,\n3,4,7\n")
    with pytest.raises(DataError, match="the last column has no name in the first line but row 2 holds 7"):
        read_table(tmp_path / "v.csv")


def test_utf16_with_its_byte_order_mark_is_read_as_excel_writes_unicode_text(tmp_path):
    """Excel's "Unicode text" export (UTF-16, tab-separated, CRLF) was "not UTF-8 text (byte 0)"."""
    for encoding in ("utf-16", "utf-16-be", "utf-32"):
        bom = {"utf-16-be": b"\xfe\xff"}.get(encoding, b"")
        _write(tmp_path / "t.txt", bom + "a\tb\tlabel\r\n1.5\t2\tcaf\u00e9\r\n3\t4\tth\u00e9\r\n".encode(encoding))
        x, y, classes = read_table(tmp_path / "t.txt")
        assert x.tolist() == [[1.5, 2], [3, 4]] and classes == ["caf\u00e9", "th\u00e9"], encoding
    _write(tmp_path / "l.txt", "label\nb\u00e9\na\n".encode("utf-16"))
    assert read_label_column(tmp_path / "l.txt")[1] == ["a", "b\u00e9"]


def test_large_tables_are_parsed_once_and_a_changed_or_damaged_cache_is_not_trusted(tmp_path, monkeypatch):
    from vaekit.data import table

    monkeypatch.setattr(table, "CACHE_MIN_BYTES", 0)
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    path = _write(tmp_path / "t.csv", "a,b,label\n1,2,cat\n3,4,dog\n")
    first = read_table(path)
    (cached,) = (tmp_path / "cache" / "tables").iterdir()
    with monkeypatch.context() as m:
        m.setattr(table, "_parse", None)  # a cache hit parses nothing
        again = read_table(path)
    assert np.array_equal(again[0], first[0]) and again[1].tolist() == [0, 1] and again[2] == ["cat", "dog"]
    cached.write_bytes(cached.read_bytes()[:40])
    assert read_table(path)[0].tolist() == [[1, 2], [3, 4]]
    _write(path, "a,b,label\n1,2,cat\n3,4,dog\n5,6,emu\n")
    assert read_table(path)[2] == ["cat", "dog", "emu"]
    for f in (tmp_path / "cache" / "tables").iterdir():
        f.unlink()
        f.mkdir()  # the cache file cannot be written: parsed all the same, and said
    with pytest.warns(UserWarning, match=r"not cached: .*\.npz: is a folder; .*; it is computed again"):
        assert read_table(path)[2] == ["cat", "dog", "emu"]


def test_an_unwritable_cache_costs_time_never_the_run(tmp_path, monkeypatch):
    from vaekit.data import table

    monkeypatch.setattr(table, "CACHE_MIN_BYTES", 0)
    monkeypatch.setenv("VAEKIT_CACHE", str(_write(tmp_path / "not_a_folder", "x")))
    with pytest.warns(UserWarning, match=r"not cached: .*not_a_folder/tables cannot be written \(Not a directory\); "
                                         "it is computed again .*; set VAEKIT_CACHE to a folder you can write"):
        x, _, _ = read_table(_write(tmp_path / "t.csv", "1,2\n3,4\n"))
    assert x.tolist() == [[1, 2], [3, 4]]


def test_a_conditional_run_on_named_classes_samples_a_class_by_its_name(tmp_path):
    from conftest import run_cli

    rng = np.random.default_rng(1)
    rows = "".join(f"{a:.3f},{b:.3f},{c}\n" for (a, b), c in zip(rng.normal(size=(40, 2)),
                                                                  rng.choice(["pug", "golden retriever"], 40)))
    _write(tmp_path / "dogs.csv", "height,weight,class\n" + rows)
    run = str(tmp_path / "run")
    code, _, err = run_cli("train", "--dataset", f"vectors:{tmp_path / 'dogs.csv'}", "--conditional", "--hidden", "8",
                           "--latent-dim", "2", "--epochs", "1", "--no-progress", "--out", run)
    assert code == 0, err
    code, out, err = run_cli("sample", run, "-n", "3", "--label", "pug", "-o", str(tmp_path / "pug.npy"))
    assert code == 0 and 'class 1 "pug"' in out, err
    assert np.load(tmp_path / "pug.npy").shape == (3, 2)
    code, _, err = run_cli("sample", run, "--label", "poodle", "-o", str(tmp_path / "x.npy"))
    assert code == 2 and "its classes are golden retriever, pug" in err and not (tmp_path / "x.npy").exists()


def test_a_row_longer_than_the_header_is_refused_when_some_columns_are_left_out(tmp_path):
    _write(tmp_path / "t.csv", ",a,b\n0,1,2\n1,3,4,5\n")
    with pytest.raises(DataError, match="line 3 has 4 columns, the header 3"):
        read_table(tmp_path / "t.csv")


def test_parsing_a_large_table_shows_progress_on_a_terminal(tmp_path):
    """A table large enough to be cached takes seconds per 100 MB to parse: a bar over its bytes shows
    it (once per pass); the cached read after it shows none."""
    from vaekit.data.table import CACHE_MIN_BYTES

    rng = np.random.default_rng(0)
    rows = CACHE_MIN_BYTES // 100 + 1
    with open(tmp_path / "big.csv", "w") as f:
        f.write(",".join(f"f{i}" for i in range(12)) + ",label\n")
        np.savetxt(f, rng.normal(size=(rows, 12)), fmt="%.6f", delimiter=",", newline=",cat\n")
    assert (tmp_path / "big.csv").stat().st_size >= CACHE_MIN_BYTES
    code = ("from vaekit.data import load_dataset; from vaekit.config import DataConfig\n"
            f"print(load_dataset(DataConfig(dataset='vectors:{tmp_path / 'big.csv'}'), progress={{}}).class_names)")
    env = {"VAEKIT_CACHE": str(tmp_path / "cache")}
    shown = on_a_terminal(code.format(True), env)
    assert "parsing big.csv:" in shown and "M/19.8M [" in shown and "['cat']" in shown, shown
    assert "parsing" not in on_a_terminal(code.format(True), env)  # read from the cache
