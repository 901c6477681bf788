"""Command line: argument parsing and output only; the one place errors become messages.

Exit codes: 0 answered/ok, 3 abstained, 2 bad usage or bad input, 1 any other failure.
stdout carries only results; messages, progress and problems go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from rag import __version__
from rag.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, RagError


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with our exit code."""

    def error(self, message: str) -> None:  # noqa: D401
        print(f"rag: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", metavar="DIR", help="index folder (default ./index; env RAG_INDEX)")
    p.add_argument("--config", metavar="FILE", help="TOML settings file (default ./rag.toml if present)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rag", description="Local, citation-first question answering over news articles.")
    parser.add_argument("--version", action="version", version=f"rag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("index", help="add or update articles in the index (incremental)",
                       description="Index folders (recursive) and files: .txt .md .json .jsonl. Unchanged "
                                   "articles are skipped; articles whose files are gone are removed.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _common(p)
    p.add_argument("--rebuild", action="store_true", help="start a fresh index from PATHs (the old one "
                   "stays published until the new one is complete)")
    p.add_argument("--chunk-tokens", type=int, metavar="N", help="embedder tokens per chunk (default 200)")
    p.add_argument("--chunk-overlap", type=int, metavar="N", help="overlap tokens between chunks (default 40)")
    p.add_argument("--embedder", metavar="DIR", help="sentence-transformers folder (default: bundled MiniLM)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    for name in ("status", "doctor"):
        p = sub.add_parser(name, help="index path, counts, embedder, last update and a quick consistency check"
                           if name == "status" else "status with a deep check: loads the vectors, SQLite integrity_check")
        _common(p)
        p.add_argument("--json", action="store_true", help="print as JSON")
    return parser


def _settings(args: argparse.Namespace):
    from rag.config import load_settings

    flags = {k: getattr(args, k, None) for k in ("index", "chunk_tokens", "chunk_overlap", "embedder",
                                                  "k", "mode", "model")}
    if "model" in flags and getattr(args, "model", None) is not None:
        flags["model"] = args.model
    return load_settings(flags, getattr(args, "config", None))


def cmd_index(args: argparse.Namespace) -> int:
    from rag.indexer import index_paths, tty_progress

    settings = _settings(args)
    summary = index_paths(args.paths, settings, rebuild=args.rebuild, progress=tty_progress())
    for problem in summary.problems:
        print(f"rag: skipped {problem.path}: {problem.reason}", file=sys.stderr)
    if args.json:
        data = asdict(summary)
        data["problems"] = [asdict(p) for p in summary.problems]
        data["index"] = settings.index
        print(json.dumps(data))
        return EXIT_OK
    skipped = summary.skipped_hidden + summary.skipped_unsupported
    print(f"{summary.added} added, {summary.updated} updated, {summary.removed} removed, "
          f"{summary.unchanged} unchanged; {summary.chunks_embedded} chunks embedded in "
          f"{summary.seconds:.1f} s")
    if summary.reembedded:
        print(f"{summary.reembedded} articles from other folders re-embedded (embedder or chunker changed)")
    if summary.removed_ids:
        shown = ", ".join(summary.removed_ids[:5]) + (" ..." if len(summary.removed_ids) > 5 else "")
        print(f"removed (file gone): {shown}")
    if skipped or summary.problems:
        print(f"skipped: {summary.skipped_hidden} hidden, {summary.skipped_unsupported} unsupported type, "
              f"{len(summary.problems)} with problems (listed on stderr)")
    print(f"index {settings.index}: {summary.articles} articles, {summary.chunks} chunks")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from rag.status import index_status

    settings = _settings(args)
    report = index_status(settings, deep=args.command == "doctor")
    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            print(f"{key:<{width}}  {value if not isinstance(value, dict) else json.dumps(value)}")
    return EXIT_OK if report["consistent"] else EXIT_FAILURE


COMMANDS = {"index": cmd_index, "status": cmd_status, "doctor": cmd_status}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except RagError as e:
        print(f"rag: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except MemoryError:
        print("rag: out of memory", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
