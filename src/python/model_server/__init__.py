"""model_server: a local TF-Serving-compatible model server (gRPC + REST) for running and testing.

Run it as `./pants run src/python/model_server:model_server -- --port 8500 --rest_api_port 8501 --model_name
clothing-model --model_base_path /path/to/clothing-model`, or `python -m model_server …`; flags
are TF Serving's (`--help`). In-process: `model_server.server.ModelServer(parse_settings(argv,
environ))`; as a child process for tests: `testing_support.model_server_process.ServerProcess`.

Nothing is re-exported here on purpose: importing the package must not import TensorFlow or the
gRPC service stubs, because tests that drive the server with tensorflow_serving.apis' own stubs
import `testing_support.sample_models` and `model_server_process`, and the two sets of service
descriptors cannot share a process.
"""
