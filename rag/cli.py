"""Command line: argument parsing and output only; the one place errors become messages.

Exit codes: 0 answered/ok, 3 abstained, 2 bad usage or bad input, 1 any other failure.
stdout carries only results; messages, progress and problems go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
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
    p.add_argument("--store", metavar="URI", help="keep the index in Milvus instead: milvus://HOST:PORT[/NAME] "
                   "(env RAG_STORE; token from RAG_MILVUS_TOKEN); NAME prefixes the collections (default rag)")
    p.add_argument("--config", metavar="FILE", help="TOML settings file (default ./rag.toml if present)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rag", description="Local, citation-first question answering over news articles.")
    parser.add_argument("--version", action="version", version=f"rag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("index", help="add or update articles in the index (incremental)",
                       description="Index folders (recursive) and files: .txt .md .json .jsonl, web pages "
                                   "(.html .htm), RSS/Atom feeds (.xml .rss .atom), .pdf, CSV/TSV exports "
                                   "(.csv .tsv) and web archives (.warc .warc.gz). Unchanged articles are "
                                   "skipped; articles whose files are gone are removed; a file that cannot be "
                                   "read keeps what was indexed from it before.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _common(p)
    p.add_argument("--rebuild", action="store_true", help="start a fresh index from PATHs (the old one "
                   "stays published until the new one is complete)")
    p.add_argument("--chunk-tokens", type=int, metavar="N", help="embedder tokens per chunk (default 200)")
    p.add_argument("--chunk-overlap", type=int, metavar="N", help="overlap tokens between chunks (default 40)")
    p.add_argument("--embedder", metavar="DIR", help="sentence-transformers folder (default: bundled MiniLM)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--csv-columns", metavar="ROLE=COLUMN,...", help="CSV/TSV columns by role when their "
                   "names are not recognised, e.g. text=body,date=published (roles: text title date source url)")

    p = sub.add_parser("ask", help="answer a question from the indexed articles, with citations",
                       description="Answer one question (or --batch many) from the index. Exit code 0 "
                                   "answered, 3 the articles do not say, 2 bad usage, 1 other failure.")
    p.add_argument("question", nargs="?", help="the question (omit with --batch)")
    _common(p)
    _answer_options(p)
    p.add_argument("--json", action="store_true", help="print the answer as one JSON object (schema in README)")
    p.add_argument("--batch", metavar="FILE", help="read questions from FILE (- for stdin), one per line: "
                   "plain text or JSON with id and question; print one JSON object per line")
    _as_of_option(p)
    p.add_argument("--server", metavar="URL", help="ask a running `rag serve` at URL instead of loading the index "
                   "here (env RAG_SERVER); sends RAG_SERVE_TOKEN as the bearer token when set")

    p = sub.add_parser("eval", help="score answers against a gold set (JSONL)",
                       description="Run every gold question through the same pipeline as `rag ask` and "
                                   "report correctness, citation precision/recall, retrieval, abstention "
                                   "and latency.")
    p.add_argument("gold", nargs="?", default="eval/gold.jsonl", help="gold JSONL (default eval/gold.jsonl)")
    _common(p)
    _answer_options(p)
    p.add_argument("--out", metavar="DIR", help="report folder (default eval/reports/<time>-<mode>)")
    p.add_argument("--compare", metavar="REPORT", help="an earlier report.json: print deltas, mark regressions")
    p.add_argument("--floors", metavar="FILE", help="JSON of metric floors; exit 1 when a metric is under one")
    _as_of_option(p, " (a gold line's own 'date' wins)")

    p = sub.add_parser("chat", help="interactive questions with follow-ups, sources and slash commands",
                       description="A chat over the index: answers stream and are verified as in `rag ask`; "
                                   "follow-ups use the conversation; /help lists the commands. With piped "
                                   "input: one question or /command per line, plain output.")
    _common(p)
    _answer_options(p)
    p.add_argument("--history", metavar="FILE", help="input history file (default <index>/.chat_history)")
    p.add_argument("--rewrite", choices=("rules", "llm"), default="rules", help="how follow-ups become "
                   "standalone queries: rules (default, deterministic) or llm (ask the model)")

    p = sub.add_parser("serve", help="answer questions over HTTP: a JSON API on 127.0.0.1 (FastAPI)",
                       description="Load the index (and the model) once and answer POST /v1/ask with the JSON of "
                                   "`rag ask --json`; /v1/ask/stream streams the draft; /openapi.json describes "
                                   "the API (/docs renders it where the browser can load Swagger UI). A newly "
                                   "published index is picked up without a restart. Any --host but loopback needs "
                                   "RAG_SERVE_TOKEN (then every request but /healthz needs 'Authorization: Bearer "
                                   "TOKEN').")
    _common(p)
    _generation_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, metavar="N", help="processes answering extractive and baseline questions "
                   "side by side (default: one per physical core; 0: in the server process)")

    for name in ("status", "doctor"):
        p = sub.add_parser(name, help="index path, counts, embedder, last update and a quick consistency check"
                           if name == "status" else "status with a deep check (loads vectors, SQLite integrity_check)")
        _common(p)
        p.add_argument("--json", action="store_true", help="print as JSON")
    return parser


def _as_of_option(p: argparse.ArgumentParser, more: str = "") -> None:
    p.add_argument("--as-of", metavar="DATE", help="the day the question is asked (YYYY-MM-DD, default today): "
                   "what 'this week', 'recently' or 'last year' in it mean" + more)


def _answer_options(p: argparse.ArgumentParser) -> None:
    _generation_options(p)
    p.add_argument("--since", metavar="DATE", help="only articles dated on or after DATE (YYYY-MM-DD)")
    p.add_argument("--until", metavar="DATE", help="only articles dated on or before DATE")
    p.add_argument("--source", metavar="NAME", help="only articles from this source (e.g. 'Wire Service')")
    p.add_argument("--doc", metavar="ID", action="append", default=[], help="only this doc id (repeatable)")


def _generation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-k", type=int, metavar="N", help="chunks retrieved (default 6)")
    p.add_argument("--mode", choices=("llm", "extractive", "baseline"), help="llm (default): generate and "
                   "verify; extractive: answer with the evidence sentences only, no model; baseline: the top 2 "
                   "sentences by embedder cosine, no abstaining (a plain point of comparison)")
    p.add_argument("--model", metavar="PATH", help="GGUF model (default: RAG_MODEL, config, or the bundled "
                   "SmolLM2-135M-Instruct)")
    p.add_argument("--llm-url", metavar="URL", help="generate on an OpenAI-compatible server instead of a local "
                   "GGUF, e.g. http://127.0.0.1:8080/v1 (env RAG_LLM_URL; API key from RAG_LLM_API_KEY)")
    p.add_argument("--llm-model", metavar="NAME", help="model name on that server (default: the first it lists)")


def _settings(args: argparse.Namespace):
    from rag.config import load_settings

    flags = {k: getattr(args, k, None) for k in ("index", "store", "chunk_tokens", "chunk_overlap", "embedder",
                                                  "k", "mode", "model", "llm_url", "llm_model")}
    return load_settings(flags, getattr(args, "config", None))


def cmd_index(args: argparse.Namespace) -> int:
    from rag.indexer import index_paths, tty_progress

    settings = _settings(args)
    options = _format_options(args.csv_columns)
    summary = index_paths(args.paths, settings, rebuild=args.rebuild, progress=tty_progress(), options=options)
    for problem in summary.problems:
        print(f"rag: skipped {problem.path}: {problem.reason}", file=sys.stderr)
    if args.json:
        data = asdict(summary)
        data["problems"] = [asdict(p) for p in summary.problems]
        data["index"] = settings.store or settings.index
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
    if skipped or summary.problems or summary.skipped_records:
        records = f", {summary.skipped_records} archive records without an article" if summary.skipped_records else ""
        print(f"skipped: {summary.skipped_hidden} hidden, {summary.skipped_unsupported} unsupported type, "
              f"{len(summary.problems)} with problems (listed on stderr){records}")
    if summary.kept_unreadable:
        print(f"kept {summary.kept_unreadable} articles indexed earlier from files that could not be read now")
    print(f"index {settings.store or settings.index}: {summary.articles} articles, {summary.chunks} chunks")
    return EXIT_OK


CSV_ROLES = ("text", "title", "date", "source", "url")


def _format_options(csv_columns: str | None):
    """`--csv-columns text=body,date=published` -> reader options (a bad value is a usage error)."""
    from rag.errors import UsageError
    from rag.formats import Options

    mapping: dict[str, str] = {}
    for part in filter(None, (csv_columns or "").split(",")):
        role, sep, column = (x.strip() for x in part.partition("="))
        if not sep or not column or role not in CSV_ROLES:
            raise UsageError(f"--csv-columns: {part.strip()!r} is not ROLE=COLUMN with ROLE one of "
                             f"{', '.join(CSV_ROLES)}", "e.g. --csv-columns text=body,date=published")
        mapping[role] = column
    return Options(csv_columns=mapping)


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


def _filters(args: argparse.Namespace):
    from rag.retrieve import Filters

    filters = Filters(since=args.since, until=args.until, source=args.source, docs=tuple(args.doc))
    if getattr(args, "as_of", None) is not None:
        from datetime import date

        from rag.errors import UsageError
        try:
            if len(args.as_of) != 10:  # fromisoformat also takes 20230101 and week dates
                raise ValueError
            date.fromisoformat(args.as_of)
        except ValueError:
            raise UsageError(f"--as-of must be a date like 2019-02-20, not {args.as_of!r}") from None
    return filters


def _answer_json(answer) -> str:
    data = asdict(answer)
    return json.dumps(data, ensure_ascii=False)


def cmd_ask(args: argparse.Namespace) -> int:
    from rag.errors import EXIT_ABSTAINED, UsageError

    if (args.question is None) == (args.batch is None):
        raise UsageError("give a question or --batch FILE (not both)",
                         'e.g. rag ask "What did the council decide?"')
    server = args.server or os.environ.get("RAG_SERVER")
    if server:  # before the pipeline's imports: a client needs no models
        from rag.client import ask_server

        return ask_server(server, args)
    from rag.pipeline import Pipeline, check_question
    from rag.render import print_answer, use_colour

    question = check_question(args.question) if args.question is not None else None
    settings = _settings(args)
    filters = _filters(args)
    batch_lines = _read_batch(args.batch) if args.batch else None
    if settings.mode == "llm" and not settings.llm_url:  # a bad model file is reported now, not after retrieval
        from rag.llm import check_model_file, resolve_model_path

        check_model_file(resolve_model_path(None, settings.model))
    pipeline = Pipeline(settings, preload_llm=settings.mode == "llm" and not settings.llm_url)
    try:
        if batch_lines is not None:
            return _run_batch(pipeline, batch_lines, filters, args.as_of)
        stream = not args.json and settings.mode == "llm" and use_colour(sys.stderr)
        on_token = _draft_printer() if stream else None
        answer = pipeline.ask(question, filters=filters, on_token=on_token, as_of=args.as_of)
        if on_token:
            sys.stderr.write("\x1b[0m\n")  # end the dim draft
        if args.json:
            print(_answer_json(answer))
        else:
            print_answer(answer)
        return EXIT_ABSTAINED if answer.abstained else EXIT_OK
    finally:
        pipeline.close()


def _draft_printer():
    """Stream the model's draft, dimmed, on a terminal's stderr; the verified answer follows."""
    sys.stderr.write("\x1b[2mdraft: ")

    def show(piece: str) -> None:
        sys.stderr.write(piece)
        sys.stderr.flush()

    return show


def _read_batch(path: str) -> list[str]:
    from rag.errors import UsageError

    try:
        if path == "-":
            return sys.stdin.read().splitlines()
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read batch file {path}: {getattr(e, 'strerror', None) or e}") from None


def _run_batch(pipeline, lines: list[str], filters, as_of: str | None = None) -> int:
    """One JSON object per non-empty input line, `id` echoed; a bad line gets an `error` object."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        qid, question = str(number), line.strip()
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
                qid = str(record.get("id", number))  # set first: an error line still carries the id
                question = record["question"]
                if not isinstance(question, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError, AttributeError):
                print(json.dumps({"id": qid, "error": f"line {number}: expected JSON with a string "
                                  "'question'"}), flush=True)
                continue
        try:
            answer = pipeline.ask(question, filters=filters, as_of=as_of)
        except RagError as e:
            print(json.dumps({"id": qid, "question": question[:200], "error": str(e)}), flush=True)
            continue
        data = {"id": qid, **json.loads(_answer_json(answer))}
        print(json.dumps(data, ensure_ascii=False), flush=True)
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from rag.evaluate import run_command

    return run_command(args, _settings(args), _filters(args))


def cmd_chat(args: argparse.Namespace) -> int:
    from rag.chat import run

    return run(_settings(args), _filters(args), history=args.history, rewrite=args.rewrite)


def cmd_serve(args: argparse.Namespace) -> int:
    from rag.serve import serve

    return serve(_settings(args), host=args.host, port=args.port, workers=args.workers)


COMMANDS = {"index": cmd_index, "status": cmd_status, "doctor": cmd_status, "ask": cmd_ask, "eval": cmd_eval,
            "chat": cmd_chat, "serve": cmd_serve}


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
    except sqlite3.DatabaseError as e:  # a page damaged past what open_index's checks can see
        from rag.store import REBUILD_HINT

        print(f"rag: the index database is damaged ({e}) ({REBUILD_HINT})", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as e:  # a read or write failure outside the index writer
        where = f": {e.filename}" if e.filename else ""
        print(f"rag: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
