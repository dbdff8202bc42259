"""Command line entry point `etl-stand-in-api`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn

from .app import create_app
from .server import PortInUseError, StandInServer, bind_socket
from .settings import SETTING_NAMES, StandInSettings, env_name, parse_value

logger = logging.getLogger("etl_assets.stand_in_api")

# Help text of each setting flag; the flag is the setting name with dashes.
SETTING_HELP = {
    "seed": "seed of the generated data and of the fault decisions (integer)",
    "tracks": "rows in /tracks",
    "users": "rows in /users",
    "listen_history": "rows in /listen_history",
    "latency_ms": "fixed delay added to every page, in milliseconds",
    "latency_jitter_ms": "uniform random delay added on top of --latency-ms, in milliseconds",
    "error_share": "share of page requests answered with a 5xx status, from 0 to 1",
    "error_statuses": "comma-separated 5xx statuses that --error-share picks from",
    "reset_share": "share of page requests whose connection is reset, from 0 to 1",
    "throttle_share": "share of page requests answered 429, from 0 to 1",
    "retry_after_s": "Retry-After value of 429 answers, in whole seconds",
    "change": "table change while a client pages: none, grow or shrink",
    "change_rows": "rows inserted or removed before the offset of each request for page > 1",
    "change_max": "maximum rows inserted or removed per table over the server's life",
    "dirty_share": "share of rows per table made dirty at startup, from 0 to 1",
    "endpoints": "comma-separated tables that the faults apply to",
}


def env_default(name: str, default: Any) -> Any:
    raw = os.environ.get(name)
    return default if raw in (None, "") else raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="etl-stand-in-api",
        description=(
            "Serve a seeded stand-in of the MooVitamix API (/tracks, /users, /listen_history) "
            "with optional fault injection. Each flag defaults to its STAND_IN_* variable."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--host", default=env_default("STAND_IN_HOST", "127.0.0.1"),
        help="address to listen on (STAND_IN_HOST)",
    )
    parser.add_argument(
        "--port", type=int, default=int(env_default("STAND_IN_PORT", 8000)),
        help="TCP port to listen on; 0 picks a free port (STAND_IN_PORT)",
    )
    parser.add_argument(
        "--port-file", type=Path, default=env_default("STAND_IN_PORT_FILE", None),
        help="file to write the bound port to once the server accepts connections "
        "(STAND_IN_PORT_FILE)",
    )
    parser.add_argument(
        "--log-level", default=env_default("STAND_IN_LOG_LEVEL", "info"),
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level of the server and of uvicorn (STAND_IN_LOG_LEVEL)",
    )

    # Defaults stay raw strings here and are parsed in main(), so that an invalid
    # environment value gets the same usage error as an invalid flag.
    defaults = StandInSettings()
    flat_defaults = {**vars(defaults.faults), **vars(defaults)}
    for name in SETTING_NAMES:
        default = flat_defaults[name]
        if isinstance(default, tuple):
            default = ",".join(str(value) for value in default)
        default = env_default(env_name(name), default)
        flag = "--fault-endpoints" if name == "endpoints" else f"--{name.replace('_', '-')}"
        parser.add_argument(
            flag, dest=name, default=str(default), metavar=name.upper(),
            help=f"{SETTING_HELP[name]} ({env_name(name)})",
        )
    return parser


def write_port_file(path: Path, port: int) -> None:
    # Write then rename, so a reader polling for the file never sees it half written.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{port}\n")
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = StandInSettings.from_values(
            {name: parse_value(name, getattr(args, name)) for name in SETTING_NAMES}
        )
    except (TypeError, ValueError) as error:
        parser.error(str(error))

    try:
        sock = bind_socket(args.host, args.port)
    except PortInUseError as error:
        print(
            f"error: port {error.port} on {error.host} is already in use; "
            "pass --port 0 for a free port or stop the other process",
            file=sys.stderr,
        )
        return 2
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 2

    logger.info(
        "generating tables: seed=%s tracks=%s users=%s listen_history=%s",
        settings.seed, settings.tracks, settings.users, settings.listen_history,
    )
    app = create_app(settings)

    def on_started(port: int) -> None:
        logger.info("stand-in API listening on http://%s:%s", args.host, port)
        if args.port_file is not None:
            write_port_file(args.port_file, port)

    config = uvicorn.Config(app, log_level=args.log_level, lifespan="off")
    server = StandInServer(config, on_started=on_started)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    logger.info("stand-in API stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
