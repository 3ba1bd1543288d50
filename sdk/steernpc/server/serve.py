"""`steernpc serve`: load personas and a model, then serve steernpc.v1 over gRPC, and with
`--studio-port` (or as `steernpc studio`) the HTTP/SSE gateway and the studio page from the
same process, model and sessions (server/gateway.py).

The ports open at once with health NOT_SERVING; it turns SERVING when the model has
loaded (dialogue calls made before that get UNAVAILABLE with a clear message).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger("steernpc.server")
SERVICE_NAME = "steernpc.v1.NpcService"


STUDIO_PORT = 8765


def add_serve_arguments(parser: argparse.ArgumentParser, studio: bool = False) -> argparse.ArgumentParser:
    """`steernpc serve`'s options; `studio=True` gives `steernpc studio`'s, where --host and
    --port are the web page's and --grpc-host / --grpc-port the gRPC server's."""
    from steernpc.generation import BACKENDS
    from steernpc.prompt import FORMATS
    from steernpc.runtime_defaults import repo_samples
    from steernpc.sessions import STORE_KINDS

    parser.add_argument("--personas", default=str(repo_samples() / "personas"), help="folder of persona YAML (hot-reloaded)")
    parser.add_argument("--model", default=None, help="HF folder, .gguf, or prepared name (default: smollm2)")
    parser.add_argument("--adapter", default=None, help="PEFT LoRA folder (default: the sample adapter when present; 'none' for none)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--backend-url", default=None, help="remote backend: base URL of an OpenAI-compatible server")
    parser.add_argument("--format", choices=FORMATS, default=None, help="prompt format (default: from the model, else chat)")
    parser.add_argument("--tails", choices=("auto", "on", "off"), default="auto",
                        help="the structured tail (emotion, action) after each reply: auto = when the model card says "
                             "the model was trained with tails")  # fmt: skip
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"))
    if studio:
        parser.add_argument("--host", dest="studio_host", default="127.0.0.1", help="the studio's address (default: localhost only)")
        parser.add_argument("--port", dest="studio_port", type=int, default=STUDIO_PORT, help="the studio's port")
        parser.add_argument("--grpc-host", dest="host", default="127.0.0.1")
        parser.add_argument("--grpc-port", dest="port", type=int, default=50051)
    else:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=50051)
        parser.add_argument("--studio-port", type=int, default=None,
                            help="also serve the HTTP/SSE gateway and the studio page on this port")
        parser.add_argument("--studio-host", default="127.0.0.1", help="the studio's address (default: localhost only, whatever --host is)")
    parser.add_argument("--allow-edit", action="store_true",
                        help="let the studio save persona files when it is not bound to localhost (on localhost it always may)")
    parser.add_argument("--steerability", default=None, metavar="DIR",
                        help="a `steernpc eval steerability --out` folder for the studio (default: steerability/ in the adapter or model folder)")
    parser.add_argument("--store", choices=STORE_KINDS, default="sqlite", help="where sessions live (default: sqlite under STEERNPC_HOME)")
    parser.add_argument("--store-path", default=None, help="sqlite file (default: STEERNPC_HOME/sessions.sqlite3)")
    parser.add_argument("--redis-url", default=None, help="redis://host:port/db for --store redis")
    parser.add_argument("--api-key", action="append", default=[], help="accepted API key (repeatable); none = no auth")
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    parser.add_argument("--max-batch", type=int, default=16, help="requests decoded together")
    parser.add_argument("--max-queue", type=int, default=64, help="waiting requests before RESOURCE_EXHAUSTED")
    parser.add_argument("--history-tokens", type=int, default=1024, help="token budget for past turns per prompt")
    parser.add_argument("--log-level", default="INFO")
    return parser


def build_backend(args: argparse.Namespace):
    from steernpc.generation import create_backend
    from steernpc.runtime_defaults import default_adapter

    adapter = None if (args.adapter or "").lower() == "none" else (args.adapter or default_adapter(args.model))
    if args.backend == "torch":
        options = dict(model=args.model, adapter=adapter, device=args.device, dtype=args.dtype,
                       max_batch=args.max_batch, max_queue=args.max_queue, slots=max(32, args.max_batch * 2))  # fmt: skip
    elif args.backend == "remote":
        options = dict(url=args.backend_url, model=args.model)
    else:
        options = dict(model=args.model, adapter=adapter)
    log.info("loading %s backend (model %s%s)", args.backend, args.model or "smollm2", f", adapter {adapter}" if adapter else "")
    return create_backend(args.backend, **options), adapter


async def serve(args: argparse.Namespace) -> None:
    from steernpc.runtime_defaults import model_format, model_tails
    from steernpc.limits import MAX_MESSAGE_BYTES
    from steernpc.server.auth import ApiKeyInterceptor
    from steernpc.server.guard import RequestGuard
    from steernpc.server.characters import CharacterRegistry
    from steernpc.server.metrics import Metrics
    from steernpc.server.servicer import NpcServicer
    from steernpc.sessions import open_store
    from steernpc.wire import pb, pb_grpc

    characters = CharacterRegistry(args.personas)
    if not characters.all():
        raise SystemExit(f"no valid personas in {args.personas}; `steernpc validate {args.personas}` shows why")
    store = open_store(args.store, path=args.store_path, redis_url=args.redis_url)
    metrics = Metrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.host)
    servicer = NpcServicer(characters, store, None, history_tokens=args.history_tokens, metrics=metrics)
    studio = _open_studio(args, servicer, characters)  # (gateway, socket, load state) or None

    # Auth first (a caller without a key learns nothing else), then the guard that answers
    # bytes which are not protobuf with INVALID_ARGUMENT.
    interceptors = ([ApiKeyInterceptor(args.api_key)] if args.api_key else []) + [RequestGuard()]
    options = [
        ("grpc.so_reuseport", 0),
        # The largest request is a snapshot (limits.MAX_SNAPSHOT_BYTES) plus framing.
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    pb_grpc.add_NpcServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (pb.DESCRIPTOR.services_by_name["NpcService"].full_name, reflection.SERVICE_NAME, health.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    address = f"{args.host}:{args.port}"
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("--tls-cert and --tls-key go together")
        creds = grpc.ssl_server_credentials([(Path(args.tls_key).read_bytes(), Path(args.tls_cert).read_bytes())])
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise SystemExit(f"cannot listen on {address} (in use?)")
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    log.info("listening on %s (%s); loading the model ...", address, "TLS" if args.tls_cert else "plaintext")
    gateway_task = None
    if studio is not None:
        from steernpc.server.gateway import start_gateway

        gateway, sock, state, phases = studio
        gateway_task = await start_gateway(gateway, sock)
        print(f"steernpc studio on http://{_url_host(args.studio_host)}:{sock.getsockname()[1]}/", flush=True)

    try:
        backend, adapter = await asyncio.to_thread(build_backend, args)
    except BaseException as exc:
        if studio is not None:
            studio[2].error = f"{type(exc).__name__}: {exc}"
        raise
    servicer.fmt = args.format or model_format(args.model, adapter)
    servicer.tails = args.tails == "on" or (args.tails == "auto" and model_tails(args.model, adapter))
    servicer.backend = backend
    if studio is not None:
        from steernpc.server.gateway import find_steerability

        gateway.options.steerability = find_steerability(args.steerability, args.model, adapter)
        state.ready()
        logging.getLogger("steernpc").removeHandler(phases)
    characters.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("SERVING %d characters (%s) with prompt format %s, sessions in %s",
             len(characters.all()), ", ".join(p.id for p in characters.all()), servicer.fmt, store.describe())  # fmt: skip
    print(f"steernpc serving on {address}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    if gateway_task is not None:
        from steernpc.server.gateway import stop_gateway

        await stop_gateway(studio[0], gateway_task)
    await server.stop(grace=2)
    characters.stop()
    backend.close()
    store.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _open_studio(args: argparse.Namespace, servicer, characters):
    """The gateway, its bound socket, the load state and its log handler, when asked for;
    refuses a non-loopback address without API keys."""
    if getattr(args, "studio_port", None) is None:
        return None
    try:
        from steernpc.server.gateway import Gateway, GatewayOptions, LoadState, PhaseLog, bind, is_loopback
        from steernpc.server.persona_files import PersonaFolder
    except ImportError as exc:
        raise SystemExit(f"the studio needs its extra: pip install 'steernpc[studio]' ({exc})") from None
    if not is_loopback(args.studio_host) and not args.api_key:
        raise SystemExit(f"the studio on {args.studio_host} would be open to the network: give --api-key KEY "
                         "(the same keys as gRPC), or leave --studio-host at 127.0.0.1")  # fmt: skip
    state = LoadState(model=args.model or "smollm2", backend=args.backend, phase="loading the model")
    options = GatewayOptions(host=args.studio_host, port=args.studio_port, api_keys=list(args.api_key), allow_edit=args.allow_edit)
    gateway = Gateway(servicer, state, options, PersonaFolder(args.personas))
    phases = PhaseLog(state)
    logging.getLogger("steernpc").addHandler(phases)
    return gateway, bind(args.studio_host, args.studio_port), state, phases


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    asyncio.run(serve(args))
    return 0
