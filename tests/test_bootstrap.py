"""The EMR deployment files: configurations, scripts, and the bootstrap action end to end.

The end-to-end test plays an EMR node: a fresh virtualenv stands for the node's Python,
with only PySpark on its path (as EMR puts /usr/lib/spark/python on PYTHONPATH, here a
``.pth`` file naming a folder that holds links to the running venv's ``pyspark`` and
``py4j``), a local S3 endpoint (moto) stands for S3, and ``install-fruitlens.sh`` installs
the built wheel and the model from it. Then ``fruitlens run s3://... s3://...`` runs in
that virtualenv on a local Spark without any Hadoop S3 jar.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = REPO / "bootstrap"
INSTALL = BOOTSTRAP / "install-fruitlens.sh"
CREATE = BOOTSTRAP / "create-cluster.sh"
SUBMIT = BOOTSTRAP / "submit-step.sh"
CONFIGURATIONS = BOOTSTRAP / "emr-configurations.json"
SCRIPTS = [INSTALL, CREATE, SUBMIT]
SHA_A = "a" * 64


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clean_env() -> dict[str, str]:
    """os.environ without the variables the scripts read as defaults (FRUITLENS_WHEEL...)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("FRUITLENS_", "EMR_"))}


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_clean_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# --------------------------------------------------------------------------------------
# emr-configurations.json
# --------------------------------------------------------------------------------------


def _check_classifications(items: object, where: str) -> None:
    assert isinstance(items, list), f"{where}: expected a list of classifications"
    for item in items:
        assert isinstance(item, dict), f"{where}: {item!r} is not an object"
        assert set(item) <= {"Classification", "Properties", "Configurations"}, item.keys()
        assert isinstance(item.get("Classification"), str) and item["Classification"]
        props = item.get("Properties", {})
        assert isinstance(props, dict)
        for key, value in props.items():
            assert isinstance(key, str) and isinstance(value, str), (
                f"{where}/{item['Classification']}: property {key!r} must be a string, "
                f"got {value!r}"
            )
        _check_classifications(item.get("Configurations", []), item["Classification"])


def _by_name(items: list[dict]) -> dict[str, dict]:
    return {item["Classification"]: item for item in items}


def test_configurations_are_valid_classifications() -> None:
    config = json.loads(CONFIGURATIONS.read_text())
    _check_classifications(config, "emr-configurations.json")
    by_name = _by_name(config)
    assert {"spark-defaults", "spark-env", "livy-env"} <= set(by_name)

    spark = by_name["spark-defaults"]["Properties"]
    assert int(spark["spark.sql.execution.arrow.maxRecordsPerBatch"]) in range(16, 2049)
    task_cpus = int(spark["spark.task.cpus"])
    assert task_cpus >= 1
    assert spark["spark.executorEnv.OMP_NUM_THREADS"] == str(task_cpus)
    assert int(spark["spark.executor.cores"]) % task_cpus == 0

    pythons = {spark["spark.pyspark.python"]}
    for env_name in ("spark-env", "livy-env"):
        exports = _by_name(by_name[env_name]["Configurations"])["export"]["Properties"]
        pythons.add(exports["PYSPARK_PYTHON"])
    assert len(pythons) == 1, f"every PYSPARK_PYTHON must be the same, got {pythons}"


# --------------------------------------------------------------------------------------
# The scripts themselves
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_executable_bash(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script} is not executable"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script.read_text()
    result = _run(["bash", "-n", script])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck); CI installs it")
    result = _run(["shellcheck", "--severity=style", script])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help(script: Path) -> None:
    result = _run([script, "--help"])
    assert result.returncode in (0, 2)
    assert "Usage:" in result.stdout + result.stderr


# --------------------------------------------------------------------------------------
# create-cluster.sh --dry-run
# --------------------------------------------------------------------------------------


def _dry_run(script: Path, *args: str, env: dict[str, str] | None = None) -> list[list[str]]:
    full_env = {**_clean_env(), **(env or {})}
    result = _run([script, "--dry-run", *args], env=full_env)
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def _option(cmd: list[str], name: str) -> str:
    assert name in cmd, f"{name} missing from {cmd}"
    return cmd[cmd.index(name) + 1]


@pytest.fixture
def fake_wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / "fruitlens-0.1.0-cp39-abi3-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"not really a wheel")
    return wheel


