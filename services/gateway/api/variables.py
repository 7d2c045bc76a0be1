"""``/api/projects/{project}/variables``: secret variables, stored encrypted and never returned.

A value goes in with ``PUT`` and never comes out of the API again: listings and answers carry
names and times only. The builder and the agents give the values to the project's build hooks
and host commands as environment variables and mask them (``***``) in everything they record.
Reading names takes the viewer role, writing takes admin (``ferry.domain.auth``), as credentials.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from starlette.requests import Request
from starlette.responses import Response

from ferry.db import repo
from ferry.domain.masking import MIN_MASKED
from ferry.domain.variables import ALLOWED_NAME_PATTERN, MAX_VALUE, check_name, value_problem
from services.gateway.api.http import gw, in_session, read_model, respond
from services.gateway.api.openapi import Operation
from services.gateway.api.text import TEXT_PATTERN, check_value

# --- schemas -----------------------------------------------------------------------
VALUE_PATTERN = "^(?=[\\s\\S]*\\S)" + TEXT_PATTERN[1:]
"""The text policy, and something other than whitespace (a blank value could not be masked)."""


class VariableIn(BaseModel):
    """The body of ``PUT``: the value only (the name is in the path)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    value: Annotated[str, StringConstraints(max_length=MAX_VALUE)] = Field(
        description=f"the secret, {MIN_MASKED} to {MAX_VALUE} characters, not only whitespace (shorter "
        "values cannot be masked in output); write-only: no answer ever contains it",
        json_schema_extra={"writeOnly": True, "minLength": MIN_MASKED, "pattern": VALUE_PATTERN},
    )

    @field_validator("value", mode="after")
    @classmethod
    def _value_rules(cls, value: str) -> str:
        problem = value_problem(value)  # says why (too short to mask...), never quotes the value
        if problem is not None:
            raise ValueError(problem)
        return str(check_value(value))


class VariableOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str
    name: str
    created_at: datetime
    updated_at: datetime


class VariableSet(VariableOut):
    created: bool = Field(description="true when the variable is new, false when its value was replaced")


class VariableList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variables: list[VariableOut]


# --- handlers ------------------------------------------------------------------------
def _out(info: repo.VariableInfo) -> VariableOut:
    return VariableOut(
        project=info.project, name=info.name, created_at=info.created_at, updated_at=info.updated_at
    )


async def list_variables(request: Request) -> Response:
    infos = await in_session(request, repo.list_variables, request.path_params["project"])
    return respond(VariableList(variables=[_out(i) for i in infos]))


async def get_variable(request: Request) -> Response:
    p = request.path_params
    return respond(_out(await in_session(request, repo.get_variable, p["project"], p["name"])))


async def set_variable(request: Request) -> Response:
    p = request.path_params
    check_name(p["name"])  # before the body: a refused name says so whatever the value
    body = await read_model(request, VariableIn)
    info, created = await in_session(
        request, repo.set_variable, gw(request).box, p["project"], p["name"], body.value, write=True
    )
    return respond(VariableSet(**_out(info).model_dump(), created=created))


async def delete_variable(request: Request) -> Response:
    p = request.path_params
    await in_session(request, repo.delete_variable, p["project"], p["name"], write=True)
    return Response(status_code=204)


TAG = "variables"
ONE = "/projects/{project}/variables/{name}"
NAME_PARAM = {"name": ALLOWED_NAME_PATTERN}
OPERATIONS = [
    Operation(
        "GET",
        "/projects/{project}/variables",
        list_variables,
        "List a project's secret variables (names and times, never values)",
        TAG,
        response=VariableList,
        errors=(404,),
    ),
    Operation(
        "GET",
        ONE,
        get_variable,
        "One secret variable (never its value)",
        TAG,
        response=VariableOut,
        errors=(404,),
        path_params=NAME_PARAM,
    ),
    Operation(
        "PUT",
        ONE,
        set_variable,
        "Set or replace a secret variable (encrypted; given to build hooks and host commands, "
        "masked as *** in their output)",
        TAG,
        response=VariableSet,
        body=VariableIn,
        errors=(404, 409, 422),
        path_params=NAME_PARAM,
    ),
    Operation(
        "DELETE",
        ONE,
        delete_variable,
        "Delete a secret variable",
        TAG,
        ok=204,
        errors=(404,),
        path_params=NAME_PARAM,
    ),
]
