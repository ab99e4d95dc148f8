"""Dependencies: clients built by the lifespan, injected into routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from infra.clients import Clients


def get_clients(request: Request) -> Clients:
    clients: Clients = request.app.state.clients
    return clients


ClientsDep = Annotated[Clients, Depends(get_clients)]
