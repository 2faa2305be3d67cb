#!/usr/bin/env bash
# Submit a fruitlens job (featurize + PCA) to a running EMR cluster as a Spark step.
#
# Usage:
#   submit-step.sh --cluster-id j-XXXXXXXX [step options] INPUT OUTPUT [job options]
#
# Every argument that is not a step option is passed to the job, in order: the job is
# `python -m fruitlens.job INPUT OUTPUT [--model PATH] [--k K] [--size S] [--partitions N]
# [--overwrite] ...`, the same arguments as `fruitlens run`. Without --model the job gets
# --model /opt/fruitlens/models/mobilenet_v2_224.onnx (where install-fruitlens.sh puts
# the model; FRUITLENS_NODE_MODEL changes it).
#
# spark-submit needs a .py file: the step runs PREFIX/bin/fruitlens_job.py, a launcher of
# `python -m fruitlens.job` that install-fruitlens.sh writes on every node (so the code
# that runs is always the installed wheel's). --launcher s3://BUCKET/.../fruitlens_job.py
# runs a copy in S3 instead (spark-submit on EMR reads s3:// through EMRFS).
#
# Step options:
#   --cluster-id ID          EMR_CLUSTER_ID            (required)
#   --name NAME              name of the step, default "fruitlens INPUT"
#   --deploy-mode MODE       cluster (default: the driver runs in YARN) or client
#   --launcher PATH          default /opt/fruitlens/bin/fruitlens_job.py
#   --conf KEY=VALUE         a Spark setting for this job (repeatable)
#   --action-on-failure A    CONTINUE (default), CANCEL_AND_WAIT or TERMINATE_CLUSTER
#   --region REGION          AWS_REGION
#   --wait                   wait for the step to finish (aws emr wait step-complete)
#   --dry-run                print the aws command (shell-quoted) instead of running it
set -euo pipefail

die() {
  printf 'submit-step: ERROR: %s\n' "$*" >&2
  exit 2
}
usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
  exit 0
}

CLUSTER_ID="${EMR_CLUSTER_ID:-}"
NAME=""
DEPLOY_MODE="cluster"
LAUNCHER="/opt/fruitlens/bin/fruitlens_job.py"
NODE_MODEL="${FRUITLENS_NODE_MODEL:-/opt/fruitlens/models/mobilenet_v2_224.onnx}"
ACTION="CONTINUE"
REGION="${AWS_REGION:-}"
WAIT=0
DRY_RUN=0
CONFS=()
JOB_ARGS=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --wait) WAIT=1; shift ;;
    -h | --help) usage ;;
    --cluster-id | --name | --deploy-mode | --launcher | --conf | --action-on-failure | --region)
      [[ $# -ge 2 && "$2" != --* ]] || die "option $1 needs a value"
      case "$1" in
        --cluster-id) CLUSTER_ID="$2" ;;
        --name) NAME="$2" ;;
        --deploy-mode) DEPLOY_MODE="$2" ;;
        --launcher) LAUNCHER="$2" ;;
        --conf) CONFS+=(--conf "$2") ;;
        --action-on-failure) ACTION="$2" ;;
        --region) REGION="$2" ;;
      esac
      shift 2
      ;;
    --) shift; JOB_ARGS+=("$@"); break ;;
    *) JOB_ARGS+=("$1"); shift ;;
  esac
done

[[ -n "$CLUSTER_ID" ]] || die "--cluster-id is required (or set EMR_CLUSTER_ID)"
[[ "$DEPLOY_MODE" == cluster || "$DEPLOY_MODE" == client ]] || die "--deploy-mode must be cluster or client"
case "$ACTION" in CONTINUE | CANCEL_AND_WAIT | TERMINATE_CLUSTER) ;; *) die "bad --action-on-failure $ACTION" ;; esac
[[ "$LAUNCHER" == *.py ]] || die "--launcher must be a .py file (spark-submit runs Python files only), got $LAUNCHER"
if [[ ${#JOB_ARGS[@]} -lt 2 || "${JOB_ARGS[0]}" == -* || "${JOB_ARGS[1]}" == -* ]]; then
  die "give the job's INPUT and OUTPUT first (e.g. s3://bucket/images s3://bucket/features)"
fi
has_model=0
for arg in "${JOB_ARGS[@]}"; do
  if [[ "$arg" == --model || "$arg" == --model=* ]]; then has_model=1; fi
done
[[ "$has_model" -eq 1 ]] || JOB_ARGS+=(--model "$NODE_MODEL")
NAME="${NAME:-fruitlens ${JOB_ARGS[0]}}"

json_str() { # a JSON string literal
  local s="${1//\\/\\\\}"
  s="${s//\"/\\\"}"
  printf '"%s"' "$s"
}
quote() { # a word as the shell needs it
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

STEP_ARGS=(--deploy-mode "$DEPLOY_MODE" ${CONFS[@]+"${CONFS[@]}"} "$LAUNCHER" "${JOB_ARGS[@]}")
args_json=""
for arg in "${STEP_ARGS[@]}"; do
  args_json+="${args_json:+,}$(json_str "$arg")"
done
STEPS_JSON="[{\"Type\":\"Spark\",\"Name\":$(json_str "$NAME"),\"ActionOnFailure\":\"$ACTION\",\"Args\":[$args_json]}]"

AWS=(aws)
[[ -n "$REGION" ]] && AWS+=(--region "$REGION")
CMD=("${AWS[@]}" emr add-steps --cluster-id "$CLUSTER_ID" --steps "$STEPS_JSON" --query 'StepIds[0]' --output text)

if [[ "$DRY_RUN" -eq 1 ]]; then
  line=""
  for word in "${CMD[@]}"; do
    line+="${line:+ }$(quote "$word")"
  done
  printf '%s\n' "$line"
  exit 0
fi

STEP_ID="$("${CMD[@]}")"
printf '%s\n' "$STEP_ID"
if [[ "$WAIT" -eq 1 ]]; then
  printf 'submit-step: waiting for step %s of %s\n' "$STEP_ID" "$CLUSTER_ID" >&2
  "${AWS[@]}" emr wait step-complete --cluster-id "$CLUSTER_ID" --step-id "$STEP_ID"
fi
