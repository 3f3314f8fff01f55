"""System-level proof for the clothing classifier: load, soak, faults and hostile input.

The harness (importable, also used by `benchmarks.stack`; processes and ports come from
`testing_support`):

- `stack`: the demo model export, the model server and the gateway as real processes;
- `load`: a bounded async load generator (closed and open loop) with p50/p95/p99;
- `memory`: RSS sampling with psutil and the growth an operator would read off a graph;
- `hostile_host`: an image host that serves real images or abuses the fetcher on purpose;
- `fault_proxy`: a TCP proxy that makes the model server slow without changing it;
- `images`: sample JPEG/PNG bytes and their corrupted mutations;
- `scale`, `report`: CI versus full-size runs, and the figures each test prints.

The tests beside them (`*_test.py`) are the proof; docs/reliability.md lists them with their
commands and figures.
"""
