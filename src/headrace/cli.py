"""`headrace serve | worker | ...`: the command line."""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path

import click
import uvicorn

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
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Worker processes to start beside the API (default: the number of CPUs; 0 for none).")
def serve(host, port, data_dir, database_url, auth_tokens, workers) -> None:
    """Serve the Dataflow v1b3 API, with a pool of workers that run the jobs."""
    from headrace.app import create_app
    from headrace.worker.pool import Pool

    config = Config.from_env(host=host, port=port, data_dir=data_dir, database_url=database_url,
                             auth_tokens=auth_tokens, workers=workers)
    try:
        app = create_app(config)
        token = _pool_token(config)
    except (ValueError, RuntimeError) as error:  # a bad token file, a store from a newer release
        raise click.ClickException(str(error)) from None
    if config.host not in ("127.0.0.1", "localhost", "::1") and config.auth_tokens is None:
        click.echo(f"Warning: serving on {config.host} without --auth-tokens: anyone who reaches it "
                   "can run code on this machine through the API.", err=True)
    size = config.workers if config.auth_tokens is None or token else 0
    pool = Pool(size, _local_endpoint(config), config.data_dir, token)
    shown = "localhost" if config.host in ("127.0.0.1", "localhost") else config.host
    endpoint = f"http://{shown}:{config.port}"
    click.echo(f"Headrace serving the Dataflow v1b3 API at {endpoint} (data in {config.data_dir.resolve()})")
    click.echo(f"  Beam:             --runner DataflowRunner --dataflow_endpoint {endpoint} --no_auth")
    click.echo(f"  googleapiclient:  build('dataflow', 'v1b3', client_options={{'api_endpoint': '{endpoint}'}}, "
               "credentials=AnonymousCredentials())")
    click.echo(f"  GAPIC:            JobsV1Beta3Client(transport='rest', client_options={{'api_endpoint': '{endpoint}'}}, "
               "credentials=AnonymousCredentials())")
    if pool.size:
        click.echo(f"  Workers:          {pool.size} (logs in {pool.logs}); more with "
                   f"`headrace worker --endpoint {endpoint}`")
    elif config.workers:
        click.echo("  Workers:          none started: no token in --auth-tokens is granted \"*\" "
                   "(workers lease from every project); start them with `headrace worker --token`.")
    server = _Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning"), pool)
    pool.start()
    _settle_heap()
    try:
        server.run()
    finally:
        pool.stop()


def _settle_heap() -> None:
    """Start-up leaves ~100,000 long-lived objects (modules, the discovery document, compiled
    decoders) that every full garbage collection would walk again, and a WorkerMessages batch
    allocates thousands of short-lived ones. Freeze the first, collect the young generation less
    often. Side by side on bench/worker_messages (4 s x 3 rounds): batches of 100 x1.22 req/s
    at x0.83 the server CPU per request, single messages x1.03."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


@main.command()
@click.option("--endpoint", required=True, help="The Headrace API to take work from, e.g. http://localhost:8080.")
@click.option("--worker-id", default=None, help="This worker's name in the API (default: host name and process id).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where work directories and job environments live (default ./.headrace).")
@click.option("--token", envvar="HEADRACE_WORKER_TOKEN", default=None,
              help="Bearer token for a server with --auth-tokens; it needs the \"*\" grant.")
@click.option("--exit-with-parent", is_flag=True, hidden=True, help="Stop when the parent process exits.")
def worker(endpoint, worker_id, data_dir, token, exit_with_parent) -> None:
    """Lease work from a Headrace API and run the jobs' pipelines."""
    from headrace.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per poll
    config = Config.from_env(data_dir=data_dir)
    process = Worker(config, endpoint, worker_id, token)
    if exit_with_parent:
        process.exit_with_parent()
    process.serve()



@main.group("flex-template")
def flex_template() -> None:
    """Flex templates built from source (Headrace runs no containers)."""


@flex_template.command("build")
@click.argument("spec_path")
@click.option("--py-path", "py_paths", multiple=True, required=True, type=click.Path(path_type=Path),
              help="A directory (or file) of the template's source; repeat for several.")
@click.option("--env", "env", multiple=True, help="KEY=VALUE for the launcher, e.g. FLEX_TEMPLATE_PYTHON_PY_FILE=main.py.")
@click.option("--metadata-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="The template's metadata JSON (name, description, parameters).")
@click.option("--sdk-language", type=click.Choice(["PYTHON", "JAVA", "GO"]), required=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="The server's data dir, where gs:// paths live (default ./.headrace).")
def flex_template_build(spec_path, py_paths, env, metadata_file, sdk_language, data_dir) -> None:
    """Pack the template's source into Headrace's storage and write its spec to SPEC_PATH."""
    import json

    from headrace import flex_template as flex
    from headrace.errors import ApiError
    from headrace.storage import Storage

    config = Config.from_env(data_dir=data_dir)
    pairs = dict(e.split("=", 1) for e in env if "=" in e)
    bad = [e for e in env if "=" not in e]
    if bad:
        raise click.UsageError(f"--env takes KEY=VALUE, not {bad[0]!r}")
    metadata = json.loads(metadata_file.read_text()) if metadata_file else None
    try:
        spec = flex.build(Storage.for_data_dir(config.data_dir), spec_path, list(py_paths), pairs, metadata,
                          sdk_language)
    except ApiError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Wrote the flex template spec {spec_path} (source package {spec['image']}).")


def _local_endpoint(config: Config) -> str:
    """Where the embedded workers reach the API: loopback when it listens on every interface."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.host, config.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{config.port}"


def _pool_token(config: Config) -> str | None:
    """With --auth-tokens, the embedded workers use a token granted every project."""
    if config.auth_tokens is None:
        return None
    from headrace.api.auth import ALL, load_grants

    for token, projects in load_grants(config.auth_tokens).items():
        if ALL in projects or "-" in projects:
            return token.decode()
    return None


class _Server(uvicorn.Server):
    """Stops the worker pool before the API, so the workers' shutdown notices still reach it."""

    def __init__(self, config: uvicorn.Config, pool):
        super().__init__(config)
        self.pool = pool
        self.stopping = False

    def handle_exit(self, sig, frame) -> None:
        if self.stopping or not self.pool.processes:
            return super().handle_exit(sig, frame)  # a second signal does not wait
        self.stopping = True

        def stop_pool_then_server():
            self.pool.stop()
            super(_Server, self).handle_exit(sig, frame)

        threading.Thread(target=stop_pool_then_server, daemon=True, name="stop-workers").start()
