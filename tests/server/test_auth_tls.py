"""API keys (`authorization: Bearer KEY`) and TLS, each against its own real server."""

from __future__ import annotations

import datetime
import ipaddress

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from server_harness import SERVICE, rpc_error, say

from steernpc.client import NpcClient
from steernpc.wire import pb, pb_grpc

KEYS = ("k-studio-1", "k-studio-2")


@pytest.fixture(scope="module")
def servers(launch, tmp_path_factory):
    cert, key = self_signed_cert(tmp_path_factory.mktemp("tls"))
    keyed, tls = launch.many({
        "auth": dict(extra=["--api-key", KEYS[0], "--api-key", KEYS[1]]),
        "tls": dict(extra=["--tls-cert", str(cert), "--tls-key", str(key)], tls_root=cert.read_bytes()),
    })  # fmt: skip
    return keyed, tls, cert.read_bytes()


@pytest.fixture(scope="module")
def keyed(servers):
    return servers[0]


@pytest.fixture(scope="module")
def tls_server(servers):
    return servers[1], servers[2]


def test_missing_api_key_is_unauthenticated(keyed):
    with NpcClient(keyed.target, timeout=30) as npc:
        for call in (
            npc.list_characters,
            lambda: npc.get_character("brom"),
            lambda: npc.create_session("brom", session_id="no-key"),
            lambda: npc.say_events("no-key", "hello", max_new_tokens=4),  # server stream
            lambda: list(npc.converse(iter([pb.ConverseRequest(cancel=pb.CancelRequest(interaction_id="x"))]))),  # bidi
        ):
            exc = rpc_error(call)
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
            assert "authorization: Bearer" in exc.details()


def test_wrong_api_key_is_unauthenticated(keyed):
    for key in ("k-studio-3", KEYS[0] + "x", KEYS[0][:-1]):
        with NpcClient(keyed.target, api_key=key, timeout=30) as npc:
            exc = rpc_error(npc.list_characters)
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED and "not valid" in exc.details()
            assert rpc_error(npc.create_session, "brom", session_id="bad-key").code() == grpc.StatusCode.UNAUTHENTICATED
    with keyed.channel() as channel:  # a scheme other than Bearer
        stub = pb_grpc.NpcServiceStub(channel)
        exc = rpc_error(stub.ListCharacters, pb.ListCharactersRequest(), metadata=(("authorization", f"Basic {KEYS[0]}"),), timeout=30)
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    with NpcClient(keyed.target, api_key=KEYS[0], timeout=30) as npc:  # nothing was created by the refused calls
        assert rpc_error(npc.get_session, "bad-key").code() == grpc.StatusCode.NOT_FOUND


def test_right_api_key_works_for_every_kind_of_call(keyed):
    for key in KEYS:
        with NpcClient(keyed.target, api_key=key, timeout=60) as npc:
            assert {c.id for c in npc.list_characters()} >= {"brom", "pip"}
            sid = npc.create_session("brom").session_id
            reply = say(npc.stub, sid, "Hello there.", metadata=npc.metadata, max_new_tokens=5, seed=1)
            assert reply.text == reply.done.text
            events = list(npc.converse(iter([pb.ConverseRequest(say=pb.SayRequest(session_id=sid, text="Again.",
                                                                                  options=pb.GenerationOptions(max_new_tokens=4)))])))  # fmt: skip
            assert events[-1].HasField("done")
            assert npc.get_session(sid).turns == 2


def test_health_stays_open_and_reflection_follows_the_key(keyed):
    """Health is for load balancers and orchestrators, which carry no key; reflection
    describes the whole API, so on a keyed server it needs a key like the API itself."""
    list_services = [reflection_pb2.ServerReflectionRequest(list_services="")]
    with keyed.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        exc = rpc_error(lambda: list(stub.ServerReflectionInfo(iter(list_services), timeout=10)))
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
        answers = list(stub.ServerReflectionInfo(iter(list_services), timeout=10, metadata=(("authorization", f"Bearer {KEYS[1]}"),)))
        assert SERVICE in {s.name for s in answers[0].list_services_response.service}


# -- TLS ------------------------------------------------------------------------------------------------

def self_signed_cert(folder):
    """A fresh key and self-signed certificate for localhost / 127.0.0.1 (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_client_with_the_servers_certificate_talks(tls_server):
    server, cert = tls_server
    with NpcClient(server.target, tls_root=cert, timeout=60) as npc:
        npc.wait_ready(60)
        assert "brom" in {c.id for c in npc.list_characters()}
        sid = npc.create_session("pip").session_id
        reply = say(npc.stub, sid, "Hello?", max_new_tokens=5, seed=1)
        assert reply.text == reply.done.text and npc.get_session(sid).turns == 1


def test_tls_refuses_plaintext_and_untrusted_clients(tls_server, tmp_path):
    server, _ = tls_server
    with NpcClient(server.target, timeout=10) as plain:
        assert rpc_error(plain.list_characters).code() == grpc.StatusCode.UNAVAILABLE
    other_cert, _ = self_signed_cert(tmp_path)  # a certificate the server does not have
    with NpcClient(server.target, tls_root=other_cert.read_bytes(), timeout=10) as stranger:
        assert rpc_error(stranger.list_characters).code() == grpc.StatusCode.UNAVAILABLE
