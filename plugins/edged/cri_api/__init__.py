"""Generated code: Kubernetes' CRI API (``runtime.v1``) for the ``cri`` container runtime.

``cri_runtime_v1.proto`` is ``pkg/apis/runtime/v1/api.proto`` of kubernetes/cri-api (commit 791729b),
renamed so its descriptor cannot clash with another ``api.proto`` in the same process. Regenerate with::

    python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. cri_runtime_v1.proto

then make the import in ``cri_runtime_v1_pb2_grpc.py`` relative (``from . import cri_runtime_v1_pb2``).
Do not edit the generated files by hand.
"""
