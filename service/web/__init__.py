"""The web console: static files (HTML, ES modules, CSS) served by the API app itself.

No build step and nothing fetched from the network: the files under `static/` are what the browser
runs. `/` answers the console page; its assets live under `/console/`. Everything else the console
does goes through the public API with the user's key, so it can do nothing a `curl` could not.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def mount_console(app: FastAPI) -> None:
    """Serve the console page at `/` and its assets at `/console/` (kept out of the OpenAPI spec)."""

    @app.get("/", include_in_schema=False)
    def console_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    app.mount("/console", StaticFiles(directory=STATIC), name="console")
