"""Test and benchmark plumbing, in one place; no product module imports it (`no_product_import_test`).

- `ports`: free loopback ports, and an address where nothing listens;
- `processes`: the one way to start a child process (`RunningProcess`), its environment, and the
  kernel's promise that it dies with the test runner;
- `available`: whether a model server has the model AVAILABLE (the readiness poll);
- `image_host`, `in_process_gateway`: an HTTP image host and the gateway app on loopback threads;
- `sample_images`, `sample_signatures`: seeded images in every mode and format; course-shaped
  SignatureDefs and the stand-in TF Serving answers built from them;
- `sample_models`: small SavedModels written with TensorFlow (TensorFlow resolve only).
- `model_server_process`: the model server as a process on ports it picks, from any flags;
- `stack`: the live stack (the demo model export, the model server and the gateway as processes),
  and `LiveModelServer`, one model server that keeps its ports across restarts.
"""
