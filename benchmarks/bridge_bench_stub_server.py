"""A stand-in steernpc.v1 server for benchmarks/bridge_bench.py: it answers at once and streams
a fixed reply (N deltas, a fixed gap apart), so a client-side latency measurement is not
drowned in the model's and the servicer's own jitter. Not a test double for correctness.

    python benchmarks/bridge_bench_stub_server.py --port 50990 [--deltas 16] [--gap-ms 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from steernpc.wire import pb, pb_grpc


class StubServicer(pb_grpc.NpcServiceServicer):
    def __init__(self, deltas: int, gap_ms: float):
        self.deltas = deltas
        self.gap = gap_ms / 1000

    async def CreateSession(self, request, context):
        return pb.Session(session_id=request.session_id or uuid.uuid4().hex, character_id=request.character_id)

    async def DeleteSession(self, request, context):
        return pb.DeleteSessionResponse()

    async def Say(self, request, context):
        t0 = time.perf_counter()
        text = ""
        for i in range(self.deltas):
            if i:
                await asyncio.sleep(self.gap)
            piece = f" word{i}"
            text += piece
            yield pb.SayEvent(interaction_id=request.interaction_id, delta=pb.ReplyDelta(text=piece))
        usage = pb.Usage(completion_tokens=self.deltas, time_to_first_token_ms=0.0, total_ms=(time.perf_counter() - t0) * 1000)
        yield pb.SayEvent(interaction_id=request.interaction_id,
                          done=pb.ReplyDone(text=text, finish_reason=pb.FINISH_REASON_LENGTH, usage=usage))  # fmt: skip


async def serve(port: int, deltas: int, gap_ms: float) -> None:
    server = grpc.aio.server()
    pb_grpc.add_NpcServiceServicer_to_server(StubServicer(deltas, gap_ms), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"stub serving on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--deltas", type=int, default=16)
    ap.add_argument("--gap-ms", type=float, default=2.0)
    args = ap.parse_args()
    asyncio.run(serve(args.port, args.deltas, args.gap_ms))


if __name__ == "__main__":
    main()
