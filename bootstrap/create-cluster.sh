#!/usr/bin/env bash
# Create an EMR 7 cluster ready for fruitlens: Spark, Hadoop, JupyterHub and Livy, the
# configurations of emr-configurations.json and the install-fruitlens.sh bootstrap action.
#
# Usage:
#   create-cluster.sh --bucket BUCKET --wheel WHEEL [--wheel-sha256 HEX]
#                     [--model MODEL [--model-sha256 HEX]] [options] [--dry-run]
#
# WHEEL and MODEL are either s3:// (or https://) URIs, then their --*-sha256 is required, or
# local files: then their sha256 is computed here and they are uploaded to
# s3://BUCKET/PREFIX/dist/ and s3://BUCKET/PREFIX/models/ first. The bootstrap script
# is uploaded to s3://BUCKET/PREFIX/bootstrap/install-fruitlens.sh unless
# --bootstrap-uri names one already in S3.
#
# Options (environment variable that sets the default, then the default):
#   --name NAME            FRUITLENS_CLUSTER_NAME   fruitlens
#   --release LABEL        EMR_RELEASE              emr-7.9.0
#   --region REGION        AWS_REGION               (the aws CLI's own default)
#   --master-type TYPE     EMR_MASTER_TYPE          m7i.xlarge
#   --core-type TYPE       EMR_CORE_TYPE            c7i.2xlarge
#   --core-count N         EMR_CORE_COUNT           2
#   --subnet SUBNET_ID     EMR_SUBNET               (the default VPC)
#   --key KEY_NAME         EMR_KEY_NAME             (no SSH key)
#   --log-uri URI          EMR_LOG_URI              s3://BUCKET/PREFIX/logs/
#   --bucket BUCKET        FRUITLENS_BUCKET         (required)
#   --prefix PREFIX        FRUITLENS_S3_PREFIX      fruitlens
#   --wheel WHEEL          FRUITLENS_WHEEL          (required)
#   --wheel-sha256 HEX     FRUITLENS_WHEEL_SHA256
#   --model MODEL          FRUITLENS_MODEL_URI      (none: pass --model to each job instead)
#   --model-sha256 HEX     FRUITLENS_MODEL_SHA256
#   --python PATH          FRUITLENS_PYTHON         /usr/bin/python3.11
#   --bootstrap-uri URI                             (upload bootstrap/install-fruitlens.sh)
#   --configurations FILE                           emr-configurations.json beside this script
#   --service-role ROLE                             EMR_DefaultRole
#   --instance-profile P                            EMR_EC2_DefaultRole
#   --idle-timeout SECONDS                          3600 (auto-termination when idle)
#   --dry-run              print the aws commands (one per line, shell-quoted) instead of
#                          running them
#
# Graviton (m7g/c7g) instances need an aarch64 wheel (manylinux_*_aarch64).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() {
  printf 'create-cluster: ERROR: %s\n' "$*" >&2
  exit 2
}
usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
  exit 0
}