def test_create_cluster_dry_run(fake_wheel: Path) -> None:
    commands = _dry_run(
        CREATE,
        *("--bucket", "my-bucket", "--wheel", str(fake_wheel)),
        *("--model", "s3://models/mobilenet_v2_224.onnx", "--model-sha256", SHA_A),
        *("--subnet", "subnet-0abc", "--key", "my-key", "--core-count", "3"),
        *("--name", "fruits demo", "--region", "eu-west-1"),
    )
    uploads = [c for c in commands if c[:4] == ["aws", "--region", "eu-west-1", "s3"]]
    assert [c[-1] for c in uploads] == [
        f"s3://my-bucket/fruitlens/dist/{fake_wheel.name}",
        "s3://my-bucket/fruitlens/bootstrap/install-fruitlens.sh",
    ]
    create = commands[-1]
    assert create[:5] == ["aws", "--region", "eu-west-1", "emr", "create-cluster"]
    assert _option(create, "--name") == "fruits demo"
    assert _option(create, "--release-label").startswith("emr-7.")
    apps = create[create.index("--applications") + 1 : create.index("--instance-groups")]
    assert apps == ["Name=Spark", "Name=Hadoop", "Name=JupyterHub", "Name=Livy"]
    groups = create[create.index("--instance-groups") + 1 : create.index("--instance-groups") + 3]
    assert groups == [
        "InstanceGroupType=MASTER,InstanceCount=1,InstanceType=m7i.xlarge",
        "InstanceGroupType=CORE,InstanceCount=3,InstanceType=c7i.2xlarge",
    ]
    ec2 = _option(create, "--ec2-attributes")
    assert "SubnetId=subnet-0abc" in ec2 and "KeyName=my-key" in ec2
    assert _option(create, "--log-uri") == "s3://my-bucket/fruitlens/logs/"
    assert "--service-role" in create and "--auto-termination-policy" in create

    (action,) = json.loads(_option(create, "--bootstrap-actions"))
    assert action["Path"] == "s3://my-bucket/fruitlens/bootstrap/install-fruitlens.sh"
    args = action["Args"]
    assert _option(args, "--wheel") == f"s3://my-bucket/fruitlens/dist/{fake_wheel.name}"
    assert _option(args, "--wheel-sha256") == _sha256(fake_wheel)
    assert _option(args, "--model") == "s3://models/mobilenet_v2_224.onnx"
    assert _option(args, "--model-sha256") == SHA_A
    extras = [args[i + 1] for i, a in enumerate(args) if a == "--extra"]
    assert extras == ["pandas>=1.5,<3", "matplotlib>=3.5"]

    configurations = json.loads(_option(create, "--configurations"))
    assert configurations == json.loads(CONFIGURATIONS.read_text())
    assert _option(args, "--python") == configurations[0]["Properties"]["spark.pyspark.python"]


def test_create_cluster_python_flag_rewrites_configurations(fake_wheel: Path) -> None:
    (*_, create) = _dry_run(
        CREATE,
        *("--bucket", "b", "--wheel", "s3://b/w/" + fake_wheel.name, "--wheel-sha256", SHA_A),
        *("--python", "/usr/local/bin/python3.12", "--bootstrap-uri", "s3://b/boot.sh"),
        env={"EMR_CORE_TYPE": "m7i.2xlarge", "EMR_RELEASE": "emr-7.2.0"},
    )
    assert create[:3] == ["aws", "emr", "create-cluster"]  # no upload: all remote
    assert _option(create, "--release-label") == "emr-7.2.0"
    assert "InstanceType=m7i.2xlarge" in " ".join(create)
    (action,) = json.loads(_option(create, "--bootstrap-actions"))
    assert action["Path"] == "s3://b/boot.sh"
    assert _option(action["Args"], "--python") == "/usr/local/bin/python3.12"
    assert "--model" not in action["Args"]
    text = _option(create, "--configurations")
    assert "/usr/bin/python3.11" not in text
    assert text.count("/usr/local/bin/python3.12") == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--wheel", "w.whl"], "--bucket is required"),
        (["--bucket", "b"], "--wheel is required"),
        (["--bucket", "b", "--wheel", "s3://b/w.whl"], "give its sha256"),
        (["--bucket", "b", "--wheel", "/nonexistent.whl"], "no such file"),
        (["--bucket", "b", "--wheel", "s3://b/w.whl", "--release", "emr-6.15.0"], "EMR 7"),
        (
            [
                "--bucket",
                "b",
                "--wheel",
                "s3://b/x86_64.whl",
                "--wheel-sha256",
                SHA_A,
                "--core-type",
                "m7g.2xlarge",
            ],
            "aarch64",
        ),
        (["--bucket"], "needs a value"),
        (["--frobnicate", "x"], "unknown option"),
    ],
)
def test_create_cluster_errors(args: list[str], message: str) -> None:
    result = _run([CREATE, *args, "--dry-run"])
    assert result.returncode == 2
    assert message in result.stderr


