#!/bin/bash
# The official tensorflow/serving image's entrypoint contract: serve ${MODEL_BASE_PATH}/${MODEL_NAME}
# on gRPC 8500 and REST 8501, with any arguments appended. (exec here, unlike the original: the
# model image does not use this script, it runs the binary itself.)
exec tensorflow_model_server --port=8500 --rest_api_port=8501 \
  --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
