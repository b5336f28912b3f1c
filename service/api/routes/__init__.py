"""One ``APIRouter`` per concern; ``service.api.app.create_app`` includes them all (``ROUTERS``)."""

from __future__ import annotations

from service.api.routes import adapters, episodes, health, public, runs

ROUTERS = (health.router, public.router, runs.router, adapters.router, episodes.router)