# --------------------------------------------------------------------------------------
# submit-step.sh --dry-run
# --------------------------------------------------------------------------------------


def test_submit_step_dry_run() -> None:
    (cmd,) = _dry_run(
        SUBMIT,
        *("--cluster-id", "j-ABC123", "s3://bkt/images", "s3://bkt/features"),
        *("--k", "50", "--overwrite", "--conf", "spark.executor.instances=4"),
    )
    assert cmd[:3] == ["aws", "emr", "add-steps"]
    assert _option(cmd, "--cluster-id") == "j-ABC123"
    (step,) = json.loads(_option(cmd, "--steps"))
    assert step["Type"] == "Spark"
    assert step["ActionOnFailure"] == "CONTINUE"
    assert step["Args"] == [
        *("--deploy-mode", "cluster", "--conf", "spark.executor.instances=4"),
        "/opt/fruitlens/bin/fruitlens_job.py",
        *("s3://bkt/images", "s3://bkt/features", "--k", "50", "--overwrite"),
        *("--model", "/opt/fruitlens/models/mobilenet_v2_224.onnx"),
    ]


def test_submit_step_keeps_model_and_launcher() -> None:
    (cmd,) = _dry_run(
        SUBMIT,
        *("--cluster-id", "j-1", "--launcher", "s3://bkt/code/fruitlens_job.py"),
        *("--deploy-mode", "client", "--region", "us-west-2", "--name", "run 1"),
        *("--", "s3://bkt/in", "s3://bkt/out", "--model", "/mnt/m.onnx"),
    )
    assert cmd[:3] == ["aws", "--region", "us-west-2"]
    (step,) = json.loads(_option(cmd, "--steps"))
    assert step["Name"] == "run 1"
    assert step["Args"] == [
        *("--deploy-mode", "client", "s3://bkt/code/fruitlens_job.py"),
        *("s3://bkt/in", "s3://bkt/out", "--model", "/mnt/m.onnx"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["s3://a", "s3://b"], "--cluster-id is required"),
        (["--cluster-id", "j-1", "s3://a"], "INPUT and OUTPUT"),
        (["--cluster-id", "j-1", "s3://a", "--k", "5"], "INPUT and OUTPUT"),
        (["--cluster-id", "j-1", "--launcher", "job.sh", "a", "b"], ".py"),
        (["--cluster-id", "j-1", "--deploy-mode", "local", "a", "b"], "cluster or client"),
    ],
)
def test_submit_step_errors(args: list[str], message: str) -> None:
    result = _run([SUBMIT, *args, "--dry-run"], env={**_clean_env(), "EMR_CLUSTER_ID": ""})
    assert result.returncode == 2
    assert message in result.stderr


# --------------------------------------------------------------------------------------
# install-fruitlens.sh without a real wheel
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--wheel is required"),
        (["--wheel", "w.whl", "--wheel-sha256", "abc"], "64 hex digits"),
        (["--wheel", "w.whl", "--wheel-sha256", SHA_A, "--model", "m.onnx"], "--model-sha256"),
        (["--wheel", "w.whl", "--wheel-sha256", SHA_A, "--model-sha256", SHA_A], "without"),
        (["--wheel"], "needs a value"),
        (["--bogus"], "unknown argument"),
    ],
)
def test_install_argument_errors(args: list[str], message: str) -> None:
    result = _run([INSTALL, *args])
    assert result.returncode == 2
    assert message in result.stderr


def test_install_refuses_a_wrong_sha256(tmp_path: Path, fake_wheel: Path) -> None:
    result = _run(
        [
            INSTALL,
            "--wheel",
            fake_wheel,
            "--wheel-sha256",
            SHA_A,
            "--python",
            sys.executable,
            "--prefix",
            tmp_path / "opt",
        ]
    )
    assert result.returncode == 1
    assert (
        f"sha256 mismatch for {fake_wheel.name}: expected {SHA_A}, actual {_sha256(fake_wheel)}"
        in result.stderr
    )


def test_install_reports_a_missing_file(tmp_path: Path) -> None:
    result = _run(
        [
            INSTALL,
            "--wheel",
            tmp_path / "nope.whl",
            "--wheel-sha256",
            SHA_A,
            "--python",
            sys.executable,
            "--prefix",
            tmp_path / "opt",
        ]
    )
    assert result.returncode == 1
    assert "ERROR: no such file" in result.stderr


