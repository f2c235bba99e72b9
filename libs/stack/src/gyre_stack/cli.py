"""The `gyre-stack` command: ``up``, ``down``, ``status``, ``logs [NAME]``, ``demo [--text]`` (behind `make up`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gyre_common.settings import SettingsError, load_settings
from gyre_stack.down import down
from gyre_stack.errors import StackError
from gyre_stack.logs import logs
from gyre_stack.settings import StackSettings
from gyre_stack.status import status
from gyre_stack.up import up


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    cli = argparse.ArgumentParser(
        prog="gyre-stack",
        description="Gyre's embedded development stack: Tansu broker, PostgreSQL and every service as "
                    "local processes. State lives in GYRE_HOME (default .gyre/). See docs/stack.md.",
    )
    commands = cli.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = commands.add_parser("up", help="start everything in the background, wait until ready, "
                                            "print the endpoints")
    start.add_argument("--keep-on-failure", action="store_true",
                       help="when something fails, leave what was started running (for inspection)")
    commands.add_parser("down", help="stop exactly what `up` started")
    commands.add_parser("status", help="show each component and whether it is ready (exit 1 if not)")
    show = commands.add_parser("logs", help="show the end of every log, or of one component's")
    show.add_argument("name", nargs="?", help="broker, postgres or a service name")
    show.add_argument("-n", "--lines", type=int, default=50, help="lines per log (default 50)")
    story = commands.add_parser("demo", help="play the closed loop against the running stack, one line per step "
                                             "(exit 2 if the stack is not up, 1 if a step fails); docs/demo.md")
    story.add_argument("--deadline", type=float, default=180.0, metavar="S",
                       help="longest wait for one step, in seconds (default 180)")
    story.add_argument("--text", action="store_true",
                       help="play the text story instead: a text classifier fine-tuned with torch, BYTES serving, "
                            "corrected labels, text drift (`make demo-text`)")
    story.add_argument("--max-evals", type=int, default=None, metavar="N",
                       help="--text: trials of the first training (default: the trainer's default_max_evals)")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (errors are printed to stderr, exit code 1)."""
    args = parser().parse_args(argv)
    out = sys.stdout
    try:
        if args.command == "demo":
            # Imported here: the demo brings numpy, scikit-learn and gRPC, which `up` and `down` never need.
            if args.text:
                from gyre_stack.demo.text.main import demo_text
                return demo_text(args.deadline, args.max_evals)
            from gyre_stack.demo.main import demo
            return demo(args.deadline)
        settings = load_settings(StackSettings)
        if args.command == "up":
            return up(settings, out, keep_on_failure=args.keep_on_failure)
        if args.command == "down":
            return down(settings, out)
        if args.command == "status":
            return status(settings, out)
        return logs(settings, out, args.name, args.lines)
    except (StackError, SettingsError) as exc:
        out.flush()
        print(f"gyre-stack {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # `up` has already stopped what it had started and said so.
        print(f"gyre-stack {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
