"""`labelforge serve`: the embedded service (API + one worker, local broker/storage/SQLite, shipped bundles)."""

from __future__ import annotations

from typing import Annotated, Any

import typer


def serve_command(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default LABELFORGE_API_HOST, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default LABELFORGE_API_PORT, 8000)", min=1, max=65535)] = None,
    worker: Annotated[bool, typer.Option(help="Also start one worker process")] = True,
) -> None:
    """Start the API and a worker; print the URL, the API key and a ready-to-paste curl example."""
    import logging

    from pydantic import ValidationError
    from rich.console import Console

    from service.serve import curl_example, ensure_api_key, run
    from worker.settings import Settings

    console = Console()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {k: v for k, v in (("api_host", host), ("api_port", port)) if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        console.print(f"[red]error:[/red] {'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}")
        raise typer.Exit(2) from None
    key = ensure_api_key(settings)
    url = f"http://{settings.api_host}:{settings.api_port}"
    console.print(f"[bold]labelforge[/bold] serving on [cyan]{url}[/cyan]  (docs: {url}/docs)", soft_wrap=True)
    if key.created:
        console.print(f"API key (shown once, also saved to {key.path}): [bold green]{key.created}[/bold green]",
                      soft_wrap=True)
    else:
        console.print(f"API key: in {key.path}")
    console.print("Try:\n" + curl_example(url, key.path), soft_wrap=True)
    run(settings, with_worker=worker)
