"""A witness on its own (`juki witness serve`): the Witness service in a server process of its own, with
the deployment's mTLS, policy and an audit trail of its calls, like every server."""

from __future__ import annotations

from pathlib import Path

import grpc
from juki.v1 import witness_pb2_grpc

from server.app import (
    WITNESS_SERVICE,
    RunningServer,
    _attach_audit,
    _open_trail,
    _start,
    open_store,
)
from server.services.auditing import TrailAuditor
from server.services.witness import WitnessService, log_origin, open_witness
from server.settings import Settings


async def start_witness(settings: Settings, *, port: int, identity: str, directory: Path) -> RunningServer:
    """A witness on its own (`juki witness serve`): its state, key, audit trail and an empty store of its
    own (the servers' machinery wants one) in `directory`; it knows the logs of the settings' key files."""
    directory = settings.path(directory)
    witness = open_witness(settings, directory / "state", directory / "witness.json")  # + witness.pub.json
    store = open_store(settings, data_dir=directory / "store", keys_file=directory / "store.keys.json")
    trail = _open_trail(
        settings,
        directory / "audit",
        directory / "audit.keys.json",
        directory / "auditor.json",
        log_origin(settings.trust_domain, "witness"),
    )

    def add(server: grpc.aio.Server) -> None:
        witness_pb2_grpc.add_WitnessServicer_to_server(WitnessService(witness), server)  # type: ignore[no-untyped-call]

    running = await _start(
        settings,
        identity=identity,
        port=port,
        store=store,
        services=(WITNESS_SERVICE,),
        add_servicers=add,
        metrics_port=-1,
        auditor=TrailAuditor(trail),
        singletons=False,
    )
    _attach_audit(running, trail, settings)
    await running.set_health(True)
    return running
