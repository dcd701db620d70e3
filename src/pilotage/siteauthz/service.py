"""The HTTPS decision service: one policy in memory, swapped whole on SIGHUP.

Invariant: ``PolicyHolder.current`` always refers to a fully loaded policy. A reload
builds the new one aside and replaces the reference in one assignment, so requests in
flight finish with the old policy, new ones get the new one, and none is dropped; a
policy that fails to load is logged and the old one stays. Overload is answered with
503 (uvicorn's concurrency limit), which the switch reports as a transient error (202).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, Response
from pydantic import ValidationError

from pilotage.errors import OperatorError
from pilotage.siteauthz.decisionlog import DecisionLog
from pilotage.siteauthz.wire import DecisionRequest, DecisionResponse
from pilotage.sitepolicy.policy import Policy, PolicyError

log = logging.getLogger("pilotage.siteauthz")


class PolicyHolder:
    """The policy file and the policy last loaded from it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.current = Policy.from_file(str(path))
        except PolicyError as exc:
            raise OperatorError(str(exc)) from None
        self.generation = 1

    def reload(self) -> bool:
        """Load the file again; keep the old policy (and say so) if the new one is broken."""
        try:
            policy = Policy.from_file(str(self.path))
        except PolicyError as exc:
            log.error("policy reload failed, keeping generation %d: %s", self.generation, exc)
            return False
        self.current = policy
        self.generation += 1
        log.info("policy %s reloaded (generation %d)", self.path, self.generation)
        return True


def create_app(holder: PolicyHolder, decisions: DecisionLog | None = None) -> FastAPI:
    """The decision API: ``POST /v1/decision``, ``GET /v1/health``; each decision goes to
    ``decisions`` when given."""
    app = FastAPI(title="pilotage site-authz", version="1", docs_url=None, redoc_url=None)

    async def decide(request: Request) -> Response:
        # Why a raw route: FastAPI's body and response machinery cost more than the
        # decision itself; pydantic still parses and checks both messages. Why async: the
        # only blocking work, a new pool lease, is a few syscalls under flock.
        try:
            asked = DecisionRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return Response(exc.json(), status_code=422, media_type="application/json")
        pilot = asked.pilot.to_subject() if asked.pilot is not None else None
        decision = holder.current.decide(asked.user.to_subject(), pilot)
        if decisions is not None:
            decisions.write(asked, decision)
        return Response(DecisionResponse.of(decision).model_dump_json(),
                        media_type="application/json")  # fmt: skip

    app.router.add_route("/v1/decision", decide, methods=["POST"])

    @app.get("/v1/health")
    async def health() -> dict[str, int]:
        return {"generation": holder.generation}

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Why: a response leaves in two writes (head, body); with Nagle on, the second waits
    # for the client's delayed ACK, 40 ms, and a decision took 45 ms instead of 1.
    # Accepted connections inherit the option from the listening socket on Linux.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OperatorError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(4096)
    return sock


def serve(
    holder: PolicyHolder,
    sock: socket.socket,
    *,
    cert: Path,
    key: Path,
    client_ca: Path | None = None,
    limit_concurrency: int = 1000,
    port_file: Path | None = None,
    decision_log: Path | None = None,
) -> None:
    """Serve decisions on ``sock`` until SIGTERM or SIGINT; SIGHUP reloads the policy
    (and reopens the decision log).

    ``port_file`` gets the port once SIGHUP is handled (before that, it would kill us).
    ``decision_log`` gets a line per decision (:mod:`pilotage.siteauthz.decisionlog`).
    """
    decisions = DecisionLog(decision_log) if decision_log is not None else None
    config = uvicorn.Config(
        create_app(holder, decisions),
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_ca_certs=str(client_ca) if client_ca else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
        limit_concurrency=limit_concurrency,
        access_log=False,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)

    def hangup() -> None:
        holder.reload()
        if decisions is not None:
            decisions.reopen()

    async def run() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hangup)
        if port_file is not None:
            port_file.write_text(f"{sock.getsockname()[1]}\n")
        await server.serve(sockets=[sock])

    try:
        asyncio.run(run())
    finally:
        if decisions is not None:
            decisions.close()