def test_install_reports_a_missing_python(tmp_path: Path, fake_wheel: Path) -> None:
    result = _run(
        [
            INSTALL,
            "--wheel",
            fake_wheel,
            "--wheel-sha256",
            SHA_A,
            "--python",
            "/no/such/python3",
            "--prefix",
            tmp_path / "opt",
        ]
    )
    assert result.returncode == 1
    assert "Python interpreter '/no/such/python3' not found" in result.stderr


def _install_args(wheel: Path, prefix: Path, python: str = sys.executable) -> list:
    return [
        INSTALL,
        *("--wheel", wheel, "--wheel-sha256", SHA_A),
        *("--python", python, "--prefix", prefix),
    ]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ERROR:" in line]


def test_install_keeps_an_existing_prefix_as_it_is(tmp_path: Path, fake_wheel: Path) -> None:
    """Issue 11 item 9: an existing --prefix (here sticky and world-writable, like /tmp)
    keeps its mode; only the subfolders the script creates get 755."""
    prefix = tmp_path / "shared-tmp"
    prefix.mkdir()
    prefix.chmod(0o1777)
    (prefix / "bin").mkdir(mode=0o700)  # an existing subfolder is not touched either
    (prefix / "bin").chmod(0o770)
    result = _run(_install_args(fake_wheel, prefix))
    assert result.returncode == 1
    assert "sha256 mismatch" in result.stderr  # it got past the folders
    assert (prefix.stat().st_mode & 0o7777) == 0o1777
    assert ((prefix / "bin").stat().st_mode & 0o7777) == 0o770
    for name in ("models", "state"):
        assert ((prefix / name).stat().st_mode & 0o7777) == 0o755


def test_install_refuses_a_prefix_that_is_a_file(tmp_path: Path, fake_wheel: Path) -> None:
    (tmp_path / "opt").write_text("a file")
    result = _run(_install_args(fake_wheel, tmp_path / "opt" / "fruitlens"))
    assert result.returncode == 1
    (line,) = _error_lines(result.stderr)
    assert f"{tmp_path / 'opt'} exists and is not a folder" in line
    assert (tmp_path / "opt").read_text() == "a file"


