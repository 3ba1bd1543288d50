"""The Q4_1 rewrite of an ONNX graph: llama.cpp's Q4_1 quality at int4 speed on ONNX
Runtime's MatMulNBits (used by `export_onnx(precision="q4_1")`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx


def rewrite_q4_1(model: "onnx.ModelProto", block: int = 32) -> "onnx.ModelProto":
    """Rewrite an fp32 export's MatMuls as llama.cpp-style Q4_1 (per block of 32: w ~ d*q + m,
    q in 0..15) and the LM head as Q8_0-style int8, on ONNX Runtime's MatMulNBits. Changes
    `model` in place and returns it.

    MatMulNBits has integer zero points only, so the block minimum `m` is carried exactly
    by a correction term: A @ W = MatMulNBits(A, q - 8, d) + BlockSum(A) @ (m + 8d), where
    BlockSum sums A over each block of 32 inputs (a small fp32 MatMul). Weights that already
    sit on a Q4_1 / Q8_0 grid (the bundled SmolLM2 GGUF) are reproduced exactly; others get
    the same error llama.cpp's Q4_1 quantizer gives them.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    logits = {o.name for o in graph.output if o.name == "logits"}
    new_nodes, new_inits, drop = [], [], set()
    block_sums: dict[str, str] = {}

    def const(name: str, array) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight not in inits:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[weight]).astype(np.float32)
        k, n = w.shape
        if k % block:
            new_nodes.append(node)
            continue
        nb = k // block
        wb = w.T.reshape(n, nb, block)
        base = node.name.strip("/").replace("/", "_") or weight
        if node.output[0] in logits:  # LM head: Q8_0-style symmetric int8
            scale = np.abs(wb).max(axis=2) / 127.0
            scale[scale == 0] = 1.0
            q = (np.clip(np.round(wb / scale[..., None]), -127, 127) + 128).astype(np.uint8)
            new_nodes.append(helper.make_node(
                "MatMulNBits", [node.input[0], const(f"{base}.q8", q), const(f"{base}.scales", scale.reshape(-1).astype(np.float32))],
                [node.output[0]], name=node.name + "_q8", domain="com.microsoft", K=k, N=n, bits=8, block_size=block,
                accuracy_level=4))  # fmt: skip
        else:  # Q4_1: d = (max - min) / 15, m = min, q = round((w - m) / d)
            lo, hi = wb.min(axis=2), wb.max(axis=2)
            d = (hi - lo) / 15.0
            d[d == 0] = 1e-12
            q = np.clip(np.floor((wb - lo[..., None]) / d[..., None] + 0.5), 0, 15).astype(np.uint8)
            packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
            y = node.output[0] + "_q4"
            new_nodes.append(helper.make_node(
                "MatMulNBits", [node.input[0], const(f"{base}.q4", packed), const(f"{base}.scales", d.reshape(-1).astype(np.float32))],
                [y], name=node.name + "_q4", domain="com.microsoft", K=k, N=n, bits=4, block_size=block, accuracy_level=4))  # fmt: skip
            a = node.input[0]
            if a not in block_sums:  # BlockSum(A) = A @ P, P the 0/1 [K, nb] block indicator
                sums = a + f"_blocksum{nb}"
                indicator = np.repeat(np.eye(nb, dtype=np.float32), block, axis=0)
                new_nodes.append(helper.make_node("MatMul", [a, const(f"{base}.blocks", indicator)], [sums], name=node.name + "_blocksum"))
                block_sums[a] = sums
            corr = node.output[0] + "_q4min"
            offset = (lo + 8.0 * d).T.astype(np.float32)  # [nb, n]
            new_nodes.append(helper.make_node("MatMul", [block_sums[a], const(f"{base}.min", offset)], [corr], name=node.name + "_min"))
            new_nodes.append(helper.make_node("Add", [y, corr], [node.output[0]], name=node.name + "_q4add"))
        uses[weight] -= 1
        if uses[weight] == 0:
            drop.add(weight)
    del graph.node[:]
    graph.node.extend(new_nodes)
    kept = [i for i in graph.initializer if i.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model
