"""The README's examples run as written (issue 11), so that README drift fails CI.

The Python blocks of README.md's "Using it" section run with their free names (``paths``,
``images``, ``features``, ``batch_a``, ``batch_b``) bound to real images, failures
included; the "On Spark" blocks run on the local Spark of ``conftest.py`` with the small
random model, the README's placeholder locations replaced by local ones (each
replacement checks that its placeholder is still in the README). The ``fruitlens``
command lines of the README's shell blocks are checked against the CLI's ``--help``.
The second half tests the API promises the "Using it" section makes (paths accepted,
the batch ``embed`` returns accepted by the PCA functions, what ``decode`` returns).
"""

from __future__ import annotations

import ast
import builtins
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import fruitlens

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# --------------------------------------------------------------------------------------
# Reading the README
# --------------------------------------------------------------------------------------


def _section(title: str) -> tuple[list[str], int]:
    """The lines of the ``## title`` section (up to the next ``##`` heading), and the
    1-based README line number of its first line."""
    lines = README.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == f"## {title}"]
    assert len(starts) == 1, f"README.md must have one '## {title}' section"
    start = starts[0]
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"##\s", lines[i])), len(lines))
    return lines[start:end], start + 1


def _fenced(lines: list[str], first: int, languages: tuple[str, ...]) -> list[tuple[str, int]]:
    """The fenced blocks (indented ones too, dedented) in one of ``languages`` (``""``: no
    language): ``(code, README line of the code's first line)``."""
    blocks, i = [], 0
    while i < len(lines):
        match = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        if match.group(1) in languages:
            blocks.append((textwrap.dedent("\n".join(lines[i + 1 : end])), first + i + 1))
        i = end + 1
    return blocks


def _code_blocks(title: str, languages: tuple[str, ...]) -> list[tuple[str, int]]:
    """The fenced blocks of the ``## title`` section in one of ``languages``."""
    return _fenced(*_section(title), languages)


def _free_names(code: str) -> set[str]:
    """Names a block reads but never binds (and that are not builtins)."""
    bound: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return {n for n in loaded - bound if not hasattr(builtins, n)}


def _run_block(code: str, line: int, namespace: dict) -> None:
    """Run a README block; a failure's traceback names README.md and its line."""
    exec(compile("\n" * (line - 1) + code, str(README), "exec"), namespace)


def _replace(code: str, literal: str, value: str) -> str:
    assert literal in code, (
        f"the README block no longer contains {literal!r}: update the substitutions of "
        "tests/test_readme.py to what the README now says"
    )
    return code.replace(literal, value)


# --------------------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------------------


def _sample_files(shared_dir: Path, per_class: int = 3) -> list[Path]:
    test = shared_dir / "data" / "fruits360-sample" / "Test"
    classes = ("apple", "lemon", "mango", "raspberry")
    return [p for c in classes for p in sorted((test / c).glob("*.jpg"))[:per_class]]


