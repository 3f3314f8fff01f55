"""protoc plugin `protoc-gen-grpc`: the gRPC Python generator of the grpcio-tools wheel.

Pants runs protoc with `--plugin=protoc-gen-grpc=<this> --grpc_out=DIR`, the way it runs the
standalone `grpc_python_plugin` binary that gRPC's own builds produce. No package index ships that
binary for every platform, but the grpcio-tools wheel (Linux x86_64/aarch64, macOS) carries the same
generator compiled into its protoc. This plugin hands protoc's parsed files to that compiler as a
descriptor set and returns what it writes, so the output is the generator's own, byte for byte.

The launcher (`./pants`) installs it with a shebang naming the Python that has grpcio-tools.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL,
    )
    with tempfile.TemporaryDirectory(prefix="protoc-gen-grpc-") as tmp:
        descriptors = Path(tmp, "request.binpb")
        descriptors.write_bytes(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        out = Path(tmp, "out")
        out.mkdir()
        target = f"{request.parameter}:{out}" if request.parameter else str(out)
        argv = ["protoc", f"--descriptor_set_in={descriptors}", f"--grpc_python_out={target}"]
        if protoc.main([*argv, *request.file_to_generate]) != 0:
            # protoc has written the reason to stderr, which the calling protoc passes on.
            response.error = "the grpcio-tools gRPC Python generator failed"
            return response
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            response.file.add(name=path.relative_to(out).as_posix(), content=path.read_text())
    return response


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
