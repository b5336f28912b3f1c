"""Dependencies the routers share: the services container, admin auth, and the integer bounds of ids."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator

from service.api.schemas import NUL_FREE, no_nul
from service.app_services import Services

# What every integer column stores on both databases (PostgreSQL INTEGER is the narrower: int32).
DB_INT_MAX = 2**31 - 1
DbId = Annotated[int, Path(ge=1, le=DB_INT_MAX)]
DbOffset = Annotated[int, Query(ge=0, le=DB_INT_MAX)]
#: Free text matched against database columns (a NUL would be a PostgreSQL error, so it is a 422 here).
TextQuery = Annotated[str | None, Query(json_schema_extra=NUL_FREE), AfterValidator(no_nul)]
TextPath = Annotated[str, Path(json_schema_extra=NUL_FREE), AfterValidator(no_nul)]


# Both dependencies are async: cheap, non-blocking, so they run on the event loop, not in the thread pool.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

# Declares the bearer scheme in OpenAPI; the check below reads the header itself (its own 401/403 bodies).
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer $DREAMFIX_ADMIN_TOKEN")


async def require_admin(
    request: Request,
    services: ServicesDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Services:
    """The services container, for a request with the admin token: 403 when the admin API is disabled,
    401 without a bearer token, 403 with a wrong one (compared in constant time, never echoed)."""
    token = services.settings.admin_token
    if token is None or not token.get_secret_value():
        raise HTTPException(403, "the admin API is disabled: set DREAMFIX_ADMIN_TOKEN to enable it")
    authorization = request.headers.get("authorization")
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(
            401, "admin endpoints need 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
        )
    given = authorization.split(" ", 1)[1].strip()
    if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(403, "invalid admin token")
    return services


#: The services container behind admin auth: an admin handler that takes it cannot skip the check.
AdminServices = Annotated[Services, Depends(require_admin)]