@pytest.fixture(scope="module")
def readme_data(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Real files for the README's free names, with a failure of each kind a user meets."""
    root = tmp_path_factory.mktemp("readme_data")
    files = _sample_files(shared_dir)
    corrupt = root / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a JPEG\n" * 10)
    missing = root / "missing.jpg"
    # str and Path, a file that is not an image, one that does not exist
    paths = [str(p) for p in files[:-1]] + [files[-1], str(corrupt), str(missing)]
    images = [p.read_bytes() for p in files] + [b"", corrupt.read_bytes()]
    return {
        "files": files,
        "corrupt": corrupt,
        "missing": missing,
        "paths": paths,
        "images": images,
    }


# --------------------------------------------------------------------------------------
# "Using it"
# --------------------------------------------------------------------------------------


USING_IT_NAMES = {"paths", "images", "features", "batch_a", "batch_b"}


def test_using_it_free_names_are_the_documented_ones() -> None:
    (block,) = _code_blocks("Using it", ("python",))
    assert _free_names(block[0]) <= USING_IT_NAMES, (
        "the 'Using it' block reads a name this test does not bind: "
        f"{sorted(_free_names(block[0]) - USING_IT_NAMES)}"
    )


def test_using_it_runs_as_written(
    onnx_224: Path, readme_data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (block,) = _code_blocks("Using it", ("python",))
    code, line = block
    monkeypatch.chdir(tmp_path)  # the block writes pca.json and names the model by file name
    (tmp_path / "mobilenet_v2_224.onnx").symlink_to(onnx_224)

    emb = fruitlens.Embedder(onnx_224, threads=2)
    good = emb.embed([p.read_bytes() for p in readme_data["files"]])
    assert good.column("error").null_count == good.num_rows
    features = good.column("features").flatten().to_numpy().reshape(good.num_rows, -1)
    half = len(readme_data["images"]) // 2
    namespace = {
        "paths": readme_data["paths"],
        "images": readme_data["images"],
        "features": features,
        "batch_a": emb.embed(readme_data["images"][:half]),
        "batch_b": emb.embed(readme_data["images"][half:]),
    }
    _run_block(code, line, namespace)

    # What the block's comments say.
    batch = namespace["batch"]
    n = len(readme_data["paths"])
    assert isinstance(batch, pa.RecordBatch) and batch.num_rows == n
    features_type = batch.schema.field("features").type
    assert (features_type.list_size, features_type.value_type) == (1280, pa.float32())
    errors = batch.column("error").to_pylist()
    assert errors[: n - 2] == [None] * (n - 2)
    assert errors[-2].startswith("unknown_format: ")
    assert errors[-1].startswith(f"unreadable: {readme_data['missing']}: ")
    np.testing.assert_array_equal(
        batch.column("features").flatten().to_numpy().reshape(n - 2, -1), features
    )
    pca = namespace["pca"]
    assert isinstance(pca, fruitlens.PCA) and pca.k >= 1
    assert pca.n_samples_ == len(readme_data["files"])  # batch_a + batch_b, failures skipped
    assert (tmp_path / "pca.json").is_file()
    x = namespace["x"]
    assert x.shape == (len(readme_data["files"]), 224, 224, 3)
    assert x.dtype == np.float32 and -1.0 <= x.min() <= x.max() <= 1.0
    decoded = namespace["decoded"]
    assert decoded.num_rows == len(readme_data["images"])
    assert decoded.column("pixels").null_count == 2


# --------------------------------------------------------------------------------------
# "On Spark"
# --------------------------------------------------------------------------------------


@pytest.mark.spark
@pytest.mark.slow
def test_on_spark_runs_as_written(spark, fruit_images: Path, random_onnx: Path) -> None:
    blocks = _code_blocks("On Spark", ("python",))
    assert len(blocks) == 2, "expected the main block and the one-pass block"
    (main, main_line), (one_pass, one_pass_line) = blocks
    assert _free_names(main) <= {"spark"}, _free_names(main)
    # The one-pass block continues the main one and uses `import fruitlens` of "Using it".
    assert _free_names(one_pass) <= {"spark", "fs", "fruitlens"}, _free_names(one_pass)

    folder, model = repr(str(fruit_images)), repr(str(random_onnx))
    main = _replace(main, '"s3://bucket/fruits/"', folder)
    main = _replace(main, '"/opt/fruitlens/models/mobilenet_v2_224.onnx"', model)
    one_pass = _replace(one_pass, '"/data/fruits"', folder)
    one_pass = _replace(one_pass, "model=...", f"model={model}")

    namespace = {"spark": spark, "fruitlens": fruitlens}
    _run_block(main, main_line, namespace)
    rows = namespace["out"].select("path", "features", "pca", "error").collect()
    assert len(rows) == 43  # conftest.fruit_images: 41 images + a corrupt and an empty file
    failed = [r for r in rows if r.error is not None]
    assert len(failed) == 2 and all(r.features is None and r.pca is None for r in failed)
    k = namespace["pca"].k
    assert all(len(r.pca) == k for r in rows if r.error is None)

    _run_block(one_pass, one_pass_line, namespace)
    assert namespace["rows"] == 41
    assert isinstance(namespace["pca"], fruitlens.PCA)
    assert namespace["pca"].n_samples_ == 41


# --------------------------------------------------------------------------------------
# The `fruitlens` command lines of the shell blocks
# --------------------------------------------------------------------------------------


def _fruitlens_commands() -> list[tuple[list[str], int]]:
    """Every ``fruitlens SUBCOMMAND ...`` command line of the README's shell blocks."""
    lines = README.read_text(encoding="utf-8").splitlines()
    commands = []
    for code, line in _fenced(lines, 1, ("bash", "sh", "shell", "")):
        # continuation lines: a trailing backslash, or the synopsis' indented "[--option"
        body = re.sub(r"\\\n|\n(?=\s+\[)", " ", code)
        for part in re.split(r"&&|\n", body):
            part = part.split("#", 1)[0].strip()
            if not re.match(r"\S*fruitlens\s", part):
                continue
            words = shlex.split(part.replace("[", " ").replace("]", " ").replace("|", " "))
            if words and words[0].endswith("fruitlens") and len(words) > 1:
                commands.append((words[1:], line))
    return commands


def _help(subcommand: tuple[str, ...]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "fruitlens.cli", *subcommand, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_readme_command_lines_match_the_cli() -> None:
    commands = _fruitlens_commands()
    assert any(words[0] == "run" for words, _ in commands)
    helps: dict[tuple[str, ...], str] = {}
    for words, line in commands:
        sub = tuple(words[:2]) if words[0] == "model" else (words[0],)
        if sub not in helps:
            helps[sub] = _help(sub)
        for option in [w.split("=")[0] for w in words if w.startswith("--")]:
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", helps[sub]), (
                f"README.md block at line {line}: `fruitlens {' '.join(sub)}` has no {option}"
            )


# --------------------------------------------------------------------------------------
# The API promises of "Using it"
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder(random_onnx: Path) -> fruitlens.Embedder:
    return fruitlens.Embedder(random_onnx, threads=1)


def test_embed_reads_paths_like_their_bytes(
    embedder: fruitlens.Embedder, shared_dir: Path, tmp_path: Path
) -> None:
    """`embed([path])` used to raise `TypeError: string argument without an encoding`."""
    files = _sample_files(shared_dir, per_class=1)
    link = tmp_path / "link.jpg"
    link.symlink_to(files[0])
    from_bytes = embedder.embed([p.read_bytes() for p in files] + [files[0].read_bytes()])
    mixed = [str(files[0]), files[1], files[2].read_bytes(), bytearray(files[3].read_bytes()), link]
    from_paths = embedder.embed(mixed)
    assert from_paths.column("error").null_count == from_paths.num_rows
    assert from_paths.column("features").equals(from_bytes.column("features"))


def test_embed_unreadable_files_are_row_errors(
    embedder: fruitlens.Embedder, shared_dir: Path, tmp_path: Path
) -> None:
    good = _sample_files(shared_dir, per_class=1)[0]
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)  # opening it for reading would block: it must not be opened
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "nowhere.jpg")
    odd = tmp_path / "a#b?c %41\nd.jpg"
    odd.write_bytes(good.read_bytes())
    paths = [
        tmp_path / "missing.jpg",
        good,
        fifo,
        folder,
        dangling,
        "nul\0byte.jpg",
        odd,
        None,
    ]
    batch = embedder.embed(paths)
    errors = batch.column("error").to_pylist()
    assert errors[0] == f"unreadable: {tmp_path / 'missing.jpg'}: No such file or directory"
    assert errors[1] is None and errors[6] is None
    assert errors[2] == f"unreadable: {fifo}: not a regular file (a FIFO)"
    assert errors[3] == f"unreadable: {folder}: not a regular file (a folder)"
    assert errors[4] == f"unreadable: {dangling}: dangling symbolic link"
    assert errors[5].startswith("unreadable: nul\0byte.jpg: ")
    assert errors[7].startswith("null")  # a None row keeps the native null error
    features = batch.column("features")
    assert [features[i].is_valid for i in range(len(paths))] == [
        False, True, False, False, False, False, True, False,
    ]  # fmt: skip
    assert features[1] == features[6]  # the odd name is read literally


