"""The deploy path (deploy/) checked against the real tools: images, compose, kustomize, scripts."""
