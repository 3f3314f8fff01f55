"""What a client sees of a TensorFlow error: the cause, not where in the graph it happened."""

from __future__ import annotations

import pytest

from model_server.saved_model import client_message

# (TensorFlow's message, what the client gets). The first forms are the C++ runtime's, which TF
# Serving answers with; the Python session adds the "Detected at node" block.
MESSAGES = [
    (
        "Graph execution error:\n\nIncompatible shapes: [3] vs. [2]\n\t [[{{node add}}]]",
        "Incompatible shapes: [3] vs. [2]",
    ),
    (
        "{{function_node __inference_serve_123}} Matrix size-incompatible: In[0]: [1,4], In[1]: [3,2]\n"
        "\t [[{{node model/dense_7/MatMul}}]]\n\t [[StatefulPartitionedCall/StatefulPartitionedCall]]",
        "Matrix size-incompatible: In[0]: [1,4], In[1]: [3,2]",
    ),
    (
        "Graph execution error:\n\n"
        "Detected at node 'model/conv/Conv2D' defined at (most recent call last):\n"
        '  File "/srv/export.py", line 12, in <module>\n    model(x)\n'
        "Node: 'model/conv/Conv2D'\ninput depth must be evenly divisible by filter depth: 4 vs 3\n"
        "\t [[{{node model/conv/Conv2D}}]]",
        "input depth must be evenly divisible by filter depth: 4 vs 3",
    ),
    (
        "Detected at node StatefulPartitionedCall defined at (most recent call last):\n"
        "<stack traces unavailable>\nOOM when allocating tensor with shape[64,149,149,32]",
        "OOM when allocating tensor with shape[64,149,149,32]",
    ),
    ("Expects arg[0] to be float but double is provided",) * 2,
    ("[[{{node x}}]]", "The model failed to run this request"),
]


@pytest.mark.parametrize(("raw", "shown"), MESSAGES)
def test_client_messages_keep_the_cause_only(raw: str, shown: str) -> None:
    assert client_message(raw) == shown