def test_embed_and_decode_refuse_an_oversized_file_without_reading_it(
    random_onnx: Path, shared_dir: Path
) -> None:
    good = _sample_files(shared_dir, per_class=1)[0]
    size = good.stat().st_size
    small = fruitlens.Embedder(random_onnx, threads=1, max_bytes=size - 1)
    (error,) = small.embed([good]).column("error").to_pylist()
    assert error == (
        f"too_many_bytes: {good} is {size} bytes, more than the limit of {size - 1} bytes"
    )
    (error,) = fruitlens.decode([good], size=32, max_bytes=size - 1).column("error").to_pylist()
    assert error.startswith("too_many_bytes: ")


def test_decode_reads_paths_and_returns_a_record_batch(shared_dir: Path, tmp_path: Path) -> None:
    files = _sample_files(shared_dir, per_class=1)
    by_bytes = fruitlens.decode([p.read_bytes() for p in files], size=32)
    by_path = fruitlens.decode([*files, tmp_path / "missing.jpg"], size=32)
    assert isinstance(by_path, pa.RecordBatch)
    assert by_path.schema.names == ["pixels", "error"]
    pixels_type = by_path.schema.field("pixels").type
    assert (pixels_type.list_size, pixels_type.value_type) == (32 * 32 * 3, pa.float32())
    assert by_path.slice(0, len(files)).equals(by_bytes)
    assert by_path.column("error")[len(files)].as_py().startswith("unreadable: ")
    # the README's one-liner: the rows that decoded as NHWC tensors
    x = by_path.column("pixels").flatten().to_numpy().reshape(-1, 32, 32, 3)
    assert x.shape == (len(files), 32, 32, 3)


