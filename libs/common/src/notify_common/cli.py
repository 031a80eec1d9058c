"""`notify-admin`: operator tasks that are not a service (migrate, create topics)."""

from __future__ import annotations

import argparse
import sys

from notify_common.settings import CommonSettings, DatabaseSettings, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notify-admin")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply the Alembic migrations to NOTIFY_DATABASE_URL")
    sub.add_parser("topics", help="create the contract's topics on NOTIFY_KAFKA_BOOTSTRAP")
    sub.add_parser("check-migrations", help="fail if the models need a migration")
    args = parser.parse_args(argv)

    if args.command in ("migrate", "check-migrations"):
        from notify_common.db import migrate

        db = load(DatabaseSettings)
        url = db.database_url.get_secret_value()
        if args.command == "migrate":
            migrate.upgrade(url)
            print("migrations applied")
        else:
            migrate.check(url)
            print("models and migrations agree")
    elif args.command == "topics":
        from notify_common.kafka.topics import ensure_topics

        created = ensure_topics(load(CommonSettings))
        print(f"topics created: {', '.join(created) if created else 'none (all exist)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
