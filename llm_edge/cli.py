"""The ``llm-edge`` command: ``up``, ``broker``, ``worker``, ``bridge``, ``batch``, ``cache``,
``breaker``, ``audit``.

The environment is read here and nowhere else. Each command imports what it runs when it
runs: importing this module (or starting a bridge) loads no broker, worker or cache code.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from edge_runtime.logs import configure as configure_logs
from edge_runtime.process import DEFAULT_INBOX_PREFIX, ConnectionLost, Lifeline, run_until_stopped
from edge_runtime.servers import parse_servers
from llm_edge.audit_cli import add_audit_command, run_audit_command
from llm_edge.batch_cli import add_batch_commands, run_batch_command

if TYPE_CHECKING:
    import redis
    from nats.aio.client import Client

    from broker.config import Config

__all__ = ["main"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def _add_account_commands(sub: Any, environ: Mapping[str, str]) -> None:
    """``keys`` and ``usage``."""
    keys = sub.add_parser("keys", help="API keys (only hashes are stored)")
    keys.add_argument("--redis-url", default=environ.get("REDIS_URL"))
    key_cmds = keys.add_subparsers(dest="keys_command", required=True)
    create = key_cmds.add_parser("create", help="new key for a tenant (stored in Redis if set)")
    create.add_argument("--tenant", required=True)
    create.add_argument(
        "--model",
        dest="models",
        action="append",
        help="a model the key may use (repeatable; * is a wildcard: 'gpt-4o*'); default: all",
    )
    create.add_argument("--rpm", type=int, help="the key's own requests per minute")
    create.add_argument("--tpm", type=int, help="the key's own tokens per minute")
    create.add_argument("--budget-usd", type=float, help="the key's own spend cap")
    create.add_argument("--budget-period", choices=["day", "month"], help="(the tenant's)")
    create.add_argument(
        "--priority",
        choices=["interactive", "default", "background"],
        help="the class of the key's requests that name no Llm-Priority (the tenant's "
        "default_priority; capped by its max_priority)",
    )
    hasher = key_cmds.add_parser("hash", help="the hash of a key, for [tenants] in the config")
    hasher.add_argument("key")
    key_cmds.add_parser("list", help="run-time keys in Redis")
    usage = sub.add_parser(
        "usage", help="spend per tenant, by model and by service tier (USD, from Redis)"
    )
    usage.add_argument("--redis-url", default=environ.get("REDIS_URL"))
    usage.add_argument("--tenant", help="one tenant (default: all)")
    key_cmds.add_parser("revoke", help="remove a run-time key").add_argument("hash")


def _server_list(text: str) -> str:
    """argparse ``type`` of ``--nats-url``: refuse what is not a server list (NATS_URL too)."""
    try:
        parse_servers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_nats_options(cmd: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """How a service or an admin command reaches NATS: URL, TLS, inbox prefix."""
    cmd.add_argument(
        "--nats-url",
        type=_server_list,
        default=environ.get("NATS_URL") or DEFAULT_NATS_URL,
        help="NATS server, or a cluster's servers separated by commas "
        "(nats://USER:PASSWORD@HOST:PORT with credentials; env NATS_URL)",
    )
    cmd.add_argument(
        "--nats-ca", default=environ.get("NATS_CA"), help="CA bundle for TLS to NATS (env NATS_CA)"
    )
    cmd.add_argument(
        "--nats-cert",
        default=environ.get("NATS_CERT"),
        help="client certificate for NATS (env NATS_CERT)",
    )
    cmd.add_argument(
        "--nats-key", default=environ.get("NATS_KEY"), help="client key for NATS (env NATS_KEY)"
    )
    _add_inbox_prefix(cmd, environ)


def _add_inbox_prefix(cmd: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    cmd.add_argument(
        "--inbox-prefix",
        default=environ.get("NATS_INBOX_PREFIX") or DEFAULT_INBOX_PREFIX,
        help="subject prefix of reply inboxes: the one this NATS user may subscribe to "
        f"(env NATS_INBOX_PREFIX; default {DEFAULT_INBOX_PREFIX})",
    )


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    nats_url = environ.get("NATS_URL")
    config = environ.get("LLM_EDGE_CONFIG")
    parser = argparse.ArgumentParser(prog="llm-edge", description="LLM Edge Broker")
    sub = parser.add_subparsers(dest="command", required=True)

    def service(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text)
        _add_nats_options(cmd, environ)
        cmd.add_argument(
            "--metrics-port",
            type=int,
            default=int(environ.get("LLM_EDGE_METRICS_PORT", "0")),
            help="serve Prometheus /metrics and the health probes /healthz and /readyz on "
            "this port (0: off; the bridge serves /metrics, /health and /ready on its HTTP "
            "port)",
        )
        return cmd

    up = sub.add_parser("up", help="run the whole stack on this machine")
    up.add_argument(
        "--nats-url",
        type=_server_list,
        default=nats_url,
        help="use this NATS server (or comma-separated cluster servers) instead of the "
        "embedded one (env NATS_URL)",
    )
    up.add_argument("--nats-port", type=int, default=4222, help="embedded nats-server port")
    up.add_argument(
        "--cluster",
        type=int,
        default=1,
        metavar="N",
        help="run N embedded nats-servers as a cluster (routes, clustered JetStream; free "
        "ports) and give the services all of them",
    )
    up.add_argument("--data-dir", default=None, help="JetStream storage (env LLM_EDGE_DATA_DIR)")
    up.add_argument(
        "--processes",
        action="store_true",
        help="run the broker, each worker and the bridge as separate processes "
        "(default: all in this process, without NATS hops between them)",
    )
    _add_inbox_prefix(up, environ)
    for cmd in (up, service("broker", "run a broker (queue group on llm.chat)")):
        cmd.add_argument("--config", default=config, help="TOML file (env LLM_EDGE_CONFIG)")
        cmd.add_argument(
            "--redis-url",
            default=environ.get("REDIS_URL"),
            help="L2 cache on Redis (env REDIS_URL); else a NATS KV bucket",
        )
    bridge = service("bridge", "run the OpenAI-compatible HTTP bridge")
    bridge.add_argument(
        "--tls-cert",
        default=environ.get("LLM_EDGE_TLS_CERT"),
        help="serve HTTPS with this certificate (env LLM_EDGE_TLS_CERT)",
    )
    bridge.add_argument(
        "--tls-key",
        default=environ.get("LLM_EDGE_TLS_KEY"),
        help="and this key (env LLM_EDGE_TLS_KEY)",
    )
    bridge.add_argument(
        "--attempts",
        type=int,
        default=int(environ.get("LLM_EDGE_BRIDGE_ATTEMPTS", "4")),
        help="tries of a chat or messages request lost to a NATS failover, within its "
        "deadline (1: no retry; env LLM_EDGE_BRIDGE_ATTEMPTS)",
    )
    bridge.add_argument(
        "--attempt-timeout",
        type=float,
        default=float(environ.get("LLM_EDGE_BRIDGE_ATTEMPT_TIMEOUT_S", "30")),
        help="seconds an attempt may stay silent (no answer, no keepalive of the broker working "
        "on it) before it is taken for lost and sent again (env "
        "LLM_EDGE_BRIDGE_ATTEMPT_TIMEOUT_S)",
    )
    bridge.add_argument(
        "--max-request-bytes",
        type=int,
        default=int(environ.get("LLM_EDGE_MAX_REQUEST_BYTES", str(32 * 1024 * 1024))),
        help="the largest chat or messages body read (413 above it; set it to the brokers' "
        "broker.max_request_bytes; env LLM_EDGE_MAX_REQUEST_BYTES)",
    )
    bridge.add_argument(
        "--console-host",
        action="append",
        default=[h for h in environ.get("LLM_EDGE_CONSOLE_HOSTS", "").split(",") if h],
        help="a host name the console answers to without keys, beside loopback ones "
        "(repeatable; env LLM_EDGE_CONSOLE_HOSTS, comma-separated)",
    )
    for cmd in (up, bridge):
        cmd.add_argument("--host", default=environ.get("LLM_EDGE_HOST", "127.0.0.1"))
        cmd.add_argument("--port", type=int, default=int(environ.get("LLM_EDGE_PORT", "8080")))
    worker = service("worker", "run a provider worker (queue group on llm.provider.<name>)")
    worker.add_argument("provider", help="provider name from the configuration")
    worker.add_argument("--config", default=config, help="TOML file (env LLM_EDGE_CONFIG)")
    for cmd in (sub.choices["broker"], worker):
        cmd.add_argument(
            "--mock-fallback",
            action="store_true",
            help="serve models whose provider has no key from the mock provider",
        )

    cache = sub.add_parser("cache", help="cache administration")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    purge = cache_sub.add_parser("purge", help="purge cache entries on every broker and in L2")
    _add_nats_options(purge, environ)
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="everything")
    which.add_argument("--namespace", help="one namespace (X-Cache-Namespace)")
    which.add_argument("--key", help="one entry (the X-Cache-Key of a reply)")
    purge.add_argument(
        "--tenant",
        help="with --namespace: the tenant whose namespace it is (default: default)",
    )
    _add_admin_key(purge, environ)
    batch = add_batch_commands(sub, environ.get("LLM_EDGE_API_KEY"))
    _add_nats_options(batch, environ)
    _add_account_commands(sub, environ)
    breaker = sub.add_parser("breaker", help="circuit breaker status and overrides")
    breaker.add_argument("action", choices=["status", "open", "close", "reset"])
    breaker.add_argument("deployment", nargs="?", help="deployment name (not for status)")
    _add_nats_options(breaker, environ)
    _add_admin_key(breaker, environ)
    _add_nats_options(add_audit_command(sub), environ)
    return parser


def _add_admin_key(cmd: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    cmd.add_argument(
        "--admin-key",
        default=environ.get("LLM_EDGE_ADMIN_KEY"),
        help="an admin key ([console] keys, or a key of a tenant with admin = true), sent as "
        "Authorization: brokers with admin keys configured refuse admin commands without one "
        "(env LLM_EDGE_ADMIN_KEY)",
    )


def _load(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    from broker.config import Config  # noqa: PLC0415

    config = Config.load(args.config)
    if getattr(args, "mock_fallback", False):
        config, _ = config.with_mock_fallback(environ)
    return config


def _nats_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    from edge_runtime.process import tls_context  # noqa: PLC0415

    return tls_context(args.nats_ca, args.nats_cert, args.nats_key)


async def _broker(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    from broker.service import BrokerOptions, serve_broker  # noqa: PLC0415
    from edge_runtime.health import HEALTH  # noqa: PLC0415
    from edge_runtime.process import stop_event  # noqa: PLC0415  (each command imports what it runs)

    options = BrokerOptions(
        nats_url=args.nats_url,
        redis_url=args.redis_url,
        tls=_nats_tls(args),
        inbox_prefix=args.inbox_prefix,
    )
    await serve_broker(_load(args, environ), options, stop_event(), HEALTH)


async def _worker(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    from broker.config import ConfigError  # noqa: PLC0415
    from edge_runtime.health import HEALTH  # noqa: PLC0415
    from edge_runtime.process import close_quietly, stop_event  # noqa: PLC0415
    from workers import build_provider, http_client, serve_worker  # noqa: PLC0415

    config = _load(args, environ)
    settings = config.providers.get(args.provider)
    if settings is None:
        raise ConfigError(f"no provider {args.provider!r}; configured: {sorted(config.providers)}")
    stop = stop_event()
    lifeline = Lifeline(stop)
    async with http_client() as client:
        provider = build_provider(settings, environ, client)
        nc = await _connect(args, f"llm-edge-worker-{args.provider}", lifeline)
        try:
            await serve_worker(
                nc, provider, stop, max_concurrency=settings.max_concurrency, health=HEALTH
            )
        finally:
            lifeline.leaving = True
            await close_quietly(nc)
    lifeline.check()


async def _bridge(args: argparse.Namespace) -> None:
    from edge_bridge import BridgeOptions, serve_bridge  # noqa: PLC0415
    from edge_client.request import RetryPolicy  # noqa: PLC0415
    from edge_runtime.process import stop_event  # noqa: PLC0415

    if args.attempts < 1 or args.attempt_timeout <= 0 or args.max_request_bytes < 1024:
        raise ValueError(
            "--attempts takes N >= 1, --attempt-timeout a positive number, "
            "--max-request-bytes at least 1024"
        )
    options = BridgeOptions(
        nats_url=args.nats_url,
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        nats_tls=_nats_tls(args),
        nats_inbox_prefix=args.inbox_prefix,
        retry=RetryPolicy(attempts=args.attempts, attempt_timeout_s=args.attempt_timeout),
        max_request_bytes=args.max_request_bytes,
        console_hosts=frozenset(args.console_host),
    )
    await serve_bridge(options, stop_event())


async def _cache_purge(args: argparse.Namespace) -> None:
    from schemas import subjects  # noqa: PLC0415

    await _admin(args, subjects.CACHE_PURGE, _purge_command(args))


def _purge_command(args: argparse.Namespace) -> dict[str, object]:
    """The ``llm.admin.cache.purge`` body for ``cache purge`` (see broker/control.py).

    Raises:
        ValueError: ``--tenant`` without ``--namespace`` (``--key`` names its tenant itself).
    """
    from schemas import subjects  # noqa: PLC0415

    if args.all:
        command: dict[str, object] = {"all": True}
    elif args.namespace:
        command = {"namespace": args.namespace, "tenant": args.tenant or subjects.DEFAULT_TENANT}
    else:
        command = {"key": args.key}
    if args.tenant and not args.namespace:
        raise ValueError("--tenant goes with --namespace (a --key names its tenant)")
    return command


async def _breaker(args: argparse.Namespace) -> None:
    from schemas import subjects  # noqa: PLC0415

    if args.action != "status" and not args.deployment:
        raise ValueError(f"breaker {args.action} needs a deployment name")
    await _admin(
        args, subjects.BREAKER_ADMIN, {"action": args.action, "deployment": args.deployment}
    )


async def _connect(args: argparse.Namespace, name: str, lifeline: Lifeline | None = None) -> Client:
    from edge_runtime.process import connect  # noqa: PLC0415

    return await connect(
        args.nats_url, name, _nats_tls(args), inbox_prefix=args.inbox_prefix, lifeline=lifeline
    )


class CommandRefused(Exception):
    """The brokers refused an admin command (its error envelope was printed)."""


async def _admin(args: argparse.Namespace, subject: str, command: dict[str, object]) -> None:
    """Send one admin command (with the admin key, if given) and print the answer.

    Raises:
        CommandRefused: the answer is an error (401 without an admin key, 403 with another).
    """
    from edge_runtime.audit import admin_headers  # noqa: PLC0415
    from edge_runtime.process import close_quietly  # noqa: PLC0415
    from schemas import headers  # noqa: PLC0415

    nc = await _connect(args, "llm-edge-cli")
    try:
        hdrs = admin_headers(nc, via="cli", peer=_who())  # for the audit trail
        if args.admin_key:
            hdrs[headers.AUTHORIZATION] = f"Bearer {args.admin_key}"
        reply = await nc.request(subject, msgspec.json.encode(command), timeout=10, headers=hdrs)
    finally:
        await close_quietly(nc)
    answer = json.loads(reply.data)
    print(json.dumps(answer, indent=2))
    status = (reply.headers or {}).get(headers.STATUS, "200")
    if status != "200":
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        raise CommandRefused(f"{subject}: {status} {error.get('code')}: {error.get('message')}")


def _who() -> str:
    """``user@host`` of this process (the audit trail's record of a CLI command's origin)."""
    import getpass  # noqa: PLC0415
    import socket  # noqa: PLC0415

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no passwd entry
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _keys(args: argparse.Namespace) -> int:
    from broker.tenancy.grants import Grant, grant_id, run_time_value  # noqa: PLC0415
    from broker.tenancy.tenants import REDIS_KEYS, hash_key, new_key  # noqa: PLC0415

    if args.keys_command == "hash":
        print(hash_key(args.key))
        return 0
    key = new_key()
    grant: dict[str, object] = {}
    if args.keys_command == "create":
        given = {f: getattr(args, f) for f in ("models", "rpm", "tpm", "budget_usd")}
        given["budget_period"] = args.budget_period
        given["priority"] = args.priority
        try:
            fields = {k: v for k, v in given.items() if v is not None}
            grant = Grant.from_mapping("key", grant_id(hash_key(key)), fields).describe()
        except ValueError as exc:
            print(f"llm-edge: {exc}", file=sys.stderr)
            return 2
        print(f"key:    {key}\nhash:   {hash_key(key)}\ntenant: {args.tenant}")
        if grant:
            print(f"grant:  {json.dumps(grant)}")
        if not args.redis_url:
            print(
                "No REDIS_URL: add the hash to [tenants.<name>] keys in the config"
                + (" (as a table with its grant: { hash = ..., models = [...] })" if grant else ".")
            )
            return 0
    if not args.redis_url:
        print("llm-edge: run-time keys need REDIS_URL / --redis-url", file=sys.stderr)
        return 2
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    if args.keys_command == "create":
        client.hset(REDIS_KEYS, hash_key(key), run_time_value(args.tenant, grant))
        print("stored in Redis: brokers accept it within 5 s")
    elif args.keys_command == "list":
        stored: dict[str, str] = client.hgetall(REDIS_KEYS)  # type: ignore[assignment]
        for key_hash, tenant in sorted(stored.items()):
            print(f"{key_hash}  {tenant}")
    elif not client.hdel(REDIS_KEYS, args.hash):
        print(f"llm-edge: no key {args.hash}", file=sys.stderr)
        return 1
    return 0


def _usage(args: argparse.Namespace) -> int:
    if not args.redis_url:
        print("llm-edge: spend is summed in Redis: set REDIS_URL / --redis-url", file=sys.stderr)
        return 2
    import redis  # noqa: PLC0415

    from broker.tenancy.budget import BY_MODEL_PREFIX, BY_TIER_PREFIX  # noqa: PLC0415

    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    _spend_table(client, BY_MODEL_PREFIX, "MODEL", "(all models)", args.tenant)
    print()
    _spend_table(client, BY_TIER_PREFIX, "TIER", "(all tiers)", args.tenant)
    return 0


def _spend_table(
    client: redis.Redis, prefix: str, column: str, total: str, tenant: str | None
) -> None:
    """One row per tenant, period and name of the ``<prefix><tenant>:<period>`` hashes (a
    model, or the service tier that served), then the tenant's total for the period."""
    print(f"{'TENANT':<20} {'PERIOD':<10} {column:<24} {'USD':>14}")
    for key in sorted(str(k) for k in client.scan_iter(match=f"{prefix}{tenant or '*'}:*")):
        name, period = key.removeprefix(prefix).rsplit(":", 1)
        spent = {str(m): float(v) for m, v in client.hgetall(key).items()}
        for part, usd in sorted(spent.items()):
            print(f"{name:<20} {period:<10} {part:<24} {usd:>14,.6f}")
        print(f"{name:<20} {period:<10} {total:<24} {sum(spent.values()):>14,.6f}")