@pytest.mark.parametrize("single", ["apple.jpg", Path("apple.jpg"), b"\xff\xd8", bytearray(b"x")])
def test_a_single_image_is_refused(embedder: fruitlens.Embedder, single) -> None:
    with pytest.raises(TypeError, match="wrap it in a list"):
        embedder.embed(single)


def test_an_arrow_string_array_says_how_to_pass_paths(embedder: fruitlens.Embedder) -> None:
    with pytest.raises(TypeError, match="list of paths"):
        embedder.embed(pa.array(["apple.jpg"]))


def test_pca_takes_the_batch_embed_returns(embedder: fruitlens.Embedder, shared_dir: Path) -> None:
    """`pca_stats(batch)` and `PCA(0.95).fit(batch)` used to fail on embed's batch."""
    files = _sample_files(shared_dir, per_class=3)
    batch_a = embedder.embed([*files[:6], b"not an image"])
    batch_b = embedder.embed([None, *files[6:]])
    good = embedder.embed(files)
    rows = good.column("features").flatten().to_numpy().reshape(len(files), -1)

    by_numpy = fruitlens.PCA(3).fit(rows)
    by_batch = fruitlens.PCA(3).fit(pa.Table.from_batches([batch_a, batch_b]))
    np.testing.assert_allclose(by_batch.components_, by_numpy.components_, atol=1e-6)
    assert by_batch.n_samples_ == len(files)

    stats = fruitlens.pca_stats(batch_a).merge(fruitlens.pca_stats(batch_b))
    assert stats.count == len(files)
    update = fruitlens.PCAStats(rows.shape[1])
    assert update.update(batch_a) == 6
    np.testing.assert_allclose(
        fruitlens.PCA(3).fit_stats(stats).components_, by_numpy.components_, atol=1e-6
    )

    projected = by_batch.transform_arrow(batch_a)
    assert len(projected) == batch_a.num_rows and projected.null_count == 1
    np.testing.assert_allclose(
        projected.flatten().to_numpy().reshape(6, 3), by_numpy.transform(rows[:6]), atol=1e-5
    )
    with pytest.raises(fruitlens.PCAError, match="null"):
        by_batch.transform(batch_a)  # numpy out: no room for the failed row


def test_pca_refuses_a_batch_without_features(embedder: fruitlens.Embedder) -> None:
    with pytest.raises(
        fruitlens.PCAError, match=r"no 'features' column \(columns: pixels, error\)"
    ):
        fruitlens.pca_stats(fruitlens.decode([b"x"], size=8))
    failed = embedder.embed([b"", None])
    stats = fruitlens.pca_stats(failed)
    assert (stats.count, stats.dim) == (0, embedder.output_dim)
    with pytest.raises(fruitlens.PCAError):
        fruitlens.PCA(0.95).fit(failed)