def _as_nobody() -> list[str] | None:
    """A command prefix that runs as an unprivileged user, or None if this cannot."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def unprivileged(tmp_path_factory: pytest.TempPathFactory):
    """Run the installer as `nobody` with a fake sudo that logs its arguments (then runs
    them, unprivileged: a privileged step fails). Files live in a world-readable folder."""
    import tempfile

    prefix_cmd = _as_nobody()
    python = shutil.which("python3", path="/usr/bin:/bin")
    if prefix_cmd is None or python is None:
        pytest.skip("needs root and setpriv to run the installer as an unprivileged user")
    if _run([*prefix_cmd, python, "-m", "pip", "--version"]).returncode != 0:
        pytest.skip(f"{python} has no pip")
    root = Path(tempfile.mkdtemp(prefix="fruitlens-bootstrap-"))
    root.chmod(0o755)
    fakebin = root / "fakebin"
    fakebin.mkdir()
    sudo_log = root / "sudo.log"
    sudo_log.touch()
    sudo_log.chmod(0o666)
    sudo = fakebin / "sudo"
    sudo.write_text(
        f'#!/bin/sh\nprintf \'%s\\n\' "$*" >> {sudo_log}\n[ "$1" = -n ] && shift\nexec "$@"\n'
    )
    sudo.chmod(0o755)
    wheel = root / "fruitlens-0.1.0-cp39-abi3-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"not really a wheel")
    wheel.chmod(0o644)
    env = {**_clean_env(), "PATH": f"{fakebin}:/usr/bin:/bin", "HOME": str(root)}

    def run(prefix: Path):
        return _run([*prefix_cmd, *_install_args(wheel, prefix, python)], env=env)

    yield SimpleNamespace(root=root, run=run, sudo_calls=lambda: sudo_log.read_text().splitlines())
    shutil.rmtree(root, ignore_errors=True)


def test_install_unprivileged_never_takes_over_an_existing_prefix(unprivileged) -> None:
    """Not root, existing prefix owned by root: no `sudo chown` of it (before: chown -R)."""
    prefix = unprivileged.root / "opt"
    prefix.mkdir(mode=0o755)
    (prefix / "keep").write_text("someone else's")
    result = unprivileged.run(prefix)
    assert result.returncode == 1
    assert len(_error_lines(result.stderr)) == 1, result.stderr
    assert "ERROR: could not create" in result.stderr
    calls = unprivileged.sudo_calls()
    assert calls == [f"-n mkdir -m 755 -- {prefix}/models"]  # only what it creates
    st = prefix.stat()
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o755)


def test_install_unprivileged_refuses_a_foreign_subfolder(unprivileged) -> None:
    prefix = unprivileged.root / "mine"
    prefix.mkdir(mode=0o755)
    os.chown(prefix, 65534, 65534)
    (prefix / "models").mkdir(mode=0o755)  # root's
    result = unprivileged.run(prefix)
    assert result.returncode == 1
    (line,) = _error_lines(result.stderr)
    assert f"{prefix}/models is not writable by nobody" in line
    assert unprivileged.sudo_calls() == []
    assert (prefix / "models").stat().st_uid == 0


def test_install_unprivileged_in_a_sticky_folder(unprivileged) -> None:
    """Not root, `--prefix` a /tmp-like folder (root's, sticky, world-writable): before,
    `chmod 755` on it failed with a raw error (as root it stripped the bits). Now it is
    left as it is, and a new prefix inside it is created and owned by the user."""
    sticky = unprivileged.root / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    for prefix in (sticky, sticky / "a" / "fruitlens"):
        result = unprivileged.run(prefix)
        assert result.returncode == 1
        (line,) = _error_lines(result.stderr)
        assert "sha256 mismatch" in line  # it got past the folders
        assert (prefix / "models").stat().st_uid == 65534
    assert unprivileged.sudo_calls() == []
    assert (sticky.stat().st_mode & 0o7777, sticky.stat().st_uid) == (0o1777, 0)
    for path in (sticky / "a", sticky / "a" / "fruitlens", sticky / "a" / "fruitlens" / "state"):
        assert (path.stat().st_mode & 0o7777, path.stat().st_uid) == (0o755, 65534)


@pytest.mark.parametrize("python", ["/bin/true", "true", "/bin/echo"])
def test_install_refuses_a_non_python(tmp_path: Path, fake_wheel: Path, python: str) -> None:
    """`--python /bin/true` used to report success."""
    result = _run(_install_args(fake_wheel, tmp_path / "opt", python))
    assert result.returncode == 1
    (line,) = _error_lines(result.stderr)
    assert "is not a working Python interpreter" in line
    assert not (tmp_path / "opt").exists()


def test_install_fails_when_fruitlens_does_not_import(tmp_path: Path) -> None:
    """pip "succeeds" (a fake) but the interpreter cannot import fruitlens: an ERROR, no
    `done`."""
    real = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    probe = _run([real, "-c", "import fruitlens"])
    if probe.returncode == 0:
        pytest.skip(f"{real} imports fruitlens")
    python = tmp_path / "python3"
    python.write_text(
        '#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = pip ]; then echo "pip 99 (fake)"; exit 0; fi\n'
        f'exec {real} "$@"\n'
    )
    python.chmod(0o755)
    wheel = tmp_path / "fruitlens-0.1.0-cp39-abi3-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"not really a wheel")
    args = _install_args(wheel, tmp_path / "opt", str(python))
    args[args.index("--wheel-sha256") + 1] = _sha256(wheel)
    result = _run(args)
    assert result.returncode == 1, result.stderr
    (line,) = _error_lines(result.stderr)
    assert f"fruitlens does not import in {python}: ModuleNotFoundError" in line
    assert not result.stderr.rstrip().endswith("done")


@pytest.mark.parametrize(
    "name",
    ["..", ".", "../escape.onnx", "a/b.onnx", ".hidden.onnx", "model.bin", ".onnx", "a\nb.onnx"],
)
def test_install_validates_the_model_name(tmp_path: Path, fake_wheel: Path, name: str) -> None:
    """`--model-name ..` used to end in a raw sha256sum error."""
    args = _install_args(fake_wheel, tmp_path / "opt")
    args += ["--model", fake_wheel, "--model-sha256", SHA_A, "--model-name", name]
    result = _run(args)
    assert result.returncode == 2
    (line,) = _error_lines(result.stderr)
    assert "--model-name must be a plain file name ending in .onnx" in line
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "opt").exists()


@pytest.mark.parametrize("location", ["https://example.com/models/", "/models/model.bin"])
def test_install_validates_the_model_location_name(
    tmp_path: Path, fake_wheel: Path, location: str
) -> None:
    args = _install_args(fake_wheel, tmp_path / "opt")
    args += ["--model", location, "--model-sha256", SHA_A]
    result = _run(args)
    assert result.returncode == 2
    (line,) = _error_lines(result.stderr)
    assert "set --model-name NAME.onnx" in line


def test_install_model_name_is_used(tmp_path: Path) -> None:
    """A valid --model-name gets past the checks (to the wheel's sha256 check)."""
    wheel = tmp_path / "fruitlens-0.1.0-cp39-abi3-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"w")
    args = _install_args(wheel, tmp_path / "opt")
    args += ["--model", tmp_path / "m", "--model-sha256", SHA_A, "--model-name", "my model.onnx"]
    result = _run(args)
    assert result.returncode == 1
    (line,) = _error_lines(result.stderr)
    assert "sha256 mismatch for fruitlens-0.1.0" in line


def test_install_unexpected_failure_says_error(tmp_path: Path) -> None:
    """A failure nobody anticipated (the model's target is a folder) still ends with one
    ERROR line, and the folder is not written into."""
    wheel = tmp_path / "fruitlens-0.1.0-cp39-abi3-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"w")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    prefix = tmp_path / "opt"
    (prefix / "models" / "m.onnx").mkdir(parents=True)
    (prefix / "state").mkdir()
    python = tmp_path / "python3"  # pip and the wheel are faked: the model step is reached
    python.write_text(
        '#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = pip ]; then echo "pip 99 (fake)"; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    args = _install_args(wheel, prefix, str(python))
    args[args.index("--wheel-sha256") + 1] = _sha256(wheel)
    args += ["--model", model, "--model-sha256", _sha256(model)]
    result = _run(args)
    assert result.returncode != 0
    (line,) = _error_lines(result.stderr)
    assert "ERROR: unexpected failure" in line
    assert list((prefix / "models" / "m.onnx").iterdir()) == []


def _pure_wheel(folder: Path, files: dict[str, str], version: str = "0.1.0") -> Path:
    """A minimal pure-Python wheel of a package called fruitlens (no native code)."""
    import base64
    import zipfile

    info = f"fruitlens-{version}.dist-info"
    files = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: fruitlens\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    wheel = folder / f"fruitlens-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in {**files, f"{info}/RECORD": "\n".join(record) + "\n"}.items():
            archive.writestr(name, text)
    return wheel


FAKE_PACKAGE = {
    "fruitlens/__init__.py": "__version__ = '0.1.0'\n"
    "def find_onnxruntime_library():\n    return 'libonnxruntime.so'\n",
    "fruitlens/_native.py": "",
}


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (with pip) where nothing is installed yet."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    return venv / "bin" / "python"


def test_install_succeeds_only_once_the_wheel_imports(tmp_path: Path, fresh_python: Path) -> None:
    """The success path, offline: a pure-Python stand-in wheel into a fresh venv. Then a
    rerun is a no-op, and a fruitlens that shadows the installed one is an ERROR."""
    wheel = _pure_wheel(tmp_path, FAKE_PACKAGE)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    prefix = tmp_path / "opt"
    args = _install_args(wheel, prefix, str(fresh_python))
    args[args.index("--wheel-sha256") + 1] = _sha256(wheel)
    args += ["--model", model, "--model-sha256", _sha256(model), "--model-name", "mnv2.onnx"]
    env = {**_clean_env(), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)

    first = _run(args, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert _error_lines(first.stderr) == []
    assert f"fruitlens 0.1.0 works in {fresh_python}" in first.stderr
    assert first.stderr.rstrip().endswith("done")
    assert (prefix / "models" / "mnv2.onnx").read_bytes() == b"model"
    assert (prefix / "bin" / "fruitlens_job.py").is_file()

    again = _run(args, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stderr and "already in place" in again.stderr

    shadow = tmp_path / "shadow" / "fruitlens"
    shadow.mkdir(parents=True)
    for name, text in FAKE_PACKAGE.items():
        (shadow.parent / name).write_text(text)
    shadowed = _run(args, env={**env, "PYTHONPATH": str(shadow.parent)}, timeout=300)
    assert shadowed.returncode == 1
    (line,) = _error_lines(shadowed.stderr)
    assert f"imports fruitlens from {shadow / '__init__.py'}, not the installed wheel" in line


def test_install_wrong_sha256_from_s3(s3_server, s3_bucket: str, tmp_path: Path) -> None:
    """The s3:// path goes through `aws s3 cp --endpoint-url $AWS_ENDPOINT_URL`."""
    if shutil.which("aws") is None:
        pytest.skip("the aws CLI is not installed")
    wheel = tmp_path / "fruitlens-0.0.0-cp39-abi3-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"payload")
    s3_server.client().upload_file(str(wheel), s3_bucket, f"dist/{wheel.name}")
    env = {**os.environ, **s3_server.env()}
    result = _run(
        [
            INSTALL,
            "--wheel",
            f"s3://{s3_bucket}/dist/{wheel.name}",
            "--wheel-sha256",
            SHA_A,
            "--python",
            sys.executable,
            "--prefix",
            tmp_path / "opt",
        ],
        env=env,
    )
    assert result.returncode == 1, result.stderr
    assert f"(endpoint {s3_server.endpoint})" in result.stderr
    assert f"expected {SHA_A}, actual {_sha256(wheel)}" in result.stderr
    missing = _run(
        [
            INSTALL,
            "--wheel",
            f"s3://{s3_bucket}/dist/missing.whl",
            "--wheel-sha256",
            SHA_A,
            "--python",
            sys.executable,
            "--prefix",
            tmp_path / "opt",
        ],
        env=env,
    )
    assert missing.returncode == 1
    assert "could not copy s3://" in missing.stderr


def _python39() -> str | None:
    candidates = [str(p) for p in Path.home().glob(".pyenv/versions/3.9*/bin/python3.9")]
    candidates += [c for c in [shutil.which("python3.9")] if c]
    for candidate in candidates:
        probe = _run([candidate, "-c", "import sys; print(sys.version_info[:2])"])
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 9)":
            return candidate
    return None


PY39 = _python39()


@pytest.mark.skipif(PY39 is None, reason="no Python 3.9 interpreter here")
def test_sources_parse_on_python39() -> None:
    """EMR 7's python3 is 3.9: the package must at least be valid 3.9 syntax."""
    files = sorted(str(p) for p in (REPO / "python" / "fruitlens").glob("*.py"))
    code = "import ast, sys\nfor f in sys.argv[1:]:\n    ast.parse(open(f).read(), f)\n"
    result = _run([PY39, "-c", code, *files])
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------
# End to end: a fresh "node", the bootstrap against the S3 endpoint, then a run
# --------------------------------------------------------------------------------------


def _find_wheel() -> Path | None:
    env = os.environ.get("FRUITLENS_WHEEL")
    if env:
        return Path(env)
    wheels = sorted((REPO / "dist").glob("fruitlens-*.whl"), key=lambda p: p.stat().st_mtime)
    return wheels[-1] if wheels else None


def _sample_images(shared_dir: Path, per_class: int = 10) -> dict[str, list[Path]]:
    test = shared_dir / "data" / "fruits360-sample" / "Test"
    return {c: sorted((test / c).glob("*.jpg"))[:per_class] for c in ("apple", "lemon")}


def _make_node_python(root: Path) -> Path:
    """A fresh venv (no system site-packages) that sees only pyspark + py4j, as on EMR."""
    venv = root / "node-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    import py4j
    import pyspark

    spark_python = root / "spark-python"  # stands for EMR's /usr/lib/spark/python
    spark_python.mkdir()
    for module in (pyspark, py4j):
        package = Path(module.__file__).parent
        (spark_python / package.name).symlink_to(package, target_is_directory=True)
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "emr-spark-python.pth").write_text(f"{spark_python}\n")
    return python


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, s3_server, random_onnx: Path, shared_dir: Path):
    """A bootstrapped node: the wheel and the model installed from the S3 endpoint."""
    wheel = _find_wheel()
    if wheel is None or not wheel.is_file():
        pytest.skip(
            "NO FRUITLENS WHEEL FOUND: the bootstrap end-to-end tests need one. Build it "
            "with `maturin build --release -o dist` or set FRUITLENS_WHEEL=/path/to.whl"
        )
    if shutil.which("aws") is None:
        pytest.skip("the aws CLI is not installed (pip install awscli)")
    root = tmp_path_factory.mktemp("node")
    bucket = "fruitlens-e2e"
    s3_server.create_bucket(bucket)
    client = s3_server.client()
    client.upload_file(str(wheel), bucket, f"dist/{wheel.name}")
    client.upload_file(str(random_onnx), bucket, "models/mobilenet_v2_96.onnx")
    images = _sample_images(shared_dir)
    for label, paths in images.items():
        for path in paths:
            client.upload_file(str(path), bucket, f"images/{label}/{path.name}")

    python = _make_node_python(root)
    prefix = root / "opt-fruitlens"
    env = {**os.environ, **s3_server.env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "AWS_ENDPOINT_URL_S3"):
        env.pop(name, None)
    args = [
        INSTALL,
        *("--wheel", f"s3://{bucket}/dist/{wheel.name}", "--wheel-sha256", _sha256(wheel)),
        *("--model", f"s3://{bucket}/models/mobilenet_v2_96.onnx"),
        *("--model-sha256", _sha256(random_onnx)),
        *("--python", python, "--prefix", prefix, "--extra", "pandas>=1.5,<3"),
    ]
    started = time.monotonic()
    first = _run(args, env=env, timeout=900)
    return SimpleNamespace(
        bucket=bucket,
        wheel=wheel,
        python=python,
        prefix=prefix,
        env=env,
        args=args,
        first=first,
        seconds=time.monotonic() - started,
        images=images,
        server=s3_server,
    )


@pytest.mark.slow
def test_bootstrap_installs_wheel_and_model(node) -> None:
    assert node.first.returncode == 0, node.first.stderr
    log = node.first.stderr
    assert f"(endpoint {node.server.endpoint})" in log
    assert f"sha256 ok for {node.wheel.name}" in log
    assert "sha256 ok for mobilenet_v2_96.onnx" in log
    model = node.prefix / "models" / "mobilenet_v2_96.onnx"
    assert model.is_file()
    assert (node.prefix / "bin" / "fruitlens_job.py").is_file()
    assert "works in" in log and log.rstrip().endswith("done")
    check = _run(
        [node.python, "-c", "import fruitlens, pyspark, pandas; print(fruitlens.__file__)"],
        env=node.env,
    )
    assert check.returncode == 0, check.stderr
    assert str(node.python.parent.parent) in check.stdout  # installed in the node's venv


@pytest.mark.slow
def test_bootstrap_rerun_is_a_no_op(node) -> None:
    assert node.first.returncode == 0, node.first.stderr
    again = _run(node.args, env=node.env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stderr
    assert "already in place" in again.stderr
    assert "copying" not in again.stderr and "installing" not in again.stderr


@pytest.mark.slow
def test_bootstrap_wrong_sha256_fails(node) -> None:
    args = list(node.args)
    args[args.index("--wheel-sha256") + 1] = SHA_A
    result = _run(args, env=node.env, timeout=300)
    assert result.returncode == 1
    assert f"sha256 mismatch for {node.wheel.name}: expected {SHA_A}" in result.stderr
    args = list(node.args)
    args[args.index("--model-sha256") + 1] = SHA_A
    result = _run(args, env=node.env, timeout=300)
    assert result.returncode == 1
    assert f"sha256 mismatch for mobilenet_v2_96.onnx: expected {SHA_A}" in result.stderr
    # The model in place was kept.
    assert (node.prefix / "models" / "mobilenet_v2_96.onnx").is_file()


@pytest.mark.slow
@pytest.mark.spark
def test_run_on_s3_from_the_node(node) -> None:
    assert node.first.returncode == 0, node.first.stderr
    import pyarrow.dataset as ds

    from fruitlens import io

    probe = _run([node.python, "-c", "import fruitlens.spark as s; s.use_arrow_io"], env=node.env)
    if probe.returncode != 0:
        pytest.skip(
            f"THE WHEEL {node.wheel.name} PREDATES THE fruitlens.io INTEGRATION "
            "(no fruitlens.spark.use_arrow_io): rebuild it to run this test"
        )
    fruitlens_cli = node.python.parent / "fruitlens"
    model = node.prefix / "models" / "mobilenet_v2_96.onnx"
    env = {**node.env, "PYSPARK_PYTHON": str(node.python), "PYSPARK_DRIVER_PYTHON": ""}
    env.pop("SPARK_HOME", None)
    output = f"s3://{node.bucket}/out"
    result = _run(
        [
            fruitlens_cli,
            "run",
            f"s3://{node.bucket}/images",
            output,
            "--model",
            model,
            "--k",
            "3",
            "--master",
            "local[2]",
            "--partitions",
            "2",
        ],
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    client = node.server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=node.bucket, Prefix="out/")["Contents"]]
    assert "out/_SUCCESS" in keys
    assert "out/_pca/pca.json" in keys
    assert not [k for k in keys if "_temporary" in k]
    saved = {k: os.environ.get(k) for k in node.server.env()}
    os.environ.update(node.server.env())
    try:
        fs, path = io.filesystem_for(output)
        table = ds.dataset(path, filesystem=fs, format="parquet").to_table()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    expected = sum(len(v) for v in node.images.values())
    assert table.num_rows == expected
    rows = table.to_pylist()
    assert {r["label"] for r in rows} == {"apple", "lemon"}
    assert all(r["error"] is None for r in rows)
    assert all(r["path"].startswith(f"s3://{node.bucket}/images/") for r in rows)
