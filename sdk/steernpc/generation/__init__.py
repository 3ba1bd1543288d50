"""Generation: the Backend interface, the streaming handle, and the backends."""

from steernpc.generation.base import (
    Backend,
    BackendUnavailable,
    Delta,
    Finished,
    GenerationRequest,
    QueueFull,
    SamplingParams,
    TailRequest,
)
from steernpc.generation.stream import Stream

BACKENDS = ("torch", "onnx", "trtllm", "remote")


def create_backend(name: str, **options) -> Backend:
    """Build a backend by name; each module is imported only when chosen."""
    if name == "torch":
        from steernpc.generation.torch_backend import TorchBackend

        return TorchBackend(**options)
    if name == "onnx":
        from steernpc.generation.onnx_backend import OnnxBackend

        return OnnxBackend(**options)
    if name == "trtllm":
        from steernpc.generation.trtllm_backend import TrtllmBackend

        return TrtllmBackend(**options)
    if name == "remote":
        from steernpc.generation.remote_backend import RemoteBackend

        return RemoteBackend(**options)
    raise ValueError(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "Delta",
    "Finished",
    "GenerationRequest",
    "QueueFull",
    "SamplingParams",
    "Stream",
    "TailRequest",
    "create_backend",
]
