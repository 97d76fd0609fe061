"""`headrace serve | ...`: the command line."""

from __future__ import annotations

from pathlib import Path

import click

from headrace.config import Config


@click.group()
def main() -> None:
    """Headrace: a self-hosted Google Cloud Dataflow service."""


@main.command()
@click.option("--host", default=None, help="Interface to bind (default 127.0.0.1, loopback only).")
@click.option("--port", type=int, default=None, help="Port (default 8080).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Where the SQLite store lives (default ./.headrace).")
@click.option("--database-url", default=None, help="A SQLAlchemy URL (postgresql://...) instead of SQLite.")
@click.option("--auth-tokens", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="JSON file {token: [project ids]}; when given, requests need a bearer token.")
def serve(host, port, data_dir, database_url, auth_tokens) -> None:
    """Serve the Dataflow v1b3 API."""
    import uvicorn

    from headrace.app import create_app

    config = Config.from_env(host=host, port=port, data_dir=data_dir, database_url=database_url,
                             auth_tokens=auth_tokens)
    app = create_app(config)
    shown = "localhost" if config.host in ("127.0.0.1", "localhost") else config.host
    endpoint = f"http://{shown}:{config.port}"
    click.echo(f"Headrace serving the Dataflow v1b3 API at {endpoint} (data in {config.data_dir.resolve()})")
    click.echo(f"  Beam:             --runner DataflowRunner --dataflow_endpoint {endpoint} --no_auth")
    click.echo(f"  googleapiclient:  build('dataflow', 'v1b3', client_options={{'api_endpoint': '{endpoint}'}}, "
               "credentials=AnonymousCredentials())")
    click.echo(f"  GAPIC:            JobsV1Beta3Client(transport='rest', client_options={{'api_endpoint': '{endpoint}'}}, "
               "credentials=AnonymousCredentials())")
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")


if __name__ == "__main__":
    main()
