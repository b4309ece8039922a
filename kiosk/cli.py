"""The `kiosk` command: run, demo, sandbox, config check."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from pathlib import Path

from kiosk import __version__
from kiosk.config import DEFAULT_CONFIG_PATH, ConfigError, check_files, load_config
from kiosk.demo_choices import MODES, PROVIDERS
from kiosk.money import format_amount

EXIT_CONFIG = 2

# More subcommands, one module each: `register(subparsers)` adds a parser whose defaults set
# `func=handler`, and `handler(args) -> int` runs it.
COMMAND_MODULES: list[str] = [
    "kiosk.commands.provision",
    "kiosk.commands.journal",
    "kiosk.commands.update",
    "kiosk.commands.selftest",
    "kiosk.commands.render",
    "kiosk.commands.hwtest",
    "kiosk.commands.fleet",
]


CORE_COMMANDS = ("run", "demo", "sandbox", "config")


def _wants_core_command(argv: list[str]) -> bool:
    """The daemon starts often (and the crash tests start it hundreds of times): a core command
    does not import the other commands' modules (console, provisioning, x509, ...)."""
    if "-h" in argv or "--help" in argv:
        return False
    tokens = iter(argv)
    for token in tokens:
        if token == "--log-level":
            next(tokens, None)  # its value
        elif not token.startswith("-"):
            return token in CORE_COMMANDS
    return False


def _parser(all_commands: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk", description="Wallet-payment kiosk firmware")
    parser.add_argument("--version", action="version", version=f"kiosk {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the kiosk daemon")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)

    demo = sub.add_parser("demo", help="sell on simulated hardware against the sandbox gateway")
    demo.add_argument("--sales", type=int, default=3)
    demo.add_argument("--frames", type=Path, default=Path("frames"), help="where to write every screen as PNG")
    demo.add_argument("--mqtt", default=None, help="broker URL to publish to, e.g. mqtt://127.0.0.1:1883")
    demo.add_argument("--config", type=Path, default=None, help="default: config/kiosk.example.toml")
    demo.add_argument("--stay", action="store_true", help="keep the kiosk running after the sales until Ctrl-C")
    demo.add_argument("--provider", default="alipay", choices=PROVIDERS, help="the wallet provider to sell through")
    demo.add_argument(
        "--mode", default="qr", choices=MODES,
        help="qr: tourists scan the screen; code: they show their payment code; both: armed together",
    )

    sandbox = sub.add_parser("sandbox", help="run the sandbox payment gateway alone")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8765)
    sandbox.add_argument("--keys", type=Path, default=Path("var/keys"))

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file and list every problem")
    check.add_argument("path", nargs="?", type=Path, default=DEFAULT_CONFIG_PATH)
    for name in COMMAND_MODULES if all_commands else ():
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(all_commands=not _wants_core_command(argv)).parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request URL at INFO; the journal and the timeline already say what happened.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    func = getattr(args, "func", None)
    if func is not None:
        result: int = func(args)
        return result
    if args.command == "config":
        return config_check(args.path)
    if args.command == "run":
        return run_daemon(args.config)
    if args.command == "demo":
        return run_demo_command(args)
    if args.command == "sandbox":
        from kiosk.payments.sandbox import main as sandbox_main

        return sandbox_main(["--host", args.host, "--port", str(args.port), "--keys", str(args.keys)])
    return 1


def config_check(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    problems = check_files(config)
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: OK")
    print(f"  device    {config.device.fleet}/{config.device.id}")
    print(f"  selection {config.selection.mode.value}, payment timeout {config.selection.payment_timeout_s:g} s")
    for slot in config.catalog.slots:
        price = format_amount(slot.price, slot.currency)
        print(f"  slot {slot.id:<6} {price:>12}  {slot.names.en} / {slot.names.zh_hans}")
    print(f"  payments  {config.payments.provider}")
    print(f"  display   {config.display.type} {config.display.width}x{config.display.height}")
    print(f"  mqtt      {config.mqtt.url or 'none (events stay queued)'}")
    return 0


def run_daemon(path: Path) -> int:
    from kiosk.app import KioskApp, StartupError

    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    problems = check_files(config)
    if problems:
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    app = KioskApp(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, app.request_stop)
        await app.run()

    try:
        asyncio.run(main())
    except StartupError as exc:
        print(f"kiosk: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def run_demo_command(args: argparse.Namespace) -> int:
    from kiosk.app import StartupError
    from kiosk.demo import EXAMPLE_CONFIG, DemoResult, print_summary, run_demo

    frames: Path = args.frames.resolve()
    config_path: Path = args.config or EXAMPLE_CONFIG
    print(f"kiosk demo: {args.sales} sale(s), frames in {frames}")
    async def demo() -> DemoResult:
        stay: asyncio.Event | None = None
        if args.stay:
            stay = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(sig, stay.set)
        return await run_demo(
            sales=args.sales, frames=frames, mqtt=args.mqtt, config_path=config_path, out=sys.stdout,
            provider=args.provider, mode=args.mode, stay=stay,
        )

    try:
        result = asyncio.run(demo())
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{config_path}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as exc:
        print(f"kiosk demo: cannot start: {exc}", file=sys.stderr)
        return 1
    print_summary(result, args.mqtt, frames, sys.stdout)
    ok = len(result.sales) == args.sales and all(s.is_final for s in result.sales)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
