"""The `gateway` command: serve through gunicorn + gevent, or `--test` / `--health` a running one."""

import argparse
import dataclasses
import os
import sys

from gateway import __version__

EXIT_CONFIG = 2


def _bool(text):
    """argparse type for true/false values."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser():
    """The argument parser; flags and defaults mirror the LiteLLM proxy CLI."""
    p = argparse.ArgumentParser(
        prog="gateway",
        description="OpenAI-compatible LLM gateway. With no --model or --config it serves "
                    "GATEWAY_CONFIG if set, else the built-in `demo` model (no provider key needed).")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    p.add_argument("--num_workers", type=int, default=1,
                   help="gunicorn gevent worker processes (default: 1)")
    p.add_argument("--model", "-m", help="serve this one model for every request, e.g. gpt-3.5-turbo, "
                   "openai/<model> with --api_base, azure/<deployment>")
    p.add_argument("--alias", help="the name clients use for --model (default: the model string)")
    p.add_argument("--api_base", help="upstream base URL for --model")
    p.add_argument("--api_version", help="API version for --model (Azure)")
    p.add_argument("--config", "-c", help="LiteLLM-style YAML config (model_list, litellm_settings, ...)")
    p.add_argument("--debug", action="store_true",
                   help="log each upstream request as a curl command (secrets masked) and its timing")
    p.add_argument("--detailed_debug", action="store_true", help="same as --debug")
    p.add_argument("--temperature", type=float, help="default temperature for --model")
    p.add_argument("--max_tokens", type=int, help="default max_tokens for --model")
    p.add_argument("--request_timeout", type=float, default=None,
                   help="seconds to wait for an upstream answer (default: 600)")
    p.add_argument("--drop_params", action="store_true",
                   help="drop parameters a provider cannot take instead of failing with 400")
    p.add_argument("--add_function_to_prompt", action="store_true",
                   help="put functions/tools into the prompt for models without tool support")
    p.add_argument("--telemetry", type=_bool, nargs="?", const=True, default=True,
                   help="accepted for LiteLLM compatibility; the gateway sends no telemetry anywhere")
    p.add_argument("--test", action="store_true",
                   help="send a chat and a streaming request to the gateway running at --host/--port, "
                        "print the replies and timings; non-zero exit on failure")
    p.add_argument("--health", action="store_true",
                   help="check the gateway running at --host/--port; non-zero exit if unhealthy")
    p.add_argument("--version", action="version", version=f"gateway {__version__}")
    return p


def settings_from_args(args):
    """Build validated Settings from the flags (ConfigError names the problem)."""
    from gateway.config import settings as config
    from gateway.errors import ConfigError

    if args.model and args.config:
        raise ConfigError("--model and --config: use one or the other")
    debug = args.debug or args.detailed_debug
    if args.model:
        params = {"model": args.model}
        for key in ("api_base", "api_version", "temperature", "max_tokens"):
            if getattr(args, key) is not None:
                params[key] = getattr(args, key)
        litellm = {"drop_params": args.drop_params, "set_verbose": debug,
                   "add_function_to_prompt": args.add_function_to_prompt}
        if args.request_timeout is not None:
            litellm["request_timeout"] = args.request_timeout
        raw = {"model_list": [{"model_name": args.alias or args.model, "litellm_params": params}],
               "litellm_settings": litellm}
        return dataclasses.replace(config.from_dict(raw, source="--model"), catch_all=True)
    if args.config:
        settings = config.load_file(args.config)
    else:
        settings = config.from_env()
    overrides = {}
    if debug:
        overrides["debug"] = True
    if args.drop_params:
        overrides["drop_params"] = True
    if args.add_function_to_prompt:
        overrides["add_function_to_prompt"] = True
    if args.request_timeout is not None:
        if args.request_timeout <= 0:
            raise ConfigError("--request_timeout: must be a positive number")
        overrides["request_timeout"] = float(args.request_timeout)
    return dataclasses.replace(settings, **overrides) if overrides else settings


def check_settings(settings):
    """Build the router (every provider, prices, strategies, fallbacks) and the cache settings once,
    so a bad config fails before any worker starts (nothing connects anywhere here)."""
    import logging

    from gateway.cache import build_cache
    from gateway.routing.router import Router
    quiet = logging.getLogger("gateway.routing.router")
    level, quiet.level = quiet.level, logging.ERROR  # the workers warn about skipped deployments
    try:
        Router(settings, None)
    finally:
        quiet.setLevel(level)
    build_cache(settings)


def base_url(args):
    """Where --test / --health find the running gateway."""
    host = args.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{args.port}"


def client_key(args):
    """The key --test / --health send: GATEWAY_MASTER_KEY, else the --config file's master key."""
    key = os.environ.get("GATEWAY_MASTER_KEY")
    if key:
        return key
    if args.config:
        from gateway.config import settings as config
        return config.load_file(args.config).master_key
    return None


def main(argv=None):
    """Entry point of the `gateway` console script."""
    args = build_parser().parse_args(argv)
    if args.test or args.health:
        from gateway import probe
        from gateway.errors import ConfigError
        try:
            key = client_key(args)
        except ConfigError as exc:
            print(f"gateway: config error:\n  {exc}", file=sys.stderr)
            return EXIT_CONFIG
        run = probe.run_test if args.test else probe.run_health
        return run(base_url(args), key)
    from gateway import server
    server.patch()  # before the settings below import the providers (and through them ssl)
    if args.num_workers < 1:
        print("gateway: --num_workers must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    from gateway.errors import ConfigError
    try:
        settings = settings_from_args(args)
        check_settings(settings)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        print("gateway: config error:\n" + "\n".join(f"  {line}" for line in lines), file=sys.stderr)
        return EXIT_CONFIG
    return server.serve(settings, host=args.host, port=args.port, workers=args.num_workers)


if __name__ == "__main__":
    sys.exit(main())
