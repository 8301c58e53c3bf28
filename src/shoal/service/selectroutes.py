"""Selections, plans and one node: the service's answers to ``shoal select|plan|nodes show``.

``POST /api/v1/select`` ``{"expr"}`` evaluates the selection grammar against
the service's inventory (``select --json``'s object: expression, node set,
count, names); an expression that does not parse is 400 with kind
``selection``, the CLI's one-line message as ``error`` and its caret lines as
``pointer``, so ``shoal: error: ERROR`` + newline + ``POINTER`` is exactly what
the CLI prints. ``GET /api/v1/plans`` lists plans, ``GET /api/v1/plans/{name}``
shows one with the nodes it selects now, ``PUT`` saves it ``{"expr"}`` (the
expression must parse and close no loop), ``DELETE`` removes it; an unknown
plan is 404. ``GET /api/v1/nodes/{name}`` is one node as ``GET
/api/v1/nodes`` lists it (link, failed reason, facts); 404 when it is not in
the inventory.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from shoal.errors import UnknownNameError
from shoal.nodes import inventory
from shoal.nodes.nodeset import fold
from shoal.nodes.plans import get_plan, list_plans, remove_plan, set_plan
from shoal.nodes.select import select as evaluate

from . import noderoutes
from .routes import controller

router = APIRouter(prefix="/api/v1")


class SelectRequest(BaseModel):
    """The body of ``POST /api/v1/select``."""

    expr: str


class Selection(BaseModel):
    """What an expression selects now (``shoal select --json``)."""

    expression: str
    nodeset: str
    count: int
    nodes: list[str]


class PlanSelection(BaseModel):
    """A plan and what it selects now (``shoal plan show --json``)."""

    plan: str
    expr: str
    nodeset: str
    count: int
    nodes: list[str]


class PlanInfo(BaseModel):
    """A stored plan (``shoal plan list --json``)."""

    plan: str
    expr: str
    updated: float


class PlanRequest(BaseModel):
    """The body of ``PUT /api/v1/plans/{name}``."""

    expr: str


def _selected(expr: str, names: Any) -> dict[str, Any]:
    listed = list(names)
    return {"expression": expr, "nodeset": fold(listed), "count": len(listed), "nodes": listed}


@router.post("/select", response_model=Selection, summary="Evaluate a selection expression")
async def select(request: Request, body: SelectRequest) -> dict[str, Any]:
    """The nodes ``expr`` selects now (``shoal select --json``); 400 with the caret on bad
    syntax."""
    return _selected(body.expr, evaluate(body.expr, state=controller(request).state))


@router.get("/plans", response_model=list[PlanInfo], summary="List the saved plans")
async def plans(request: Request) -> list[dict[str, Any]]:
    """Every plan: name, expression, last update (``shoal plan list --json``)."""
    found = list_plans(state=controller(request).state)
    return [{"plan": p.name, "expr": p.expr, "updated": p.updated} for p in found]


@router.get(
    "/plans/{name}", response_model=PlanSelection, summary="A plan and the nodes it selects now"
)
async def plan(request: Request, name: str) -> dict[str, Any]:
    """The plan's expression and what it selects now (``shoal plan show --json``)."""
    st = controller(request).state
    found = get_plan(name, state=st)
    chosen = _selected(found.expr, evaluate(f"%{found.name}", state=st))
    return {"plan": found.name, "expr": found.expr, **chosen}


@router.put("/plans/{name}", response_model=PlanInfo, summary="Save a plan")
async def save_plan(request: Request, name: str, body: PlanRequest) -> dict[str, Any]:
    """Store or replace the plan (``shoal plan set``)."""
    saved = set_plan(name, body.expr, state=controller(request).state)
    return {"plan": saved.name, "expr": saved.expr, "updated": saved.updated}


@router.delete("/plans/{name}", summary="Remove a plan")
async def delete_plan(request: Request, name: str) -> dict[str, Any]:
    """Remove the plan (``shoal plan rm``)."""
    remove_plan(name, state=controller(request).state)
    return {"removed": name}


@router.get("/nodes/{name}", summary="One node: inventory, link, failed reason, facts")
async def node(request: Request, name: str) -> dict[str, Any]:
    """The node as ``GET /api/v1/nodes`` lists it; 404 when it is not in the inventory."""
    if name not in inventory.existing(controller(request).state, [name]):
        raise UnknownNameError(f"unknown node(s) not in the inventory: {name}")
    (record,) = await noderoutes.nodes(request, selection=name)
    return record