NAME="${FRUITLENS_CLUSTER_NAME:-fruitlens}"
RELEASE="${EMR_RELEASE:-emr-7.9.0}"
REGION="${AWS_REGION:-}"
MASTER_TYPE="${EMR_MASTER_TYPE:-m7i.xlarge}"
CORE_TYPE="${EMR_CORE_TYPE:-c7i.2xlarge}"
CORE_COUNT="${EMR_CORE_COUNT:-2}"
SUBNET="${EMR_SUBNET:-}"
KEY_NAME="${EMR_KEY_NAME:-}"
LOG_URI="${EMR_LOG_URI:-}"
BUCKET="${FRUITLENS_BUCKET:-}"
S3_PREFIX="${FRUITLENS_S3_PREFIX:-fruitlens}"
WHEEL="${FRUITLENS_WHEEL:-}"
WHEEL_SHA256="${FRUITLENS_WHEEL_SHA256:-}"
MODEL="${FRUITLENS_MODEL_URI:-}"
MODEL_SHA256="${FRUITLENS_MODEL_SHA256:-}"
PYTHON="${FRUITLENS_PYTHON:-/usr/bin/python3.11}"
BOOTSTRAP_URI=""
CONFIGURATIONS="$HERE/emr-configurations.json"
SERVICE_ROLE="EMR_DefaultRole"
INSTANCE_PROFILE="EMR_EC2_DefaultRole"
IDLE_TIMEOUT="3600"
DRY_RUN=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift; continue ;;
    -h | --help) usage ;;
  esac
  [[ $# -ge 2 && "$2" != --* ]] || die "option $1 needs a value (see --help)"
  case "$1" in
    --name) NAME="$2" ;;
    --release) RELEASE="$2" ;;
    --region) REGION="$2" ;;
    --master-type) MASTER_TYPE="$2" ;;
    --core-type) CORE_TYPE="$2" ;;
    --core-count) CORE_COUNT="$2" ;;
    --subnet) SUBNET="$2" ;;
    --key) KEY_NAME="$2" ;;
    --log-uri) LOG_URI="$2" ;;
    --bucket) BUCKET="$2" ;;
    --prefix) S3_PREFIX="$2" ;;
    --wheel) WHEEL="$2" ;;
    --wheel-sha256) WHEEL_SHA256="$2" ;;
    --model) MODEL="$2" ;;
    --model-sha256) MODEL_SHA256="$2" ;;
    --python) PYTHON="$2" ;;
    --bootstrap-uri) BOOTSTRAP_URI="$2" ;;
    --configurations) CONFIGURATIONS="$2" ;;
    --service-role) SERVICE_ROLE="$2" ;;
    --instance-profile) INSTANCE_PROFILE="$2" ;;
    --idle-timeout) IDLE_TIMEOUT="$2" ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift 2
done

[[ -n "$BUCKET" ]] || die "--bucket is required (the S3 bucket for the bootstrap script, wheel and logs)"
[[ -n "$WHEEL" ]] || die "--wheel is required (a local .whl, or an s3:// URI with --wheel-sha256)"
[[ "$RELEASE" == emr-7.* ]] || die "--release must be an EMR 7 release label (emr-7.x.y), got $RELEASE"
[[ "$CORE_COUNT" =~ ^[0-9]+$ ]] || die "--core-count must be a number, got $CORE_COUNT"
[[ -f "$CONFIGURATIONS" ]] || die "no configurations file at $CONFIGURATIONS"
S3_PREFIX="${S3_PREFIX#/}"
S3_PREFIX="${S3_PREFIX%/}"
BASE="s3://$BUCKET/$S3_PREFIX"
LOG_URI="${LOG_URI:-$BASE/logs/}"

case "$CORE_TYPE $MASTER_TYPE" in
  *[0-9]g.* | *[0-9]gd.* | *[0-9]gn.*)
    [[ "$WHEEL" == *aarch64* ]] || die "Graviton instances ($MASTER_TYPE/$CORE_TYPE) need an aarch64 wheel; $WHEEL is not one"
    ;;
esac

AWS=(aws)
[[ -n "$REGION" ]] && AWS+=(--region "$REGION")

# A word as the shell needs it: as is when safe, else single-quoted.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

run() {
  if [[ "$DRY_RUN" -eq 1 ]]; then
    local line="" word
    for word in "$@"; do
      line+="${line:+ }$(quote "$word")"
    done
    printf '%s\n' "$line"
  else
    "$@"
  fi
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# stage LOCAL_OR_URI SHA256 SUBDIR: sets STAGED_URI and STAGED_SHA256; uploads local files.
STAGED_URI=""
STAGED_SHA256=""
stage() {
  local location="$1" sha="$2" subdir="$3" name
  case "$location" in
    s3://* | https://* | http://*)
      [[ "$sha" =~ ^[0-9a-fA-F]{64}$ ]] || die "$location is remote: give its sha256 (64 hex digits)"
      STAGED_URI="$location"
      STAGED_SHA256="$sha"
      ;;
    *)
      [[ -f "$location" ]] || die "no such file: $location"
      name="$(basename "$location")"
      local actual
      actual="$(sha256_of "$location")"
      [[ -z "$sha" || "$sha" == "$actual" ]] || die "$location has sha256 $actual, not $sha"
      run "${AWS[@]}" s3 cp --only-show-errors "$location" "$BASE/$subdir/$name"
      STAGED_URI="$BASE/$subdir/$name"
      STAGED_SHA256="$actual"
      ;;
  esac
}

