"""Model artifacts for serving: `steernpc compile` and the exports it is made of.

    config.py       CompileConfig: what `steernpc compile` is asked to build
    compile.py      the command: builds each target in turn
    hf.py           the hf target: the LoRA merged into the base + its model card
    onnx.py         the ONNX export (also made on the fly by the onnx backend)
    q4_1.py         the Q4_1 rewrite of an ONNX graph (the default onnx precision)
    trtllm.py       the trtllm target: a bundle for a GPU server
    fingerprint.py  the cache key of on-the-fly exports

The model card these write is steernpc.model_card's. Heavy imports (torch, onnx) happen
inside functions, so importing this package is cheap.
"""

from steernpc.export.fingerprint import folder_fingerprint
from steernpc.export.onnx import ONNX_FILE, ONNX_PRECISIONS, export_onnx, onnx_available

__all__ = ["ONNX_FILE", "ONNX_PRECISIONS", "export_onnx", "folder_fingerprint", "onnx_available"]
