"""`ntpguard list show|import|fetch|export|remove`: shared harvester and scanner lists."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from ntpguard import fetch, lists
from ntpguard.cli import Context, Subparsers
from ntpguard.cli._fmt import iso, table
from ntpguard.errors import NtpguardError, UsageError

if TYPE_CHECKING:
    from ntpguard.compiled import Compiled


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    # `common` goes on each action only: on both levels argparse lets the action's defaults
    # overwrite options given before it.
    p = sub.add_parser("list", help="shared harvester/scanner lists",
                       description="Show, import, fetch and export shared lists of harvesters "
                       "and scanners (formats: README, 'Shared lists').")
    lsub = p.add_subparsers(dest="list_command", metavar="ACTION")
    lsub.required = True

    show = lsub.add_parser("show", parents=[common], help="the lists in force, or one list")
    show.add_argument("name", nargs="?", help="print this list's entries (text format)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=run_show)

    imp = lsub.add_parser("import", parents=[common], help="validate and keep a list",
                          description="Validate FILE or URL as a whole and keep it as list NAME. "
                          "A list with any error is refused and the previous copy stays.")
    imp.add_argument("source", metavar="FILE|URL")
    imp.add_argument("--name", default="", help="list name (default: the file name's stem)")
    imp.add_argument("--kind", choices=lists.KINDS, default="",
                     help="kind for lines without one (e.g. a plain scanner blocklist)")
    imp.add_argument("--trust", choices=lists.TRUSTS, default="enforce",
                     help="enforce: used for verdicts and rules; report: shown only")
    imp.add_argument("--format", choices=("auto", "text", "json"), default="auto")
    imp.add_argument("--sha256", help="refuse unless the content has this SHA-256")
    imp.add_argument("--pubkey",
                     help="minisign public key (RW...); needs SOURCE.minisig")
    imp.add_argument("--ca-file", default="", help="CA certificates for an https:// URL")
    imp.add_argument("--json", action="store_true",
                     help="print JSON; a refused list's every problem is in \"problems\"")
    imp.set_defaults(func=run_import)

    fet = lsub.add_parser("fetch", parents=[common], help="refresh the subscriptions now")
    fet.add_argument("name", nargs="?", help="only this subscription")
    fet.add_argument("--json", action="store_true", help="print JSON")
    fet.set_defaults(func=run_fetch)

    exp = lsub.add_parser("export", parents=[common], help="this host's findings as a list",
                          description="Write this host's own findings (manual marks, canaries, "
                          "detection, probes; never other lists) as a list, each entry with "
                          "its evidence in the JSON format.")
    exp.add_argument("--format", choices=("text", "json"), default="text")
    exp.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    exp.add_argument("--sign", metavar="KEYFILE",
                     help="also write FILE.minisig, signed with this minisign secret key "
                     "(unencrypted: list keygen or minisign -G -W); needs -o")
    exp.add_argument("--suspects", action="store_true",
                     help="export suspects too (as kind harvester, the comment says suspect)")
    exp.set_defaults(func=run_export)

    key = lsub.add_parser("keygen", parents=[common], help="make a key pair to sign lists",
                          description="Make a minisign key pair (Ed25519): the secret key "
                          "unencrypted and mode 0600, for `list export --sign` and [publish] "
                          "key; subscribers put the public key's base64 line in pubkey.")
    key.add_argument("-s", "--secret", metavar="FILE", default="/etc/ntpguard/publish.key",
                     help="secret key file to create (default: %(default)s)")
    key.add_argument("-p", "--public", metavar="FILE", default="/etc/ntpguard/publish.pub",
                     help="public key file to create (default: %(default)s)")
    key.add_argument("--json", action="store_true", help="print JSON")
    key.set_defaults(func=run_keygen)

    rm = lsub.add_parser("remove", parents=[common], help="forget an imported list")
    rm.add_argument("name")
    rm.set_defaults(func=run_remove)


def _counts(c: Compiled) -> str:
    return f"{c.harvester.count} harvesters, {c.scanner.count} scanners"


def run_show(ctx: Context, args: argparse.Namespace) -> int:
    loaded = lists.load_all(ctx.config, ctx.state_dir)
    if args.name:
        match = [lst for lst in loaded if lst.name == args.name]
        if not match:
            raise UsageError(f"no list named {args.name!r} (see `ntpguard list show`)")
        lst = match[0]
        if args.json:
            sys.stdout.write(lists.export_json(lst.entries, time.time()))
        else:
            sys.stdout.write(lists.export_text(lst.entries, f"{lst.name} ({lst.trust}) from "
                                               f"{lst.origin}"))
        return 0
    rows = []
    names = {lst.name for lst in loaded}
    for lst in loaded:
        rows.append({"name": lst.name, "trust": lst.trust, "entries": lst.count,
                     "summary": _counts(lst.compiled), "source": lst.origin,
                     "fetched": iso(lst.meta.get("fetched")),
                     "checked": iso(lst.meta.get("checked")),
                     "signed": bool(lst.meta.get("signed"))})
    for sub in ctx.config.lists.subscriptions:
        if sub.name not in names:
            rows.append({"name": sub.name, "trust": sub.trust, "entries": 0,
                         "summary": "never fetched", "source": sub.url, "fetched": None,
                         "checked": None, "signed": bool(sub.pubkey)})
    if args.json:
        from ntpguard.cli import print_json
        print_json(rows)
        return 0
    out = [["list", "trust", "entries", "fetched", "source"]]
    for r in rows:
        out.append([str(r["name"]), str(r["trust"]), str(r["summary"]),
                    str(r["fetched"] or "-"), str(r["source"])])
    print(table(out))
    return 0


def run_import(ctx: Context, args: argparse.Namespace) -> int:
    from ntpguard.cli import print_json

    try:
        if args.pubkey is not None and not args.pubkey.strip():
            # `--pubkey "$KEY"` with KEY unset would otherwise import the list unsigned.
            raise UsageError("--pubkey: empty; give the public key's base64 line (RW...)")
        if args.sha256 is not None and not args.sha256.strip():
            # Likewise `--sha256 "$SUM"`: the list would be imported unchecked.
            raise UsageError("--sha256: empty; give the list's SHA-256 (64 hex digits)")
        # The lock keeps an import from interleaving with a running `sync` that reads the lists.
        with ctx.open_state(write=True):
            name, parsed = fetch.import_source(
                ctx.config, ctx.state_dir, args.source, name=args.name, kind=args.kind,
                trust=args.trust, ca_file=args.ca_file, sha256=args.sha256 or "",
                pubkey=args.pubkey or "", fmt=args.format,
            )
    except NtpguardError as exc:
        # stderr still gets the one line (first 20 problems); stdout gets all of them.
        if args.json:
            print_json({"ok": False, "error": str(exc),
                        "problems": list(getattr(exc, "problems", ()))})
        raise
    # Counted from the compiled form: `parsed.entries` would parse the list again (~1 s and
    # ~60 MB of Entry objects for 100k entries).
    c = parsed.compiled
    if args.json:
        print_json({"ok": True, "name": name, "entries": c.count,
                    "harvesters": c.harvester.count, "scanners": c.scanner.count,
                    "trust": args.trust})
    else:
        print(f"list {name}: {c.count} entries ({_counts(c)}), {args.trust}")
    return 0


def run_fetch(ctx: Context, args: argparse.Namespace) -> int:
    if not ctx.config.lists.subscriptions:
        print("no subscriptions configured ([[lists.subscriptions]])")
        return 0
    with ctx.open_state(write=True), ctx.progress:
        report = fetch.refresh_subscriptions(ctx.config, ctx.state_dir, only=args.name,
                                             show=ctx.progress)
    if args.json:
        from ntpguard.cli import print_json
        print_json(report.as_dict())
    else:
        for r in report.results:
            detail = f": {r.message}" if r.message else ""
            print(f"{r.name}: {r.status}, {r.entries} entries{detail}")
        print(report.summary())
    if report.ok:
        return 0
    return 4 if report.count("failed") < len(report.results) else 1


def run_export(ctx: Context, args: argparse.Namespace) -> int:
    from ntpguard import publish

    if args.sign and not args.output:
        raise UsageError("--sign needs -o FILE (the signature goes to FILE.minisig)")
    key = publish.read_secret_key(args.sign) if args.sign else None
    statuses = ("harvester", "suspect") if args.suspects else ("harvester",)
    with ctx.open_state(write=False) as state:
        entries = lists.entries_from_verdicts(state.verdict_history(), statuses,
                                              lists.scan_times(state.scans()))
    now = time.time()
    if args.output:
        out = publish.write(args.output, entries, args.format, now, key)
        if key is not None:
            print(f"{out.path}: {out.entries} entries, signed ({out.path}.minisig, key "
                  f"{key.public().id_hex})")
    else:
        sys.stdout.write(publish.render(entries, args.format, now).decode())
    return 0


def run_keygen(ctx: Context, args: argparse.Namespace) -> int:
    from ntpguard import publish

    key = publish.keygen(args.secret, args.public)
    line = key.public().line()
    if args.json:
        from ntpguard.cli import print_json
        print_json({"secret": args.secret, "public": args.public, "key_id": key.public().id_hex,
                    "pubkey": line})
        return 0
    print(f"secret key {args.secret} (keep it; mode 0600), public key {args.public}")
    print(f"subscribers: pubkey = \"{line}\"")
    return 0


def run_remove(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.open_state(write=True):
        if not lists.remove_stored(ctx.state_dir, lists.check_name(args.name)):
            raise UsageError(f"no stored list named {args.name!r}")
    print(f"list {args.name} removed")
    return 0