json_str() { # a JSON string literal
  local s="${1//\\/\\\\}"
  s="${s//\"/\\\"}"
  printf '"%s"' "$s"
}

stage "$WHEEL" "$WHEEL_SHA256" dist
WHEEL_URI="$STAGED_URI"
WHEEL_SHA256="$STAGED_SHA256"
MODEL_URI=""
if [[ -n "$MODEL" ]]; then
  stage "$MODEL" "$MODEL_SHA256" models
  MODEL_URI="$STAGED_URI"
  MODEL_SHA256="$STAGED_SHA256"
fi
if [[ -z "$BOOTSTRAP_URI" ]]; then
  BOOTSTRAP_URI="$BASE/bootstrap/install-fruitlens.sh"
  run "${AWS[@]}" s3 cp --only-show-errors "$HERE/install-fruitlens.sh" "$BOOTSTRAP_URI"
fi

# pandas: PySpark's Arrow functions need it; matplotlib: the notebooks' plots.
BOOTSTRAP_ARGS=(--wheel "$WHEEL_URI" --wheel-sha256 "$WHEEL_SHA256" --python "$PYTHON"
  --extra 'pandas>=1.5,<3' --extra 'matplotlib>=3.5')
if [[ -n "$MODEL_URI" ]]; then
  BOOTSTRAP_ARGS+=(--model "$MODEL_URI" --model-sha256 "$MODEL_SHA256")
fi
args_json=""
for arg in "${BOOTSTRAP_ARGS[@]}"; do
  args_json+="${args_json:+,}$(json_str "$arg")"
done
BOOTSTRAP_JSON="[{\"Name\":\"install-fruitlens\",\"Path\":$(json_str "$BOOTSTRAP_URI"),\"Args\":[$args_json]}]"

# The configurations, compacted, with PYSPARK_PYTHON & co. set to --python.
CONFIG_JSON="$(sed -e 's/^[[:space:]]*//' \
  -e "s#\"\\(PYSPARK_PYTHON\\|PYSPARK_DRIVER_PYTHON\\|spark.pyspark.python\\|spark.pyspark.driver.python\\)\": \"[^\"]*\"#\"\\1\": \"$PYTHON\"#" \
  "$CONFIGURATIONS" | tr -d '\n')"

EC2_ATTRS="InstanceProfile=$INSTANCE_PROFILE"
[[ -n "$SUBNET" ]] && EC2_ATTRS+=",SubnetId=$SUBNET"
[[ -n "$KEY_NAME" ]] && EC2_ATTRS+=",KeyName=$KEY_NAME"

CREATE=("${AWS[@]}" emr create-cluster
  --name "$NAME"
  --release-label "$RELEASE"
  --applications Name=Spark Name=Hadoop Name=JupyterHub Name=Livy
  --instance-groups
  "InstanceGroupType=MASTER,InstanceCount=1,InstanceType=$MASTER_TYPE"
  "InstanceGroupType=CORE,InstanceCount=$CORE_COUNT,InstanceType=$CORE_TYPE"
  --service-role "$SERVICE_ROLE"
  --ec2-attributes "$EC2_ATTRS"
  --log-uri "$LOG_URI"
  --bootstrap-actions "$BOOTSTRAP_JSON"
  --configurations "$CONFIG_JSON"
  --auto-termination-policy "IdleTimeout=$IDLE_TIMEOUT"
  --query ClusterId --output text)

run "${CREATE[@]}"