def _run_audit(args: argparse.Namespace) -> int:
    from edge_runtime.process import close_quietly  # noqa: PLC0415

    code = 1

    async def run() -> None:
        nonlocal code
        nc = await _connect(args, "llm-edge-cli")
        try:
            code = await run_audit_command(nc, args)
        finally:
            await close_quietly(nc)

    try:
        run_until_stopped(run())
    except KeyboardInterrupt:  # the way out of --follow
        return 0
    return code


def _run_batch(args: argparse.Namespace) -> int:
    from edge_runtime.process import close_quietly  # noqa: PLC0415

    code = 1

    async def run() -> None:
        nonlocal code
        nc = await _connect(args, "llm-edge-cli")
        try:
            code = await run_batch_command(nc, args)
        finally:
            await close_quietly(nc)

    try:
        run_until_stopped(run())
    except RuntimeError as exc:
        print(f"llm-edge: {exc}", file=sys.stderr)
    return code


def _up(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from llm_edge.up import UpOptions, default_data_dir, run_up  # noqa: PLC0415

    data_dir = default_data_dir(env) if args.data_dir is None else args.data_dir
    if args.cluster < 1 or (args.cluster > 1 and args.nats_url):
        raise ValueError("--cluster takes N >= 1, and starts its own servers (not with NATS_URL)")
    options = UpOptions(
        config_path=args.config,
        nats_url=args.nats_url,
        redis_url=args.redis_url,
        host=args.host,
        port=args.port,
        nats_port=args.nats_port,
        data_dir=Path(data_dir),
        inbox_prefix=args.inbox_prefix,
        processes=args.processes,
        cluster=args.cluster,
    )
    return run_up(options, env)


def _dispatch(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the chosen command; its exit code."""
    services: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "broker": lambda: _broker(args, env),
        "worker": lambda: _worker(args, env),
        "bridge": lambda: _bridge(args),
        "cache": lambda: _cache_purge(args),
        "breaker": lambda: _breaker(args),
    }
    if args.command in services:
        run_until_stopped(services[args.command]())
        return 0
    commands: dict[str, Callable[[], int]] = {
        "up": lambda: _up(args, env),
        "batch": lambda: _run_batch(args),
        "audit": lambda: _run_audit(args),
        "keys": lambda: _keys(args),
        "usage": lambda: _usage(args),
    }
    return commands[args.command]() if args.command in commands else 0


#: Exit code of a service whose NATS connection the server closed (EX_TEMPFAIL).
EXIT_CONNECTION_LOST = 75


def _service_name(args: argparse.Namespace) -> str | None:
    """The ``service.name`` a command's spans carry: ``llm-edge-<role>``, as in discovery
    (``$SRV.PING``); ``None`` for commands that serve nothing."""
    if args.command in {"broker", "bridge"}:
        return f"llm-edge-{args.command}"
    if args.command == "worker":
        return f"llm-edge-worker-{args.provider}"
    if args.command == "up" and not args.processes:
        return "llm-edge"  # every role runs in this process
    return None


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the ``llm-edge`` console script."""
    if environ is None:
        # One OpenBLAS thread (unless the operator names another count): the semantic tier's
        # products are small (a 384-wide vector against an index, a question's tokens through
        # a layer), and a thread per core spin-waits against the event loop and the other
        # processes on the host. On two busy cores the embedder's calibration at load took
        # 5-10 s with the default and 1.1 s with one thread; 3,000 index searches 19 s and
        # 1.1 s. Set before NumPy is imported (only the commands that need it import it);
        # `up` passes it to the processes it starts.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    env = dict(os.environ) if environ is None else environ
    args = _parser(env).parse_args(argv)
    configure_logs(env)

    if getattr(args, "metrics_port", 0):
        from edge_runtime.metrics_port import serve_metrics_port  # noqa: PLC0415

        serve_metrics_port(args.metrics_port, env.get("LLM_EDGE_METRICS_HOST", "127.0.0.1"))
    service = _service_name(args)
    if service is not None:  # `up` passes the environment on: its children trace themselves
        from edge_runtime.tracing import configure as configure_tracing  # noqa: PLC0415

        stop_tracing = configure_tracing(env, service)
        try:
            return _run(args, env)
        finally:
            stop_tracing()  # flush what the batch processor still holds
    return _run(args, env)


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        return _dispatch(args, env)
    except ValueError as exc:  # a ConfigError among them
        print(f"llm-edge: {exc}", file=sys.stderr)
        return 2
    except ConnectionLost as exc:  # a supervisor (up, systemd, Kubernetes) starts a fresh one
        print(f"llm-edge: {exc}; exiting to be restarted", file=sys.stderr)
        return EXIT_CONNECTION_LOST
    except CommandRefused as exc:
        print(f"llm-edge: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
