#!/bin/sh
# tensorflow_model_server in the stand-in image: the project's model server, which takes TF
# Serving's flags. exec, so the server is the process that receives the stop signal.
exec /opt/model-server/pex "$@"
