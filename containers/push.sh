#!/usr/bin/env bash
# Push the images with the commit tag and `latest`.
#   containers/push.sh TAG IMAGE...            to ECR: account and region from the AWS
#                                              configuration; repositories created if missing
#   REGISTRY=host:port containers/push.sh ...  to another registry instead
set -euo pipefail
tag=$1
shift
registry=${REGISTRY:-}
if [ -z "$registry" ]; then
  command -v aws >/dev/null || { echo "push: the AWS CLI is needed to push to ECR (or set REGISTRY=host:port)" >&2; exit 1; }
  account=$(aws sts get-caller-identity --query Account --output text)
  region=${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region || true)}}
  [ -n "$region" ] || { echo "push: no AWS region configured (aws configure, or AWS_REGION)" >&2; exit 1; }
  registry="$account.dkr.ecr.$region.amazonaws.com"
  for image in "$@"; do
    aws ecr describe-repositories --region "$region" --repository-names "$image" >/dev/null 2>&1 ||
      aws ecr create-repository --region "$region" --repository-name "$image" \
        --image-scanning-configuration scanOnPush=true >/dev/null
  done
  aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"
fi
for image in "$@"; do
  for t in "$tag" latest; do
    docker tag "$image:latest" "$registry/$image:$t"
    docker push "$registry/$image:$t"
  done
  echo "pushed $registry/$image:$tag"
done
