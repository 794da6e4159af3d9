"""`roleforge api`: every role's champion over HTTP, with the rater page and feedback into the inbox."""

from __future__ import annotations

import argparse

from roleforge.cli.common import command_settings


def cmd_api(args: argparse.Namespace) -> int:
    settings = command_settings()
    import logging

    import uvicorn

    from roleforge.serving.app import create_app
    from roleforge.serving.runner import api_keys, check_binding
    from roleforge.serving.service import Service

    host = args.host or settings.serving.host
    port = settings.serving.port if args.port is None else args.port
    keys = api_keys()
    check_binding(host, keys)
    settings.base_model_dir()  # a missing or unconvertible base model is a one-line error before binding
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print(f"roleforge api on http://{host}:{port} (rater page /, OpenAI API /v1, metrics /metrics); "
          f"{'API keys required' if keys else 'no API keys'}", flush=True)
    uvicorn.run(create_app(Service(settings), keys), host=host, port=port, log_level="info")
    return 0
